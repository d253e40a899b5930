"""Clustering methods, registered by name: ``nolabel.methods.get("kmeans")``.

Every method follows :class:`~nolabel.methods.base.ClusterMethod`.
"""
from __future__ import annotations

import importlib

from ..registry import Registry
from .base import ClusterMethod

registry: Registry[type[ClusterMethod]] = Registry("method")

#: modules that register methods on import (one method per module)
_MODULES = ("kmeans", "scan", "selflabel", "temi", "sela", "lsdc", "spectral")
_loaded = False


def register(name: str):
    """Class decorator: register a :class:`ClusterMethod` subclass under ``name``."""

    def decorator(cls: type[ClusterMethod]) -> type[ClusterMethod]:
        cls.name = name
        return registry.register(name)(cls)

    return decorator


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _MODULES:
            importlib.import_module(f"{__name__}.{module}")


def get(name: str) -> type[ClusterMethod]:
    _load_all()
    return registry.get(name)


def names() -> list[str]:
    _load_all()
    return registry.names()


def describe() -> list[tuple[str, str]]:
    _load_all()
    return registry.describe()


__all__ = ["ClusterMethod", "register", "get", "names", "describe", "registry"]
