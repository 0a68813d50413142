// The frameserve dashboard: one module, no framework, only this server's public APIs.
// Every value from the server reaches the page through textContent or an attribute, never
// as HTML, and the Content-Security-Policy allows no inline script: a job or model name
// cannot become markup.

const POLL_MS = 2000;
const $ = (sel, root = document) => root.querySelector(sel);

// -- small DOM helpers -------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function since(iso) {
  if (!iso) return "–";
  const t = new Date(iso);
  return t.toLocaleTimeString(undefined, { hour12: false });
}

function shortId(id) {
  return id.length > 12 ? `${id.slice(0, 12)}…` : id;
}

function badge(state) {
  return el("span", { class: `badge s-${String(state).toLowerCase()}` }, state);
}

function progressBar(fraction, label) {
  const bar = el("div", { class: "progress", role: "progressbar" }, el("div", { class: "fill" }),
    el("span", { class: "label" }, label));
  setProgress(bar, fraction, label);
  return bar;
}

function setProgress(bar, fraction, label) {
  const pct = fraction === null ? null : Math.max(0, Math.min(100, fraction * 100));
  bar.querySelector(".fill").style.width = pct === null ? "0%" : `${pct.toFixed(1)}%`;
  bar.querySelector(".label").textContent = label;
  bar.setAttribute("aria-valuenow", pct === null ? "" : pct.toFixed(0));
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
}

// -- the API -----------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    if (response.status === 401 && session.keys_required) showLogin();
    throw new ApiError(response.status, message);
  }
  return body;
}

const postJson = (path, data) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data),
});

// -- notices -----------------------------------------------------------------------------
let noticeTimer = null;
function notice(text, kind = "info") {
  const box = $("#notice");
  box.textContent = text;
  box.className = `notice ${kind}`;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

// -- session -----------------------------------------------------------------------------
let session = { keys_required: false, authenticated: false };

function showWho() {
  $("#who-name").textContent = session.authenticated ? `key: ${session.key}` : "";
  $("#logout").hidden = !(session.keys_required && session.via === "cookie");
}

function showLogin() {
  stopPolling();
  session.authenticated = false;
  showWho();
  showView("login");
  $("#login-key").focus();
}

async function login(event) {
  event.preventDefault();
  const error = $("#login-error");
  error.hidden = true;
  try {
    session = await postJson("/v1/session", { key: $("#login-key").value });
    $("#login-key").value = "";
    showWho();
    await afterLogin();
    route();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
}

async function logout() {
  await api("/v1/session", { method: "DELETE" }).catch(() => null);
  session = await api("/v1/session");
  showLogin();
}

// -- views and routing ----------------------------------------------------------------------
let pollTimer = null;
let pollGeneration = 0;

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
  pollGeneration += 1;
}

function poll(refresh) {
  stopPolling();
  const generation = pollGeneration;
  const tick = async () => {
    try {
      await refresh();
    } catch (err) {
      if (err.status !== 401) notice(err.message, "error");
    }
    if (generation === pollGeneration) pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function showView(name) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  for (const link of document.querySelectorAll("#nav a")) {
    const active = name.startsWith(link.dataset.view);
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function route() {
  if (session.keys_required && !session.authenticated) return showLogin();
  const [, view = "models", id] = (location.hash || "#/models").split("/");
  if (view === "jobs" && id) {
    showView("job");
    poll(() => refreshJob(decodeURIComponent(id)));
  } else if (view === "jobs") {
    showView("jobs");
    poll(refreshJobs);
  } else if (view === "streams") {
    showView("streams");
    poll(refreshStreams);
  } else {
    showView("models");
    poll(refreshModels);
  }
}

// -- models ----------------------------------------------------------------------------------
function batchHistogram(batchStats) {
  const rows = (batchStats || []).filter((b) => b.compute_infer && b.compute_infer.count > 0);
  if (!rows.length) return el("span", { class: "muted" }, "–");
  rows.sort((a, b) => a.batch_size - b.batch_size);
  const most = Math.max(...rows.map((b) => b.compute_infer.count));
  const chart = el("div", { class: "histogram" });
  for (const b of rows) {
    const bar = el("span", { class: "hbar", title: `batch ${b.batch_size}: ${b.compute_infer.count} executions` });
    bar.style.height = `${Math.max(8, (100 * b.compute_infer.count) / most)}%`;
    chart.append(el("span", { class: "hcol" }, bar, el("span", { class: "hlabel" }, b.batch_size)));
  }
  return chart;
}

function sparkline(samples, windowS) {
  const width = 160;
  const height = 30;
  if (!samples || !samples.length) return el("span", { class: "muted" }, "–");
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "spark" });
  const now = samples[samples.length - 1].t;
  // the whole window once the server has that much history; until then the history it has
  // (at least a minute), so a fresh server's first minutes are not a sliver at the edge
  const spanS = Math.min(windowS, Math.max(60, now - samples[0].t + samples[0].seconds));
  const peak = Math.max(1e-9, ...samples.map((s) => s.inferences_per_s));
  const x = (t) => width - ((now - t) / spanS) * width;
  const y = (v) => height - 2 - (v / peak) * (height - 4);
  let path = `M ${x(samples[0].t).toFixed(1)} ${height}`;
  for (const s of samples) path += ` L ${x(s.t).toFixed(1)} ${y(s.inferences_per_s).toFixed(1)}`;
  path += ` L ${x(now).toFixed(1)} ${height} Z`;
  box.append(svg("path", { d: path, class: "area" }));
  const title = svg("title");
  title.textContent = `last ${duration(spanS)}: peak ${fmt(peak, 2)} inferences/s`;
  box.append(title);
  return box;
}

function avgMs(duration) {
  return duration && duration.count ? duration.ns / duration.count / 1e6 : null;
}

let modelsRendered = false;

async function refreshModels() {
  const [index, stats, activity] = await Promise.all([
    postJson("/v2/repository/index", {}),
    api("/v2/models/stats"),
    api("/v1/models/activity"),
  ]);
  const byVersion = new Map();
  for (const s of stats.model_stats || []) byVersion.set(`${s.name}/${s.version}`, s);
  const recent = new Map();
  for (const m of activity.models || []) recent.set(`${m.name}/${m.version}`, m.samples);
  const body = $("#models-table tbody");
  const rows = [];
  const sorted = [...index].sort((a, b) => a.name.localeCompare(b.name) || Number(a.version) - Number(b.version));
  for (const entry of sorted) {
    const key = `${entry.name}/${entry.version}`;
    const s = byVersion.get(key);
    const inf = s ? s.inference_stats : null;
    const samples = recent.get(key) || [];
    const last = samples.length ? samples[samples.length - 1] : null;
    const compute = inf ? [inf.compute_input, inf.compute_infer, inf.compute_output]
      .map(avgMs).reduce((a, b) => (b === null ? a : (a || 0) + b), null) : null;
    rows.push(el("tr", { "data-model": entry.name },
      el("td", { class: "name" }, entry.name),
      el("td", {}, entry.version || "–"),
      el("td", {}, badge(entry.state || "unloaded"), entry.reason ? el("div", { class: "muted small" }, entry.reason) : null),
      el("td", { class: "num" }, s ? fmt(s.inference_count, 0) : "–"),
      el("td", { class: "num" }, s ? fmt(s.execution_count, 0) : "–"),
      el("td", { class: "num" }, fmt(inf ? avgMs(inf.queue) : null, 2)),
      el("td", { class: "num" }, fmt(compute, 2)),
      el("td", {}, s ? batchHistogram(s.batch_stats) : el("span", { class: "muted" }, "–")),
      el("td", {}, sparkline(samples, activity.window_s)),
      el("td", { class: "num" }, last ? fmt(last.inferences_per_s, 1) : "–"),
    ));
  }
  body.replaceChildren(...rows);
  $("#models-empty").hidden = rows.length > 0;
  $("#models-updated").textContent = `updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
  if (!modelsRendered) {
    modelsRendered = true;
    performance.mark("models-rendered"); // the page-load benchmark reads this mark
  }
}

// -- pipelines (for the forms) ---------------------------------------------------------------
async function loadPipelines() {
  let names = [];
  try {
    names = (await api("/v1/pipelines")).pipelines;
  } catch (err) {
    if (err.status !== 401) notice(`pipelines: ${err.message}`, "error");
    return;
  }
  for (const select of document.querySelectorAll("select.pipelines")) {
    const chosen = select.value;
    const groups = new Map();
    // the first ready pipeline that runs a model is the default (what a form reset returns to)
    const preferred = names.find((p) => p.ready && p.models.length) || names.find((p) => p.ready);
    for (const p of names) {
      if (!groups.has(p.source)) groups.set(p.source, el("optgroup", { label: p.source }));
      const label = p.ready ? p.name : `${p.name} (not ready)`;
      const option = el("option", { value: p.name, title: p.description || p.error || "" }, label);
      option.defaultSelected = p === preferred;
      groups.get(p.source).append(option);
    }
    select.replaceChildren(...groups.values());
    if (chosen) select.value = chosen;
  }
}

// -- jobs ----------------------------------------------------------------------------------
function jobProgress(job) {
  const p = job.progress || {};
  const total = p.frames_total;
  const done = p.frames_done || 0;
  if (job.state === "succeeded") return [1, total ? `${fmt(done, 0)} / ${fmt(total, 0)} frames, 100%` : "100%"];
  if (!total) return [null, `${fmt(done, 0)} frames`];
  const fraction = done / total;
  return [fraction, `${fmt(done, 0)} / ${fmt(total, 0)} frames, ${(fraction * 100).toFixed(0)}%`];
}

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

async function removeJob(job) {
  const verb = FINISHED.has(job.state) ? "Delete" : "Cancel";
  if (!window.confirm(`${verb} job ${job.id}?`)) return;
  try {
    await api(`/v1/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    notice(`${verb === "Delete" ? "Deleted" : "Cancelled"} job ${job.id}`);
  } catch (err) {
    notice(err.message, "error");
  }
}

async function refreshJobs() {
  const { jobs } = await api("/v1/jobs");
  jobs.sort((a, b) => String(b.created).localeCompare(String(a.created)));
  const rows = jobs.map((job) => {
    const [fraction, label] = jobProgress(job);
    const p = job.progress || {};
    const running = job.state === "running";
    return el("tr", { "data-job": job.id, "data-state": job.state },
      el("td", { class: "name" }, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, title: job.id }, shortId(job.id))),
      el("td", {}, job.pipeline),
      el("td", { class: "clip", title: job.input }, job.input),
      el("td", {}, badge(job.state), job.error ? el("div", { class: "error small clip", title: job.error }, job.error) : null),
      el("td", { class: "wide" }, progressBar(fraction, label)),
      el("td", { class: "num" }, running ? fmt(p.fps, 1) : "–"),
      el("td", { class: "num" }, running ? duration(p.eta_s) : "–"),
      el("td", {}, since(job.created)),
      el("td", {}, el("button", { type: "button", class: "small danger", onclick: () => removeJob(job) },
        FINISHED.has(job.state) ? "Delete" : "Cancel")),
    );
  });
  $("#jobs-table tbody").replaceChildren(...rows);
  $("#jobs-empty").hidden = rows.length > 0;
}

function formError(form, text) {
  const box = form.querySelector("[data-error]");
  box.textContent = text || "";
  box.hidden = !text;
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  formError(form, "");
  const upload = form.input_kind.value === "upload";
  const fields = { pipeline: form.pipeline.value };
  if (form.sample.value.trim()) fields.sample = form.sample.value.trim();
  let job;
  try {
    if (upload) {
      const file = form.file.files[0];
      if (!file) throw new Error("choose a video file to upload");
      const data = new FormData();
      // the fields go first: the server checks them before it receives the video
      for (const [name, value] of Object.entries(fields)) data.append(name, value);
      data.append("video_out", form.video_out.checked ? "true" : "false");
      data.append("file", file, file.name);
      job = await api("/v1/jobs", { method: "POST", body: data });
    } else {
      if (!form.input.value.trim()) throw new Error("enter a path in the media root");
      job = await postJson("/v1/jobs", { ...fields, input: form.input.value.trim(), video_out: form.video_out.checked });
    }
  } catch (err) {
    formError(form, err.message);
    return;
  }
  notice(`Submitted job ${job.id}`);
  form.reset();
  toggleInputKind();
  refreshJobs().catch(() => null);
}

function toggleInputKind() {
  const form = $("#job-form");
  const kind = form.input_kind.value;
  for (const label of form.querySelectorAll("[data-input]")) label.hidden = label.dataset.input !== kind;
}

// -- one job ---------------------------------------------------------------------------------
let shownJob = null;

function summaryView(summary) {
  const box = el("div");
  const facts = el("dl", { class: "facts" });
  for (const [name, value] of Object.entries(summary)) {
    if (value === null || typeof value === "object") continue;
    facts.append(el("dt", {}, name), el("dd", {}, typeof value === "number" ? fmt(value, 3) : value));
  }
  if (facts.childElementCount) box.append(facts);
  box.append(el("details", {}, el("summary", {}, "Full summary (JSON)"),
    el("pre", { class: "json" }, JSON.stringify(summary, null, 2))));
  return box;
}

async function refreshJob(id) {
  const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  shownJob = job;
  $("#job-id").textContent = job.id;
  const p = job.progress || {};
  const facts = [
    ["State", badge(job.state)], ["Pipeline", job.pipeline], ["Input", job.input],
    ["Sample", job.sample || "pipeline default"], ["Created", job.created], ["Started", job.started || "–"],
    ["Finished", job.finished || "–"], ["fps", fmt(p.fps, 1)], ["ETA", duration(p.eta_s)],
    ["Attempts", job.attempts], ["Owner", job.owner || "–"],
  ];
  if (job.error) facts.push(["Error", el("span", { class: "error" }, job.error)]);
  $("#job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const [fraction, label] = jobProgress(job);
  setProgress($("#job-progress"), fraction, label);
  const base = `/v1/jobs/${encodeURIComponent(job.id)}`;
  const links = [el("a", { href: `${base}/results?follow=false`, download: `${job.id}.jsonl` }, "Results (JSON lines)")];
  if (job.state === "succeeded") {
    if (job.video_out) links.push(el("a", { href: `${base}/output` }, "Annotated video (MP4)"));
    links.push(el("a", { href: `${base}/summary` }, "Summary (JSON)"));
  }
  $("#job-links").replaceChildren(...links);
  const cancel = $("#job-cancel");
  cancel.textContent = FINISHED.has(job.state) ? "Delete" : "Cancel";
  const target = $("#job-summary");
  if (job.state !== "succeeded") {
    target.replaceChildren(el("p", { class: "muted" },
      FINISHED.has(job.state) ? `No summary: the job ${job.state}.` : "The summary is ready when the job succeeds."));
    return;
  }
  if (target.dataset.job === job.id) return; // a finished job's summary does not change
  const summary = await api(`${base}/summary`);
  target.replaceChildren(summaryView(summary));
  target.dataset.job = job.id;
}

// -- streams ---------------------------------------------------------------------------------
const previews = new Map(); // stream id -> its card (kept across polls: the MJPEG connection stays)

const PREVIEW_RETRY_MS = 10000;

function previewImage(stream, card) {
  const src = `/v1/streams/${encodeURIComponent(stream.id)}/preview.mjpeg`;
  const img = el("img", { src, alt: `Live preview of stream ${stream.id}`, "data-stream": stream.id });
  img.addEventListener("load", () => card.classList.remove("missing"));
  img.addEventListener("error", () => {
    // no preview yet (the stream is connecting, or this server has none): say so, try again
    card.classList.add("missing");
    setTimeout(() => {
      if (previews.get(stream.id) === card) img.replaceWith(previewImage(stream, card));
    }, PREVIEW_RETRY_MS);
  }, { once: true });
  return img;
}

function previewCard(stream) {
  const card = el("figure", { class: "preview" });
  card.append(previewImage(stream, card),
    el("div", { class: "placeholder" }, "No preview available for this stream yet"),
    el("figcaption", {}, el("strong", {}, stream.id), " ", el("span", { class: "muted" }, stream.pipeline)));
  return card;
}

function syncPreviews(streams) {
  const box = $("#previews");
  const live = new Set(streams.map((s) => s.id));
  for (const [id, card] of previews) {
    if (!live.has(id)) {
      card.querySelector("img").removeAttribute("src"); // closes the MJPEG connection
      card.remove();
      previews.delete(id);
    }
  }
  for (const stream of streams) {
    if (!previews.has(stream.id)) {
      const card = previewCard(stream);
      previews.set(stream.id, card);
      box.append(card);
    }
  }
  if (!streams.length) box.replaceChildren(el("p", { class: "empty" }, "Attach a stream to see its annotated frames here."));
  else box.querySelector(":scope > p.empty")?.remove();
}

async function detach(stream) {
  try {
    await api(`/v1/streams/${encodeURIComponent(stream.id)}`, { method: "DELETE" });
    notice(`Detached stream ${stream.id}`);
    await refreshStreams();
  } catch (err) {
    notice(err.message, "error");
  }
}

function dropped(counts) {
  const total = Object.values(counts || {}).reduce((a, b) => a + b, 0);
  const detail = Object.entries(counts || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  return el("span", { title: detail || "none" }, fmt(total, 0));
}

async function refreshStreams() {
  const { streams } = await api("/v1/streams");
  streams.sort((a, b) => String(a.started).localeCompare(String(b.started)));
  const rows = streams.map((s) => el("tr", { "data-stream": s.id, "data-state": s.state },
    el("td", { class: "name" }, s.id),
    el("td", { class: "clip", title: s.source }, s.source),
    el("td", {}, s.pipeline),
    el("td", {}, badge(s.state), s.last_error ? el("div", { class: "error small clip", title: s.last_error }, s.last_error) : null),
    el("td", { class: "num" }, fmt(s.fps_in, 1)),
    el("td", { class: "num" }, fmt(s.fps_out, 1)),
    el("td", { class: "num" }, `${fmt(s.lag_ms && s.lag_ms.p50, 0)} / ${fmt(s.lag_ms && s.lag_ms.p99, 0)}`),
    el("td", { class: "num" }, dropped(s.dropped)),
    el("td", { class: "num" }, fmt(s.reconnects, 0)),
    el("td", {}, el("button", { type: "button", class: "small danger", onclick: () => detach(s) }, "Detach")),
  ));
  $("#streams-table tbody").replaceChildren(...rows);
  $("#streams-empty").hidden = rows.length > 0;
  syncPreviews(streams);
}

async function attachStream(event) {
  event.preventDefault();
  const form = event.target;
  formError(form, "");
  const spec = { source: form.source.value.trim(), pipeline: form.pipeline.value, loop: form.loop.checked };
  if (form.sample.value.trim()) spec.sample = form.sample.value.trim();
  if (form.max_fps.value) spec.max_fps = Number(form.max_fps.value);
  try {
    const stream = await postJson("/v1/streams", spec);
    notice(`Attached stream ${stream.id}`);
    form.reset();
    await refreshStreams();
  } catch (err) {
    formError(form, err.message);
  }
}

async function afterLogin() {
  api("/v2").then((meta) => { $("#server-version").textContent = `frameserve ${meta.version}`; }).catch(() => null);
  await loadPipelines();
}

// -- start -----------------------------------------------------------------------------------
async function start() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#job-form").addEventListener("submit", submitJob);
  $("#stream-form").addEventListener("submit", attachStream);
  for (const radio of document.querySelectorAll("#job-form [name=input_kind]")) radio.addEventListener("change", toggleInputKind);
  $("#job-cancel").addEventListener("click", () => shownJob && removeJob(shownJob));
  window.addEventListener("hashchange", route);
  try {
    session = await api("/v1/session");
  } catch (err) {
    notice(`session: ${err.message}`, "error");
  }
  showWho();
  if (!session.keys_required || session.authenticated) afterLogin();
  route();
}

start();
