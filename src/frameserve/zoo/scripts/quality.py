"""No-reference image quality: BRISQUE (Mittal, Moorthy and Bovik, IEEE TIP 2012).

Installed by ``frameserve zoo pull`` as ``quality/1/model.py`` and run by the Python backend,
next to the two files of fitted parameters it reads, taken unchanged out of the pinned
``brisque==0.2.0`` wheel: ``svm.txt`` (a LIBSVM epsilon-SVR with an RBF kernel, fitted on the
LIVE image database) and ``normalize.pickle`` (the per-feature ranges the features are scaled
with before the SVR). The computation is ours (numpy and OpenCV); it follows that package's
``BRISQUE.score`` step for step, so its scores are the package's within rounding
(``tests/zoo/test_quality.py`` checks them against values the package itself gave):

1. grey = RGB / 255 weighted 0.2125, 0.7154, 0.0721 (scikit-image's ``rgb2gray``);
2. MSCN coefficients: (grey - mu) / (sigma + 1/255), mu and sigma local Gaussian (7x7,
   sigma 7/6) mean and deviation, zero padding at the borders (``convolve2d(..., 'same')``);
3. an asymmetric generalised Gaussian fitted by moments to the MSCN coefficients and to their
   products with the right, lower and two diagonal neighbours: 18 features;
4. the same at half size (bicubic): 36 features, each scaled to [-1, 1] by the stored ranges;
5. the SVR: sum_i coef_i * exp(-gamma * |sv_i - x|^2) - rho.

The raw score is about 0 (pristine) to 100 (badly distorted); it may fall outside. A picture
with no detail at all (a black or one-colour frame) has no statistics to fit: its score is NaN,
as is that of a picture under ``MIN_SIDE`` pixels a side; ``postprocess`` (task ``quality``)
turns NaN into its own answer. ``normalize.pickle`` is read by an unpickler that refuses every
class: only plain lists, dicts and numbers load, so the file cannot run code.

Threads: batching saves nothing here (each picture is its own work, ~30 ms of CPU at 768x432),
but concurrent requests and a video's frames arrive as batches. The pictures of one batch are
scored on ``threads`` threads (parameter, default 2; numpy and OpenCV release the GIL in the
array work), so one batch uses the cores one instance is given.
"""

from __future__ import annotations

import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SVM_FILE = "svm.txt"
RANGES_FILE = "normalize.pickle"
FEATURES = 36
MIN_SIDE = 16  # the 7x7 window and the half-size scale need at least this
GREY = np.array([0.2125, 0.7154, 0.0721])  # scikit-image rgb2gray (ITU-R BT.709)
WINDOW, WINDOW_SIGMA = 7, 7 / 6
C = 1 / 255  # keeps flat regions from dividing by zero
ALPHA_RANGE = (0.05, 50.0)  # where the AGGD shape parameter is searched
PARAMETERS = ("threads",)
DEFAULT_THREADS = 2


class Model:
    """The ``quality`` model: ``image`` (N, H, W, 3) UINT8 RGB -> ``brisque`` (N, 1) FP32."""

    def setup(self, config: dict[str, Any]) -> None:
        """Read the SVR and the feature ranges next to this script, and ``threads``."""
        params = config.get("parameters", {})
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"parameters: expected only {list(PARAMETERS)}, got {unknown}")
        threads = params.get("threads", DEFAULT_THREADS)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"parameters.threads: expected an integer >= 1, got {threads!r}")
        folder = Path(config["path"])
        self.svr = Svr.load(folder / SVM_FILE)
        self.low, self.high = load_ranges(folder / RANGES_FILE)
        self._pool = ThreadPoolExecutor(threads, "quality") if threads > 1 else None

    def finalize(self) -> None:
        """The backend closes the model: end the scoring threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def warmup(self) -> None:
        """One 256x256 picture, so that the first request does not pay for OpenCV's set-up."""
        noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        self.score(cv2.GaussianBlur(noise, (0, 0), 2.0))

    def process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw BRISQUE score of each picture of the batch."""
        images = np.asarray(batch["image"])
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(
                f"input 'image': expected (N, H, W, 3) uint8 RGB, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if self._pool is None or len(images) == 1:
            scores = [self.score(image) for image in images]
        else:
            scores = list(self._pool.map(self.score, images))
        return {"brisque": np.asarray(scores, dtype=np.float32).reshape(-1, 1)}

    def score(self, image: np.ndarray) -> float:
        """One HxWx3 uint8 RGB picture -> its raw BRISQUE score (NaN: cannot be scored)."""
        if min(image.shape[:2]) < MIN_SIDE:
            return math.nan
        features = brisque_features(image)
        if not np.isfinite(features).all():
            return math.nan
        scaled = -1 + 2.0 * (features - self.low) / (self.high - self.low)
        return self.svr.predict(scaled)


class Svr:
    """A LIBSVM epsilon-SVR (or nu-SVR) with an RBF kernel, read from its text model file."""

    def __init__(self, vectors: np.ndarray, coefs: np.ndarray, gamma: float, rho: float) -> None:
        self.vectors, self.coefs, self.gamma, self.rho = vectors, coefs, gamma, rho
        self._norms = (vectors * vectors).sum(axis=1)

    @classmethod
    def load(cls, path: Path) -> Svr:
        """Parse LIBSVM's ``svm_save_model`` format (header, ``SV``, sparse vectors)."""
        lines = path.read_text(encoding="ascii").splitlines()
        header: dict[str, str] = {}
        for n, line in enumerate(lines):
            if line.strip() == "SV":
                body = lines[n + 1 :]
                break
            key, _, value = line.partition(" ")
            header[key] = value.strip()
        else:
            raise ValueError(f"{path.name}: expected a LIBSVM model with an 'SV' line")
        kind, kernel = header.get("svm_type"), header.get("kernel_type")
        if kind not in ("epsilon_svr", "nu_svr") or kernel != "rbf":
            raise ValueError(
                f"{path.name}: expected an RBF-kernel SVR, got svm_type {kind}, kernel {kernel}"
            )
        vectors = np.zeros((len(body), FEATURES))
        coefs = np.zeros(len(body))
        for row, line in enumerate(body):
            coef, *pairs = line.split()
            coefs[row] = float(coef)
            for pair in pairs:  # sparse: zero features are left out
                index, _, value = pair.partition(":")
                vectors[row, int(index) - 1] = float(value)
        if len(body) != int(header.get("total_sv", -1)):
            raise ValueError(f"{path.name}: header says {header.get('total_sv')} vectors, "
                             f"found {len(body)}")  # fmt: skip
        return cls(vectors, coefs, float(header["gamma"]), float(header["rho"]))

    def predict(self, x: np.ndarray) -> float:
        distances = self._norms + float(x @ x) - 2.0 * (self.vectors @ x)
        return float(self.coefs @ np.exp(-self.gamma * distances) - self.rho)


class _PlainUnpickler(pickle.Unpickler):
    """Loads lists, dicts, strings and numbers only: any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}: expected plain data only")


def load_ranges(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The features' ``min_`` and ``max_`` (the package's pickled dict), as float arrays."""
    with path.open("rb") as f:
        data = _PlainUnpickler(f).load()
    if not isinstance(data, dict) or not {"min_", "max_"} <= set(data):
        raise ValueError(f"{path.name}: expected a dict with 'min_' and 'max_'")
    low = np.asarray(data["min_"], dtype=np.float64).reshape(-1)
    high = np.asarray(data["max_"], dtype=np.float64).reshape(-1)
    if low.shape != (FEATURES,) or high.shape != (FEATURES,):
        raise ValueError(f"{path.name}: expected {FEATURES} ranges, got {low.shape}, {high.shape}")
    return low, high


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of an RGB picture: 18 at full size, 18 at half size."""
    grey = image.astype(np.float64) @ (GREY / 255.0)
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    return np.concatenate([_scale_features(grey), _scale_features(half)])


def _kernel() -> np.ndarray:
    y, x = np.indices((WINDOW, WINDOW)) - WINDOW // 2
    k = np.exp(-(x**2 + y**2) / (2 * WINDOW_SIGMA**2))
    return k / k.sum()


def _blur(image: np.ndarray, k: np.ndarray) -> np.ndarray:
    # symmetric: correlation equals convolution; zero padding as convolve2d 'same'. Not the
    # separable filter: in flat areas (JPEG blocks) grey - mu is rounding noise whose sign the
    # fit counts, and the 2-D filter's rounding is the one closest to the reference's.
    return cv2.filter2D(image, cv2.CV_64F, k, borderType=cv2.BORDER_CONSTANT)


def mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients."""
    k = _kernel()
    mu = _blur(grey, k)
    sigma = np.sqrt(np.abs(mu * mu - _blur(grey * grey, k)))
    return (grey - mu) / (sigma + C)  # type: ignore[no-any-return]


def _scale_features(grey: np.ndarray) -> list[float]:
    m = mscn(grey)
    alpha, _, left, right = aggd_fit(m)
    out = [alpha, (left**2 + right**2) / 2]
    products = (
        m[:, :-1] * m[:, 1:],  # horizontal
        m[:-1, :] * m[1:, :],  # vertical
        m[:-1, :-1] * m[1:, 1:],  # main diagonal
        m[1:, :-1] * m[:-1, 1:],  # secondary diagonal
    )
    for p in products:
        alpha, mean, left, right = aggd_fit(p)
        out += [alpha, mean, left**2, right**2]
    return out


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian by moment matching: (alpha, mean, sigma_l, sigma_r)."""
    squares = x * x
    negative = x < 0
    n_left = int(np.count_nonzero(negative))
    n_right = x.size - n_left
    total = float(squares.sum())
    if n_left == 0 or n_right == 0 or total == 0:
        return math.nan, math.nan, math.nan, math.nan
    left = float(squares.sum(where=negative))  # no copies of the halves
    sigma_l, sigma_r = math.sqrt(left / n_left), math.sqrt((total - left) / n_right)
    if sigma_r == 0:
        return math.nan, math.nan, math.nan, math.nan
    r_hat = (float(np.abs(x).sum()) / x.size) ** 2 / (total / x.size)
    g = sigma_l / sigma_r
    big_r = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = _solve_alpha(big_r)
    lg1, lg2, lg3 = math.lgamma(1 / alpha), math.lgamma(2 / alpha), math.lgamma(3 / alpha)
    constant = math.exp(0.5 * (lg1 - lg3))
    mean = (sigma_r - sigma_l) * constant * math.exp(lg2 - lg1)
    return alpha, mean, sigma_l, sigma_r


def _phi(alpha: float) -> float:
    """Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)): increasing in a, from 0 towards 3/4."""
    return math.exp(2 * math.lgamma(2 / alpha) - math.lgamma(1 / alpha) - math.lgamma(3 / alpha))


def _solve_alpha(target: float) -> float:
    """The alpha with phi(alpha) == target, by bisection (phi is monotonic); clipped to
    ALPHA_RANGE when the target lies beyond it."""
    lo, hi = ALPHA_RANGE
    if target <= _phi(lo):
        return lo
    if target >= _phi(hi):
        return hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _phi(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)
