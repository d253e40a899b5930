"""``pixels`` / ``pixels:<size>``: raw pixel values as features (the k-means-on-pixels baseline).

Each image becomes a float tensor in [0, 1] (uint8 / 255; float arrays are taken as
already in [0, 1]), optionally resized to size x size (bilinear, antialiased), then
flattened channel-first (C, H, W). An image keeps its own channels (L: one, RGB:
three; a data set decides this once for all its images, see :mod:`nolabel.data`),
never inferred from its pixel values; ``?channels=1`` converts colour to luma
(0.299 R + 0.587 G + 0.114 B) and ``?channels=3`` repeats a gray channel.
Without a size every image must have the same size. On ``vector`` data each item (a
1-D array) passes through unchanged. ``dim`` is known once the first batch is seen,
unless both size and channels are given.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import NolabelError
from .base import Backbone
from .spec import Spec, adapter

LUMA = torch.tensor([0.299, 0.587, 0.114])
MAX_SIZE = 1024  # pixels:1024 already gives 3M features per image


def to_unit_chw(item: Any) -> torch.Tensor:
    """A PIL image or (H, W[, C]) array -> float32 (C, H, W) in [0, 1]."""
    if isinstance(item, Image.Image):
        if item.mode not in ("L", "RGB"):
            item = item.convert("RGB")
        arr = np.asarray(item)
    elif isinstance(item, np.ndarray):
        arr = item
    else:
        raise NolabelError(f"pixels backbone takes images or arrays, got {type(item).__name__}")
    if arr.ndim not in (2, 3):
        raise NolabelError(f"pixels backbone takes (H, W) or (H, W, C) images, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        values = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    else:
        values = arr.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(values))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


class PixelsBackbone(Backbone):
    """Flattened pixels in [0, 1], optionally resized and with gray images kept as one channel."""

    def __init__(self, spec: str, size: Optional[int], channels: Optional[int], modality: str):
        super().__init__()
        self.spec = spec
        self.size = size
        self.channels = channels
        self.modality = modality
        self.item_shape: Optional[tuple[int, ...]] = None
        self.dim = channels * size * size if size and channels else 0

    def preprocess(self, item: Any) -> torch.Tensor:
        if self.modality == "vector" or (isinstance(item, np.ndarray) and item.ndim == 1):
            if self.size or self.channels:
                raise NolabelError(f"{self.spec}: size and channels apply to images, not to 1-D vectors")
            return torch.tensor(np.asarray(item, dtype=np.float32))  # a copy: rows of a read-only memory map
        t = to_unit_chw(item)
        c = t.shape[0]
        if c not in (1, 3):
            raise NolabelError(f"pixels backbone takes images with 1 or 3 channels, got {c}")
        if c == 3 and self.channels == 1:
            t = torch.einsum("c,chw->hw", LUMA, t).unsqueeze(0)
        elif c == 1 and self.channels == 3:
            t = t.expand(3, -1, -1)
        if self.size and tuple(t.shape[1:]) != (self.size, self.size):
            t = F.interpolate(t[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)[0].clamp_(0.0, 1.0)
        return t

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise NolabelError(self._mismatch(*sorted(shapes)[:2]))
        return torch.stack(list(items))

    def forward_batch(self, batch: torch.Tensor) -> torch.Tensor:
        shape = tuple(batch.shape[1:])
        if self.item_shape is None:
            self.item_shape = shape
            self.dim = int(np.prod(shape))
        elif shape != self.item_shape:
            raise NolabelError(self._mismatch(self.item_shape, shape))
        return batch.flatten(1)

    def _mismatch(self, a: tuple[int, ...], b: tuple[int, ...]) -> str:
        show = "x".join(map(str, a)), "x".join(map(str, b))
        if self.modality == "vector":
            return f"vectors differ in length ({show[0]} vs {show[1]})"
        if a[1:] != b[1:]:
            return f"images differ in size ({show[0]} vs {show[1]}); use pixels:<size>, e.g. pixels:32"
        return f"images mix grayscale and colour ({show[0]} vs {show[1]}); use pixels?channels=3"

    def describe(self) -> dict[str, Any]:
        preprocessing = {
            "scale": "integers / dtype max (uint8 / 255), floats as given",
            "resize": self.size,
            "interpolation": "bilinear (antialias)" if self.size else None,
            "channels": self.channels or "the data set's (1 gray, 3 colour)",
            "layout": "CHW flattened",
            "item_shape": list(self.item_shape) if self.item_shape else None,
        }
        return {**super().describe(), "preprocessing": preprocessing}


@adapter("pixels", "pixels[:<size>][?channels=1|3]", ("image", "vector"), ("channels",))
def _build(spec: Spec, modality: Optional[str]) -> PixelsBackbone:
    """raw pixels in [0, 1], flattened (optionally resized to size x size): the k-means-on-pixels baseline."""
    size = None
    if spec.body:
        if not spec.body.isdigit() or int(spec.body) < 1:
            raise NolabelError(f"pixels size must be a positive integer, e.g. pixels:32 (got {spec.body!r})")
        size = int(spec.body)
        if size > MAX_SIZE:
            raise NolabelError(f"pixels:{size} would give {3 * size * size:,} features per image; use a size up to {MAX_SIZE}, e.g. pixels:32")
    channels = spec.options.get("channels")
    if channels is not None and channels not in ("1", "3"):
        raise NolabelError(f"pixels channels must be 1 or 3 (got {channels!r})")
    if modality == "vector" and (size or channels):
        raise NolabelError(f"{spec.text}: size and channels apply to images; vectors pass through unchanged")
    return PixelsBackbone(spec.text, size, int(channels) if channels else None, modality or "image")
