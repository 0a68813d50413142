"""The dashboard in a real browser against a real ``frameserve serve --api-key-file``, and the
session cookie and the dashboard's APIs through plain HTTP against the same server.

The browser is Debian's ``chromium`` driven by Playwright (its own browser download is not
reachable here); the tests are skipped, saying so, only where ``/usr/bin/chromium`` is missing.
The page is used as an operator would: log in through the form, see the models, submit a job
by uploading a clip (made from a real photograph) and watch it reach 100%, attach a stream,
see its preview image, detach it, log out. Screenshots go to ``$FRAMESERVE_TEST_ARTIFACTS``
(or the test's temporary folder); the folder is printed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from video.media import make_clip

from frameserve.api.sessions import COOKIE

from servers import RunningServer, ServerLauncher

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ALICE = "alice-secret-0123456789"
ROOT = "root-secret-abcdefghijklmn"
WAIT_MS = 60_000


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` from here (Playwright's ``wait_for_function`` compiles its predicate in
    the page, which the dashboard's Content-Security-Policy refuses: no eval)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def key_file(folder: Path) -> Path:
    path = folder / "keys.txt"
    path.write_text(f"alice:{ALICE}\nroot:{ROOT}:admin\n")
    return path


@pytest.fixture(scope="module")
def server(folder: Path, key_file: Path) -> Iterator[RunningServer]:
    from frameserve.zoo import default_cache_dir, pull

    repo = folder / "models"
    pull(["faces"], repo, cache_dir=default_cache_dir())
    media = folder / "media"
    media.mkdir()
    make_clip(media / "live.mp4", frames=48, size=(320, 240), fps=12, audio=False)
    make_clip(folder / "upload.mp4", frames=24, size=(320, 240), audio=False)
    launcher = ServerLauncher(folder)
    running = launcher.start(
        repo, "--model-control-mode", "explicit", "--load-model", "faces",
        "--media-root", str(media), "--state-dir", str(folder / "state"),
        "--api-key-file", str(key_file),
    )  # fmt: skip
    try:
        yield running
        assert running.terminate() == 0, running.log()
        assert ALICE not in running.log()
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def artifacts(folder: Path) -> Path:
    where = os.environ.get("FRAMESERVE_TEST_ARTIFACTS")
    out = Path(where) / "dashboard" if where else folder / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {out}")  # noqa: T201 - where to look
    return out


@pytest.fixture(scope="module")
def browser_page(server: RunningServer, folder: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(folder / "chromium-profile"),  # a fresh user data dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            yield page
            assert errors == [], errors  # no script error on any view
        finally:
            context.close()


def _preview_served(server: RunningServer, stream_id: str) -> bool:
    """Whether the server has the preview route: the router's own 404 ("Not Found") says it
    has not; a handler's answer (a frame, or an error naming the stream) says it has."""
    url = f"http://{server.http_url}/v1/streams/{stream_id}/preview.jpg"
    answer = requests.get(url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30)
    return not (answer.status_code == 404 and answer.json().get("error") == "Not Found")


def test_an_operator_logs_in_runs_a_job_and_watches_a_stream(
    server: RunningServer, browser_page: Any, folder: Path, artifacts: Path
) -> None:
    page = browser_page
    base = f"http://{server.http_url}"
    page.goto(f"{base}/ui")
    page.wait_for_selector("#login-form")
    page.screenshot(path=str(artifacts / "01-login.png"))
    page.fill("#login-key", "not-the-key-0123456789")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not a valid API key" in page.text_content("#login-error")
    page.fill("#login-key", ALICE)
    page.click("#login-form button[type=submit]")

    # models: the repository's model, ready, from the same APIs a client uses
    page.wait_for_selector("#models-table tr[data-model=faces]")
    assert "ready" in page.text_content("#models-table tr[data-model=faces]").lower()
    assert page.text_content("#who-name") == "key: alice"
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    page.screenshot(path=str(artifacts / "02-models.png"))

    # jobs: upload a clip through the form and watch it run to 100%
    page.click("#nav a[data-view=jobs]")
    page.wait_for_selector("#job-form select[name=pipeline] option[value=faces]", state="attached")
    page.select_option("#job-form select[name=pipeline]", "faces")
    page.set_input_files("#job-form input[name=file]", str(folder / "upload.mp4"))
    page.click("#job-form button[type=submit]")
    row = page.wait_for_selector("#jobs-table tr[data-state=succeeded]")
    assert "100%" in row.text_content()
    page.screenshot(path=str(artifacts / "03-jobs.png"))
    row.query_selector("a").click()
    page.wait_for_selector("#job-summary details")
    assert "succeeded" in page.text_content("#job-facts")
    links = page.eval_on_selector_all("#job-links a", "els => els.map(a => a.pathname)")
    assert any(link.endswith("/results") for link in links)
    page.screenshot(path=str(artifacts / "04-job.png"), full_page=True)

    # streams: attach a looped media-root clip through the form; it is listed with a preview
    page.click("#nav a[data-view=streams]")
    page.fill("#stream-form input[name=source]", "live.mp4")
    page.select_option("#stream-form select[name=pipeline]", "faces")
    page.check("#stream-form input[name=loop]")
    page.click("#stream-form button[type=submit]")
    row = page.wait_for_selector("#streams-table tr[data-state=running]")
    stream_id = row.get_attribute("data-stream")
    image = page.wait_for_selector(f"#previews img[data-stream='{stream_id}']", state="attached")
    assert image.get_attribute("src") == f"/v1/streams/{stream_id}/preview.mjpeg"
    fps_in = f"#streams-table tr[data-stream='{stream_id}'] td.num"
    wait_for(lambda: page.text_content(fps_in) not in ("–", "0"), 60, "the stream's fps")
    page.screenshot(path=str(artifacts / "05-streams.png"))
    if _preview_served(server, stream_id):  # the image changes as the annotated clip plays
        wait_for(lambda: image.evaluate("img => img.naturalWidth") > 0, 60, "a preview frame")
        first = image.screenshot()
        wait_for(lambda: image.screenshot() != first, 30, "the preview to change")
        page.screenshot(path=str(artifacts / "06-preview.png"))

    # detach through the page: the row and the preview go
    row.query_selector("button").click()
    page.wait_for_selector(f"#streams-table tr[data-stream='{stream_id}']", state="detached")
    page.wait_for_selector(f"#previews img[data-stream='{stream_id}']", state="detached")
    listed = requests.get(
        f"{base}/v1/streams", headers={"Authorization": f"Bearer {ALICE}"}, timeout=30
    ).json()
    assert listed["streams"] == []

    page.click("#logout")
    page.wait_for_selector("#login-form")
    assert not [c for c in page.context.cookies() if c["name"] == COOKIE]


def test_the_preview_image_changes_over_time(server: RunningServer) -> None:
    """Needs the preview route (``GET /v1/streams/{id}/preview.jpg``), built apart."""
    auth = {"Authorization": f"Bearer {ALICE}"}
    base = f"http://{server.http_url}"
    stream = requests.post(
        f"{base}/v1/streams",
        json={"source": "live.mp4", "pipeline": "faces", "loop": True},
        headers=auth,
        timeout=60,
    )
    assert stream.status_code == 201, stream.text
    url = f"{base}{stream.headers['Location']}"
    try:
        if not _preview_served(server, stream.json()["id"]):
            pytest.skip(
                "GET /v1/streams/{id}/preview.jpg answers 404: the preview route is not here"
            )
        frames: list[bytes] = []

        def new_frame() -> bool:
            answer = requests.get(f"{url}/preview.jpg", headers=auth, timeout=30)
            if answer.status_code == 200 and answer.content[:2] == b"\xff\xd8":
                frames.append(answer.content)
            return len(set(frames)) >= 2

        wait_for(new_frame, 60, "two different preview frames")
    finally:
        requests.delete(url, headers=auth, timeout=60)


def test_the_session_cookie_counts_as_the_key_until_the_key_is_removed(
    server: RunningServer, key_file: Path
) -> None:
    """Last in the module: it changes the key file."""
    base = f"http://{server.http_url}"
    session = requests.Session()
    login = session.post(f"{base}/v1/session", json={"key": ALICE}, timeout=30)
    assert login.status_code == 200 and login.json()["key"] == "alice"
    assert session.get(f"{base}/v1/jobs", timeout=30).status_code == 200
    spec = {"source": "live.mp4", "pipeline": "faces", "loop": True}
    attached = session.post(f"{base}/v1/streams", json=spec, timeout=60)  # a POST, by cookie
    assert attached.status_code == 201, attached.text
    assert attached.json()["owner"] == "alice"
    stream_url = f"{base}{attached.headers['Location']}"
    wait_for(lambda: session.get(stream_url, timeout=30).json()["frames_out"] > 0, 60, "frames")
    assert session.delete(stream_url, timeout=60).status_code == 200

    # the activity the server keeps shows the frames the stream ran through faces
    def faces_worked() -> bool:
        activity = session.get(f"{base}/v1/models/activity?model=faces", timeout=30).json()
        return any(s["inferences"] > 0 for m in activity["models"] for s in m["samples"])

    wait_for(faces_worked, 30, "activity samples with inferences")
    names = [p["name"] for p in session.get(f"{base}/v1/pipelines", timeout=30).json()["pipelines"]]
    assert "faces" in names

    key_file.write_text(f"root:{ROOT}:admin\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: session.get(f"{base}/v1/jobs", timeout=30).status_code == 401, 30, "401")
    assert session.get(f"{base}/v1/session", timeout=30).json()["authenticated"] is False
