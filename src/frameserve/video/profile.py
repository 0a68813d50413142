"""Where a video run spent its time, stage by stage.

Stages run concurrently, so their seconds add up to more than the wall time: the profile shows
each stage's busy seconds and its share of all busy seconds, which tells which stage to
optimise (DeepStream's per-component latency, summed over a run). Queue wait and inference
come from the schedulers' own counters, so they are measured where they happen.

Script models that profile (``docs/scripts.md``) report stages of their own, which run inside
"inference": they are kept apart (``script``) and never counted twice in the shares.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

STAGES = ("decode", "preprocess", "queue wait", "inference", "postprocess", "encode", "sink")


@dataclass
class StageProfile:
    """Busy seconds per stage; ``add`` may be called from any thread."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # "<model>: <stage>" -> seconds a script model reported (part of "inference")
    script: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self.seconds:
            raise KeyError(f"unknown stage {stage!r}; stages are {list(STAGES)}")
        with self._lock:
            self.seconds[stage] += seconds

    def add_script(self, model: str, stage: str, seconds: float) -> None:
        """Seconds a script model reported for a stage of its own (inside "inference")."""
        key = f"{model}: {stage}"
        with self._lock:
            self.script[key] = self.script.get(key, 0.0) + seconds

    def script_json(self) -> dict[str, float]:
        return {name: round(s, 4) for name, s in self.script.items()}

    def to_json(self) -> dict[str, Any]:
        total = sum(self.seconds.values()) or 1.0
        return {
            name: {"seconds": round(s, 4), "share": round(s / total, 4)}
            for name, s in self.seconds.items()
        }

    def table(self) -> str:
        """A small aligned table for the terminal."""
        total = sum(self.seconds.values()) or 1.0
        rows = [f"{'stage':<12} {'seconds':>9} {'share':>7}"]
        for name, s in self.seconds.items():
            rows.append(f"{name:<12} {s:>9.3f} {s / total:>7.1%}")
        for name, s in self.script.items():  # inside "inference": no share of their own
            rows.append(f"  {name} {s:.3f} s")
        return "\n".join(rows)
