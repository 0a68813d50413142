"""Frame-rate up-conversion: the frame half-way between two neighbours, from optical flow.

Installed by ``frameserve zoo pull`` as ``fruc/1/model.py`` and run by the Python backend.
Video pipelines double a frame rate by sending each pair of neighbouring frames (``previous``,
``next``) and inserting the ``middle`` it returns. The model keeps no state between calls, so
pairs from many streams batch together in the dynamic batcher.

Why it is built this way (measured on one core with synthetic scenes: a panning photograph
with a second photograph moving across it, the true midpoint rendered at half the motion;
mean PSNR against it over six scenes, where a 50/50 blend of the neighbours scores 20 dB):

- Dense flow is OpenCV's DIS (``cv2.DISOpticalFlow``), the fastest dense method OpenCV has,
  both ways (previous -> next, next -> previous) on grey frames scaled by ``flow_scale``.
  DIS is most of the cost. At 1280x720 the default (0.5, ``fast``) takes about 30 ms a frame
  for 31 dB; 1.0 or ``preset: medium`` each take about 63 ms for 33.7 dB.
- DIS's fast preset estimates motion at a quarter of its input and upsamples it, so the
  half-way field is worked out at half the flow's resolution: the same PSNR within 0.2 dB,
  about a third less time.
- The motion at the midpoint is found by fixed-point inversion: the point of ``previous``
  seen at pixel x half-way is x + d with d = -F(x + d) / 2, iterated from d = -F(x) / 2.
  Unlike F taken at x, it is right for any smooth motion. Two steps measured best: more
  oscillate at motion boundaries.
- The two warps are averaged, except that a sample taken from outside its frame (content
  that enters or leaves the picture in a pan) gets no weight: a whole 1280x720 pan frame goes
  from 41.6 to 46.2 dB. Weighting by forward-backward flow consistency (occlusion reasoning)
  was measured too and did not beat the plain average on these scenes, so it is not done.
- Threads: the Python backend runs ``instances`` calls at once, and the server sizes every
  runtime to the process's core budget; OpenCV's own pool would use every core on top of
  that. ``threads`` (default 1) caps it in ``setup``. OpenCV's setting is process-wide, and
  the server's processing pool (already one task per core) wants one thread per call too.
  Throughput comes from instances and batching across streams, not from threads in a frame.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
PARAMETERS = ("flow_scale", "preset", "threads")
DEFAULT_FLOW_SCALE = 0.5
DEFAULT_PRESET = "fast"
DEFAULT_THREADS = 1
MIN_FLOW_SIDE = 16  # DIS needs frames larger than its 8-pixel patches; below: plain blend
FIELD_DOWNSCALE = 2  # the half-way field's resolution, relative to the flow's
INVERSION_STEPS = 2
MIN_WEIGHT = 0.01  # where both samples are outside their frames, average them
INPUTS = ("previous", "next")


class Model:
    """The ``fruc`` model: ``previous`` and ``next`` (N, H, W, 3) UINT8 -> ``middle``."""

    def setup(self, config: dict[str, Any]) -> None:
        """Read ``flow_scale``, ``preset`` and ``threads`` from the ``model.yaml`` parameters."""
        params = config.get("parameters", {})
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"parameters: expected only {list(PARAMETERS)}, got {unknown}")
        scale = params.get("flow_scale", DEFAULT_FLOW_SCALE)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 1:
            raise ValueError(f"parameters.flow_scale: expected a number in (0, 1], got {scale!r}")
        preset = params.get("preset", DEFAULT_PRESET)
        if preset not in PRESETS:
            raise ValueError(f"parameters.preset: expected one of {list(PRESETS)}, got {preset!r}")
        threads = params.get("threads", DEFAULT_THREADS)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"parameters.threads: expected an integer >= 1, got {threads!r}")
        self.flow_scale = float(scale)
        self.preset = PRESETS[preset]
        cv2.setNumThreads(threads)  # process-wide; see the module docstring
        self._local = threading.local()  # a DIS object must not be shared between threads

    def warmup(self) -> None:
        """One 640x360 pair, so that the first request does not pay for OpenCV's set-up."""
        noise = np.random.default_rng(0).integers(0, 256, (360, 656, 3), dtype=np.uint8)
        frame = cv2.GaussianBlur(noise, (0, 0), 3.0)
        self._midpoint(np.ascontiguousarray(frame[:, :640]), np.ascontiguousarray(frame[:, 16:]))

    def process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The midpoint frame of each pair in the batch (pairs of one size, one at a time)."""
        previous, nxt = _checked(batch)
        middle = np.empty_like(previous)
        for i in range(len(previous)):
            middle[i] = self._midpoint(previous[i], nxt[i])
        return {"middle": middle}

    def _dis(self) -> Any:
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = self._local.dis = cv2.DISOpticalFlow.create(self.preset)
        return dis

    def _midpoint(self, previous: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """One HxWx3 pair -> the frame half-way between them."""
        h, w = previous.shape[:2]
        fw, fh = _flow_size(w, h, self.flow_scale)
        if min(fw, fh) < MIN_FLOW_SIDE:
            return cv2.addWeighted(previous, 0.5, nxt, 0.5, 0.0)
        g0, g1 = _grey(previous, fw, fh), _grey(nxt, fw, fh)
        dis = self._dis()
        d0 = _half_way(_field(dis.calc(g0, g1, None)))  # midpoint -> previous
        d1 = _half_way(_field(dis.calc(g1, g0, None)))  # midpoint -> next
        size = (w, h)
        return cv2.blendLinear(
            _warp(previous, d0), _warp(nxt, d1), _inside(d0, size), _inside(d1, size)
        )


def _checked(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``previous`` and ``next`` as (N, H, W, 3) uint8 arrays of one shape, or ValueError."""
    missing = [name for name in INPUTS if name not in batch]
    if missing:
        raise ValueError(f"inputs: expected {list(INPUTS)}, missing {missing}")
    arrays = []
    for name in INPUTS:
        arr = np.asarray(batch[name])
        if arr.dtype != np.uint8:
            raise ValueError(f"input {name!r}: expected dtype uint8, got {arr.dtype}")
        if arr.ndim != 4 or arr.shape[3] != 3:
            raise ValueError(
                f"input {name!r}: expected shape (N, H, W, 3) of RGB frames, got {tuple(arr.shape)}"
            )
        arrays.append(arr)
    previous, nxt = arrays
    if previous.shape != nxt.shape:
        raise ValueError(
            f"input 'next': expected the shape of 'previous' {tuple(previous.shape)}, "
            f"got {tuple(nxt.shape)}"
        )
    return previous, nxt


def _flow_size(w: int, h: int, scale: float) -> tuple[int, int]:
    """The frame's size times ``scale``, but no side below MIN_FLOW_SIDE (or the frame's)."""
    floor = min(MIN_FLOW_SIDE, w, h)
    return max(floor, round(w * scale)), max(floor, round(h * scale))


def _grey(frame: np.ndarray, fw: int, fh: int) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if grey.shape[:2] == (fh, fw):
        return grey
    return cv2.resize(grey, (fw, fh), interpolation=cv2.INTER_AREA)


def _field(flow: np.ndarray) -> np.ndarray:
    """The flow at the half-way field's resolution, in that resolution's pixels."""
    fh, fw = flow.shape[:2]
    w, h = max(1, fw // FIELD_DOWNSCALE), max(1, fh // FIELD_DOWNSCALE)
    return _scaled(cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA), w / fw, h / fh)


def _scaled(d: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Vectors (H, W, 2) with x times ``sx`` and y times ``sy``, as a new array."""
    out = np.array(d, dtype=np.float32)
    out[..., 0] *= np.float32(sx)
    out[..., 1] *= np.float32(sy)
    return out


def _positions(d: np.ndarray) -> np.ndarray:
    """Displacements (H, W, 2) -> a new array of absolute positions for cv2.remap."""
    h, w = d.shape[:2]
    p = np.array(d, dtype=np.float32)
    p[..., 0] += np.arange(w, dtype=np.float32)
    p[..., 1] += np.arange(h, dtype=np.float32)[:, None]
    return p


def _sample(src: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``src`` at x + d(x) for every pixel x: bilinear, borders clamped."""
    # map1 holds both coordinates, so map2 is None; OpenCV's stubs do not allow that.
    return cv2.remap(  # type: ignore[call-overload, no-any-return]
        src, _positions(d), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _half_way(flow: np.ndarray) -> np.ndarray:
    """For each pixel x half-way, the d to where its point is in the flow's first frame.

    The fixed point of d = -flow(x + d) / 2, iterated from d = -flow(x) / 2.
    """
    d = flow * np.float32(-0.5)
    for _ in range(INVERSION_STEPS):
        d = _sample(flow, d) * np.float32(-0.5)
    return d


def _inside(d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Blend weight at ``size``: 1 where x + d(x) lies within the frame, else MIN_WEIGHT."""
    h, w = d.shape[:2]
    p = _positions(d)
    x, y = p[..., 0], p[..., 1]
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    weight = np.where(inside, np.float32(1.0), np.float32(MIN_WEIGHT))
    return cv2.resize(weight, size, interpolation=cv2.INTER_LINEAR)


def _warp(frame: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``frame`` sampled at x + d(x), ``d`` given at the field's resolution."""
    h, w = frame.shape[:2]
    dh, dw = d.shape[:2]
    full = cv2.resize(_scaled(d, w / dw, h / dh), (w, h), interpolation=cv2.INTER_LINEAR)
    return _sample(frame, full)
