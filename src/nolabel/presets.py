"""YAML presets for ``nolabel run --config NAME`` (``configs/`` in the repository).

Each preset's first comment line says what it reproduces; the keys are those of
:class:`nolabel.pipeline.RunConfig`.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import NolabelError


def _folder() -> Path:
    return Path(str(resources.files("nolabel") / "configs"))


def names() -> list[str]:
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = _folder() / f"{name.removesuffix('.yaml')}.yaml"
    if not path.exists():
        raise NolabelError(f"unknown preset {name!r} (and no such file); presets: {', '.join(names())}")
    return path


def describe() -> list[tuple[str, str]]:
    rows = []
    for name in names():
        first = preset_path(name).read_text().splitlines()[0] if preset_path(name).stat().st_size else ""
        rows.append((name, first.lstrip("# ").strip()))
    return rows
