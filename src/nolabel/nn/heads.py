"""Clustering heads: H independent heads evaluated as one batched op.

:class:`MultiHead` holds, for each layer ``l``, stacked weights ``W_l`` of shape
``(H, in_l, out_l)`` and biases ``b_l`` of shape ``(H, 1, out_l)``. The first layer maps a
shared input ``x (B, in)`` to ``(H, B, out)`` with one ``einsum('bi,hio->hbo')`` (or one
``baddbmm`` for a per-head input ``(H, B, in)``); later layers use one ``baddbmm`` each.
There is no Python loop over heads.

- ``n_layers=1`` (``hidden`` ignored): H linear heads (SCAN's frozen ImageNet heads).
- ``n_layers=2|3``: MLP ``Linear -> GELU -> ... -> Linear`` with ``hidden`` units (TEMI:
  3 layers). No normalisation layer: TEMI's head (a DINO head built with
  ``use_bn=False``) has none, and BatchNorm would mix batch statistics into the EMA
  teacher and make a sample's prediction depend on its batch.

Initialisation per head as ``nn.Linear``: ``W, b ~ U(-1/sqrt(in), 1/sqrt(in))``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class MultiHead(nn.Module):
    """``forward(x (B, in) or (H, B, in)) -> logits (H, B, K)``."""

    def __init__(
        self,
        in_dim: int,
        n_clusters: int,
        n_heads: int = 1,
        hidden: int | None = None,
        n_layers: int = 1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_layers not in (1, 2, 3):
            raise ValueError(f"n_layers must be 1, 2 or 3, got {n_layers}")
        if n_layers > 1 and not hidden:
            raise ValueError("an MLP head (n_layers > 1) needs a hidden size")
        self.in_dim, self.n_clusters, self.n_heads = int(in_dim), int(n_clusters), int(n_heads)
        self.hidden = int(hidden) if n_layers > 1 else None
        self.n_layers = int(n_layers)
        dims = [self.in_dim] + [self.hidden] * (n_layers - 1) + [self.n_clusters]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(d_in)
            w = torch.empty(self.n_heads, d_in, d_out).uniform_(-bound, bound, generator=generator)
            b = torch.empty(self.n_heads, 1, d_out).uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def config(self) -> dict[str, int | None]:
        """Constructor arguments (JSON-able) to rebuild the same architecture."""
        return {"in_dim": self.in_dim, "n_clusters": self.n_clusters, "n_heads": self.n_heads,
                "hidden": self.hidden, "n_layers": self.n_layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0, b0 = self.weights[0], self.biases[0]
        if x.dim() == 2:
            h = torch.einsum("bi,hio->hbo", x, w0) + b0
        else:
            h = torch.baddbmm(b0, x, w0)
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = torch.baddbmm(b, nn.functional.gelu(h), w)
        return h

    @torch.no_grad()
    def select(self, heads: list[int]) -> "MultiHead":
        """A new MultiHead holding copies of the given heads (in that order)."""
        device = self.weights[0].device
        out = MultiHead(**{**self.config(), "n_heads": len(heads)}).to(device)
        index = torch.as_tensor(heads, device=device)
        for dst, src in zip(list(out.weights) + list(out.biases), list(self.weights) + list(self.biases)):
            dst.copy_(src.index_select(0, index))
        return out

    @torch.no_grad()
    def scale_output_(self, factor: float) -> "MultiHead":
        """Multiply the logits by ``factor`` in place (folds a softmax temperature in)."""
        self.weights[-1].mul_(factor)
        self.biases[-1].mul_(factor)
        return self
