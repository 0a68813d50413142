"""Optional extras: features whose packages a plain ``pip install frameserve`` leaves out.

``toolkit`` (NNCF, matplotlib), ``tracing`` (OpenTelemetry) and ``ray`` are imported only by the
feature that needs them, through ``require``, so the core server starts without them and a user
who asks for the feature learns which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from frameserve.errors import MissingExtra


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtra`` naming the extra that provides it.

    Only the package itself missing is translated: an ImportError from inside an installed
    package (a broken install) propagates as it is."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtra(
            f"{feature} needs the package '{err.name}', which is not installed: "
            f"pip install 'frameserve[{extra}]'"
        ) from err
