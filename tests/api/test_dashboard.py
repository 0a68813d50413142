"""The dashboard's files and the APIs added for it, in-process through the real HTTP app over a
real ``InferenceServer`` (with a real ONNX model that the test runs, for the activity)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from api.asgi import call
from frameserve.api.access import AccessPolicy
from frameserve.api.auth import AuthSettings, Keys
from frameserve.api.http.app import HttpApp, create_http_app
from frameserve.api.http.dashboard import ASSETS, CACHE_CONTROL, CONTENT_SECURITY_POLICY
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.serving.types import InferRequest, InputTensor

from models import make_model, onnx_file, simple_add_sub

ALICE = "alice-secret-0123456789"


def _app(repo: Path, keys: Keys | None = None) -> tuple[InferenceServer, HttpApp]:
    server = InferenceServer(ServerSettings(repository=repo))
    access = AccessPolicy.for_http(AuthSettings(), keys)
    return server, create_http_app(server, SharedMemoryRegistry(), access=access)


def test_the_page_and_its_files_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"alice:{ALICE}\n")
    _, app = _app(tmp_path / "models", Keys(keys_file))  # open even with keys: the login page
    page = asyncio.run(call(app, "GET", "/ui/"))
    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
    assert page.header("content-security-policy") == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert (
        "unsafe-inline" not in CONTENT_SECURITY_POLICY
        and "unsafe-eval" not in CONTENT_SECURITY_POLICY
    )
    html = page.body.decode()
    # no inline script or style, nothing from another origin
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/ui/app.js">']
    assert "<style" not in html and not re.search(r"<[^>]*\sstyle=", html)
    assert not re.search(r"<[^>]*\son[a-z]+=", html)  # no inline event handlers
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", html)
    links = set(re.findall(r'(?:src|href)="(/ui/[^"]+)"', html))
    assert links == {"/ui/app.js", "/ui/style.css", "/ui/favicon.svg"}
    for name, media_type in ASSETS.items():
        answer = asyncio.run(call(app, "GET", f"/ui/{name}"))
        assert answer.status == 200, name
        assert answer.header("content-type") == media_type
        assert answer.header("content-security-policy") == CONTENT_SECURITY_POLICY
        assert answer.header("x-content-type-options") == "nosniff"
        assert answer.header("cache-control") == CACHE_CONTROL
        assert not re.search(rb"https?://(?!www\.w3\.org/2000/svg)", answer.body), name
        again = asyncio.run(
            call(app, "GET", f"/ui/{name}", headers={"If-None-Match": answer.header("etag")})
        )
        assert again.status == 304 and again.body == b""
    missing = asyncio.run(call(app, "GET", "/ui/secrets.txt"))
    assert missing.status == 404 and "app.js" in missing.json()["error"]
    redirect = asyncio.run(call(app, "GET", "/ui"))
    assert redirect.status in (307, 308) and redirect.header("location").endswith("/ui/")  # type: ignore[union-attr]
    assert asyncio.run(call(app, "GET", "/v1/pipelines")).status == 401  # the APIs are not open


def test_pipelines_lists_the_names_jobs_and_streams_accept(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    make_model(repo, "adder", "onnxruntime", onnx_file(simple_add_sub), {"max_batch_size": 8})
    make_model(repo, "detector", "onnxruntime", None, {"preprocess": {"resize": [64, 64]}})
    (repo / "chain").mkdir()
    (repo / "chain" / "pipeline.yaml").write_text("steps:\n  - model: detector\n")
    (repo / "broken").mkdir()
    (repo / "broken" / "pipeline.yaml").write_text("steps: 3\n")
    server, app = _app(repo)
    answer = asyncio.run(call(app, "GET", "/v1/pipelines"))
    assert answer.status == 200
    found = {p["name"]: p for p in answer.json()["pipelines"]}
    assert found["faces"]["source"] == "built-in" and found["faces"]["models"] == ["faces"]
    assert found["faces"]["ready"] is False  # the faces model is not in this repository
    assert found["enhance"]["ready"] is True  # filters only: nothing to load
    assert found["chain"] == {
        "name": "chain", "source": "repository", "description": "", "models": ["detector"],
        "ready": False, "error": None,
    }  # fmt: skip
    assert found["broken"]["error"] and "steps" in found["broken"]["error"]
    assert found["detector"]["source"] == "model"
    assert "adder" not in found  # no frame processing declared: not usable as a pipeline


def test_activity_shows_what_a_model_did(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    make_model(repo, "adder", "onnxruntime", onnx_file(simple_add_sub), {"max_batch_size": 8})
    server, app = _app(repo)

    async def scenario() -> list[dict[str, object]]:
        await server.start()
        try:
            server.activity.sample()  # the baseline (the loop's task took one at start too)
            x = np.ones((1, 16), np.int32)
            for _ in range(3):
                inputs = [
                    InputTensor("INPUT0", "INT32", x.shape, x),
                    InputTensor("INPUT1", "INT32", x.shape, x),
                ]
                await server.infer(InferRequest(model_name="adder", inputs=inputs))
            server.activity.sample()
            answer = await call(app, "GET", "/v1/models/activity?model=adder")
            assert answer.status == 200
            bad = await call(app, "GET", "/v1/models/activity?models=adder")
            assert bad.status == 400 and "'model'" in bad.json()["error"]
            body = answer.json()
            assert body["interval_s"] == 2.0 and body["window_s"] == 600.0
            return list(body["models"])
        finally:
            await server.drain()

    models = asyncio.run(scenario())
    assert [m["name"] for m in models] == ["adder"]
    assert sum(s["inferences"] for s in models[0]["samples"]) == 3


@pytest.mark.parametrize("path", ["/v1/models/activity", "/v1/pipelines"])
def test_the_new_apis_need_a_key_like_the_others(tmp_path: Path, path: str) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"alice:{ALICE}\n")
    _, app = _app(tmp_path / "models", Keys(keys_file))
    assert asyncio.run(call(app, "GET", path)).status == 401
    ok = asyncio.run(call(app, "GET", path, headers={"Authorization": f"Bearer {ALICE}"}))
    assert ok.status == 200
