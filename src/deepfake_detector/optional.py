"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from deepfake_detector.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """Imports ``module`` or raises `MissingExtraError` naming the ``pip install`` that provides it.

    Args:
        module: Dotted module name, e.g. ``"av"``.
        extra: The package extra that installs it, e.g. ``"video"``.
    """
    try:
        return import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"this feature needs the optional dependency {module!r}, which is not installed; "
            f"install it with: pip install 'deepfake-detector[{extra}]'"
        ) from error
