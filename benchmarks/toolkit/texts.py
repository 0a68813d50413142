"""Calibration images for text detection: documents and photos with text, from scikit-image.

Pages (``page``, ``text``) at several scales, inverted, slightly rotated and cropped; photos
with lines of words drawn in several fonts, colours and sizes, some with a page pasted in.
Seeded: every run writes the same 104 images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "coins",
    "clock",
    "brick",
    "grass",
    "gravel",
    "moon",
    "cell",
    "colorwheel",
)
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "frame",
    "serve",
    "video",
    "model",
    "2026",
    "OCR",
    "invoice",
    "total",
    "price",
    "EXIT",
    "open",
    "daily",
    "24h",
    "coffee",
    "street",
    "north",
    "station",
    "platform",
    "7",
    "sale",
    "50%",
    "off",
]
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)  # fmt: skip


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])


def _put_lines(img: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    for _ in range(n):
        text = " ".join(rng.choice(WORDS, rng.integers(1, 5)))
        font = int(rng.choice(FONTS))
        scale = rng.uniform(0.6, 2.2) * w / 700
        thick = max(1, round(scale * 1.5))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        x, y = int(rng.integers(0, max(1, w - tw))), int(rng.integers(th + 2, h - 2))
        dark = rng.random() < 0.5
        colour = tuple(int(c) for c in rng.integers(0, 80, 3) if dark) or tuple(
            int(c) for c in rng.integers(180, 256, 3)
        )
        cv2.putText(img, text, (x, y), font, scale, colour, thick, cv2.LINE_AA)
    return img


def _rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def text_images(dest: Path) -> Path:
    """Write the images into ``dest`` (PNG); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    docs = [_rgb(data.page()), _rgb(data.text())]
    photos = [_rgb(getattr(data, n)()) for n in PHOTOS] + [_rgb(data.retina())[300:1100, 300:1100]]
    images: list[np.ndarray] = []
    for doc in docs:
        for s in (1.0, 1.5, 2.0, 3.0):
            im = cv2.resize(doc, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
            images += [im, 255 - im, _rotate(im, rng.uniform(-6, 6))]
            h, w = im.shape[:2]
            for _ in range(2):
                cw, ch = int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9))
                x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
                images.append(im[y : y + ch, x : x + cw])
    for photo in photos:
        for _ in range(4):
            s = rng.uniform(0.8, 1.6)
            im = cv2.resize(photo, None, fx=s, fy=s)
            if rng.random() < 0.5:
                doc = docs[rng.integers(0, 2)]
                ds = rng.uniform(0.6, 1.5)
                dd = cv2.resize(doc, None, fx=ds, fy=ds)
                dh, dw = min(dd.shape[0], im.shape[0]), min(dd.shape[1], im.shape[1])
                y, x = rng.integers(0, im.shape[0] - dh + 1), rng.integers(0, im.shape[1] - dw + 1)
                im[y : y + dh, x : x + dw] = dd[:dh, :dw]
            images.append(_put_lines(im, int(rng.integers(2, 7)), rng))
    for i, im in enumerate(images):
        cv2.imwrite(str(dest / f"{i:03d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return dest
