"""``frameserve zoo pull`` with real pip and the real pinned wheels.

The wheels (36 MB + 27 MB) are kept in the user's cache (``default_cache_dir()``), so only the
first run downloads them. Tests that need a registry without the network serve a copy of the
cached wheel from a local ``file://`` index; pip's own settings are cleared for those so the
host's extra indexes cannot answer instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from frameserve.zoo import CATALOG, ZooError, default_cache_dir, pull, resolve
from frameserve.zoo.catalog import MEDIAPIPE, RAPIDOCR
from frameserve.zoo.configs import ZOO_FILES
from frameserve.zoo.pull import MANIFEST, pip_command

NO_REGISTRY = "http://127.0.0.1:9/simple"  # discard port: connection refused at once


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _dot_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every zoo model, pulled once for this module through the shared wheel cache."""
    dest = tmp_path_factory.mktemp("zoo") / "models"
    results = pull(None, dest, cache_dir=default_cache_dir())
    assert [(r.name, r.status) for r in results] == [(n, "installed") for n in CATALOG]
    return dest


@pytest.fixture
def isolated_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip without the host's config: only the index a test names is asked, and only once."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")  # pip's default 5 retries take ~8 s to refuse


@pytest.fixture
def local_index(repo: Path, tmp_path: Path) -> str:
    """A PEP 503 index on disk holding the real rapidocr wheel (copied from the cache)."""
    project = tmp_path / "index" / "simple" / RAPIDOCR.name
    project.mkdir(parents=True)
    shutil.copyfile(default_cache_dir() / RAPIDOCR.wheel, project / RAPIDOCR.wheel)
    link = f'<a href="{RAPIDOCR.wheel}">{RAPIDOCR.wheel}</a>'
    (project / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>")
    return (tmp_path / "index" / "simple").as_uri()


def test_catalog_matches_the_text_files() -> None:
    assert set(ZOO_FILES) == set(CATALOG)
    for model in CATALOG.values():
        assert set(model.requires) <= set(CATALOG)
        assert (model.package is None) == (model.member is None) == (model.target is None)


def test_a_pipeline_brings_the_models_it_runs() -> None:
    assert [m.name for m in resolve(["ocr"])] == ["text-det", "text-cls", "text-rec", "ocr"]
    assert [m.name for m in resolve(None)] == list(CATALOG)


def test_pip_is_asked_for_one_fixed_platform() -> None:
    cmd = pip_command(MEDIAPIPE, Path("/x"), None)
    assert cmd[:3] == [sys.executable, "-m", "pip"]
    assert cmd[cmd.index("--platform") + 1] == "manylinux_2_28_x86_64"
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert cmd[-1] == "mediapipe==0.10.21" and "--index-url" not in cmd
    with_index = pip_command(RAPIDOCR, Path("/x"), "https://mirror/simple")
    assert with_index[with_index.index("--index-url") + 1] == "https://mirror/simple"


def test_pull_installs_every_model_with_pinned_files(repo: Path) -> None:
    assert sorted(p.name for p in repo.iterdir()) == sorted([*CATALOG, MANIFEST])
    for model in CATALOG.values():
        folder = repo / model.name
        for relpath, text in ZOO_FILES[model.name].items():
            assert (folder / relpath).read_text() == text
        assert (folder / "SOURCE.txt").is_file()
        if model.target is not None:
            assert _sha256(folder / model.target) == model.member_sha256
            licence = (folder / "LICENSE").read_text().lstrip()
            assert licence.startswith(("Apache", "Copyright", "GNU AFFERO"))  # nsfw: AGPL-3.0
    dictionary = (repo / "text-rec" / "dict.txt").read_text(encoding="utf-8")
    assert len(dictionary.split("\n")) == 18708 and dictionary.endswith("🛅")
    manifest = (repo / MANIFEST).read_text()
    assert '"mediapipe==0.10.21"' in manifest and '"rapidocr==3.10.0"' in manifest


def test_second_pull_is_up_to_date_and_touches_nothing(repo: Path) -> None:
    before = _mtimes(repo)
    results = pull(None, repo)
    assert {r.status for r in results} == {"up to date"}
    assert _mtimes(repo) == before
    assert _dot_entries(repo) == [MANIFEST]


def test_force_reinstalls(repo: Path) -> None:
    inode = (repo / "faces").stat().st_ino
    [result] = pull(["faces"], repo, force=True)
    assert (result.name, result.status, result.path) == ("faces", "updated", repo / "faces")
    assert (repo / "faces").stat().st_ino != inode
    assert _sha256(repo / "faces" / "1" / "model.tflite") == CATALOG["faces"].member_sha256
    assert _dot_entries(repo) == [MANIFEST]


def test_a_changed_model_is_replaced(repo: Path, tmp_path: Path) -> None:
    pull(["faces"], tmp_path)
    (tmp_path / "faces" / "model.yaml").write_text("backend: onnxruntime\n")
    (tmp_path / "faces" / "2").mkdir()
    [result] = pull(["faces"], tmp_path)
    assert result.status == "updated"
    assert (tmp_path / "faces" / "model.yaml").read_text() == ZOO_FILES["faces"]["model.yaml"]
    assert not (tmp_path / "faces" / "2").exists()
    assert _dot_entries(tmp_path) == [MANIFEST]


def test_member_checksum_mismatch_installs_nothing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = "0" * 64
    monkeypatch.setitem(CATALOG, "faces", replace(CATALOG["faces"], member_sha256=bad))
    with pytest.raises(ZooError) as err:
        pull(["faces"], tmp_path)
    message = str(err.value)
    assert "faces" in message and bad in message
    assert "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1" in message
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_wheel_is_fetched_again(
    tmp_path: Path, local_index: str, isolated_pip: None
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / RAPIDOCR.wheel).write_bytes(b"not a wheel")
    [result] = pull(["text-cls"], tmp_path / "models", cache_dir=cache, index_url=local_index)
    assert result.status == "installed"
    assert _sha256(cache / RAPIDOCR.wheel) == RAPIDOCR.sha256
    assert sorted(p.name for p in cache.iterdir()) == [RAPIDOCR.wheel]


def test_wheel_checksum_mismatch_keeps_nothing(
    tmp_path: Path, local_index: str, isolated_pip: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = "f" * 64
    model = CATALOG["text-cls"]
    monkeypatch.setitem(CATALOG, "text-cls", replace(model, package=replace(RAPIDOCR, sha256=bad)))
    cache, dest = tmp_path / "cache", tmp_path / "models"
    with pytest.raises(ZooError) as err:
        pull(["text-cls"], dest, cache_dir=cache, index_url=local_index)
    message = str(err.value)
    assert "rapidocr==3.10.0" in message and bad in message and RAPIDOCR.sha256 in message
    assert list(cache.iterdir()) == [] and list(dest.iterdir()) == []


def test_no_registry_is_a_clear_error(tmp_path: Path, isolated_pip: None) -> None:
    cache, dest = tmp_path / "cache", tmp_path / "models"
    with pytest.raises(ZooError) as err:
        pull(["faces"], dest, cache_dir=cache, index_url=NO_REGISTRY)
    message = str(err.value)
    assert "pip could not download mediapipe==0.10.21 from " + NO_REGISTRY in message
    assert "zoo pull needs access to a PyPI registry; or pass --index-url" in message
    assert "\n" not in message
    assert list(cache.iterdir()) == [] and list(dest.iterdir()) == []


def test_unknown_model_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ZooError, match="unknown zoo model 'nope'; known: faces, faces-near"):
        pull(["faces", "nope"], tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_destination_must_be_a_writable_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ZooError, match="expected a writable folder"):
        pull(["ocr"], tmp_path / "file" / "models")


def _frameserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "frameserve.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)


def test_cli_pull_and_list(repo: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "models")
    done = _frameserve("zoo", "pull", "--dest", dest, "faces")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"faces: installed ({dest}/faces)"]
    listing = _frameserve("zoo", "list", "--dest", dest).stdout.splitlines()
    assert listing[0].split()[:2] == ["NAME", "PACKAGE"] and len(listing) == 1 + len(CATALOG)
    rows = {line.split()[0]: line.split()[3] for line in listing[1:]}
    assert rows == {name: "installed" if name == "faces" else "-" for name in CATALOG}


def test_cli_bad_index_url_exits_1_with_one_line(tmp_path: Path, isolated_pip: None) -> None:
    done = _frameserve(
        "zoo", "pull", "--dest", str(tmp_path / "models"), "--cache-dir", str(tmp_path / "c"),
        "--index-url", NO_REGISTRY, "text-det", env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith("frameserve zoo pull: pip could not download")
    assert "rapidocr==3.10.0" in errors[0] and "--index-url" in errors[0]
