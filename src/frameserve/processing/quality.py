"""Task ``quality``: a no-reference quality model's raw score -> 0..100, higher is better.

The model (the zoo's ``quality``: BRISQUE) gives one raw number a picture, on its own scale
and direction; ``QualitySpec`` says which raw values are the best and the worst, and the score
is the raw value's place between them, clipped: for BRISQUE (0 pristine, about 100 badly
distorted) ``score = clip(100 - raw, 0, 100)``. A raw NaN means the method found nothing to
score (a black or one-colour picture has no texture statistics): score 0, raw None.
"""

from __future__ import annotations

import math

import numpy as np

from frameserve.errors import InvalidInput
from frameserve.processing.results import Quality
from frameserve.processing.spec import QualitySpec
from frameserve.processing.transform import Geometry


def quality_score(raw: float, spec: QualitySpec) -> float:
    """The raw score's place from ``worst`` (0) to ``best`` (100), clipped."""
    return min(100.0, max(0.0, 100.0 * (spec.worst - raw) / (spec.worst - spec.best)))


def decode_quality(
    outputs: dict[str, np.ndarray], geometry: Geometry, spec: QualitySpec
) -> Quality:
    """One picture's raw score -> its ``Quality``; refuses a picture too small to score."""
    x0, y0, x1, y1 = geometry.content_box
    w, h = x1 - x0, y1 - y0
    if min(w, h) < spec.min_side:
        sw, sh = geometry.source_size
        scored = "" if (w, h) == (sw, sh) else f" (scored at {w}x{h})"
        raise InvalidInput(
            f"image: {sw}x{sh} pixels{scored} is too small for a {spec.method} quality score: "
            f"expected at least {spec.min_side} pixels a side"
        )
    raw = float(np.asarray(outputs[spec.output], dtype=np.float64).reshape(-1)[0])
    if not math.isfinite(raw):
        return Quality(0.0, spec.method, None)
    return Quality(quality_score(raw, spec), spec.method, raw)
