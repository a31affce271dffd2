"""Import paths a training script used before the package was reorganised, and where they went.

A script that still imports an old path fails at once with an ImportError that names the new one,
instead of a bare "No module named"; nothing is re-exported under the old name, so nothing half-works.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "carbontrack.client": "carbontrack.trainer.client",
    "carbontrack.integrations.huggingface": "carbontrack.trainer.huggingface",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Refuses every path in MOVED with the path that replaced it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        raise ImportError(f"{fullname} moved to {new}: import {new} instead", name=fullname)


def install() -> None:
    """Puts the finder first on sys.meta_path, once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
