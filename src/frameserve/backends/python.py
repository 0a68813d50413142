"""Python backend: a user's ``model.py`` in the version folder.

The script defines either a class ``Model`` or module-level functions with this interface
(the one video teams already use to plug in custom models; ``docs/scripts.md``):

- ``setup(config: dict)``: load weights; ``config`` holds name, version, path, parameters,
  max_batch_size, inputs and outputs;
- ``warmup()`` (optional): called once after ``setup``;
- ``configure(stream_config: dict)`` (optional): once per video stream before its first frame,
  with ``{"stream": id, "params": {...}, "profiling": bool}``; raising refuses the params
  (the client gets 400 with the message); ``release(stream: str)`` (optional) when it ends;
- ``process(batch, streams=None, profiling=False)``: one batch. ``streams`` (when the
  signature takes it) lists each row's stream id (None for online requests); ``profiling``
  (when it takes it) is True when a row's stream asked for a profile, and ``process`` may then
  return ``(outputs, {stage: seconds})``: those seconds go into the run's stage profile.
  A ``process(batch)`` of one argument keeps working.

It runs in-process on a pool of ``instances`` threads (numpy and most native libraries release
the GIL). Inputs and outputs must be declared in ``model.yaml``: there is no file to read them from.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from frameserve.backends._threads import BlockingRunner
from frameserve.backends.base import BackendSettings, StreamKey, TensorSpec
from frameserve.datatypes import from_numpy
from frameserve.errors import InvalidInput, ModelExecutionError, ModelLoadError


def _declared(tensors: Any, batch_dim: bool, field: str, where: str) -> tuple[TensorSpec, ...]:
    if not tensors:
        raise ModelLoadError(f"{where}: backend python needs '{field}' declared in model.yaml")
    lead = (-1,) if batch_dim else ()
    return tuple(TensorSpec(t.name, t.datatype, lead + tuple(t.dims)) for t in tensors)


class PythonBackend:
    """Runs a user script's ``process`` on a sized thread pool."""

    platform = "python"

    def __init__(self, settings: BackendSettings) -> None:
        cfg = settings.config
        script = settings.path / "model.py"
        # Relative to the repository (<model>/<version>/model.py): errors reach clients.
        where = f"{settings.path.parent.name}/{settings.path.name}/model.py"
        if not script.is_file():
            raise ModelLoadError(f"{settings.path}: expected model.py for backend python")
        batch_dim = bool(settings.batch_dim)  # unset max_batch_size: no batch dimension
        self.inputs = _declared(cfg.inputs, batch_dim, "inputs", where)
        self.outputs = _declared(cfg.outputs, batch_dim, "outputs", where)
        self.max_concurrency = cfg.instances or 1
        module_name = f"frameserve_user_{settings.model_name}_{settings.version}_{id(self)}"
        spec = importlib.util.spec_from_file_location(module_name, script)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"{where}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        # In sys.modules while it runs: @dataclass and typing look their module up there
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
            target = module.Model() if hasattr(module, "Model") else module
            if not callable(getattr(target, "process", None)):
                raise ModelLoadError(
                    f"{where}: defines no process(batch) (in class Model or at top level)"
                )
            self._target = target
            setup = getattr(target, "setup", None)
            if callable(setup):
                setup(self._context(settings))
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001 - user code may raise anything
            raise ModelLoadError(
                f"{where}: failed during import/setup: {type(err).__name__}: {err}"
            ) from None
        finally:
            sys.modules.pop(module_name, None)
        self._output_names = {o.name for o in self.outputs}
        self._runner = BlockingRunner(
            self.max_concurrency, f"py-{settings.model_name}", settings.budget.cpus
        )
        self._where = where
        self._name = settings.model_name
        self._batch_dim = batch_dim
        self._takes = _keywords(target.process, ("streams", "profiling"))
        hooks = [callable(getattr(target, h, None)) for h in ("configure", "release")]
        self.keeps_streams = bool(self._takes) or any(hooks)
        self._lock = threading.Lock()  # the two dicts below: configure, release and batches
        self._profiling: dict[StreamKey, bool] = {}  # configured streams -> profile asked
        self._stages: dict[str, float] = {}  # the script's own stage seconds, since load

    @staticmethod
    def _context(settings: BackendSettings) -> dict[str, Any]:
        cfg = settings.config
        return {
            "name": settings.model_name,
            "version": settings.version,
            "path": str(settings.path),
            "parameters": dict(cfg.parameters),
            "max_batch_size": cfg.max_batch_size or 0,
            "inputs": [t.model_dump(exclude_none=True) for t in cfg.inputs or []],
            "outputs": [t.model_dump(exclude_none=True) for t in cfg.outputs or []],
        }

    def describe(self) -> str:
        return f"python script={self._where} threads={self.max_concurrency}"

    def warmup(self) -> None:
        hook = getattr(self._target, "warmup", None)
        if callable(hook):
            hook()

    def configure(self, stream_config: dict[str, Any]) -> None:
        """Pass ``stream_config`` to the script's ``configure`` as it is (no-op when it
        defines none); the video layer calls ``configure_stream``."""
        hook = getattr(self._target, "configure", None)
        if callable(hook):
            hook(stream_config)

    def configure_stream(
        self, stream: StreamKey, params: Mapping[str, Any], profiling: bool = False
    ) -> None:
        """Give one stream its params through the script's ``configure`` (when defined)."""
        hook = getattr(self._target, "configure", None)
        if callable(hook):
            config = {"stream": stream, "params": dict(params), "profiling": profiling}
            try:
                hook(config)
            except Exception as err:  # noqa: BLE001 - user code may raise anything
                raise InvalidInput(
                    f"params: model {self._name} refused them ({self._where} configure()): "
                    f"{type(err).__name__}: {err}"
                ) from None
        with self._lock:
            self._profiling[stream] = profiling

    def release_stream(self, stream: StreamKey) -> None:
        """The stream ended: forget it and call the script's ``release`` (when defined)."""
        with self._lock:
            known = self._profiling.pop(stream, None) is not None
        hook = getattr(self._target, "release", None)
        if known and callable(hook):
            try:
                hook(stream)
            except Exception as err:  # noqa: BLE001 - user code; the stream is over anyway
                raise ModelExecutionError(
                    f"{self._where}: release() raised {type(err).__name__}: {err}"
                ) from None

    def stage_seconds(self) -> dict[str, float]:
        with self._lock:
            return dict(self._stages)

    def _call(
        self, batch: Mapping[str, np.ndarray], streams: Sequence[StreamKey | None] | None
    ) -> Any:
        """``process`` with the keywords its signature takes; returns (result, profiling)."""
        kwargs: dict[str, Any] = {}
        rows = self._rows(batch)
        row_streams = list(streams) if streams is not None else [None] * rows
        if "streams" in self._takes:
            kwargs["streams"] = row_streams
        profiling = False
        if "profiling" in self._takes:
            with self._lock:
                profiling = any(self._profiling.get(s) for s in row_streams if s is not None)
            kwargs["profiling"] = profiling
        return self._target.process(dict(batch), **kwargs), profiling

    def _rows(self, batch: Mapping[str, np.ndarray]) -> int:
        if not self._batch_dim or not batch:
            return 1
        first = next(iter(batch.values()))
        return int(first.shape[0]) if first.ndim else 1

    def _stage_times(self, result: Any) -> Any:
        """Split ``(outputs, {stage: seconds})`` and add the seconds; returns the outputs."""
        if not (isinstance(result, tuple) and len(result) == 2):
            return result
        outputs, stages = result
        if not isinstance(stages, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) and v >= 0 for k, v in stages.items()
        ):
            raise ModelExecutionError(
                f"{self._where}: process() returned (outputs, stages): expected stages as a "
                f"dict of stage name -> seconds >= 0, got {stages!r:.200}"
            )
        with self._lock:
            for stage, seconds in stages.items():
                self._stages[stage] = self._stages.get(stage, 0.0) + float(seconds)
        return outputs

    def _process(
        self,
        batch: Mapping[str, np.ndarray],
        streams: Sequence[StreamKey | None] | None = None,
    ) -> dict[str, np.ndarray]:
        try:
            result, profiling = self._call(batch, streams)
        except Exception as err:  # noqa: BLE001 - user code may raise anything
            raise ModelExecutionError(
                f"{self._where}: process() raised {type(err).__name__}: {err}"
            ) from None
        if profiling:
            result = self._stage_times(result)
        if not isinstance(result, Mapping):
            raise ModelExecutionError(
                f"{self._where}: process() must return a dict of arrays, "
                f"got {type(result).__name__}"
            )
        missing = self._output_names - set(result)
        if missing:
            raise ModelExecutionError(
                f"{self._where}: process() returned {sorted(result)}, "
                f"missing outputs {sorted(missing)}"
            )
        out = {}
        for name in self._output_names:
            arr = np.asarray(result[name])
            try:
                from_numpy(arr.dtype)
            except KeyError:
                raise ModelExecutionError(
                    f"{self._where}: output {name!r} has dtype {arr.dtype}, "
                    "which has no v2 datatype"
                ) from None
            out[name] = arr
        return out

    async def infer(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self._runner.run(self._process, batch)

    async def infer_rows(
        self, batch: Mapping[str, np.ndarray], streams: Sequence[StreamKey | None]
    ) -> dict[str, np.ndarray]:
        return await self._runner.run(self._process, batch, streams)

    def close(self) -> None:
        self._runner.close()
        hook = getattr(self._target, "finalize", None)
        if callable(hook):
            hook()


def _keywords(process: Any, names: tuple[str, ...]) -> frozenset[str]:
    """Which of ``names`` the script's ``process`` accepts (read once, at load)."""
    try:
        params = inspect.signature(process).parameters
    except (TypeError, ValueError):  # a builtin or C callable: the plain call only
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return frozenset(names)
    return frozenset(n for n in names if n in params)
