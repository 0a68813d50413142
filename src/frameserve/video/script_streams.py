"""Per-stream params for a pipeline's script models: ``configure`` before a stream's first
frame, ``release`` when it ends.

Backends know nothing of video; the serving layer exposes a version's per-stream calls
(``ModelVersion.configure_stream`` / ``release_stream``, no-ops for stateless backends), and
this module is where the video layer calls them: ``video run`` and jobs (``VideoRun.run``) for
each input before its decoder starts, live streams at attach. The stream id is the one the
schedulers see (``FrameProcessor.stream_key``), so a script's ``process`` finds in
``streams`` the same id that its ``configure`` got.

Calls run on the server's loop (which owns the repository); the methods here block the
calling thread (a CLI, job or API worker thread), never the loop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from frameserve.errors import FrameserveError, InvalidInput
from frameserve.serving.local import ServerHandle
from frameserve.serving.model import ModelVersion
from frameserve.video.process import FrameProcessor
from frameserve.video.profile import StageProfile

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 60.0  # a script's configure or release; user code, so bounded


class ScriptStreams:
    """The configured streams of one source (a run's inputs, a live stream)."""

    def __init__(
        self,
        handle: ServerHandle,
        processor: FrameProcessor,
        params: Mapping[str, Any] | None = None,
        profiling: bool = False,
    ) -> None:
        self.handle = handle
        self.processor = processor
        self.params = dict(params or {})
        self.profiling = profiling
        self._open: dict[str, list[ModelVersion]] = {}  # stream key -> versions configured

    def _versions(self) -> list[ModelVersion]:
        found = self.processor.versions.values()
        return [mv for mv in found if mv.streams_backend is not None]

    def open(self, stream: int) -> None:
        """Configure input ``stream`` on every script model of the pipeline (before its
        first frame); ``InvalidInput`` with the script's message when one refuses."""
        self.open_key(self.processor.stream_key(stream))

    def open_key(self, key: str) -> None:
        versions = self._versions()
        if not versions and self.params:
            raise InvalidInput(
                f"params: pipeline {self.processor.name} runs no script model that takes "
                f"per-stream params (a model.py with configure()); its models: "
                f"{', '.join(self.processor.models)}"
            )
        if not versions or key in self._open:
            return

        async def configure() -> None:
            done: list[ModelVersion] = []
            try:
                for mv in versions:
                    await mv.configure_stream(key, self.params, self.profiling)
                    done.append(mv)
            except BaseException:
                for mv in done:
                    await mv.release_stream(key)
                raise

        self.handle.submit(configure()).result(CALL_TIMEOUT_S)
        self._open[key] = versions

    def close(self, stream: int) -> None:
        self.close_key(self.processor.stream_key(stream))

    def close_key(self, key: str, wait: bool = True) -> None:
        """Release a configured stream (errors are logged: the stream is over anyway).
        ``wait=False``: only schedule it (a thread the loop may be waiting for)."""
        versions = self._open.pop(key, None)
        if not versions:
            return

        async def release() -> None:
            for mv in self._with_current(versions):
                try:
                    await mv.release_stream(key)
                except FrameserveError as err:
                    log.warning("stream %s: %s", key, err.message)

        try:
            future = self.handle.submit(release())
            if wait:
                future.result(CALL_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the loop may be gone at shutdown
            log.warning("stream %s: release failed: %s: %s", key, type(err).__name__, err)

    def _with_current(self, versions: list[ModelVersion]) -> list[ModelVersion]:
        """``versions`` and the versions serving their models now (a reload during the
        stream configured it there too; on the loop, which owns the repository)."""
        out = list(versions)
        for mv in versions:
            try:
                now = self.processor.server.repository.get(mv.name)
            except FrameserveError:
                continue  # unloaded meanwhile
            if now not in out:
                out.append(now)
        return out

    def close_all(self, wait: bool = True) -> None:
        for key in list(self._open):
            self.close_key(key, wait)

    def check(self) -> None:
        """Validate the params now, on a stream that gets no frames (configure, then release):
        a job refuses bad params at submit, long before it runs."""
        key = f"check-{uuid.uuid4().hex[:12]}"
        self.open_key(key)
        self.close_key(key)


def stage_counters(processor: FrameProcessor) -> dict[str, dict[str, float]]:
    """Each script model's own stage seconds now (read before and after a run)."""
    return {model: mv.stage_seconds() for model, mv in processor.versions.items()}


def add_script_stages(
    profile: StageProfile, before: dict[str, dict[str, float]], processor: FrameProcessor
) -> None:
    """What the pipeline's script models reported during the run, into its profile (like
    "inference", a model's counters include other callers' batches that ran meanwhile)."""
    for model, now in stage_counters(processor).items():
        earlier = before.get(model, {})
        for stage, seconds in now.items():
            spent = seconds - earlier.get(stage, 0.0)
            if spent > 0:
                profile.add_script(model, stage, spent)
