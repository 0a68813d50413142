"""What a client asks of a live stream (``StreamSpec``), the server's limits (``LiveSettings``),
and where a stream's frames come from (``LiveSource``).

A source is either a URL that FFmpeg opens itself (the schemes in ``NETWORK_SCHEMES``) or a
file named relative to the media root, played at its real rate. Every other scheme (``file:``,
``concat:``, ``pipe:``, ...) would let a client read the server's files or processes, so it is
refused, and network sources are opened with FFmpeg's protocol whitelist set to network
protocols (an HLS playlist or an HTTP redirect cannot lead to ``file:``). Where a network source
may connect is the destination policy's (``video.live.policy``): checked here at attach and again
before every connection.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from frameserve.errors import ConfigError, InvalidInput
from frameserve.video.frames import check_sample
from frameserve.video.live.policy import SourcePolicy, redact
from frameserve.video.live.preview import PreviewSettings
from frameserve.video.media import MediaRoot
from frameserve.video.params import ScriptParams
from frameserve.video.push.spec import PushList

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "tcp", "http", "https", "srt")
# What FFmpeg may open on behalf of a network source (sub-protocols of the schemes above: RTSP
# runs over tcp/udp/rtp, HLS over http(s) with crypto, RTMP over its own and http tunnels).
NETWORK_PROTOCOLS = (
    "tcp,udp,rtp,srtp,tls,http,https,httpproxy,crypto,rtmp,rtmps,rtmpt,rtmpts,ffrtmphttp,srt"
)
FILE_PROTOCOLS = "file"
# Demuxers a network source may use: none that opens further URLs (an HLS or DASH playlist, an
# SDP file, a concat list would each connect where the policy never looked).
NETWORK_FORMATS = (
    "rtsp,flv,live_flv,mpegts,matroska,webm,mov,mp4,mpjpeg,mjpeg,h264,hevc,ivf,nut,avi,mpeg,"
    "ogg,asf,m4v,mxf"
)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


class StreamSpec(BaseModel):
    """A live stream as a client attaches it (``POST /v1/streams``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, Field(min_length=1, max_length=4096)]
    """A URL (rtsp, rtsps, rtmp, udp, tcp, http, https, srt) or a file in the media root."""
    pipeline: Annotated[str, Field(min_length=1, max_length=256)]
    """A video pipeline by name: a built-in, or a pipeline or model folder of the repository."""
    sample: str | None = None
    """Which frames to run (all, every:N, fps:F, keyframes); None: the pipeline's own."""
    max_fps: Annotated[float, Field(gt=0)] | None = None
    """At most this many frames per second, chosen on timestamps like ``fps:F``."""
    max_inflight: Annotated[int, Field(ge=1, le=64)] = 2
    """Frames of this stream that may wait in a model's queue; older ones are dropped."""
    loop: bool = False
    """Media-root files only: play again from the start at the end instead of stopping."""
    params: ScriptParams = None
    """Settings for the pipeline's script models (their ``configure``), a JSON object."""
    push: PushList = ()
    """Webhook and MQTT outputs that receive the stream's records (``video.push``)."""

    @field_validator("sample")
    @classmethod
    def _sample(cls, v: str | None) -> str | None:
        return check_sample(v)

    @field_validator("max_fps")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"max_fps: expected a finite number > 0, got {v!r}")
        return v


@dataclass(frozen=True)
class LiveSettings:
    """The server's limits for live streams (from the CLI), checked once here."""

    media_root: Path
    max_streams: int = 16
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 10.0
    subscriber_queue: int = 256
    decode_threads: int = 1
    policy: SourcePolicy = SourcePolicy()  # where network sources may connect
    max_subscribers: int = 16  # event subscribers of one stream (QueueFull above)
    max_frame_pixels: int | None = 3840 * 2160  # a larger frame stops the stream
    preview: PreviewSettings = PreviewSettings()  # annotated previews (MJPEG, JPEG, HLS)

    def __post_init__(self) -> None:
        for name in ("max_streams", "subscriber_queue", "decode_threads", "max_subscribers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"LiveSettings.{name}: expected an integer >= 1, got {value!r}")
        for name in ("open_timeout_s", "read_timeout_s", "backoff_min_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"LiveSettings.{name}: expected a number > 0, got {value!r}")
        if self.backoff_max_s < self.backoff_min_s:
            raise ConfigError(
                f"LiveSettings.backoff_max_s: expected >= backoff_min_s ({self.backoff_min_s}), "
                f"got {self.backoff_max_s!r}"
            )

    @property
    def stop_timeout_s(self) -> float:
        """How long stopping waits for a stream's threads (they end within a fraction of a
        second; this leaves room for a busy machine)."""
        return max(self.open_timeout_s, self.read_timeout_s) + 1.0


@dataclass(frozen=True)
class LiveSource:
    """Where a stream reads: a network URL, or a file of the media root (``path`` set)."""

    url: str  # what FFmpeg opens
    path: Path | None = None

    @property
    def network(self) -> bool:
        """True for a URL (reconnected when it fails), False for a media-root file."""
        return self.path is None

    @property
    def protocols(self) -> str:
        """FFmpeg's ``protocol_whitelist`` for this source."""
        return NETWORK_PROTOCOLS if self.network else FILE_PROTOCOLS

    def describe(self) -> str:
        """The source for logs and status: a URL without its password."""
        return redact(self.url) if self.network else str(self.path)


def resolve_source(
    source: str, media_root: MediaRoot, loop: bool, policy: SourcePolicy | None = None
) -> LiveSource:
    """Check ``source`` (``StreamSpec.source``) and say how to open it; ``InvalidInput`` names
    the field, what is allowed and what was given. A network source must pass ``policy`` (the
    destination policy; it runs again before every connection, in the worker)."""
    policy = policy if policy is not None else SourcePolicy()
    if any(c.isspace() or ord(c) < 32 for c in source):
        raise InvalidInput(f"source: expected a URL or file name without spaces, got {source!r}")
    m = _SCHEME_RE.match(source)
    if m is None:
        path = media_root.resolve(source, "source")
        return LiveSource(str(path), path)
    scheme = m.group(1).lower()
    if scheme not in NETWORK_SCHEMES:
        raise InvalidInput(
            f"source: expected a URL with scheme {', '.join(NETWORK_SCHEMES)} or a file in the "
            f"media root, got scheme {scheme!r} ({redact(source)!r})"
        )
    try:
        parts = urlsplit(source)
    except ValueError as err:
        raise InvalidInput(f"source: expected a URL, got {redact(source)!r}: {err}") from None
    if not parts.netloc:
        raise InvalidInput(
            f"source: expected {scheme}://host[:port]..., got no host in {redact(source)!r}"
        )
    if loop:
        raise InvalidInput(
            f"loop: only files of the media root can loop, got the {scheme} URL {redact(source)!r}"
        )
    policy.check(source)  # refuses listening, UDP without the flag, forbidden addresses
    return LiveSource(source)
