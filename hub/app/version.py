"""The installed version of nodehub (`hub --version`, `nodehub_build_info`)."""

from __future__ import annotations

import platform
from importlib import metadata


def version() -> str:
    try:
        return metadata.version("nodehub")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "0+unknown"


def build_labels() -> dict[str, str]:
    """The labels of `nodehub_build_info`."""
    return {"version": version(), "python": platform.python_version()}
