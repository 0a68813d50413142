"""The ``summary:`` block of a video pipeline: which per-video aggregates to compute.

Each key names an aggregator and holds its thresholds; a pipeline that declares the block
gets exactly those aggregators. A pipeline without the block gets the default of its result
type (``SummarySpec.auto``): an aggregator, with these defaults, for each result kind its
lines carry. ``summary: false`` turns summaries off.

Times are in seconds of the input (the lines' ``pts``), so they do not depend on the sampling.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

Seconds = Annotated[float, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectionsSummarySpec(_Strict):
    """Per label: counts, presence ranges and tracks (``track_id`` of a tracked pipeline)."""

    min_score: Fraction01 = Field(default=0.0, description="ignore detections below this score")
    min_track_frames: Annotated[int, Field(ge=1)] = Field(
        default=3, description="tracks seen on fewer sampled frames are left out (flicker)"
    )
    max_tracks: Annotated[int, Field(ge=0)] = Field(
        default=100, description="longest tracks listed per label (all are counted)"
    )
    merge_gap_s: Seconds = Field(
        default=0.5, description="presence ranges closer than this join into one"
    )


class ClassesSummarySpec(_Strict):
    """The top classes over the sampled frames: share of frames as top-1, mean score."""

    top_k: Annotated[int, Field(ge=1)] = 5


class ModerationSummarySpec(_Strict):
    """Unsafe time ranges from the frames' ``verdict`` and the overall verdict."""

    merge_gap_s: Seconds = Field(default=1.0, description="unsafe frames closer than this join")
    min_frames: Annotated[int, Field(ge=1)] = Field(
        default=1, description="ranges with fewer unsafe sampled frames do not count"
    )


class QualitySummarySpec(_Strict):
    """Score statistics, the worst ranges and the defect ranges (``defects`` of each line)."""

    low_score: Annotated[float, Field(ge=0, le=100)] = Field(
        default=50.0, description="frames scoring below this form the low-quality ranges"
    )
    worst_ranges: Annotated[int, Field(ge=0)] = Field(
        default=3, description="low-quality ranges listed, worst mean score first"
    )
    merge_gap_s: Seconds = 0.5


class TextsSummarySpec(_Strict):
    """Distinct recognised texts with first and last seen."""

    min_score: Fraction01 = 0.5
    max_texts: Annotated[int, Field(ge=0)] = Field(
        default=200, description="texts listed, seen on the most frames first"
    )


class MasksSummarySpec(_Strict):
    """Where the mask (a person) is on screen, as ranges."""

    min_coverage: Fraction01 = Field(
        default=0.01, description="fraction of the frame the mask must cover to count"
    )
    merge_gap_s: Seconds = 0.5
    check_every_s: Seconds = Field(
        default=0.25,
        description="measure the mask at most this often (decoding a PNG mask costs about "
        "as much as inferring it); frames in between count as the one measured before them; "
        "0 measures every frame",
    )


class SummarySpec(_Strict):
    """The aggregators a pipeline computes over its per-frame lines (at least one)."""

    detections: DetectionsSummarySpec | None = None
    classes: ClassesSummarySpec | None = None
    moderation: ModerationSummarySpec | None = None
    quality: QualitySummarySpec | None = None
    texts: TextsSummarySpec | None = None
    masks: MasksSummarySpec | None = None
    auto: bool = Field(
        default=False,
        description="pick the aggregators by the result kinds the lines carry (the default "
        "of a pipeline without a summary block); declared ones keep their settings",
    )
    enabled: bool = Field(default=True, description="summary: false writes no summary")

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, data: Any) -> Any:
        """``summary: false`` (none) and ``summary: true`` (by result kind) in the YAML."""
        if isinstance(data, bool):
            return {"enabled": False} if data is False else {"auto": True}
        return data

    @model_validator(mode="after")
    def _some(self) -> SummarySpec:
        if self.enabled and not self.auto and not self.declared():
            raise ValueError(
                "summary: expected at least one of detections, classes, moderation, quality, "
                "texts, masks (or auto: true), got none"
            )
        return self

    def declared(self) -> list[str]:
        """The aggregators named in the block, in a fixed order."""
        return [k for k in AGGREGATOR_KEYS if getattr(self, k) is not None]


AGGREGATOR_KEYS = ("detections", "classes", "moderation", "quality", "texts", "masks")
AUTO = SummarySpec(auto=True)
