"""Images decoded for training: a ``uint8`` (N, C, S, S) tensor, cached when it fits.

Images are decoded once into a ``uint8`` (N, C, S, S) tensor when it fits in
``max_cache_bytes`` (MNIST, CIFAR and STL-10 do), else decoded batch by batch.
Decoding matches the ``local:`` backbone's preprocessing exactly (grayscale when one
channel, shorter side to S, centre crop), so a trained checkpoint embeds the data the
way it saw it in training, minus the augmentation. Pretext training and whole-network
clustering both read their images through :func:`image_source`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..errors import NolabelError
from .base import Dataset

#: images above this many bytes are decoded per batch instead of cached
DEFAULT_MAX_CACHE_BYTES = 4 << 30


def decode_image(item: Any, size: int, in_chans: int) -> torch.Tensor:
    """A PIL image -> ``uint8`` (in_chans, size, size): grayscale if 1 channel, shorter side to size, centre crop."""
    from torchvision import transforms as T
    from torchvision.transforms.functional import pil_to_tensor

    if in_chans == 1:
        item = T.Grayscale(1)(item)
    else:
        item = item.convert("RGB")
    item = T.CenterCrop(size)(T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True)(item))
    return pil_to_tensor(item)


@dataclass
class ImageSource:
    """The images of ``dataset`` as ``uint8`` (C, size, size) tensors, cached or decoded on demand."""

    dataset: Dataset
    size: int
    in_chans: int
    cache: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """``uint8`` (b, C, size, size) images at ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.cache is not None:
            return self.cache[idx]
        return torch.stack([decode_image(self.dataset.load(int(i)), self.size, self.in_chans) for i in idx])

    def stats(self, sample: int = 10_000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of pixel values / 255 over up to ``sample`` evenly spaced images."""
        idx = np.unique(np.linspace(0, len(self) - 1, min(sample, len(self))).round().astype(np.int64))
        pixels = self.batch(idx).to(torch.float64).div_(255.0).transpose(0, 1).reshape(self.in_chans, -1)
        std = pixels.std(dim=1).clamp_min(1e-3)
        return pixels.mean(dim=1).tolist(), std.tolist()


def _array_layout(source: np.ndarray) -> Optional[tuple[int, int, int]]:
    """(height, width, channels) of a uint8 image array (N, H, W) or (N, H, W, C), else None."""
    if source.dtype != np.uint8 or source.ndim not in (3, 4):
        return None
    if source.ndim == 3:
        return source.shape[1], source.shape[2], 1
    return source.shape[1], source.shape[2], source.shape[3]


def image_source(dataset: Dataset, image_size: Optional[int] = None, in_chans: Optional[int] = None,
                 max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES, progress: bool = False) -> ImageSource:
    """Decode ``dataset`` for training (see the module doc).

    ``image_size`` defaults to the side of a square image array; ``in_chans`` to 1 for
    gray data (an (N, H, W) array, or the first 16 images having R = G = B), else 3.
    """
    if dataset.modality != "image":
        raise NolabelError(f"training needs images, {dataset.name} holds {dataset.modality} items")
    if len(dataset) < 2:
        raise NolabelError(f"{dataset.name} has {len(dataset)} images; training needs at least 2")
    layout = _array_layout(dataset.source) if isinstance(dataset.source, np.ndarray) else None
    if image_size is None:
        if layout is None or layout[0] != layout[1]:
            raise NolabelError(f"give image_size for {dataset.name} (its images are not one square array)")
        image_size = layout[0]
    if in_chans is None:
        if layout is not None:
            in_chans = 1 if layout[2] == 1 else 3
        else:
            probe = [np.asarray(dataset.load(i).convert("RGB")) for i in range(min(16, len(dataset)))]
            gray = all((p[..., 0] == p[..., 1]).all() and (p[..., 1] == p[..., 2]).all() for p in probe)
            in_chans = 1 if gray else 3
    if in_chans not in (1, 3):
        raise NolabelError(f"in_chans must be 1 or 3, got {in_chans}")
    if image_size < 8:
        raise NolabelError(f"image_size must be at least 8, got {image_size}")
    source = ImageSource(dataset, int(image_size), int(in_chans))
    if len(dataset) * in_chans * image_size * image_size > max_cache_bytes:
        return source
    if layout is not None and layout[:2] == (image_size, image_size) and layout[2] == in_chans:
        array = dataset.source if dataset.source.ndim == 4 else dataset.source[..., None]
        source.cache = torch.from_numpy(np.array(array.transpose(0, 3, 1, 2), order="C", copy=True))
        return source
    from tqdm.auto import tqdm

    cache = torch.empty((len(dataset), in_chans, image_size, image_size), dtype=torch.uint8)
    for i in tqdm(range(len(dataset)), desc=f"decode {dataset.name}", disable=not progress, leave=False):
        cache[i] = decode_image(dataset.load(i), image_size, in_chans)
    source.cache = cache
    return source
