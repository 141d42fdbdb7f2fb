"""The package version: from the installed distribution's metadata, else from ``pyproject.toml``."""

from __future__ import annotations

import functools
import re
from importlib import metadata
from pathlib import Path


@functools.lru_cache(maxsize=1)
def version() -> str:
    try:
        return metadata.version("toxlens")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"))
    except OSError:
        found = None
    return found.group(1) if found else "0+unknown"
