"""Weight files: read a state dict from disk and load it strictly into a timm model.

:func:`read_state_dict` reads ``.safetensors`` or weights-only torch files.
:func:`load_into` loads a state dict strictly into a timm model, renaming it first when
it is in the key layout of the ``efficientnet_pytorch`` package (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...): :func:`map_efficientnet_pytorch` renames it key by
key onto timm's EfficientNets (``tf_efficientnet_lite{0,1,2}`` for the Lite weights).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import NolabelError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch file (unwrapping ``state_dict``/``model``, stripping ``module.``)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise NolabelError(f"cannot read {path} as a safetensors checkpoint ({exc}); re-save or re-download it") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError on a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NolabelError(f"cannot read {path} as a weights-only torch checkpoint: {first}") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(list(state)[:5]) if isinstance(state, dict) else type(state).__name__
        raise NolabelError(f"{path} holds no state dict (found: {keys})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# efficientnet_pytorch block parts -> timm, for blocks with and without an expansion conv
_WITH_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
              "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


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
