"""Hyper-parameters from the command line and presets: one syntax, typed and checked.

Every command takes ``-p METHOD.NAME=VALUE`` (repeatable); where the command names a
single method (``cluster --method``, ``train --method``, ``run`` with one method) the
short ``-p NAME=VALUE`` means that method. Each value is converted to the type hint of
the parameter in the estimator's ``__init__`` (or the trainer function's signature)
and checked:

- ``int``: an integer written as one (``50``, not ``1.5`` or ``[1,2]``); at least 1,
  except ``seed`` and ``*_epochs`` (warm-up, ramp-up), which may be 0;
- ``float``: any number (``1e-4``, ``0.001``, ``5``); finite (no ``.nan``/``inf``) and
  at least 0; strictly positive for :data:`POSITIVE` (learning rates, temperatures,
  tolerances ...); at most 1 for :data:`UNIT` (probabilities, momenta, thresholds);
- ``bool``: true/false, yes/no, 1/0 (any case);
- ``X | None``: also ``none``/``null``;
- ``str`` (and unannotated): the text as given.

A wrong name or value is a one-line :class:`~nolabel.errors.NolabelError` naming the
parameter, the value and what is allowed.
"""
from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any, Callable

from .errors import NolabelError

POSITIVE = ("lr", "tau", "temperature", "sne_temperature", "tol", "lam", "overcluster", "mixup")
UNIT = ("dropout", "threshold", "ema", "prior_momentum", "teacher_momentum", "momentum")
NONE_WORDS = ("none", "null", "~")
TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")
FIXED = ("self", "n_clusters", "seed", "base", "dataset", "out_dir", "device", "progress", "x", "neighbors")


def parse_assignments(pairs: list[str], default_method: str | None = None) -> dict[str, dict[str, str]]:
    """``["scan.lr=1e-4", "epochs=5"]`` -> ``{"scan": {"lr": "1e-4", "epochs": "5"}}`` (raw text).

    A name without ``METHOD.`` goes to ``default_method``; without one it is an error.
    """
    params: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise NolabelError(f"-p expects METHOD.NAME=VALUE, got {pair!r}")
        method, dot, key = name.rpartition(".")
        if not dot:
            if default_method is None:
                raise NolabelError(f"-p {pair!r}: name the method, as in -p scan.{name}={value} (this command runs several)")
            method = default_method
        if not key or not method:
            raise NolabelError(f"-p expects METHOD.NAME=VALUE, got {pair!r}")
        params.setdefault(method.strip(), {})[key.strip()] = value.strip()
    return params


def coerce_params(target: Callable[..., Any], params: dict[str, Any], owner: str,
                  fixed: tuple[str, ...] = FIXED) -> dict[str, Any]:
    """``params`` converted and checked against the signature of ``target`` (a class: its
    ``__init__``); ``fixed`` names are set by nolabel itself and refused. ``owner``
    names the method in messages."""
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        hints = {}
    accepted = [name for name, p in signature.parameters.items()
                if name not in fixed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    out = {}
    for name, value in params.items():
        if name in fixed and name in signature.parameters:
            raise NolabelError(f"{owner}.{name} is set by nolabel or by an option of the command (such as --{name.replace('_', '-')}), not by -p")
        if name not in accepted:
            raise NolabelError(f"{owner} has no parameter {name!r}; it takes: {', '.join(sorted(accepted))}")
        out[name] = coerce_value(name, value, hints.get(name, Any), owner)
    return out


def coerce_value(name: str, value: Any, hint: Any, owner: str = "") -> Any:
    """One value converted to ``hint`` and checked (see the module docstring)."""
    where = f"{owner}.{name}" if owner else name
    types_ = _alternatives(hint)
    optional = type(None) in types_
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
        return None
    kinds = [t for t in types_ if t is not type(None)]
    text = value.strip() if isinstance(value, str) else value
    if bool in kinds:
        return _as_bool(where, text)
    if int in kinds:
        number = _as_int(where, text, optional)
        low = 0 if name == "seed" or name.endswith("_epochs") else 1
        if number < low:
            raise NolabelError(f"{where}={_show(value)} is out of range: it must be an integer >= {low}")
        return number
    if float in kinds:
        number = _as_float(where, text, optional)
        if name in POSITIVE and number <= 0:
            raise NolabelError(f"{where}={_show(value)} is out of range: it must be a number > 0")
        if number < 0:
            raise NolabelError(f"{where}={_show(value)} is out of range: it must be a number >= 0")
        if name in UNIT and number > 1:
            raise NolabelError(f"{where}={_show(value)} is out of range: it must be between 0 and 1")
        return number
    if str in kinds or not kinds or Any in kinds:
        if isinstance(text, (list, dict)) and str in kinds:
            raise NolabelError(f"{where}={_show(value)}: expected a word, not a list")
        return text
    return text


def _alternatives(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    if origin is typing.Literal:
        return (str,)
    return (hint,)


def _none_hint(optional: bool) -> str:
    return " (or none)" if optional else ""


def _as_bool(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in TRUE_WORDS + FALSE_WORDS:
        return value.lower() in TRUE_WORDS
    raise NolabelError(f"{where}={_show(value)} is not a boolean; write true or false")


def _as_int(where: str, value: Any, optional: bool) -> int:
    if isinstance(value, bool):
        raise NolabelError(f"{where}={_show(value)} is not an integer{_none_hint(optional)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        body = value.lstrip("+-")
        if body.isdigit():
            return int(value)
    raise NolabelError(f"{where}={_show(value)} is not an integer{_none_hint(optional)}; write it like 50")


def _as_float(where: str, value: Any, optional: bool) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float("nan") if value.lower() in (".nan", ".inf", "-.inf", "+.inf") else float(value)
        except ValueError:
            number = None
    if number is None:
        raise NolabelError(f"{where}={_show(value)} is not a number{_none_hint(optional)}; write it like 1e-4 or 0.001")
    if not math.isfinite(number):
        raise NolabelError(f"{where}={_show(value)} is not a finite number; write it like 1e-4 or 0.001")
    return number


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
