"""``POST /v1/models/{model}/predict``: an encoded image in, the task's JSON result out.

The body is the image itself (``Content-Type: image/jpeg|png|webp|bmp|tiff``) or a multipart
form with the file in the field ``image``. Query parameters: ``score_threshold`` (0..1) and
``max_results`` (a positive integer). The response carries ``Server-Timing`` with the time of
each step (decode, preprocess, infer, postprocess).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from frameserve.api.http.body import check_content_length, read_body
from frameserve.errors import InvalidInput
from frameserve.processing.tasks import DecodeOptions
from frameserve.serving.server import InferenceServer

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff")
_EXPECTED = f"Content-Type {' | '.join(IMAGE_TYPES)} or multipart/form-data with a field 'image'"


def decode_options(query: Any) -> DecodeOptions:
    """``score_threshold`` and ``max_results`` from the query string, checked."""
    unknown = sorted(set(query.keys()) - {"score_threshold", "max_results"})
    if unknown:
        raise InvalidInput(f"query: expected only score_threshold and max_results, got {unknown}")
    threshold = max_results = None
    if "score_threshold" in query:
        raw = query["score_threshold"]
        try:
            threshold = float(raw)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise InvalidInput(f"query.score_threshold: expected a number in 0..1, got {raw!r}")
    if "max_results" in query:
        raw = query["max_results"]
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise InvalidInput(f"query.max_results: expected a positive integer, got {raw!r}")
        max_results = int(raw)
    return DecodeOptions(threshold, max_results)


async def image_from_request(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The encoded image and its declared type, from a raw body or a multipart form."""
    check_content_length(request.headers, limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8, max_part_size=limit) as form:
            part = form.get("image")
            if not isinstance(part, UploadFile):
                raise InvalidInput(
                    f"multipart body: expected a file field 'image', got fields {list(form.keys())}"
                )
            data = await part.read()
            return data, (part.content_type or None)
    if content_type not in IMAGE_TYPES and content_type != "application/octet-stream":
        raise InvalidInput(f"Content-Type: expected {_EXPECTED}, got {content_type or 'none'!r}")
    return await read_body(request.receive, request.headers, limit), content_type


async def predict(server: InferenceServer, request: Request, name: str) -> Response:
    options = decode_options(request.query_params)
    data, content_type = await image_from_request(request, server.limits.max_body_bytes)
    trace = getattr(request.state, "trace", None)  # set by the tracing wrapper when on
    result, timings = await server.predict(name, data, content_type, options, trace)
    response = Response(orjson.dumps(result.to_json()), media_type="application/json")
    response.headers["Server-Timing"] = timings.server_timing()
    return response
