"""Name -> factory registries with decorator registration and wildcard listing."""
from __future__ import annotations

import fnmatch
from typing import Callable, Generic, TypeVar

from .errors import NolabelError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories, e.g. ``methods.register("kmeans")(KMeans)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._docs[name] = doc or _first_line(getattr(obj, "__doc__", None))
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise NolabelError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def describe(self, pattern: str = "*") -> list[tuple[str, str]]:
        return [(n, self._docs[n]) for n in self.names(pattern)]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
