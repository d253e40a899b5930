"""The feature-extractor contract.

A :class:`Backbone` maps a batch of raw items (PIL images or strings) to a float
tensor of shape (B, dim). Each adapter brings its own preprocessing, taken from the
model's configuration, and reports it in :meth:`describe` so the feature sidecar
records exactly how embeddings were made.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch


class Backbone(ABC):
    """Frozen feature extractor: ``embed(items) -> (B, dim)`` float32 tensor on CPU."""

    #: registry spec that built this backbone, e.g. ``"tv:resnet50"``
    spec: str = ""
    #: ``"image"`` or ``"text"`` (or ``"vector"`` for the pixels backbone on arrays)
    modality: str = "image"
    #: output dimension
    dim: int = 0

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> "Backbone":
        self.device = torch.device(device)
        module = self.module()
        if module is not None:
            module.to(self.device)
        return self

    def module(self) -> torch.nn.Module | None:
        """The underlying ``nn.Module`` when there is one (used for ``to``/``eval``)."""
        return None

    def preprocess(self, item: Any) -> Any:
        """One raw item -> what :meth:`forward_batch` expects stacked (a tensor for images)."""
        return item

    def collate(self, items: Sequence[Any]) -> Any:
        """Stack preprocessed items into a batch (tensors stacked; strings kept as a list)."""
        if items and isinstance(items[0], torch.Tensor):
            return torch.stack(list(items))
        return list(items)

    @abstractmethod
    def forward_batch(self, batch: Any) -> torch.Tensor:
        """A collated batch -> (B, dim) features."""

    @torch.no_grad()
    def embed(self, items: Sequence[Any]) -> torch.Tensor:
        """Raw items -> (B, dim) float32 features on CPU."""
        batch = self.collate([self.preprocess(x) for x in items])
        if isinstance(batch, torch.Tensor):
            batch = batch.to(self.device)
        return self.forward_batch(batch).float().cpu()

    def describe(self) -> dict[str, Any]:
        """Spec, dim and preprocessing, for the feature sidecar."""
        return {"spec": self.spec, "modality": self.modality, "dim": self.dim}
