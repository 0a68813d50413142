"""Python backend: a user's ``model.py`` in the version folder.

The script defines either a class ``Model`` or module-level functions with this interface
(the one video teams already use to plug in custom models):

- ``setup(config: dict)``: load weights; ``config`` holds name, version, path, parameters,
  max_batch_size, inputs and outputs;
- ``warmup()`` (optional): called once after ``setup``;
- ``configure(stream_config: dict)`` (optional): per-stream settings from video pipelines;
- ``process(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]``: one batch.

It runs in-process on a pool of ``instances`` threads (numpy and most native libraries release
the GIL). Inputs and outputs must be declared in ``model.yaml``: there is no file to read them from.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from frameserve.backends._threads import BlockingRunner
from frameserve.backends.base import BackendSettings, TensorSpec
from frameserve.datatypes import from_numpy
from frameserve.errors import ModelExecutionError, ModelLoadError


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
        self._runner = BlockingRunner(self.max_concurrency, f"py-{settings.model_name}")
        self._where = where

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
        """Pass per-stream settings to the script (no-op when it defines no ``configure``)."""
        hook = getattr(self._target, "configure", None)
        if callable(hook):
            hook(stream_config)

    def _process(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = self._target.process(dict(batch))
        except Exception as err:  # noqa: BLE001 - user code may raise anything
            raise ModelExecutionError(
                f"{self._where}: process() raised {type(err).__name__}: {err}"
            ) from None
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

    def close(self) -> None:
        self._runner.close()
        hook = getattr(self._target, "finalize", None)
        if callable(hook):
            hook()
