"""Optional dependencies: heavy adapters are imported only when used, naming the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import NolabelError


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or a one-line error: ``pip install 'nolabel[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own dependencies is broken
        raise NolabelError(f"{module} is not installed; install it with `pip install 'nolabel[{extra}]'`") from None
