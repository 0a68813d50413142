"""frameserve's own gRPC service for live video (``frameserve.v1.VideoStreams``, proto in
``proto/video_streams.proto``), served on the same port as the KServe one.

``Subscribe`` pushes the records of one live stream as they are produced (server streaming),
the gRPC twin of ``GET /v1/streams/{id}/events``; ``ListStreams`` returns the streams' status.
Handlers are coroutines on the server's loop, like the inference service's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NoReturn

import grpc
import orjson

from frameserve import logcontext
from frameserve.api import requestid
from frameserve.api.auth import owner_scope
from frameserve.api.grpc.generated import video_streams_pb2 as vpb
from frameserve.api.grpc.generated import video_streams_pb2_grpc as vgrpc
from frameserve.api.status import grpc_code, grpc_error_message
from frameserve.errors import FrameserveError, InvalidInput

VIDEO_SERVICE = vpb.DESCRIPTOR.services_by_name["VideoStreams"].full_name

if TYPE_CHECKING:
    from frameserve.video.live import LiveStreams
    from frameserve.video.live.records import LiveRecord

log = logging.getLogger(__name__)


def _event(stream_id: str, record: LiveRecord, missed: int) -> vpb.StreamEvent:
    return vpb.StreamEvent(
        stream_id=stream_id,
        frame=record.frame,
        pts=record.pts,
        record_json=orjson.dumps(record.to_json(), option=orjson.OPT_SERIALIZE_NUMPY),
        missed=missed,
    )


def _set_request_id(context: grpc.aio.ServicerContext) -> None:
    given = requestid.from_metadata(context.invocation_metadata())
    logcontext.request_id.set(given or requestid.new_id())  # the call's own task


async def _abort(context: grpc.aio.ServicerContext, method: str, err: Exception) -> NoReturn:
    """End the call with the error's code; an unexpected error is logged and answered with the
    request id only (gRPC's own answer would show the exception's text)."""
    if not isinstance(err, FrameserveError):
        log.exception("gRPC %s failed unexpectedly", method)
    await context.abort(grpc_code(err), grpc_error_message(err, logcontext.request_id.get()))
    raise AssertionError("context.abort returned")  # it always raises


class VideoStreamsService:
    """Implements ``frameserve.v1.VideoStreams`` over a live-stream registry."""

    def __init__(self, streams: LiveStreams) -> None:
        self._streams = streams

    async def Subscribe(
        self, request: vpb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vpb.StreamEvent]:
        _set_request_id(context)
        try:
            if not request.stream_id:
                raise InvalidInput("stream_id: expected the id of an attached stream, got ''")
            subscription = self._streams.get(request.stream_id, owner_scope()).subscribe()
        except Exception as err:  # noqa: BLE001 - answered by _abort, unexpected ones logged
            await _abort(context, "Subscribe", err)
        try:
            async for record in subscription:
                yield _event(request.stream_id, record, subscription.dropped)
        finally:
            subscription.close()

    async def ListStreams(
        self, request: vpb.ListStreamsRequest, context: grpc.aio.ServicerContext
    ) -> vpb.ListStreamsResponse:
        _set_request_id(context)
        try:
            statuses = [s.status().to_json() for s in self._streams.list(owner_scope())]
        except Exception as err:  # noqa: BLE001 - answered by _abort, unexpected ones logged
            await _abort(context, "ListStreams", err)
        return vpb.ListStreamsResponse(stream_json=[orjson.dumps(s) for s in statuses])


def add_video_service(server: grpc.aio.Server, streams: LiveStreams) -> None:
    """Serve ``frameserve.v1.VideoStreams`` on ``server`` (before it starts)."""
    vgrpc.add_VideoStreamsServicer_to_server(VideoStreamsService(streams), server)
