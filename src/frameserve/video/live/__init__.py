"""Live streams: network or media-root sources run through a video pipeline as they play.

``LiveStreams`` (the registry the API layer calls) attaches a ``StreamSpec`` as a
``LiveStream``: a worker process (open, decode, sample, pre-process; ``video.live.worker``), a
reader thread (the worker's frames to the models), a sink thread
(results in order, tracking, records) and subscribers on the server's loop
(``Subscription``: ``async for record in sub``). Frames of every stream batch together in the
models' schedulers, where each stream keeps at most ``max_inflight`` queued frames and stale
ones are dropped, so a slow model or client never makes a stream fall behind the source.
"""

from frameserve.video.live.spec import LiveSettings, LiveSource, StreamSpec
from frameserve.video.live.stream import LiveStream
from frameserve.video.live.streams import LiveStreams
from frameserve.video.live.subscribe import Subscription

__all__ = [
    "LiveSettings",
    "LiveSource",
    "LiveStream",
    "LiveStreams",
    "StreamSpec",
    "Subscription",
]
