"""Backbone spec strings and the registry of adapters that build them.

A spec is ``PREFIX[:BODY][?KEY=VALUE[&KEY=VALUE...]]``, e.g. ``timm:resnet50``,
``tv:resnet18?weights=none``, ``local:ckpt.safetensors``, ``pixels:32``. The prefix
picks an :class:`Adapter`; the body and options are handed to its ``build`` function.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import NolabelError
from ..registry import Registry
from .base import Backbone

_OPTIONS = re.compile(r"^[A-Za-z_]\w*=[^&=]*(&[A-Za-z_]\w*=[^&=]*)*$")


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``text`` as given, ``prefix``, ``body`` and ``options``."""

    text: str
    prefix: str
    body: str
    options: dict[str, str] = field(default_factory=dict)

    def option_bool(self, key: str, default: bool) -> bool:
        """``true/1/yes`` or ``false/0/no`` (any case) for option ``key``."""
        value = self.options.get(key)
        if value is None:
            return default
        low = value.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise NolabelError(f"option {key}={value} in {self.text!r} must be true or false")

    def option_int(self, key: str, low: int, high: int) -> Optional[int]:
        """Integer option ``key`` in ``[low, high]``, or None when absent."""
        value = self.options.get(key)
        if value is None:
            return None
        if not value.isdigit() or not low <= int(value) <= high:
            raise NolabelError(f"{key}={value} in {self.text!r} must be an integer from {low} to {high}")
        return int(value)


    def option_fraction(self, key: str) -> Optional[float]:
        """Option ``key`` as a number in (0, 1], or None when absent."""
        value = self.options.get(key)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not 0 < number <= 1:
            raise NolabelError(f"{key}={value} in {self.text!r} must be a number in (0, 1]")
        return number


def parse_spec(text: str) -> Spec:
    """Split ``PREFIX:BODY?K=V&K=V``; a trailing ``?...`` counts as options only when it parses."""
    text = text.strip()
    prefix, _, rest = text.partition(":")
    body, options = rest, {}
    head, sep, query = rest.rpartition("?")
    if sep and _OPTIONS.match(query):
        body = head
        options = dict(pair.split("=", 1) for pair in query.split("&"))
    if "?" in prefix:
        prefix, _, query = prefix.partition("?")
        if not _OPTIONS.match(query):
            raise NolabelError(f"cannot read the options in backbone spec {text!r}; write KEY=VALUE&KEY=VALUE")
        options = dict(pair.split("=", 1) for pair in query.split("&"))
    return Spec(text=text, prefix=prefix.lower(), body=body, options=options)


@dataclass(frozen=True)
class Adapter:
    """How one prefix is built: ``build(spec, modality) -> Backbone``."""

    prefix: str
    pattern: str
    doc: str
    modalities: tuple[str, ...]
    options: tuple[str, ...]
    build: Callable[[Spec, Optional[str]], Backbone]


adapters: Registry[Adapter] = Registry("backbone prefix")


def unknown_backbone(spec: str) -> NolabelError:
    """The one-line error for a spec whose prefix no adapter has: every prefix, written as a
    spec starts (``timm:``, ``local:``; ``pixels`` and ``efficientnet-lite0`` are whole names)."""
    known = ", ".join(a.prefix + (":" if a.pattern.startswith(a.prefix + ":") else "")
                      for a in map(adapters.get, adapters.names()))
    return NolabelError(f"unknown backbone {spec!r}; known: {known} (see `nolabel list backbones`)")


def adapter(prefix: str, pattern: str, modalities: tuple[str, ...], options: tuple[str, ...] = ()):
    """Decorator registering ``build(spec, modality)`` under ``prefix``; its docstring's first line is the doc."""

    def decorator(build: Callable[[Spec, Optional[str]], Backbone]):
        doc = (build.__doc__ or "").strip().splitlines()[0]
        adapters.register(prefix, doc)(Adapter(prefix, pattern, doc, modalities, options, build))
        return build

    return decorator
