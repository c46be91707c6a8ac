"""Make ``barrierflow`` importable from a source checkout when the installed copy is a regular (non-editable) one.

The layers keep their folders at the repository root (``engine/``, ``broker/``, ``workers/``) and the build maps
them into the package (``[tool.setuptools.package-dir]`` in ``pyproject.toml``). An installed wheel has them inside
``barrierflow/``; an editable install maps them with a finder of its own. But Python started in the checkout
(``python -m examples.text_pipeline``, ``python coordinator.py``) puts the checkout first on ``sys.path``, so
``import barrierflow`` finds the checkout's ``barrierflow/`` folder, which holds none of the layers: after a plain
``pip install .`` every such command failed with ``No module named 'barrierflow.engine'``. This module reads the
same mapping from ``pyproject.toml`` and adds a finder for those sub-packages, so the checkout's code imports as
one consistent package. It does nothing in an installed package (the layers are inside it).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent


class LayerFinder(importlib.abc.MetaPathFinder):
    """Finds the mapped sub-packages (``barrierflow.engine`` -> ``<checkout>/engine``) and nothing else."""

    def __init__(self, layers: dict[str, Path]) -> None:
        self.layers = layers

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        folder = self.layers.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def mapped_layers() -> dict[str, Path]:
    """The package-dir mapping of the checkout's ``pyproject.toml``, for the layers not inside the package folder."""
    try:
        config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    mapping = config.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    layers = {}
    for name, folder in mapping.items():
        if not isinstance(folder, str) or not name.startswith(f"{__package__}."):
            continue
        inside = PACKAGE_DIR.joinpath(*name.split(".")[1:])
        if not inside.is_dir() and (ROOT / folder / "__init__.py").is_file():
            layers[name] = ROOT / folder
    return layers


def install_layer_finder() -> None:
    """Adds the finder once, when this package is the checkout's folder; a no-op in an installed package."""
    if any(isinstance(finder, LayerFinder) for finder in sys.meta_path):
        return
    layers = mapped_layers()
    if layers:
        sys.meta_path.append(LayerFinder(layers))


install_layer_finder()  # on import, before barrierflow/__init__.py imports the engine
