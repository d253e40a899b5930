"""``tv:<model>``: a torchvision classification model exposing its penultimate features.

``torchvision.models.get_model(name, weights=...)``; the last ``nn.Linear`` (the
classifier, whose outputs are the weights' categories) is replaced by ``nn.Identity``,
so the features are that layer's inputs (2048-d for ResNet-50, 768-d for ViT-B/16).
Preprocessing is the weights' own ``transforms()`` (resize, centre crop, mean, std).
``?weights=none`` keeps random weights (preprocessing still from the default weights);
``?weights=IMAGENET1K_V1`` picks another weight set.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from ..errors import NolabelError
from . import hub
from .image import ImageModelBackbone, transform_info
from .spec import Spec, adapter


def strip_classifier(model: nn.Module, num_classes: int) -> int:
    """Replace the last ``nn.Linear`` (``num_classes`` outputs) by Identity; return its input size."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1][1].out_features != num_classes:
        raise NolabelError(f"cannot find a {num_classes}-way linear classifier to remove in {type(model).__name__}")
    name, layer = linears[-1]
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())
    return layer.in_features


def _weights(name: str, choice: str) -> tuple[Any, Any]:
    """(weights to load or None, weights whose transforms and categories to use)."""
    from torchvision import models

    enum = models.get_model_weights(name)
    default = enum.DEFAULT
    if choice.lower() == "none":
        return None, default
    try:
        chosen = enum[choice.upper() if choice.lower() == "default" else choice]
    except KeyError:
        known = ", ".join(["DEFAULT", "none", *enum.__members__])
        raise NolabelError(f"unknown weights {choice!r} for tv:{name}; known: {known}") from None
    return chosen, chosen


@adapter("tv", "tv:<model>[?weights=none|<name>]", ("image",), ("weights",))
def _build(spec: Spec, modality: Optional[str]) -> ImageModelBackbone:
    """torchvision classifier without its last layer, e.g. tv:resnet50 (see torchvision.models.list_models())."""
    from torchvision import models

    name = spec.body
    if name not in models.list_models(module=models):
        raise NolabelError(f"unknown torchvision classification model {name!r}; see torchvision.models.list_models()")
    weights, ref = _weights(name, spec.options.get("weights", "DEFAULT"))
    places = [hub.torch_checkpoints_dir()]
    if weights is not None and hub.cached_url_file(weights.url, places[0]) is None and not hub.reachable(weights.url):
        raise hub.no_weights_error(spec.text, places)
    try:
        model = models.get_model(name, weights=weights)
    except OSError as exc:
        raise hub.download_error(spec.text, exc, places) from None
    dim = strip_classifier(model, len(ref.meta["categories"]))
    transform = ref.transforms()
    preprocessing = {
        "resize": list(transform.resize_size),
        "crop": list(transform.crop_size),
        "interpolation": transform.interpolation.value,
        "mean": list(transform.mean),
        "std": list(transform.std),
        "transform": transform_info(transform),
    }
    extra = {"weights": None if weights is None else f"{type(weights).__name__}.{weights.name}"}
    return ImageModelBackbone(spec.text, model, transform, dim, preprocessing, extra)
