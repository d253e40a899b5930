"""SimCLR pretext (Chen et al. 2020) with SCAN's settings: two augmented views, NT-Xent.

Defaults follow SCAN's CIFAR-10 pretext config: ResNet-18 (CIFAR stem), 2-layer MLP
projection ``Linear(d, d) - ReLU - Linear(d, 128)``, temperature 0.1, batch 512, SGD
lr 0.4 momentum 0.9 weight decay 1e-4, cosine schedule, 500 epochs. Views come from
:func:`~nolabel.nn.augment.simclr_augment`, drawn per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..data.base import Dataset
from ..nn.augment import augment_batch, simclr_augment
from ..data.images import DEFAULT_MAX_CACHE_BYTES, image_source
from .common import PretextTask, fit_pretext, resolve_lr
from .losses import nt_xent


class SimCLRTask(PretextTask):
    """Both views of a batch go through the backbone and the MLP head in one pass of 2B images."""

    name = "simclr"

    def __init__(self, size: int, in_chans: int, mean: list[float], std: list[float], temperature: float = 0.1,
                 proj_dim: int = 128, augment: Optional[dict[str, Any]] = None):
        self.temperature = float(temperature)
        self.proj_dim = int(proj_dim)
        self.augment = dict(augment or {})
        self.transform = simclr_augment(size, mean, std, in_chans=in_chans, **self.augment)

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "proj_dim": self.proj_dim, "augment": self.augment}

    def build_head(self, feature_dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
                             nn.Linear(feature_dim, self.proj_dim))

    def loss(self, backbone: nn.Module, head: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        views = torch.cat([augment_batch(self.transform, images), augment_batch(self.transform, images)])
        z = head(backbone(views.to(device, non_blocking=True))).float()
        z1, z2 = z.chunk(2)
        return nt_xent(z1, z2, self.temperature)


def train_simclr(
    dataset: Dataset,
    out_path: str | Path,
    *,
    arch: str = "resnet18_cifar",
    arch_kwargs: Optional[dict[str, Any]] = None,
    epochs: int = 500,
    batch_size: int = 512,
    optimizer: str = "sgd",
    lr: Optional[float] = None,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    temperature: float = 0.1,
    proj_dim: int = 128,
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
    """Train a backbone on ``dataset`` with SimCLR; returns ``out_path`` (a ``.safetensors`` file).

    No labels are read. ``lr`` defaults to 0.4 for SGD, 1e-3 for Adam (for tiny CPU
    runs). ``augment``: keyword arguments of :func:`simclr_augment` (e.g.
    ``{"hflip": False}`` for digits). ``mean``/``std`` default to the data's per-channel
    pixel statistics. Checkpointing, resume and the files written: :mod:`.common`.
    """
    source = image_source(dataset, image_size, in_chans, max_cache_bytes, progress)
    if mean is None or std is None:
        mean, std = source.stats()
    task = SimCLRTask(source.size, source.in_chans, list(mean), list(std), temperature, proj_dim, augment)
    return fit_pretext(
        task, source, out_path, arch=arch, arch_kwargs=arch_kwargs, mean=list(mean), std=list(std), epochs=epochs,
        batch_size=batch_size, optimizer=optimizer, lr=resolve_lr(lr, optimizer, 0.4), weight_decay=weight_decay,
        momentum=momentum, device=device, seed=seed, checkpoint_every=checkpoint_every, resume=resume,
        progress=progress, amp=amp, on_epoch_end=on_epoch_end,
    )
