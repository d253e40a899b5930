"""Clustering heads: H independent heads evaluated as one batched op.

:class:`MultiHead` holds, for each layer ``l``, stacked weights ``W_l`` of shape
``(H, in_l, out_l)`` and biases ``b_l`` of shape ``(H, 1, out_l)``. For a shared input
``x (B, in)`` the first layer is one matrix product ``x @ [W_0^1 | ... | W_0^H]`` with
the heads' weights concatenated to ``(in, H * out_0)`` (one large GEMM instead of H thin
ones on an expanded input); its ``(B, H, out_0)`` result is viewed as ``(H, B, out_0)``
and each later layer (whose input differs per head) is one ``baddbmm`` over all heads.
Per-head inputs ``x (H, B, in)`` go through ``baddbmm`` from the first layer.
There is no Python loop over heads.

- ``n_layers=1`` (``hidden`` ignored): H linear heads (SCAN's frozen ImageNet heads).
- ``n_layers=2|3``: MLP ``Linear -> GELU -> ... -> Linear`` with ``hidden`` units (TEMI:
  3 layers). No normalisation layer: TEMI's head (a DINO head built with
  ``use_bn=False``) has none, and BatchNorm would mix batch statistics into the EMA
  teacher and make a sample's prediction depend on its batch.
- ``cosine=True``: the last layer is DINO's prototype layer, as in TEMI's head: its input
  is L2-normalised and each cluster's weight column is L2-normalised, no bias, so a logit
  is a cosine in [-1, 1] (then divided by the temperature). Without it, a randomly
  initialised MLP gives almost the same logits to every sample and TEMI's PMI objective
  (beta < 1) drifts to the uniform prediction.

``scale`` (a buffer, 1 by default) multiplies the logits: :meth:`scale_output_` folds a
softmax temperature into a kept head.

Initialisation per head as ``nn.Linear``: ``W, b ~ U(-1/sqrt(in), 1/sqrt(in))``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _shared_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x (B, in)`` through H heads' ``weight (H, in, out)`` (+ ``bias (H, 1, out)``) as one
    ``(B, in) @ (in, H * out)`` product -> ``(H, B, out)``."""
    n_heads, d_in, d_out = weight.shape
    w = weight.permute(1, 0, 2).reshape(d_in, n_heads * d_out)
    if bias is None:
        y = x @ w
    else:
        y = torch.addmm(bias.reshape(1, n_heads * d_out), x, w)
    return y.view(len(x), n_heads, d_out).transpose(0, 1)


class MultiHead(nn.Module):
    """``forward(x (B, in) or (H, B, in)) -> logits (H, B, K)``."""

    def __init__(
        self,
        in_dim: int,
        n_clusters: int,
        n_heads: int = 1,
        hidden: int | None = None,
        n_layers: int = 1,
        cosine: bool = False,
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
        self.cosine = bool(cosine)
        dims = [self.in_dim] + [self.hidden] * (n_layers - 1) + [self.n_clusters]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            bound = 1.0 / math.sqrt(d_in)
            w = torch.empty(self.n_heads, d_in, d_out).uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            if not (self.cosine and layer == len(dims) - 2):
                b = torch.empty(self.n_heads, 1, d_out).uniform_(-bound, bound, generator=generator)
                self.biases.append(nn.Parameter(b))
        self.register_buffer("scale", torch.ones(()))

    def config(self) -> dict[str, int | None]:
        """Constructor arguments (JSON-able) to rebuild the same architecture."""
        return {"in_dim": self.in_dim, "n_clusters": self.n_clusters, "n_heads": self.n_heads,
                "hidden": self.hidden, "n_layers": self.n_layers, "cosine": self.cosine}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_affine = len(self.biases)
        h = x
        for layer in range(n_affine):
            if layer:
                h = nn.functional.gelu(h)
            if h.dim() == 2:  # shared input: all heads in one product
                h = _shared_affine(h, self.weights[layer], self.biases[layer])
            else:
                h = torch.baddbmm(self.biases[layer], h, self.weights[layer])
        if self.cosine:
            if n_affine:
                h = nn.functional.gelu(h)
            w = nn.functional.normalize(self.weights[-1], dim=1)
            h = nn.functional.normalize(h, dim=-1)
            h = _shared_affine(h, w, None) if h.dim() == 2 else torch.bmm(h, w)
        return (h * self.scale).contiguous()

    @torch.no_grad()
    def select(self, heads: list[int]) -> "MultiHead":
        """A new MultiHead holding copies of the given heads (in that order)."""
        device = self.weights[0].device
        out = MultiHead(**{**self.config(), "n_heads": len(heads)}).to(device)
        index = torch.as_tensor(heads, device=device)
        for dst, src in zip(list(out.weights) + list(out.biases), list(self.weights) + list(self.biases)):
            dst.copy_(src.index_select(0, index))
        out.scale.copy_(self.scale)
        return out

    @torch.no_grad()
    def scale_output_(self, factor: float) -> "MultiHead":
        """Multiply the logits by ``factor`` in place (folds a softmax temperature in)."""
        self.scale.mul_(factor)
        return self


class DINOHead(nn.Module):
    """H batched DINO-style heads, as TEMI's code builds them (``forward`` as MultiHead).

    ``x -> MLP -> L2-normalise -> prototype layer``: the MLP is ``n_layers - 1`` affine
    layers ``in -> hidden -> ... -> bottleneck`` with GELU between them (none after the
    last); the prototype layer is weight-normalised, ``W_k = g_k v_k / ||v_k||`` with one
    trainable gain ``g_k`` per cluster initialised to 1 and no bias, so a logit is
    ``g_k cos(z, v_k)``. Initialisation as the code: MLP weights ``N(0, 0.02^2)`` (its
    truncation at +-2 never binds at that scale), biases 0; ``v ~ U(-1/sqrt(b), 1/sqrt(b))``
    (``nn.Linear``'s default). Parameters named ``proto_*`` are the prototype layer.
    """

    def __init__(self, in_dim: int, n_clusters: int, n_heads: int = 1, hidden: int = 256, bottleneck: int = 256,
                 n_layers: int = 3, generator: torch.Generator | None = None):
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"a DINO head has n_layers >= 2 (MLP + prototype layer), got {n_layers}")
        self.in_dim, self.n_clusters, self.n_heads = int(in_dim), int(n_clusters), int(n_heads)
        self.hidden, self.bottleneck, self.n_layers = int(hidden), int(bottleneck), int(n_layers)
        dims = [self.in_dim] + [self.hidden] * (n_layers - 2) + [self.bottleneck]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.empty(self.n_heads, d_in, d_out).normal_(0.0, 0.02, generator=generator)))
            self.biases.append(nn.Parameter(torch.zeros(self.n_heads, 1, d_out)))
        bound = 1.0 / math.sqrt(self.bottleneck)
        v = torch.empty(self.n_heads, self.bottleneck, self.n_clusters).uniform_(-bound, bound, generator=generator)
        self.proto_v = nn.Parameter(v)
        self.proto_g = nn.Parameter(torch.ones(self.n_heads, 1, self.n_clusters))
        self.register_buffer("scale", torch.ones(()))

    def config(self) -> dict[str, int | str]:
        return {"kind": "dino", "in_dim": self.in_dim, "n_clusters": self.n_clusters, "n_heads": self.n_heads,
                "hidden": self.hidden, "bottleneck": self.bottleneck, "n_layers": self.n_layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if x.dim() == 3 else x.unsqueeze(0).expand(self.n_heads, -1, -1)
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            if layer:
                h = nn.functional.gelu(h)
            h = torch.baddbmm(b, h, w)
        proto = self.proto_g * nn.functional.normalize(self.proto_v, dim=1)
        return torch.bmm(nn.functional.normalize(h, dim=-1), proto) * self.scale

    @torch.no_grad()
    def select(self, heads: list[int]) -> "DINOHead":
        """A new DINOHead holding copies of the given heads (in that order)."""
        cfg = {k: v for k, v in self.config().items() if k != "kind"}
        out = DINOHead(**{**cfg, "n_heads": len(heads)}).to(self.proto_v.device)
        index = torch.as_tensor(heads, device=self.proto_v.device)
        for dst, src in zip(out.parameters(), self.parameters()):
            dst.copy_(src.index_select(0, index))
        out.scale.copy_(self.scale)
        return out

    @torch.no_grad()
    def scale_output_(self, factor: float) -> "DINOHead":
        self.scale.mul_(factor)
        return self


def head_from_config(config: dict) -> nn.Module:
    """Rebuild a head from its ``config()`` (a DINOHead when ``kind`` is ``"dino"``)."""
    config = dict(config)
    return DINOHead(**config) if config.pop("kind", None) == "dino" else MultiHead(**config)
