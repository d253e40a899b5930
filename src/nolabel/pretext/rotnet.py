"""RotNet pretext (Gidaris et al. 2018): predict which of 0/90/180/270 degrees an image was turned.

Each batch image gets a weak augmentation (:func:`~nolabel.nn.augment.weak_augment`),
then all four rotations go through the backbone together (4B images) and a linear
classifier on the backbone feature is trained with cross-entropy against the rotation
index. Defaults: batch 128 (512 rotated images), SGD lr 0.1 momentum 0.9 weight decay
5e-4 (the RotNet paper's), cosine schedule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import Dataset
from ..nn.augment import augment_batch, weak_augment
from .common import PretextTask, pretext_tasks, train_pretext


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> (4B images ``[x, rot90(x), rot180(x), rot270(x)]``, rotation labels 0..3)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


@pretext_tasks.register("rotnet")
class RotNetTask(PretextTask):
    """4-way rotation classification with a linear head on the backbone feature."""

    epochs, batch_size, sgd_lr, weight_decay = 100, 128, 0.1, 5e-4

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


def train_rotnet(dataset: Dataset, out_path: str | Path, **training: Any) -> Path:
    """:func:`~nolabel.pretext.common.train_pretext` with the RotNet task (its defaults above)."""
    return train_pretext("rotnet", dataset, out_path, **training)
