"""``frameserve convert``: a source model becomes an OpenVINO IR version of a repository model.

Everything the user gave is checked, and the model converted in memory, before anything is
written. The IR is saved into a hidden folder inside the model folder (the repository ignores
names that are not version numbers) and renamed to its version number in one step, so a
failure never leaves half a version for a polling server to load.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from frameserve.backends.openvino_convert import (
    PortSummary,
    convert,
    frontend_extensions,
    parse_input,
    parse_layout,
    save,
    source_format,
    summarize,
)
from frameserve.errors import ConfigError, InvalidInput
from frameserve.serving.config import ModelConfig, VersionPolicy, load_model_config
from frameserve.serving.pipeline import PIPELINE_FILE
from frameserve.serving.repository import CONFIG_FILE, check_model_name, version_numbers

if TYPE_CHECKING:
    import openvino as ov


@dataclass(frozen=True)
class ConvertOptions:
    """What ``frameserve convert`` was asked to do (the CLI's arguments, unparsed)."""

    src: Path
    repository: Path
    model: str
    version: str | None = None  # None: the next free version number
    inputs: tuple[str, ...] = ()  # NAME or NAME[SHAPE]
    outputs: tuple[str, ...] = ()
    compress_fp16: bool = False
    layouts: tuple[str, ...] = ()  # LAYOUT or NAME:LAYOUT
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConvertResult:
    """What was written, for the CLI to print."""

    model: str
    version: int
    path: Path  # the version folder
    inputs: tuple[PortSummary, ...]
    outputs: tuple[PortSummary, ...]
    size_bytes: int  # model.xml + model.bin
    compressed_fp16: bool
    config_path: Path
    config_written: bool  # False: model.yaml existed and was left as it was
    config: dict[str, object] = field(default_factory=dict)  # what was written, if anything
    policy: str = ""  # model.yaml's version_policy, in words
    served_versions: tuple[int, ...] = ()  # what that policy serves once this version exists

    @property
    def served(self) -> bool:
        return self.version in self.served_versions


def resolve_version(requested: str | None, existing: list[int], folder: Path) -> int:
    """``requested`` checked, or the version after the highest existing one (1 for none)."""
    if requested is None:
        return max(existing, default=0) + 1
    text = requested.strip()
    if not (text.isascii() and text.isdigit()) or text != str(int(text)) or int(text) <= 0:
        raise InvalidInput(
            f"--version: expected a positive integer without leading zeros, got {requested!r}"
        )
    version = int(text)
    if (folder / text).exists():
        raise InvalidInput(
            f"--version {version}: {folder / text} exists (versions {existing}); expected a "
            f"new version, e.g. {max(existing, default=0) + 1} (convert never overwrites)"
        )
    return version


def _existing_config(folder: Path) -> ModelConfig | None:
    if (folder / PIPELINE_FILE).is_file():
        raise InvalidInput(
            f"--model {folder.name!r}: {folder} is a model pipeline ({PIPELINE_FILE}), "
            "expected a model folder or a new name"
        )
    if not (folder / CONFIG_FILE).is_file():
        return None
    config = load_model_config(folder / CONFIG_FILE)
    if config.backend != "openvino":
        raise ConfigError(
            f"{folder / CONFIG_FILE}: backend: an OpenVINO IR version needs 'openvino', "
            f"got {config.backend!r}"
        )
    return config


def new_model_config(inputs: Sequence[PortSummary]) -> dict[str, object]:
    """model.yaml for a new model; inputs/outputs are left for the server to read."""
    config: dict[str, object] = {"backend": "openvino"}
    # A scalar or a fixed first dim other than 1 cannot be a batch dim; say so rather than
    # leave it to the server's guess. A dynamic or 1 first dim may batch: the server decides.
    if any(i.dims is not None and (not i.dims or i.dims[0] not in (-1, 1)) for i in inputs):
        config["max_batch_size"] = 0
    return config


def _check_arguments(options: ConvertOptions) -> None:
    """The checks that need no conversion: names, files and argument syntax."""
    try:
        check_model_name(options.model)
    except InvalidInput as err:
        raise InvalidInput(f"--model: {err.message}") from None
    if not options.src.exists():
        raise InvalidInput(f"SRC {str(options.src)!r}: expected a model file, found nothing")
    source_format(options.src)
    names = [parse_input(i)[0] for i in options.inputs]
    for flag, values in (("--input", names), ("--output", list(options.outputs))):
        twice = sorted({n for n in values if values.count(n) > 1})
        if twice:
            raise InvalidInput(f"{flag}: each name once, got {twice} more than once")
    for layout in options.layouts:
        parse_layout(layout)
    frontend_extensions(options.extensions)
    if options.repository.exists() and not options.repository.is_dir():
        raise ConfigError(
            f"--repository {str(options.repository)!r}: expected a folder, it is a file"
        )


def _fresh_dir(parent: Path) -> Path:
    """A new hidden folder; unlike mkdtemp's (0700) it keeps the umask's mode once renamed."""
    path = parent / f".convert-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _write_version(model: ov.Model, folder: Path, version: int, compress_fp16: bool) -> Path:
    """Save into a hidden folder of ``folder``, then rename it to the version number."""
    created = [p for p in (folder, folder.parent) if not p.exists()]  # removed on failure
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = _fresh_dir(folder)
    except OSError as err:
        raise ConfigError(f"--repository: cannot create {folder}: {err.strerror}") from None
    target = folder / str(version)
    try:
        save(model, staging / "model.xml", compress_fp16)
        # rename() would silently replace an empty folder made since the check
        if target.exists():
            raise InvalidInput(f"--version {version}: {target} appeared while converting")
        staging.rename(target)
    except BaseException as err:  # Ctrl-C included: leave no staging folder behind
        shutil.rmtree(staging, ignore_errors=True)
        for path in created:
            _remove_empty(path)
        if isinstance(err, OSError | RuntimeError):  # OpenVINO reports write errors as these
            raise ConfigError(f"{target}: cannot write the IR: {err}") from None
        raise
    return target


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: someone else wrote there meanwhile, so it is theirs now


def _write_config(path: Path, config: dict[str, object]) -> None:
    text = yaml.safe_dump(config, sort_keys=False)
    try:
        # "x": a model.yaml written meanwhile by someone else is never replaced
        with path.open("x") as f:
            f.write("# written by frameserve convert; the server reads inputs/outputs from ")
            f.write(f"the model\n{text}")
    except OSError as err:
        raise ConfigError(
            f"{path}: the version was written, but model.yaml could not be: {err.strerror}; "
            f"expected a new file holding: {text.strip()!r}"
        ) from None


def convert_to_ir(options: ConvertOptions) -> ConvertResult:
    """Convert ``options.src`` into ``<repository>/<model>/<version>/model.xml`` (+ ``.bin``)."""
    _check_arguments(options)
    folder = options.repository / options.model
    config = _existing_config(folder)
    existing = version_numbers(folder)
    version = resolve_version(options.version, existing, folder)
    model = convert(
        options.src,
        shapes=[parse_input(i) for i in options.inputs],
        outputs=options.outputs,
        layouts=[parse_layout(x) for x in options.layouts],
        extensions=options.extensions,
    )
    inputs, outputs = summarize(model.inputs), summarize(model.outputs)
    path = _write_version(model, folder, version, options.compress_fp16)
    written: dict[str, object] = {}
    if config is None:
        written = new_model_config(inputs)
        _write_config(folder / CONFIG_FILE, written)
    policy = config.version_policy if config is not None else VersionPolicy()
    return ConvertResult(
        model=options.model,
        version=version,
        path=path,
        inputs=inputs,
        outputs=outputs,
        size_bytes=sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
        compressed_fp16=options.compress_fp16,
        config_path=folder / CONFIG_FILE,
        config_written=config is None,
        config=written,
        policy=policy.describe(),
        served_versions=tuple(policy.select([*existing, version])),
    )
