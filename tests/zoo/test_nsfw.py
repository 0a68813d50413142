"""The zoo's ``nsfw`` model: NudeNet 3.4.2's detector, its labels and its two licences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx

from frameserve.processing.detectors import parse_names
from frameserve.zoo import CATALOG
from frameserve.zoo.configs import NUDENET_LABELS


def test_labels_file_matches_the_models_own_names(zoo_repository: Path) -> None:
    folder = zoo_repository / "nsfw"
    labels = (folder / "labels.txt").read_text().splitlines()
    assert labels == list(NUDENET_LABELS) and len(labels) == 18
    model = onnx.load(str(folder / "1" / "model.onnx"), load_external_data=False)
    names = {p.key: p.value for p in model.metadata_props}["names"]
    assert parse_names(names, "names") == labels


def test_both_licences_are_shown(zoo_repository: Path) -> None:
    folder = zoo_repository / "nsfw"
    source = (folder / "SOURCE.txt").read_text()
    assert "licence: MIT (metadata) / AGPL-3.0 (LICENSE)" in source
    assert "GNU AGPL-3.0 text" in source and "says MIT" in source
    assert (folder / "LICENSE").read_text().lstrip().startswith("GNU AFFERO GENERAL PUBLIC")
    listing = subprocess.run(
        [sys.executable, "-m", "frameserve.cli.main", "zoo", "list", "--dest", str(zoo_repository)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    [row] = [line for line in listing if line.startswith("nsfw ")]
    assert "nudenet==3.4.2" in row and "installed" in row
    assert row.endswith("licence: MIT (metadata) / AGPL-3.0 (LICENSE)")
    assert CATALOG["nsfw"].package is not None
