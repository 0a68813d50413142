"""Class names from a label file (``postprocess.labels_file`` of a ``task: classes`` model):
one name a line, in the order of the model's scores, as Triton's ``label_filename``."""

from __future__ import annotations

from pathlib import Path

from frameserve.errors import ConfigError
from frameserve.processing.spec import ClassesSpec


def read_lines(path: Path, field: str) -> list[str]:
    """One name a line (a final newline starts no name, ``\r\n`` counts as ``\n``);
    ConfigError names the file and the field that points at it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: {field}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: {field}: not UTF-8 text: {err}") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_label_file(path: Path) -> list[str]:
    """A ``postprocess`` labels file: at least one name."""
    lines = read_lines(path, "postprocess.labels_file")
    if not lines:
        raise ConfigError(f"{path}: postprocess.labels_file: expected one name a line, got none")
    return lines


def with_label_file(spec: ClassesSpec, folder: Path) -> ClassesSpec:
    """``spec`` with ``labels`` read from its ``labels_file`` (unchanged when it lists them)."""
    if spec.labels_file is None:
        return spec
    return spec.model_copy(update={"labels": read_label_file(folder / spec.labels_file)})


def check_class_count(spec: ClassesSpec, dims: list[int], source: str) -> None:
    """A model whose output says how many classes it scores must have as many names."""
    count = 1
    for d in dims:
        if d < 0:
            return  # a dynamic size: checked on each result instead
        count *= d
    if dims and count != len(spec.labels):
        field = f"labels_file ({spec.labels_file})" if spec.labels_file else "labels"
        raise ConfigError(
            f"{source}: postprocess.{field}: expected {count} names, one per class the output "
            f"{spec.output!r} scores (dims {dims}), got {len(spec.labels)}"
        )
