"""The model repository: ``<root>/<model>/model.yaml`` (or Triton's ``config.pbtxt``) plus
numbered version folders.

Owned by the server's event loop. Loading is blocking work (reading and compiling models), so
it runs on the repository's own single loader thread; routing changes happen on the loop. A new
version is loaded and warmed before it takes traffic; a replaced or removed version is taken
out of routing first and closed only after its queued and running requests finish.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from frameserve.cpu import CpuBudget
from frameserve.errors import ConfigError, FrameserveError, InvalidInput, NotFound
from frameserve.serving.config import (
    CONFIG_FILE,
    MODEL_NAME_RE,
    TRITON_CONFIG_FILE,
    ModelConfig,
    read_folder_config,
)
from frameserve.serving.model import ModelVersion
from frameserve.serving.pipeline import PIPELINE_FILE
from frameserve.serving.stats import Metrics
from frameserve.serving.types import RepositoryEntry

log = logging.getLogger(__name__)

__all__ = ["CONFIG_FILE", "ModelRepository", "check_model_name", "version_numbers"]


@dataclass
class ModelEntry:
    """What the repository knows of one model folder."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)  # serving traffic
    # version -> (state, reason) for versions that are loading or failed; "" key: the model
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)
    config_fingerprint: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    unloaded: bool = False
    folders: frozenset[str] = frozenset()  # version folder names seen at the last sync


def check_model_name(name: str) -> str:
    """Reject names that could leave the repository folder (``/``, ``..``, encoded slashes)."""
    if not MODEL_NAME_RE.match(name) or ".." in name:
        raise InvalidInput(
            f"model name: expected letters, digits, '_', '-', '.' (no '/' or '..'), got {name!r}"
        )
    return name


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in sorted(paths):
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _decimal(name: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return name.isascii() and name.isdigit()


def version_numbers(folder: Path) -> list[int]:
    """A model folder's versions: subfolders named by a positive integer without leading zeros."""
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if p.is_dir() and _decimal(p.name)]
    return sorted(int(n) for n in names if n == str(int(n)) and int(n) > 0)


def _config_fingerprint(folder: Path) -> str:
    """Both config files count: adding a model.yaml next to a config.pbtxt changes which wins."""
    return _fingerprint([folder / CONFIG_FILE, folder / TRITON_CONFIG_FILE])


def _version_folders(folder: Path) -> list[str]:
    return [str(v) for v in version_numbers(folder)]


def _version_fingerprint(folder: Path) -> str:
    return _fingerprint([p for p in folder.rglob("*") if p.is_file()])


class ModelRepository:
    """Loads, reloads and unloads models; answers which version serves a request."""

    def __init__(
        self,
        root: Path,
        budget: CpuBudget,
        metrics: Metrics | None,
        cache_dir: Path | None = None,
        model_timeout_s: float | None = None,
    ) -> None:
        """``cache_dir``: where backends cache compiled models (None: no cache);
        ``model_timeout_s``: callers of a longer model call get 504 (None: they wait)."""
        self.root = root.resolve()
        self.cache_dir = cache_dir
        self.model_timeout_s = model_timeout_s
        self._budget = budget
        self._metrics = metrics
        self._models: dict[str, ModelEntry] = {}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._retiring: set[asyncio.Task[None]] = set()

    # -- discovery ------------------------------------------------------------------------------
    def model_folders(self) -> list[str]:
        """Names of the model folders in the repository (pipelines are listed apart)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and MODEL_NAME_RE.match(p.name)
            and not (p / PIPELINE_FILE).is_file()
        )

    def pipeline_folders(self) -> list[str]:
        """Names of the model pipelines (folders holding a pipeline.yaml)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".")
            and MODEL_NAME_RE.match(p.name)
            and (p / PIPELINE_FILE).is_file()
        )

    def _folder(self, name: str) -> Path:
        check_model_name(name)
        folder = self.root / name
        resolved = folder.resolve()
        if resolved.parent != self.root and self.root not in resolved.parents:
            raise InvalidInput(f"model {name!r}: its folder resolves outside the repository")
        return folder

    # -- routing ----------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> ModelVersion:
        """The version that serves ``name`` (newest ready when ``version`` is empty)."""
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            raise NotFound(f"model {name!r} is not loaded (see POST /v2/repository/index)")
        if not version:
            return entry.versions[max(entry.versions)]
        try:
            v = int(version)
        except ValueError:
            raise InvalidInput(
                f"model version: expected a positive integer, got {version!r}"
            ) from None
        mv = entry.versions.get(v)
        if mv is None:
            raise NotFound(
                f"model {name!r} has no ready version {v}; ready: {sorted(entry.versions)}"
            )
        return mv

    def known(self, name: str) -> bool:
        """Whether ``name`` was asked to load or has a folder here (loaded or not)."""
        if name in self._models:
            return True
        return bool(MODEL_NAME_RE.match(name)) and (self.root / name).is_dir()

    def loaded(self) -> list[ModelVersion]:
        return [mv for e in self._models.values() for _, mv in sorted(e.versions.items())]

    def versions_of(self, name: str) -> list[int]:
        entry = self._models.get(name)
        return sorted(entry.versions) if entry else []

    def failures(self) -> list[str]:
        """Models that were asked to load and have a problem (for strict readiness)."""
        return [
            f"{e.name}: {reason}"
            for e in self._models.values()
            if not e.unloaded
            for state, reason in e.problems.values()
            if state == "UNAVAILABLE"
        ]

    def index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        rows: list[RepositoryEntry] = []
        for name in sorted(set(self.model_folders()) | set(self._models)):
            entry = self._models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append(RepositoryEntry(name, "", "", ""))
                continue
            for v, _ in sorted(entry.versions.items()):
                rows.append(RepositoryEntry(name, str(v), "READY", ""))
            if ready_only:
                continue
            for v_key, (state, reason) in sorted(entry.problems.items()):
                rows.append(RepositoryEntry(name, v_key, state, reason))
            if entry.unloaded and not entry.versions:
                rows.append(RepositoryEntry(name, "", "UNAVAILABLE", "unloaded"))
        return rows

    def _relative(self, message: str) -> str:
        """``message`` with the repository's absolute path left out (clients read it; the log
        keeps the full text)."""
        return message.replace(f"{self.root}/", "").replace(str(self.root), "<repository>")

    # -- loading ----------------------------------------------------------------------------
    async def load(self, name: str, override: ModelConfig | None = None) -> None:
        """Load or reload ``name``: changed and new versions first, then retire the old ones."""
        folder = self._folder(name)
        entry = self._models.setdefault(name, ModelEntry(name))
        async with entry.lock:
            entry.unloaded = False
            if not folder.is_dir():
                self._retire(entry, list(entry.versions))
                del self._models[name]
                raise NotFound(f"model {name!r}: no folder {name!r} in the repository")
            await self._sync(entry, folder, override)

    async def _sync(self, entry: ModelEntry, folder: Path, override: ModelConfig | None) -> None:
        try:
            config = override or read_folder_config(folder)
        except ConfigError as err:
            # Remember what we saw so polling retries only after the files change again.
            entry.config_fingerprint = _config_fingerprint(folder)
            entry.folders = frozenset(_version_folders(folder))
            entry.problems = {"": ("UNAVAILABLE", self._relative(err.message))}
            log.error("model %s: %s", entry.name, err.message)
            raise type(err)(self._relative(err.message)) from None
        config_fp = _config_fingerprint(folder) + (override.model_dump_json() if override else "")
        available = sorted(
            int(p.name)
            for p in folder.iterdir()
            if p.is_dir() and _decimal(p.name) and int(p.name) > 0
        )
        selected = config.version_policy.select(available)
        entry.problems = {}
        if not selected:
            reason = f"no version folder matches version_policy (found {available or 'none'})"
            entry.problems[""] = ("UNAVAILABLE", reason)
            self._retire(entry, list(entry.versions))
            raise ConfigError(f"model {entry.name!r}: {reason}")
        fresh: dict[int, ModelVersion] = {}
        for v in selected:
            fp = (config_fp, _version_fingerprint(folder / str(v)))
            current = entry.versions.get(v)
            if current is not None and current.fingerprint == fp:
                continue
            entry.problems[str(v)] = ("LOADING", "")
            try:
                fresh[v] = await self._load_version(entry.name, v, config, folder / str(v), fp)
                del entry.problems[str(v)]
            except Exception as err:  # noqa: BLE001 - one bad version must not stop the others
                reason = (
                    err.message
                    if isinstance(err, FrameserveError)
                    else f"{type(err).__name__}: {err}"
                )
                log.error("model %s v%d failed to load: %s", entry.name, v, reason)
                # Clients see the index: paths there are relative to the repository.
                entry.problems[str(v)] = ("UNAVAILABLE", self._relative(reason))
        replaced = [v for v in fresh if v in entry.versions]
        stale = [v for v in entry.versions if v not in selected]
        old = {v: entry.versions[v] for v in replaced + stale}
        for mv in fresh.values():  # script models: running streams keep their params
            await mv.adopt_streams(list(entry.versions.values()))
        entry.versions.update(fresh)  # new versions take traffic now
        for v in stale:
            del entry.versions[v]
        entry.config_fingerprint = config_fp
        entry.folders = frozenset(_version_folders(folder))
        self._close_later(old.values())
        if entry.problems and not entry.versions:
            raise ConfigError(f"model {entry.name!r}: no version could be loaded")

    async def _load_version(
        self, name: str, version: int, config: ModelConfig, path: Path, fp: object
    ) -> ModelVersion:
        loop = asyncio.get_running_loop()
        load = functools.partial(
            ModelVersion, name, version, config, path, self._budget, self._metrics, fp,
            cache_dir=self.cache_dir, model_timeout_s=self.model_timeout_s,
        )  # fmt: skip
        mv = await loop.run_in_executor(self._loader, load)
        try:
            await mv.warmup()
        except Exception as err:  # noqa: BLE001 - a failed warm-up must not take the server down
            await asyncio.to_thread(mv.backend.close)
            raise ConfigError(f"warm-up failed: {err}") from None
        mv.start()
        log.info("loaded %s", mv.describe())
        return mv

    async def unload(self, name: str) -> None:
        """Take every version of ``name`` out of routing; close each once it has drained."""
        check_model_name(name)
        entry = self._models.get(name)
        if entry is None or (not entry.versions and entry.unloaded):
            raise NotFound(f"model {name!r} is not loaded")
        async with entry.lock:
            self._retire(entry, list(entry.versions))
            entry.problems = {}
            entry.unloaded = True

    def _retire(self, entry: ModelEntry, versions: list[int], timeout: float | None = None) -> None:
        popped = [entry.versions.pop(v) for v in versions if v in entry.versions]
        self._close_later(popped, timeout)

    def _close_later(self, versions: Iterable[ModelVersion], timeout: float | None = None) -> None:
        for mv in versions:
            task = asyncio.get_running_loop().create_task(
                mv.close(timeout), name=f"retire-{mv.name}-v{mv.version}"
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            task.add_done_callback(_log_failure)

    # -- polling ----------------------------------------------------------------------------
    async def poll(self) -> None:
        """Pick up added, changed and removed model folders."""
        present = set(self.model_folders())
        for name in sorted(present):
            entry = self._models.get(name)
            folder = self.root / name
            if entry is not None and not self._changed(entry, folder):
                continue
            try:
                await self.load(name)
            except FrameserveError:
                pass  # recorded in the index; other models keep serving
        for name in [n for n in self._models if n not in present]:
            entry = self._models.pop(name)
            self._retire(entry, list(entry.versions))
            log.info("model %s removed from the repository", name)

    def _changed(self, entry: ModelEntry, folder: Path) -> bool:
        config_fp = _config_fingerprint(folder)
        if config_fp != entry.config_fingerprint:
            return True
        if frozenset(_version_folders(folder)) != entry.folders:
            return True  # versions appeared or disappeared (the policy decides what to do)
        return any(
            mv.fingerprint != (config_fp, _version_fingerprint(folder / str(v)))
            for v, mv in entry.versions.items()
        )

    async def close(self, timeout: float | None = None) -> None:
        """Drain and close every version."""
        for entry in self._models.values():
            self._retire(entry, list(entry.versions), timeout)
        if self._retiring:
            await asyncio.wait(list(self._retiring), timeout=timeout)
        self._loader.shutdown(wait=False, cancel_futures=True)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("closing %s failed", task.get_name(), exc_info=task.exception())
