"""Test videos written with PyAV from a real photograph: no downloaded media.

``make_clip`` films ``skimage.data.astronaut()`` with a virtual camera that pans (or zooms)
over it, so that every frame is real image content whose geometry is known exactly: the clip
records, per frame, the window of the source image that the frame shows, and the face box of
the astronaut (``ASTRONAUT_FACE``) maps into frame ``i`` as ``(box - origin_i) * scale_i``
(``Clip.face_boxes``). The MP4 keeps the requested time stamps exactly (the time base must have
a denominator of at least 10000, or the MP4 muxer rescales it; see ``make_clip``), keyframes
sit where ``gop`` puts them, and an AAC track covers the same time for audio pass-through tests.

``corrupt_clip`` damages one video packet in place, ``write_not_a_video`` and
``make_audio_only`` make inputs that the video pipeline must refuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
import skimage.data
from PIL import Image

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels, edges at integers

# The astronaut's face in the 512x512 ``skimage.data.astronaut()``, as the zoo ``faces`` model
# (MediaPipe full-range detector) finds it through ``InferenceServer.predict``: box
# [173.65, 67.76, 277.58, 171.69], score 0.91, rounded to whole pixels here. The close-up
# ``faces-near`` model gives [177.6, 82.9, 272.9, 178.2]; both cover brows to chin.
ASTRONAUT_FACE: Box = (174.0, 68.0, 278.0, 172.0)

DEFAULT_TIME_BASE = Fraction(1, 90000)
AUDIO_RATE = 48000
MAX_PAN_STEP = 8  # output pixels per frame: fast enough to see, slow enough to track

Motion = Literal["static", "pan", "zoom"]
NotAVideo = Literal["png", "text", "empty"]


@dataclass(frozen=True)
class Window:
    """The part of the source image a frame shows: origin and size in source pixels.

    ``scale`` is frame pixels per source pixel; a point ``p`` of the source image lands at
    ``(p - (x, y)) * scale`` in the frame (continuous coordinates, pixel edges at integers).
    """

    x: float
    y: float
    width: float
    height: float
    scale: float

    def map_box(self, box: Sequence[float]) -> np.ndarray:
        """A source-image box (x1, y1, x2, y2) in this frame's pixels."""
        origin = np.array([self.x, self.y, self.x, self.y])
        return (np.asarray(box, dtype=np.float64) - origin) * self.scale


@dataclass(frozen=True)
class AudioInfo:
    """The audio stream of a written file, as read back from it."""

    codec: str
    sample_rate: int
    channels: int
    packets: int
    time_base: Fraction


@dataclass(frozen=True)
class Clip:
    """A written test video and the ground truth about it.

    ``time_base``, ``pts`` and ``keyframes`` are read back from the file after writing (and
    checked against what was asked), so tests can compare decoded frames against them exactly.
    ``face`` is ``ASTRONAUT_FACE`` for the default source and None for a caller's image.
    """

    path: Path
    frames: int
    size: tuple[int, int]  # width, height
    codec: str
    fps: Fraction  # nominal rate given to the encoder; the pts are the truth
    time_base: Fraction
    pts: tuple[int, ...]
    windows: tuple[Window, ...]
    keyframes: tuple[int, ...]  # frame indices (presentation order)
    audio: AudioInfo | None
    face: Box | None
    source: np.ndarray = field(repr=False, compare=False)

    @property
    def times(self) -> tuple[Fraction, ...]:
        """Exact presentation time of every frame in seconds."""
        return tuple(p * self.time_base for p in self.pts)

    def face_boxes(self) -> np.ndarray:
        """Where the face is in every frame: (frames, 4) x1, y1, x2, y2 in frame pixels."""
        if self.face is None:
            raise ValueError("face: this clip was made from a caller's source image")
        return np.stack([w.map_box(self.face) for w in self.windows])

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as it was handed to the encoder (RGB, before compression)."""
        return render_window(self.source, self.windows[index], self.size)


def astronaut() -> np.ndarray:
    """The 512x512 RGB source image of the default clip."""
    return np.ascontiguousarray(skimage.data.astronaut())


def render_window(source: np.ndarray, window: Window, size: tuple[int, int]) -> np.ndarray:
    """Sample ``window`` of ``source`` into a ``size`` frame (bicubic, continuous coordinates)."""
    s = window.scale
    # cv2 maps pixel centres (index coordinates); the half-pixel terms make the mapping exact
    # in edge coordinates, which is what boxes use.
    matrix = np.array(
        [[s, 0.0, 0.5 * s - 0.5 - s * window.x], [0.0, s, 0.5 * s - 0.5 - s * window.y]]
    )
    return cv2.warpAffine(
        source, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )


def plan_windows(
    source_size: tuple[int, int], subject: Box, size: tuple[int, int], frames: int, motion: Motion
) -> tuple[Window, ...]:
    """Camera windows that keep ``subject`` (with a quarter of its size around it) in view.

    ``pan``: the camera moves right (the subject left) by a whole number of frame pixels per
    frame, up to ``MAX_PAN_STEP`` (a fraction only when there is less than a pixel per frame of
    room), so consecutive frames are shifted copies. ``zoom``: the scale grows linearly by
    1/0.7 over the clip with the subject's centre fixed in the frame. ``static``: the middle
    of the pan.
    """
    src_w, src_h = source_size
    out_w, out_h = size
    sx1, sy1, sx2, sy2 = subject
    pad_x, pad_y = 0.25 * (sx2 - sx1), 0.25 * (sy2 - sy1)
    keep = (
        max(0.0, sx1 - pad_x),
        max(0.0, sy1 - pad_y),
        min(src_w, sx2 + pad_x),
        min(src_h, sy2 + pad_y),
    )
    # The kept region fills at most 80 % of the frame; the window must lie inside the source.
    scale = max(
        min(0.8 * out_w / (keep[2] - keep[0]), 0.8 * out_h / (keep[3] - keep[1])),
        out_w / src_w,
        out_h / src_h,
    )
    if motion == "zoom":
        scales = [scale * (0.7 + 0.3 * i / max(frames - 1, 1)) for i in range(frames)]
        scales = [max(s, out_w / src_w, out_h / src_h) for s in scales]
        centre = ((sx1 + sx2) / 2, (sy1 + sy2) / 2)
        fx = _anchor(centre[0], out_w / scales[0], src_w)
        fy = _anchor(centre[1], out_h / scales[0], src_h)
        origins = [(centre[0] - fx * out_w / s, centre[1] - fy * out_h / s) for s in scales]
    else:
        win_w, win_h = out_w / scale, out_h / scale
        lo, hi = max(0.0, keep[2] - win_w), min(src_w - win_w, keep[0])
        room = max(0.0, hi - lo) * scale  # frame pixels the camera can travel
        step = 0.0
        if motion == "pan" and frames > 1:
            step = min(float(MAX_PAN_STEP), room / (frames - 1))
            step = math.floor(step) if step >= 1 else step
        start = lo + (room - step * (frames - 1)) / 2 / scale
        y = ((sy1 + sy2) / 2) - _anchor((sy1 + sy2) / 2, win_h, src_h) * win_h
        scales = [scale] * frames
        origins = [(start + i * step / scale, y) for i in range(frames)]
    windows = tuple(
        Window(x=x, y=y, width=out_w / s, height=out_h / s, scale=s)
        for (x, y), s in zip(origins, scales, strict=True)
    )
    for i, w in enumerate(windows):
        x1, y1, x2, y2 = w.map_box(keep)
        inside = x1 > -1e-6 and y1 > -1e-6 and x2 < out_w + 1e-6 and y2 < out_h + 1e-6
        if not inside or min(w.x, w.y, src_w - w.x - w.width, src_h - w.y - w.height) < -1e-6:
            raise ValueError(
                f"size: a {out_w}x{out_h} frame cannot show the subject {subject} whole from "
                f"inside the {src_w}x{src_h} source (frame {i}: window {w})"
            )
    return windows


def _anchor(centre: float, window: float, limit: float) -> float:
    """Where in the window (0..1) ``centre`` can sit with the window inside [0, limit]."""
    low, high = 1 - (limit - centre) / window, centre / window
    return min(max(0.5, low), high)


def make_clip(
    path: str | Path,
    *,
    frames: int | None = None,
    size: tuple[int, int] = (640, 360),
    fps: int | Fraction = 24,
    codec: str = "libx264",
    audio: bool = True,
    motion: Motion = "pan",
    gop: int | None = None,
    vfr_pts: Sequence[int] | None = None,
    source: np.ndarray | None = None,
    time_base: Fraction = DEFAULT_TIME_BASE,
    bframes: int = 0,
) -> Clip:
    """Write an MP4 of a camera moving over ``source`` (the astronaut by default).

    ``frames`` defaults to 48, or to ``len(vfr_pts)``. Frame ``i`` has pts ``vfr_pts[i]`` (in
    ``time_base``) or ``i / fps`` seconds; the MP4 keeps a time base whose denominator is at
    least 10000 (1/90000 here) as it is, and multiplies a smaller one by 2 until it is (1/1000
    is written as 1/16000, pts times 16): ``Clip`` holds what the file says, the same instants.
    ``gop`` puts a keyframe on every ``gop``-th frame and nowhere else (scene-cut detection
    off); without it only frame 0 is a keyframe (up to the encoder's 250-frame limit).
    ``bframes`` > 0 reorders packets (decode order differs from presentation order); the pts
    stay exact. ``audio`` adds an AAC stereo 48 kHz chirp as long as the video.
    """
    fps = Fraction(fps)
    pts = _frame_pts(frames, fps, time_base, vfr_pts)
    count = len(pts)
    image = astronaut() if source is None else np.ascontiguousarray(source)
    _check_arguments(size, motion, gop, image)
    width, height = size
    src_h, src_w = image.shape[:2]
    subject = (
        ASTRONAUT_FACE if source is None else (src_w / 3, src_h / 3, src_w * 2 / 3, src_h * 2 / 3)
    )
    windows = plan_windows((src_w, src_h), subject, size, count, motion)
    frame_step = pts[-1] - pts[-2] if count > 1 else round(1 / (fps * time_base))
    end = (pts[-1] + frame_step) * time_base  # the last frame lasts as long as the one before

    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream(codec, rate=fps, options=_video_options(codec, gop, bframes))
        if not isinstance(video, av.VideoStream):
            raise ValueError(f"codec: expected a video encoder, got {codec!r}")
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = time_base
        video.codec_context.time_base = time_base
        # PyAV asks for slice threads: x264 would cut every frame into one slice per CPU, so
        # the file would depend on the machine. Two frame threads: one slice, same bytes.
        video.codec_context.thread_type = "FRAME"
        video.codec_context.thread_count = 2
        sound = _Chirp(out, end) if audio else None
        for i, window in enumerate(windows):
            frame = av.VideoFrame.from_ndarray(render_window(image, window, size), format="rgb24")
            frame.pts, frame.time_base = pts[i], time_base
            out.mux(video.encode(frame))
            if sound is not None:
                sound.write_until(pts[i + 1] * time_base if i + 1 < count else end)
        out.mux(video.encode(None))
        if sound is not None:
            sound.flush()

    file_base, file_pts, keyframes = _read_video(path)
    if [p * file_base for p in file_pts] != [p * time_base for p in pts]:
        raise RuntimeError(f"pts: the MP4 changed the time stamps: wrote {pts}, read {file_pts}")
    return Clip(
        path=path,
        frames=count,
        size=(width, height),
        codec=codec,
        fps=fps,
        time_base=file_base,
        pts=tuple(file_pts),
        windows=windows,
        keyframes=keyframes,
        audio=read_audio_info(path) if audio else None,
        face=ASTRONAUT_FACE if source is None else None,
        source=image,
    )


def _check_arguments(
    size: tuple[int, int], motion: str, gop: int | None, image: np.ndarray
) -> None:
    width, height = size
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"size: expected positive even width and height, got {size}")
    if motion not in ("static", "pan", "zoom"):
        raise ValueError(f"motion: expected 'static', 'pan' or 'zoom', got {motion!r}")
    if gop is not None and gop < 1:
        raise ValueError(f"gop: expected a keyframe interval >= 1, got {gop}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"source: expected an RGB uint8 image, got {image.dtype} {image.shape}")


def _frame_pts(
    frames: int | None, fps: Fraction, time_base: Fraction, vfr_pts: Sequence[int] | None
) -> list[int]:
    if fps <= 0:
        raise ValueError(f"fps: expected a positive rate, got {fps}")
    if vfr_pts is not None:
        pts = [int(p) for p in vfr_pts]
        if frames is not None and frames != len(pts):
            raise ValueError(f"frames: expected len(vfr_pts) = {len(pts)}, got {frames}")
        if not pts or pts[0] < 0 or any(b <= a for a, b in zip(pts, pts[1:], strict=False)):
            raise ValueError(f"vfr_pts: expected increasing pts >= 0, got {pts}")
        return pts
    if frames is not None and frames < 1:
        raise ValueError(f"frames: expected at least 1 frame, got {frames}")
    step = 1 / (fps * time_base)
    if step.denominator != 1:
        raise ValueError(
            f"time_base: expected a whole number of ticks per frame at {fps} fps, got {time_base}"
        )
    return [i * int(step) for i in range(48 if frames is None else frames)]


def _video_options(codec: str, gop: int | None, bframes: int) -> dict[str, str]:
    keyint = gop or 250
    # sc_threshold=0 turns scene-cut keyframes off, so keyframes fall only on the gop grid.
    options = {"g": str(keyint), "bf": str(bframes), "sc_threshold": "0"}
    if codec == "libx264":
        options["preset"] = "superfast"  # CABAC, like real files; ultrafast would be CAVLC
    elif codec == "libx265":
        options["x265-params"] = (
            f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={bframes}:log-level=error"
        )
        options["preset"] = "ultrafast"
    return options


class _Chirp:
    """An AAC stereo chirp (440 to 880 Hz left, a fifth above right), written in step."""

    def __init__(self, out: av.container.OutputContainer, end: Fraction) -> None:
        self.out = out
        self.stream = out.add_stream("aac", rate=AUDIO_RATE)
        self.stream.layout = "stereo"
        self.total = math.ceil(end * AUDIO_RATE)
        self.written = 0

    def write_until(self, time: Fraction) -> None:
        target = min(self.total, math.ceil(time * AUDIO_RATE))
        while self.written < target:
            n = min(1024, self.total - self.written)  # the AAC frame size
            t = (self.written + np.arange(n)) / AUDIO_RATE
            seconds = self.total / AUDIO_RATE
            phase = 2 * np.pi * (440 * t + 440 * t * t / (2 * seconds))
            samples = 0.3 * np.stack([np.sin(phase), np.sin(1.5 * phase)]).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = AUDIO_RATE, self.written
            frame.time_base = Fraction(1, AUDIO_RATE)
            self.out.mux(self.stream.encode(frame))
            self.written += n

    def flush(self) -> None:
        self.write_until(Fraction(self.total, AUDIO_RATE))
        self.out.mux(self.stream.encode(None))


def _read_video(path: Path) -> tuple[Fraction, list[int], tuple[int, ...]]:
    """Time base, presentation-ordered pts and keyframe indices of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [
            (p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None
        ]
        assert stream.time_base is not None
        time_base = Fraction(stream.time_base)
    packets.sort()
    keyframes = tuple(i for i, (_, key) in enumerate(packets) if key)
    return time_base, [pts for pts, _ in packets], keyframes


def read_audio_info(path: str | Path) -> AudioInfo:
    """What the first audio stream of ``path`` holds (packets counted by demuxing)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = sum(1 for p in container.demux(stream) if p.size)
        assert stream.time_base is not None
        return AudioInfo(
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate,
            channels=stream.codec_context.channels,
            packets=packets,
            time_base=Fraction(stream.time_base),
        )


def make_audio_only(path: str | Path, *, seconds: float = 1.0) -> AudioInfo:
    """An MP4 with one AAC stereo 48 kHz stream and no video."""
    with av.open(str(path), "w", format="mp4") as out:
        sound = _Chirp(out, Fraction(seconds))
        sound.flush()
    return read_audio_info(path)


def write_not_a_video(path: str | Path, kind: NotAVideo = "png") -> Path:
    """A file that is no video whatever its name says.

    ``png``: the astronaut as PNG. FFmpeg probes content, not names, so ``av.open`` reads it
    as one-frame ``png_pipe`` video: the pipeline must reject it by what it is. ``text`` and
    ``empty``: ``av.open`` raises ``av.error.InvalidDataError`` ("Invalid data found when
    processing input").
    """
    path = Path(path)
    if kind == "png":
        Image.fromarray(astronaut()).save(path, format="PNG")
    elif kind == "text":
        path.write_text("frameserve test input: this is text, not a video\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"kind: expected 'png', 'text' or 'empty', got {kind!r}")
    return path


Damage = Literal["header", "data"]
SLICE_HEADER_BYTES = 16  # x264's slice headers are shorter; "data" damage starts after this


@dataclass(frozen=True)
class DecodeReport:
    """What decoding a file packet by packet gave: pts of frames, failures and corrupt flags.

    ``failed`` holds the pts of the packets whose ``decode()`` raised ``InvalidDataError``.
    """

    frames: tuple[int, ...]
    failed: tuple[int, ...]
    corrupt: tuple[int, ...]


def decode_report(path: str | Path, thread_type: str = "SLICE") -> DecodeReport:
    """Decode the first video stream of ``path`` as a pipeline must: demux, then each packet.

    ``container.decode()`` would end at the first ``InvalidDataError``; decoding packet by
    packet lets the decoder carry on after it.
    """
    frames, failed, corrupt = [], [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = thread_type
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                failed.append(packet.pts)
                continue
            for frame in decoded:
                assert frame.pts is not None
                frames.append(frame.pts)
                if frame.is_corrupt:
                    corrupt.append(frame.pts)
    return DecodeReport(tuple(frames), tuple(p for p in failed if p is not None), tuple(corrupt))


def corrupt_clip(
    src: str | Path, dst: str | Path, frame_index: int, *, damage: Damage = "header"
) -> int:
    """Copy the H.264 MP4 ``src`` to ``dst`` with frame ``frame_index``'s packet damaged.

    Only bytes inside the packet's slice NAL units change (found through ``packet.pos`` and
    the avcC length prefixes); the container and every other packet stay intact. Returns the
    damaged packet's index in decode order (the frame index when the clip has no B-frames).
    What FFmpeg 8.1's h264 decoder (PyAV 18.1) does with it, decoding packet by packet:

    ``header``: the first 8 bytes of each slice NAL unit (NAL header and slice header) become
    garbage with the forbidden_zero_bit set, so the parser drops the slice: ``decode()`` of
    that packet raises ``av.error.InvalidDataError`` ("[Errno 1094995529] Invalid data found
    when processing input: 'avcodec_send_packet()'"; FFmpeg logs "no frame!") and the frame is
    missing; every other frame of a P-frame's clip decodes, unflagged. With frame threads
    (thread_type FRAME or AUTO) the exception comes from a later packet's ``decode()``
    (up to thread_count - 1 packets later), the lost frame is still this one.
    ``container.decode()`` stops at the exception: the rest of the file is never decoded.
    A damaged keyframe also loses the frames that refer to it, without a further exception.

    ``data``: the slice data after the first ``SLICE_HEADER_BYTES`` bytes are overwritten
    (zeros, then seeded noise until FFmpeg notices). No exception and no frame is lost: the
    frame comes back with ``frame.is_corrupt`` (decode_error_flags: concealment) and the
    following frames up to the next keyframe are visibly wrong but not flagged. FFmpeg does
    not notice every such damage (a few percent of zero fills and about one noise fill in five
    decode "clean"), so the fill is checked here; RuntimeError if none is noticed.
    """
    src, dst = Path(src), Path(dst)
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name != "h264":
            raise ValueError(f"src: expected an H.264 video, got {stream.codec_context.name}")
        length_size = (bytes(stream.codec_context.extradata or b"\0" * 5)[4] & 3) + 1
        packets = [(p.pts, p.pos, bytes(p)) for p in container.demux(stream) if p.size]
    by_time = sorted(range(len(packets)), key=lambda k: packets[k][0] or 0)
    if not 0 <= frame_index < len(packets):
        raise ValueError(f"frame_index: expected 0 to {len(packets) - 1}, got {frame_index}")
    index = by_time[frame_index]
    pts, pos, payload = packets[index]
    original = src.read_bytes()
    if pos is None or original[pos : pos + len(payload)] != payload:
        raise RuntimeError(f"pos: packet {index} is not stored as-is at byte {pos} of {src}")
    nals = [(pos + offset, size) for offset, size in _slice_nals(payload, length_size)]
    rng = np.random.default_rng(frame_index)
    if damage == "header":
        data = bytearray(original)
        for start, size in nals:
            garbage = bytearray(rng.bytes(min(8, size)))
            garbage[0] |= 0x80  # forbidden_zero_bit: the NAL parser drops the unit
            data[start : start + len(garbage)] = garbage
        dst.write_bytes(data)
        return index
    if damage != "data":
        raise ValueError(f"damage: expected 'header' or 'data', got {damage!r}")
    fills: list[Callable[[int], bytes]] = [bytes, *[rng.bytes] * 5]  # zeros, then noise
    for fill in fills:
        data = bytearray(original)
        for start, size in nals:
            keep = SLICE_HEADER_BYTES if size > 2 * SLICE_HEADER_BYTES else size // 2
            data[start + keep : start + size] = fill(size - keep)
        dst.write_bytes(data)
        report = decode_report(dst)
        if not report.failed and report.corrupt == (pts,) and len(report.frames) == len(packets):
            return index
    raise RuntimeError(f"frame_index: FFmpeg decodes damaged frame {frame_index} without notice")


def _slice_nals(payload: bytes, length_size: int) -> list[tuple[int, int]]:
    """Offset and size of each coded slice NAL unit (types 1 and 5) in an avcC packet."""
    nals, offset = [], 0
    while offset + length_size < len(payload):
        size = int.from_bytes(payload[offset : offset + length_size], "big")
        start = offset + length_size
        if payload[start] & 0x1F in (1, 5):
            nals.append((start, size))
        offset = start + size
    if not nals:
        raise ValueError("src: the packet holds no coded slice NAL unit")
    return nals


def write_bad_input(path: Path, kind: str) -> Path:
    """``path`` as one kind of bad input: png, text, empty, audio (no video) or missing."""
    if kind == "audio":
        make_audio_only(path)
    elif kind != "missing":
        write_not_a_video(path, kind)  # type: ignore[arg-type]
    return path
