"""The OpenAPI description against the routes the server really has, and a real server.

Four checks: the document is OpenAPI 3.1 in structure (required keys, every ``$ref`` resolves,
path parameters declared); every route the app registers is documented (its Starlette routes,
which the infer fast path shares); every documented operation is answered by a real server
with a status the document lists and a JSON body that matches the schema given for it; every
example validates against its schema and is accepted. The server runs ``api_repository``'s
``matmul`` and the zoo's ``faces`` (for image prediction, jobs and streams) in explicit model
control, so load and unload answer too. ``jsonschema`` is not a dependency, so ``_check``
below validates the subset of JSON Schema the description uses; it refuses keywords it does
not know, so the subset cannot grow unnoticed. Finally ``/docs`` and its assets are served from
the package and load nothing from another origin.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import skimage.data
from PIL import Image
from video.media import make_clip

from frameserve.api.app import VideoServiceSettings, _Video
from frameserve.api.http.app import _INFER_PATH, create_http_app
from frameserve.api.http.reference import ASSET_CACHE_CONTROL, ASSETS, load_description
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.serving.server import InferenceServer, ServerSettings

from repos import api_repository
from servers import RunningServer, ServerLauncher

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SHM_KEY = "/frameserve-openapi-example"  # the register example's key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from frameserve.zoo import default_cache_dir, pull

    folder = tmp_path_factory.mktemp("openapi")
    repo = api_repository(folder / "models")
    pull(["faces"], repo, cache_dir=default_cache_dir())
    (folder / "media").mkdir()
    make_clip(folder / "media" / "clip.mp4", frames=24, size=(320, 240), audio=False)
    shm = Path("/dev/shm") / SHM_KEY.lstrip("/")
    shm.write_bytes(bytes(256))
    launcher = ServerLauncher(folder)
    running = launcher.start(
        repo,
        *("--model-control-mode", "explicit", "--load-model", "matmul", "--load-model", "faces"),
        *("--media-root", str(folder / "media"), "--state-dir", str(folder / "state")),
    )
    try:
        yield running
        assert running.terminate() == 0, running.log()
    finally:
        launcher.stop_all()
        shm.unlink()


@pytest.fixture(scope="module")
def doc(server: RunningServer) -> dict[str, Any]:
    status, body = server.get("/openapi.json")
    assert status == 200
    return dict(json.loads(body))


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"$ref {ref!r}: expected a reference inside the document"
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"$ref {ref!r} does not resolve"
        node = node[part]
    return node


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _resolve(doc, node["$ref"])
    return node


# -- a JSON Schema subset validator -----------------------------------------------------------

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_ANNOTATIONS = {"description", "default", "format", "example", "examples", "title", "summary"}
_ANNOTATIONS |= {"contentMediaType", "contentEncoding"}


def _check(doc: dict[str, Any], schema: Any, value: Any, where: str = "$") -> list[str]:
    """What is wrong with ``value`` for ``schema`` (empty when it is valid)."""
    schema = _deref(doc, schema)
    errors: list[str] = []
    for key, rule in schema.items():
        if key == "type":
            types = rule if isinstance(rule, list) else [rule]
            if not any(_TYPES[t](value) for t in types):
                return [f"{where}: expected {types}, got {value!r:.80}"]
        elif key == "enum" and value not in rule or key == "const" and value != rule:
            errors.append(f"{where}: expected {key} {rule!r}, got {value!r:.80}")
        elif key in ("minimum", "exclusiveMinimum", "maximum") and _TYPES["number"](value):
            ok = {"minimum": value >= rule, "exclusiveMinimum": value > rule}.get(
                key, value <= rule
            )
            if not ok:
                errors.append(f"{where}: expected {key} {rule}, got {value}")
        elif key in ("minLength", "maxLength", "minItems", "maxItems"):
            if isinstance(value, str | list) and not (
                len(value) >= rule if key.startswith("min") else len(value) <= rule
            ):
                errors.append(f"{where}: expected {key} {rule}, got length {len(value)}")
        elif key == "pattern" and isinstance(value, str) and not re.search(rule, value):
            errors.append(f"{where}: expected to match {rule!r}, got {value!r}")
        elif key in ("properties", "required", "additionalProperties") and isinstance(value, dict):
            errors += _check_object(doc, schema, key, value, where)
        elif key == "items" and isinstance(value, list):
            for i, item in enumerate(value):
                errors += _check(doc, rule, item, f"{where}[{i}]")
        elif key == "allOf":
            errors += [e for sub in rule for e in _check(doc, sub, value, where)]
        elif key in ("anyOf", "oneOf"):
            passed = sum(not _check(doc, sub, value, where) for sub in rule)
            if passed == 0 or key == "oneOf" and passed > 1:
                errors.append(f"{where}: expected {key} to match, {passed} of {len(rule)} did")
        else:
            assert key in _ANNOTATIONS or key in _TYPES or key in _KNOWN, f"unknown keyword {key}"
    return errors


_KNOWN = {"enum", "const", "minimum", "exclusiveMinimum", "maximum", "minLength", "maxLength"}
_KNOWN |= {"minItems", "maxItems", "pattern", "properties", "required", "additionalProperties"}
_KNOWN |= {"items"}


def _check_object(
    doc: dict[str, Any], schema: dict[str, Any], key: str, value: dict[str, Any], where: str
) -> list[str]:
    props = schema.get("properties", {})
    if key == "required":
        return [f"{where}: missing {k!r}" for k in schema["required"] if k not in value]
    if key == "properties":
        return [
            e
            for k, s in props.items()
            if k in value
            for e in _check(doc, s, value[k], f"{where}.{k}")
        ]
    extra = schema["additionalProperties"]
    if extra is False:
        return [f"{where}: unexpected {k!r}" for k in value if k not in props]
    return [
        e for k in value if k not in props for e in _check(doc, extra, value[k], f"{where}.{k}")
    ]


# -- the description itself ---------------------------------------------------------------------


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _schemas(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every schema object of the document, nested ones included."""
    stack = [n["schema"] for n in _walk(doc) if isinstance(n, dict) and "schema" in n]
    stack += list(doc["components"]["schemas"].values())
    while stack:
        schema = stack.pop()
        yield schema
        stack += list(schema.get("properties", {}).values())
        stack += schema.get("allOf", []) + schema.get("anyOf", []) + schema.get("oneOf", [])
        stack += [
            schema[k] for k in ("items", "additionalProperties") if isinstance(schema.get(k), dict)
        ]


def test_the_description_is_openapi_31(server: RunningServer, doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert {"title", "version"} <= set(doc["info"])
    assert doc["info"]["version"] == json.loads(server.get("/v2")[1])["version"]
    assert doc["servers"] == [{"url": f"http://{server.http_url}"}]
    assert doc == {**load_description(), "info": doc["info"], "servers": doc["servers"]}
    # The page renders the description: it links nowhere outside this server either.
    assert not re.search(r"https?://", json.dumps({**doc, "servers": []}))
    refs = [n["$ref"] for n in _walk(doc) if isinstance(n, dict) and "$ref" in n]
    assert len(refs) > 50
    for ref in refs:
        _resolve(doc, ref)
    keywords = _ANNOTATIONS | set(_KNOWN) | {"$ref", "type", "allOf", "anyOf", "oneOf"}
    for schema in _schemas(doc):  # a stray key is often a YAML flow mapping split at a comma
        assert set(schema) <= keywords, f"schema {schema}: unknown keys {set(schema) - keywords}"
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids)), "operationId values must be unique"
    for path, method, op in _operations(doc):
        assert op["responses"], f"{method} {path}: no responses"
        params = [_deref(doc, p) for p in op.get("parameters", [])]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), f"{method} {path}: path parameters"
        assert all(p["required"] for p in params if p["in"] == "path")


def test_the_description_has_no_duplicate_keys() -> None:
    """YAML keeps the last of two equal keys silently: a second "403" under one operation (easy
    to make when two changes add responses) would hide the first."""
    import yaml

    import frameserve.api.http as http_package

    node = yaml.compose((Path(http_package.__file__).parent / "openapi.yaml").read_text())
    stack, duplicates = [(node, "")], []
    while stack:
        current, where = stack.pop()
        if isinstance(current, yaml.MappingNode):
            keys = [k.value for k, _ in current.value if isinstance(k, yaml.ScalarNode)]
            duplicates += [f"{where}: {k}" for k in set(keys) if keys.count(k) > 1 and k != "<<"]
            stack += [(v, f"{where}/{getattr(k, 'value', '?')}") for k, v in current.value]
        elif isinstance(current, yaml.SequenceNode):
            stack += [(v, where) for v in current.value]
    assert duplicates == []


def test_every_registered_route_is_documented(tmp_path: Path) -> None:
    """The routes of the app as ``serve`` builds it (video included), not of a list kept here."""
    server = InferenceServer(ServerSettings(repository=tmp_path / "models"))
    loop = asyncio.new_event_loop()
    try:
        settings = VideoServiceSettings(media_root=tmp_path / "media", state_dir=tmp_path / "s")
        video = _Video(server, settings, loop)
        app = create_http_app(server, SharedMemoryRegistry(), video.routes)
    finally:
        loop.close()
    doc = load_description()
    registered = {
        (route.path, method.lower())
        for route in app.router.routes
        for method in getattr(route, "methods", ()) - {"HEAD"}
    }
    documented = {(path, method) for path, method, _ in _operations(doc)}
    assert registered - documented == set(), "routes missing from openapi.yaml"
    assert documented - registered == set(), "documented operations the app does not have"
    # The fast path answers the documented infer paths (and only them) before the router.
    fast = {p for p, _ in documented if _INFER_PATH.fullmatch(re.sub(r"{\w+}", "1", p))}
    assert fast == {"/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"}


# -- a real server answers every operation -------------------------------------------------------


def _example_body(op: dict[str, Any]) -> Any:
    content = op.get("requestBody", {}).get("content", {})
    for media in content.values():
        for example in media.get("examples", {}).values():
            return example["value"]
    return None


def _url(server: RunningServer, doc: dict[str, Any], path: str, op: dict[str, Any]) -> str:
    for param in op.get("parameters", []):
        param = _deref(doc, param)
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", param["example"])
    return f"http://{server.http_url}{path}"


@pytest.fixture(scope="module")
def exchanges(
    server: RunningServer, doc: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any], requests.Response]]:
    """Each documented operation sent once, in document order, with its example body if any."""
    out = []
    created: list[str] = []
    try:
        for path, method, op in _operations(doc):
            body = _example_body(op)
            url = _url(server, doc, path, op)
            response = requests.request(method, url, json=body, timeout=60)
            out.append((path, method, op, response))
            if response.status_code == 201:  # the new job or stream, as GET shows it
                location = response.headers["Location"]
                created.append(location)
                item = f"{path}/{{{path.rsplit('/', 1)[1][:-1]}}}"
                shown = requests.get(f"http://{server.http_url}{location}", timeout=60)
                out.append((item, "get", doc["paths"][item]["get"], shown))
            if path.endswith("/unload") and response.status_code == 200:
                requests.post(url.replace("/unload", "/load"), timeout=60).raise_for_status()
    finally:
        for location in created:
            requests.delete(f"http://{server.http_url}{location}", timeout=60)
    return out


def test_every_documented_operation_is_answered(
    doc: dict[str, Any], exchanges: list[tuple[str, str, dict[str, Any], requests.Response]]
) -> None:
    for path, method, op, response in exchanges:
        what = f"{method.upper()} {path} -> {response.status_code} {response.text[:200]}"
        assert response.status_code != 405, what
        # Starlette's own answer for an unknown path; a handler's 404 names what it looked for.
        starlette_404 = response.status_code == 404 and response.json()["error"] == "Not Found"
        assert not starlette_404, what
        documented = op["responses"].get(str(response.status_code))
        assert documented is not None, f"{what}: status not documented"
        media = response.headers.get("content-type", "").split(";")[0]
        content = _deref(doc, documented).get("content", {})
        if response.content:
            assert media in content or media.split("/")[0] + "/*" in content, what
        if media == "application/json" and "schema" in content.get(media, {}):
            assert _check(doc, content[media]["schema"], response.json()) == [], what


def test_every_example_is_valid_and_accepted(
    doc: dict[str, Any], exchanges: list[tuple[str, str, dict[str, Any], requests.Response]]
) -> None:
    examples = 0
    for node in itertools.chain(_walk(doc["paths"]), _walk(doc["components"])):
        if isinstance(node, dict) and "schema" in node and "examples" in node:
            for name, example in node["examples"].items():
                assert _check(doc, node["schema"], example["value"]) == [], name
                examples += 1
        if isinstance(node, dict) and "schema" in node and "example" in node:
            assert _check(doc, node["schema"], node["example"]) == [], node
    assert examples >= 8
    # Body examples are accepted, and so are the model and version examples of the paths.
    for path, method, op, response in exchanges:
        if _example_body(op) is not None or path.startswith("/v2/models/"):
            what = f"{method.upper()} {path} -> {response.status_code} {response.text[:300]}"
            assert 200 <= response.status_code < 300, what


def test_binary_infer_answers_as_documented(server: RunningServer, doc: dict[str, Any]) -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = requests.post(
        f"http://{server.http_url}/v2/models/matmul/infer",
        data=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    n = int(response.headers["Inference-Header-Content-Length"])
    schema = doc["paths"]["/v2/models/{model}/infer"]["post"]["responses"]["200"]
    json_schema = schema["content"]["application/json"]["schema"]
    assert _check(doc, json_schema, json.loads(response.content[:n])) == []
    assert len(response.content) - n == 64 * 4


def test_predict_and_live_events_answer_as_documented(
    server: RunningServer, doc: dict[str, Any]
) -> None:
    png = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(png, "PNG")
    op = doc["paths"]["/v1/models/{model}/predict"]["post"]
    response = requests.post(
        _url(server, doc, "/v1/models/{model}/predict", op) + "?max_results=3",
        data=png.getvalue(),
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "infer;dur=" in response.headers["Server-Timing"]
    result = response.json()
    assert result["detections"], result
    assert _check(doc, {"$ref": "#/components/schemas/TaskResult"}, result) == []

    op = doc["paths"]["/v1/streams"]["post"]
    stream = requests.post(
        f"http://{server.http_url}/v1/streams", json=_example_body(op), timeout=60
    )
    assert stream.status_code == 201, stream.text
    events = f"http://{server.http_url}{stream.headers['Location']}/events"
    try:
        with requests.get(events, stream=True, timeout=120) as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            lines = sse.iter_lines(decode_unicode=True)
            data = next(line for line in lines if line.startswith("data: "))
        record = json.loads(data.removeprefix("data: "))
        assert _check(doc, {"$ref": "#/components/schemas/FrameRecord"}, record) == []
    finally:
        requests.delete(f"http://{server.http_url}{stream.headers['Location']}", timeout=60)


# -- the rendered page ----------------------------------------------------------------------------


def test_docs_page_and_assets_load_nothing_from_outside(server: RunningServer) -> None:
    base = f"http://{server.http_url}"
    page = requests.get(f"{base}/docs", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?:|//", page.text.replace("<!doctype html>", ""))
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(links) == sorted(f"/docs/static/{name}" for name in ASSETS)
    for link in links:
        asset = requests.get(base + link, timeout=30)
        assert asset.status_code == 200, link
        assert asset.headers["content-type"] == ASSETS[link.rsplit("/", 1)[1]]
        assert asset.headers["cache-control"] == ASSET_CACHE_CONTROL
        etag = {"If-None-Match": asset.headers["etag"]}
        again = requests.get(base + link, headers=etag, timeout=30)
        assert again.status_code == 304 and not again.content
    init = requests.get(f"{base}/docs/static/docs.js", timeout=30).text
    assert 'url: "/openapi.json"' in init and "validatorUrl: null" in init
    assert not re.search(r"https?:", init)
    css = requests.get(f"{base}/docs/static/swagger-ui.css", timeout=30).text
    urls = re.findall(r"url\(\s*['\"]?([^'\")]*)", css)
    assert urls and all(u.startswith("data:") for u in urls), [u[:40] for u in urls]
    assert requests.get(f"{base}/docs/static/LICENSE", timeout=30).status_code == 404
