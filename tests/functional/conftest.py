"""One server per test module, serving ``repos.api_repository``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from repos import api_repository
from servers import RunningServer, ServerLauncher


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("api")
    repo = api_repository(folder / "models")
    launcher = ServerLauncher(folder)
    server = launcher.start(repo, "--max-request-mb", "8", "--max-elements", "1000000")
    yield server
    code = server.terminate()
    assert code == 0, server.log()


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"
