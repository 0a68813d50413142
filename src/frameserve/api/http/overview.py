"""What a dashboard (or any client) needs beyond Triton's APIs: recent model activity and the
pipeline names jobs and streams accept.

``GET /v1/models/activity[?model=NAME]``: the server's ``ActivityRecorder`` rings, one list
of samples per loaded model version (inferences, executions, requests, inferences a second,
average queue and compute milliseconds per interval) over the last minutes.
``GET /v1/pipelines``: the built-in pipelines and the repository's pipeline and model folders a
job or stream may name, with the models each runs and whether they are all ready.

Handlers run on the server's loop; reading the repository's folders runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from frameserve.errors import InvalidInput
from frameserve.serving.repository import check_model_name
from frameserve.serving.server import InferenceServer

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(content: object) -> Response:
    headers = {"Cache-Control": "no-store"}
    return Response(orjson.dumps(content), headers=headers, media_type="application/json")


class OverviewRoutes:
    """``/v1/models/activity`` and ``/v1/pipelines`` over one server."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def activity(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"model"})
        if unknown:
            raise InvalidInput(f"query: expected only 'model', got {unknown}")
        model = request.query_params.get("model")
        if model is not None:
            check_model_name(model)
        return _json(self.server.activity.to_json(model))

    async def pipelines(self, request: Request) -> Response:
        # imported on first use, as video.py imports the video layer
        from frameserve.video.pipeline_names import named_pipelines

        found = await asyncio.to_thread(named_pipelines, self.server.settings.repository)
        ready = self.server.model_ready
        return _json({"pipelines": [p.to_json(all(ready(m) for m in p.models)) for p in found]})

    def routes(self) -> list[tuple[str, Endpoint, str]]:
        """(path, endpoint, method) rows; the app wraps them with its error mapping."""
        return [
            ("/v1/models/activity", self.activity, "GET"),
            ("/v1/pipelines", self.pipelines, "GET"),
        ]
