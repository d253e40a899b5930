"""SimCLR pretext (Chen et al. 2020) with SCAN's settings: two augmented views, NT-Xent.

Defaults follow SCAN's CIFAR-10 pretext config: ResNet-18 (CIFAR stem), 2-layer MLP
projection ``Linear(d, d) - ReLU - Linear(d, 128)``, temperature 0.1, batch 512, SGD
lr 0.4 momentum 0.9 weight decay 1e-4, cosine schedule, 500 epochs. Views come from
:func:`~nolabel.nn.augment.simclr_augment`, drawn per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..data.base import Dataset
from ..nn.augment import augment_batch, simclr_augment
from .common import PretextTask, pretext_tasks, train_pretext
from .losses import nt_xent


@pretext_tasks.register("simclr")
class SimCLRTask(PretextTask):
    """Both views of a batch go through the backbone and the MLP head in one pass of 2B images."""

    epochs, batch_size, sgd_lr, weight_decay = 500, 512, 0.4, 1e-4

    def __init__(self, size: int, in_chans: int, mean: list[float], std: list[float],
                 augment: Optional[dict[str, Any]] = None, temperature: float = 0.1, proj_dim: int = 128):
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


def train_simclr(dataset: Dataset, out_path: str | Path, *, temperature: float = 0.1, proj_dim: int = 128,
                 **training: Any) -> Path:
    """:func:`~nolabel.pretext.common.train_pretext` with the SimCLR task (its defaults above)."""
    return train_pretext("simclr", dataset, out_path, options={"temperature": temperature, "proj_dim": proj_dim},
                         **training)
