"""The image backbone shared by the timm, torchvision and local adapters.

``preprocess`` turns one PIL image (or an (H, W[, C]) array) into a normalised CHW
float tensor with the model's own transform; ``forward_batch`` is ``module(x)``, which
returns pooled (B, dim) features because each adapter has removed the classifier.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..data.base import array_to_pil
from .base import Backbone


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter."""
    module.eval()
    module.requires_grad_(False)
    return module


def as_pil(item: Any) -> Image.Image:
    """An RGB PIL image: PIL images converted to RGB, arrays through :func:`array_to_pil`."""
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, np.ndarray):
        return array_to_pil(item).convert("RGB")
    raise TypeError(f"expected a PIL image or an array, got {type(item).__name__}")


def transform_info(transform: Any) -> str:
    """The transform's repr on one line (Compose lists its steps)."""
    return " ".join(repr(transform).split())


class ImageModelBackbone(Backbone):
    """A frozen image model with its evaluation transform.

    ``preprocessing`` is a JSON-able record of the transform (input size, mean, std,
    interpolation, resize and crop) stored in :meth:`describe`; ``extra`` adds
    adapter facts (weights, checkpoint). ``small_transform`` (optional) replaces the
    transform for images whose shorter side is below ``small_below`` pixels.
    """

    modality = "image"

    def __init__(
        self,
        spec: str,
        model: torch.nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        dim: int,
        preprocessing: dict[str, Any],
        extra: dict[str, Any] | None = None,
        small_transform: Callable[[Image.Image], torch.Tensor] | None = None,
        small_below: int = 0,
    ):
        super().__init__()
        self.spec = spec
        self.model = freeze(model)
        self.transform = transform
        self.small_transform = small_transform
        self.small_below = int(small_below)
        self.dim = int(dim)
        self.preprocessing = preprocessing
        self.extra = extra or {}

    def module(self) -> torch.nn.Module:
        return self.model

    def preprocess(self, item: Any) -> torch.Tensor:
        """The model's transform; ``small_transform`` instead for an image whose shorter side is
        below ``small_below`` pixels (when the adapter gives one)."""
        image = as_pil(item)
        if self.small_transform is not None and min(image.size) < self.small_below:
            return self.small_transform(image)
        return self.transform(image)

    def forward_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.extra, "preprocessing": self.preprocessing}
