"""Add the two example models (tensors in, tensors out) to a model repository."""

from __future__ import annotations

import sys
from pathlib import Path

from frameserve.tools.example_models import make_example_repository

if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    names = make_example_repository(root)
    sys.stdout.write(f"example models in {root}: {', '.join(names)}\n")
