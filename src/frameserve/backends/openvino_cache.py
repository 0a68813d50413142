"""Edited graphs kept beside OpenVINO's compiled-model cache, so a model loads without its
frontend or its checks the second time.

Reading a ``.tflite`` or ``.onnx`` file and applying the declared graph edits (batch-1 Reshape
rewrites, fused pre-processing, a dynamic batch dimension) costs ~0.1 s a load for the zoo's
small graphs, and the check that a rewritten graph batches correctly another ~0.07 s: a third
of what ``frameserve video run`` waits for before its first frame. Both give the same answer
for the same file bytes, edits, code and runtime, so the edited graph is saved as OpenVINO IR
under ``CACHE_DIR/frameserve-converted/<digest>/`` and read from there next time (~0.03 s),
with a mark for each set of compile properties its batching check passed under.

Entries are written whole (a temporary folder renamed into place) and never changed; a
process that finds one half-made or unreadable reads the source file as before. Nothing here
is needed for correctness: a failure to write the cache is logged and forgotten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import openvino as ov

log = logging.getLogger(__name__)

FOLDER = "frameserve-converted"
_CODE = ("openvino.py", "openvino_graph.py", "openvino_cache.py")  # the code that edits graphs


@cache
def _code_digest() -> str:
    """The graph-editing code itself: a change to it (a new frameserve) makes new entries."""
    h = hashlib.sha256(ov.get_version().encode())
    for name in _CODE:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


class ConvertedModels:
    """One cache folder of edited graphs (see the module docstring)."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / FOLDER

    @classmethod
    def for_properties(cls, properties: dict[str, str]) -> ConvertedModels | None:
        """The cache beside the compiled-model cache the properties name; None without one
        (``--no-model-cache``)."""
        folder = properties.get("CACHE_DIR")
        return cls(Path(folder)) if folder else None

    def key(self, source: Path, config: Any, batch_dim: bool | None) -> str:
        """A digest of everything the edited graph depends on."""
        pre = config.preprocess
        edits = {
            "rewrite_batch_reshapes": config.openvino.rewrite_batch_reshapes,
            "frontend_extensions": list(config.openvino.frontend_extensions),
            "fused": pre.model_dump(mode="json") if pre is not None and pre.fuse else None,
            "batch_dim": batch_dim,
        }
        h = hashlib.sha256(_code_digest().encode())
        h.update(json.dumps(edits, sort_keys=True).encode())
        with source.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:32]

    def read(self, core: ov.Core, key: str) -> ov.Model | None:
        xml = self.root / key / "model.xml"
        if not xml.is_file():
            return None
        try:
            return core.read_model(str(xml))
        except RuntimeError as err:  # damaged by hand or a disk error: made again from the source
            log.warning("converted-model cache %s unreadable (%s): reading the source", xml, err)
            shutil.rmtree(xml.parent, ignore_errors=True)
            return None

    def save(self, model: ov.Model, key: str) -> None:
        target = self.root / key
        if target.exists():
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
            ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
            try:
                os.rename(staging, target)  # whole or not at all; a racing writer may win
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
        except (OSError, RuntimeError) as err:
            log.warning("converted-model cache %s not written: %s", target, err)

    def checked(self, key: str, properties: dict[str, str]) -> bool:
        """Whether the batching check passed for this graph compiled with ``properties``."""
        return (self.root / key / _mark(properties)).is_file()

    def mark_checked(self, key: str, properties: dict[str, str]) -> None:
        folder = self.root / key
        if folder.is_dir():
            try:
                (folder / _mark(properties)).touch()
            except OSError as err:
                log.warning("converted-model cache %s: mark not written: %s", folder, err)


def _mark(properties: dict[str, str]) -> str:
    text = json.dumps(properties, sort_keys=True).encode()
    return f"batching-checked-{hashlib.sha256(text).hexdigest()[:16]}"
