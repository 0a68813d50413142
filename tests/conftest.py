"""Fixtures shared by every test tier.

``start_server`` runs the real ``frameserve serve`` in a subprocess on free loopback ports and
waits until it is ready; every server a test started is stopped at the end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
for folder in (
    TESTS,
    TESTS / "functional",
):  # shared builders: tests/models.py, functional/repos.py
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from servers import RunningServer, ServerLauncher  # noqa: E402


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Undo what a test's in-process ``frameserve`` command did to the root logger: its handler
    writes to the ``sys.stderr`` pytest captured for that test, which is closed afterwards, so a
    background thread of a later test logging through it would print a logging error."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def zoo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every zoo model, pulled once per session through the shared wheel cache (read-only)."""
    from frameserve.zoo import default_cache_dir, pull

    dest = tmp_path_factory.mktemp("zoo") / "models"
    pull(None, dest, cache_dir=default_cache_dir())
    return dest


@pytest.fixture(scope="session")
def zoo_repository_f32(zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo served at f32, for tests that compare with f32 references: the zoo serves at
    the runtime's fastest precision (bf16 on this CPU). Model files are linked, not copied."""
    dest = tmp_path_factory.mktemp("zoo-f32") / "models"
    for source in sorted(zoo_repository.iterdir()):
        if not source.is_dir():
            continue
        for path in source.rglob("*"):
            target = dest / path.relative_to(zoo_repository)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.name == "model.yaml":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(path.read_text() + "precision: f32\n")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)
    return dest


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start a fresh server for one test: ``start_server(repo, *cli_args)``."""
    launcher = ServerLauncher(tmp_path)
    yield launcher.start
    launcher.stop_all()
