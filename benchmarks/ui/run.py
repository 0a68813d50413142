"""Dashboard load time: how long ``/ui/`` takes to become useful in a real browser.

    .venv/bin/python benchmarks/ui/run.py [--loads 7] [--repository models] [--model faces]
    .venv/bin/python benchmarks/ui/run.py --loads 1 --out /tmp/ui-bench   # a quick check

One ``frameserve serve`` process (``--api-key-file`` with one key, the given model loaded) and
Debian's ``chromium`` driven by Playwright (``/usr/bin/chromium``; Playwright's own browser
download is not reachable here). The page is opened ``--loads`` times in two ways:

- cold: a fresh browser context each time (empty cache; the session cookie set by logging in
  through ``POST /v1/session`` once, outside the timing), so every file is fetched;
- warm: reloads in one context (files revalidated by ETag: 304s).

Per load, from the browser's own clocks (Navigation Timing and a ``performance.mark`` the page
sets when it first fills the models table): DOMContentLoaded, load, and time to the first
models table render, each in ms from the start of the navigation; medians over the loads are
reported. Nothing is asserted; ``results/latest.{json,md}`` (or ``--out``) keep the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py

from common import cpu_model, git_commit, load_benchmark, write_latest  # noqa: E402

live = load_benchmark("live")
Server = live.Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
KEY = "bench-secret-0123456789abcdef"
TIMING_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const mark = performance.getEntriesByName("models-rendered")[0];
  return {dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd,
          models_table_ms: mark ? mark.startTime : null, transfer_bytes: nav.transferSize};
}"""


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def start_server(repository: Path, model: str, work: Path) -> Server:
    """The live benchmark's ``frameserve serve`` with a key file (the page logs in)."""
    keys = work / "keys.txt"
    keys.write_text(f"bench:{KEY}\n")
    (work / "media").mkdir(exist_ok=True)
    return live.Server(repository, work / "media", work, ("--api-key-file", str(keys)), model)


def _session_cookie(server: Server) -> dict[str, Any]:
    answer = requests.post(server.url("/v1/session"), json={"key": KEY}, timeout=30)
    answer.raise_for_status()
    value = answer.cookies["frameserve_session"]
    return {"name": "frameserve_session", "value": value, "url": server.url("/")}


def _load(page: Any, url: str, reload: bool) -> dict[str, Any]:
    if reload:
        page.reload(wait_until="load")
    else:
        page.goto(url, wait_until="load")
    # polled from here: wait_for_function compiles its predicate in the page, which the page's
    # Content-Security-Policy (no eval) refuses; the mark's time is the page's own either way
    deadline = time.monotonic() + 60
    while not page.evaluate("() => performance.getEntriesByName('models-rendered').length"):
        if time.monotonic() > deadline:
            raise TimeoutError("the models table was not rendered within 60 s")
        time.sleep(0.01)
    timing: dict[str, Any] = page.evaluate(TIMING_JS)
    return timing


def measure(server: Server, loads: int, work: Path) -> dict[str, list[dict[str, Any]]]:
    """``loads`` cold and ``loads`` warm page loads; the raw timings of each."""
    from playwright.sync_api import sync_playwright

    url = server.url("/ui/#/models")
    cookie = _session_cookie(server)
    out: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(loads):
                context = browser.new_context()
                context.add_cookies([cookie])
                out["cold"].append(_load(context.new_page(), url, reload=False))
                context.close()
            context = browser.new_context()
            context.add_cookies([cookie])
            page = context.new_page()
            _load(page, url, reload=False)  # fills the cache
            for _ in range(loads):
                out["warm"].append(_load(page, url, reload=True))
            page.screenshot(path=str(work / "models.png"))
            context.close()
        finally:
            browser.close()
    return out


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    keys = ("dom_content_loaded_ms", "load_ms", "models_table_ms")
    table: dict[str, dict[str, float | None]] = {}
    for kind, loads in raw.items():
        table[kind] = {}
        for key in keys:
            values = [t[key] for t in loads if t[key] is not None]
            table[kind][key] = round(statistics.median(values), 1) if values else None
    return table


def render(summary: dict[str, dict[str, float | None]], loads: int, meta: dict[str, Any]) -> str:
    lines = [
        f"# Dashboard load time ({meta['date']}, {meta['cpu']}, commit {meta['commit']})",
        "",
        f"Medians of {loads} loads of `/ui/#/models` in Debian's chromium (headless), "
        f"model `{meta['model']}` loaded; ms from the start of the navigation.",
        "",
        "| cache | DOMContentLoaded | load | first models table |",
        "|---|---:|---:|---:|",
    ]
    for kind, row in summary.items():
        cells = [f"{v:.1f}" if v is not None else "n/a" for v in row.values()]
        lines.append(f"| {kind} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--loads", type=int, default=7, help="page loads per kind (median)")
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="faces", help="the model the server loads")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        say(f"{CHROMIUM} is missing: install Debian's chromium")
        return 2
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        work = Path(tmp)
        server = start_server(args.repository.resolve(), args.model, work)
        try:
            raw = measure(server, args.loads, work)
        finally:
            server.stop()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "models.png").write_bytes((work / "models.png").read_bytes())
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "commit": git_commit(ROOT),
        "model": args.model,
        "loads": args.loads,
    }
    summary = summarise(raw)
    table = render(summary, args.loads, meta)
    write_latest(args.out, {**meta, "summary": summary, "raw": raw}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
