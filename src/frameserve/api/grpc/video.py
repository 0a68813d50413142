"""frameserve's own gRPC service for live video (``frameserve.v1.VideoStreams``, proto in
``proto/video_streams.proto``), served on the same port as the KServe one.

``Subscribe`` pushes the records of one live stream as they are produced (server streaming),
the gRPC twin of ``GET /v1/streams/{id}/events``; ``ListStreams`` returns the streams' status.
Handlers are coroutines on the server's loop, like the inference service's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import orjson

from frameserve.api.auth import owner_scope
from frameserve.api.grpc.generated import video_streams_pb2 as vpb
from frameserve.api.grpc.generated import video_streams_pb2_grpc as vgrpc
from frameserve.api.status import error_message, grpc_code
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


class VideoStreamsService:
    """Implements ``frameserve.v1.VideoStreams`` over a live-stream registry."""

    def __init__(self, streams: LiveStreams) -> None:
        self._streams = streams

    async def Subscribe(
        self, request: vpb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vpb.StreamEvent]:
        try:
            if not request.stream_id:
                raise InvalidInput("stream_id: expected the id of an attached stream, got ''")
            subscription = self._streams.get(request.stream_id, owner_scope()).subscribe()
        except FrameserveError as err:
            await context.abort(grpc_code(err), error_message(err))
        try:
            async for record in subscription:
                yield _event(request.stream_id, record, subscription.dropped)
        finally:
            subscription.close()

    async def ListStreams(
        self, request: vpb.ListStreamsRequest, context: grpc.aio.ServicerContext
    ) -> vpb.ListStreamsResponse:
        statuses = [s.status().to_json() for s in self._streams.list(owner_scope())]
        return vpb.ListStreamsResponse(stream_json=[orjson.dumps(s) for s in statuses])


def add_video_service(server: grpc.aio.Server, streams: LiveStreams) -> None:
    """Serve ``frameserve.v1.VideoStreams`` on ``server`` (before it starts)."""
    vgrpc.add_VideoStreamsServicer_to_server(VideoStreamsService(streams), server)
