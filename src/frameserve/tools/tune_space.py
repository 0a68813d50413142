"""What ``frameserve tune`` searches: candidates, the space they come from, how a candidate
becomes a ``model.yaml``.

A candidate fixes the four levels the seeds name: which weights (a float version, or an INT8
version made by ``frameserve quantize``) and the runtime precision; the system layout (inference
instances x threads each, always filling the core budget); the batch size (algorithm); and the
queue delay (application: how long the batcher waits to fill a batch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from frameserve.serving.config import ModelConfig

DIMENSIONS = ("precision", "layout", "batch", "delay")
_FAKE_QUANTIZE = re.compile(rb'type="(FakeQuantize|FakeConvert)"')


@dataclass(frozen=True, order=True)
class Precision:
    """Which version's weights, and the runtime's inference precision."""

    version: int
    hint: str  # f32 | bf16 | f16 (OpenVINO ``INFERENCE_PRECISION_HINT``); "" = the runtime's
    int8: bool = False

    def label(self) -> str:
        if self.int8:
            return f"int8(v{self.version})" + (f"+{self.hint}" if self.hint else "")
        return self.hint or "default"


@dataclass(frozen=True, order=True)
class Candidate:
    precision: Precision
    instances: int
    threads: int
    batch: int
    delay_ms: float

    def label(self) -> str:
        return (
            f"{self.precision.label()} {self.instances}x{self.threads} "
            f"b{self.batch} d{self.delay_ms:g}"
        )

    def value(self, dim: str) -> Any:
        return {
            "precision": self.precision,
            "layout": (self.instances, self.threads),
            "batch": self.batch,
            "delay": self.delay_ms,
        }[dim]

    def with_value(self, dim: str, value: Any) -> Candidate:
        if dim == "layout":
            return replace(self, instances=value[0], threads=value[1])
        field = {"precision": "precision", "batch": "batch", "delay": "delay_ms"}[dim]
        return replace(self, **{field: value})

    def settings(self) -> dict[str, Any]:
        """The ``model.yaml`` keys this candidate sets (the rest of the file is kept)."""
        out: dict[str, Any] = {
            "instances": self.instances,
            "threads": self.threads,
            "performance_hint": "LATENCY" if self.instances == 1 else "THROUGHPUT",
        }
        if self.precision.hint:
            out["precision"] = self.precision.hint
        if self.batch > 0:
            out["max_batch_size"] = self.batch
        return out


@dataclass(frozen=True)
class SearchSpace:
    precisions: tuple[Precision, ...]
    layouts: tuple[tuple[int, int], ...]
    batches: tuple[int, ...]
    delays: tuple[float, ...]

    def values(self, dim: str) -> tuple[Any, ...]:
        return {
            "precision": self.precisions,
            "layout": self.layouts,
            "batch": self.batches,
            "delay": self.delays,
        }[dim]

    @property
    def size(self) -> int:
        n = 1
        for dim in DIMENSIONS:
            n *= len(self.values(dim))
        return n

    def grid(self) -> list[Candidate]:
        """Every candidate (the exhaustive search the tuner is compared against)."""
        return [
            Candidate(p, i, t, b, d)
            for p in self.precisions
            for (i, t) in self.layouts
            for b in self.batches
            for d in self.delays
        ]

    def nearest(self, config: ModelConfig, versions: list[int]) -> Candidate:
        """The candidate closest to what ``config`` serves today (the search's start)."""
        float_versions = [p for p in self.precisions if not p.int8] or list(self.precisions)
        served = max(versions) if versions else float_versions[0].version
        hint = config.precision or ""
        # What serves today: that version at its hint, else that version (an INT8 one is tried
        # at one hint), else the float weights at the configured hint.
        precision = next(
            (p for p in self.precisions if p.version == served and p.hint == hint),
            next(
                (p for p in self.precisions if p.version == served),
                next((p for p in float_versions if p.hint == hint), float_versions[0]),
            ),
        )
        instances = config.instances or 1
        layout = min(self.layouts, key=lambda lt: abs(lt[0] - instances))
        mbs = config.max_batch_size or 1
        batch = min(self.batches, key=lambda b: abs(b - mbs))
        db = config.dynamic_batching
        delay = db.max_queue_delay_ms if db else 0.0
        delay = min(self.delays, key=lambda d: abs(d - delay))
        return Candidate(precision, layout[0], layout[1], batch, delay)


def layouts_for(cores: int) -> tuple[tuple[int, int], ...]:
    """(instances, threads each) pairs that fill ``cores`` exactly: 1xN, 2xN/2, ..., Nx1."""
    return tuple((i, cores // i) for i in range(1, cores + 1) if cores % i == 0)


def batch_sizes(limit: int) -> tuple[int, ...]:
    """Powers of two up to ``limit`` (and ``limit`` itself); ``(0,)`` when it cannot batch."""
    if limit <= 0:
        return (0,)
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= limit]
    if limit not in sizes and limit <= 64:
        sizes.append(limit)
    return tuple(sizes)


def is_int8(version_folder: Path) -> bool:
    """An OpenVINO IR holding quantize nodes (what ``frameserve quantize`` writes)."""
    xml = version_folder / "model.xml"
    try:
        return bool(_FAKE_QUANTIZE.search(xml.read_bytes()))
    except OSError:
        return False


def precisions_for(
    backend: str, folder: Path, versions: list[int], bf16: bool, source: int | None = None
) -> tuple[Precision, ...]:
    """Float versions at f32 (and bf16 where the CPU has it), INT8 versions at the best hint."""
    if backend != "openvino":
        return (Precision(source or max(versions), ""),)
    int8 = [v for v in versions if is_int8(folder / str(v))]
    floats = [v for v in versions if v not in int8]
    base = source if source is not None else (max(floats) if floats else max(versions))
    out = [Precision(base, "f32")]
    if bf16:
        out.append(Precision(base, "bf16"))
    out += [Precision(v, "bf16" if bf16 else "f32", int8=True) for v in int8]
    return tuple(out)


def apply(base: dict[str, Any], candidate: Candidate, delays: bool = True) -> dict[str, Any]:
    """``base`` (a parsed model.yaml) with the candidate's settings, serving its version."""
    out = dict(base)
    out.update(candidate.settings())
    out["version_policy"] = {"specific": [candidate.precision.version]}
    if candidate.batch > 0:
        db = dict(out.get("dynamic_batching") or {})
        if delays:
            db["max_queue_delay_ms"] = candidate.delay_ms
        db["preferred_batch_sizes"] = [candidate.batch] if candidate.batch > 1 else []
        out["dynamic_batching"] = db
    return out
