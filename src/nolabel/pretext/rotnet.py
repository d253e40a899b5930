"""RotNet pretext (Gidaris et al. 2018): predict which of 0/90/180/270 degrees an image was turned.

Each batch image gets a weak augmentation (:func:`~nolabel.nn.augment.weak_augment`),
then all four rotations go through the backbone together (4B images) and a linear
classifier on the backbone feature is trained with cross-entropy against the rotation
index. Defaults: batch 128 (512 rotated images), SGD lr 0.1 momentum 0.9 weight decay
5e-4 (the RotNet paper's), cosine schedule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import Dataset
from ..nn.augment import augment_batch, weak_augment
from ..data.images import DEFAULT_MAX_CACHE_BYTES, image_source
from .common import PretextTask, fit_pretext, resolve_lr


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> (4B images ``[x, rot90(x), rot180(x), rot270(x)]``, rotation labels 0..3)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


class RotNetTask(PretextTask):
    """4-way rotation classification with a linear head on the backbone feature."""

    name = "rotnet"

    def __init__(self, size: int, in_chans: int, mean: list[float], std: list[float],
                 augment: Optional[dict[str, Any]] = None):
        self.augment = dict(augment or {})
        self.transform = weak_augment(size, mean, std, in_chans=in_chans, **self.augment)

    def settings(self) -> dict[str, Any]:
        return {"augment": self.augment}

    def build_head(self, feature_dim: int) -> nn.Module:
        return nn.Linear(feature_dim, 4)

    def loss(self, backbone: nn.Module, head: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        x, y = rotate_batch(augment_batch(self.transform, images).to(device, non_blocking=True))
        return F.cross_entropy(head(backbone(x)).float(), y)


def train_rotnet(
    dataset: Dataset,
    out_path: str | Path,
    *,
    arch: str = "resnet18_cifar",
    arch_kwargs: Optional[dict[str, Any]] = None,
    epochs: int = 100,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: Optional[float] = None,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    augment: Optional[dict[str, Any]] = None,
    image_size: Optional[int] = None,
    in_chans: Optional[int] = None,
    mean: Optional[list[float]] = None,
    std: Optional[list[float]] = None,
    device: Optional[str | torch.device] = None,
    seed: int = 0,
    checkpoint_every: int = 1,
    resume: bool = True,
    progress: bool = True,
    amp: Optional[bool] = None,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    on_epoch_end: Optional[Callable[[int, dict[str, Any]], None]] = None,
) -> Path:
    """Train a backbone on ``dataset`` by rotation prediction; returns ``out_path`` (``.safetensors``).

    No labels are read. ``lr`` defaults to 0.1 for SGD, 1e-3 for Adam. ``augment``:
    keyword arguments of :func:`weak_augment`. Other arguments as in
    :func:`~nolabel.pretext.simclr.train_simclr`.
    """
    source = image_source(dataset, image_size, in_chans, max_cache_bytes, progress)
    if mean is None or std is None:
        mean, std = source.stats()
    task = RotNetTask(source.size, source.in_chans, list(mean), list(std), augment)
    return fit_pretext(
        task, source, out_path, arch=arch, arch_kwargs=arch_kwargs, mean=list(mean), std=list(std), epochs=epochs,
        batch_size=batch_size, optimizer=optimizer, lr=resolve_lr(lr, optimizer, 0.1), weight_decay=weight_decay,
        momentum=momentum, device=device, seed=seed, checkpoint_every=checkpoint_every, resume=resume,
        progress=progress, amp=amp, on_epoch_end=on_epoch_end,
    )
