"""Pure neural building blocks: batched clustering heads, losses, weight EMA, Sinkhorn-Knopp.
The head-training base of the methods lives in :mod:`nolabel.methods.heads_base`.

Image augmentations live in :mod:`nolabel.nn.augment` (imported on demand).
"""
from __future__ import annotations

from .ema import EMA, cosine_momentum
from .heads import MultiHead
from .losses import (
    adjacency_cosine,
    adjacency_knn,
    adjacency_l2,
    adjacency_sne,
    balanced_cross_entropy,
    class_balance_weights,
    consistency_mse,
    entropy,
    lsdc_pairwise_bce,
    rampup,
    scan_loss,
    temi_loss,
    temi_prior_update,
)
from .sinkhorn import sinkhorn_knopp

__all__ = [
    "EMA", "cosine_momentum", "MultiHead", "sinkhorn_knopp",
    "adjacency_cosine", "adjacency_knn", "adjacency_l2", "adjacency_sne", "balanced_cross_entropy",
    "class_balance_weights", "consistency_mse", "entropy", "lsdc_pairwise_bce", "rampup", "scan_loss",
    "temi_loss", "temi_prior_update",
]
