"""Pretext-task losses as pure functions of tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2B views of B pairs ``(z1[i], z2[i])``.

    With ``z`` the 2B L2-normalised rows of ``[z1; z2]``, ``s_ab = z_a . z_b / temperature``
    and ``pos(a)`` the other view of a's image:
    ``L = mean_a -log( exp(s_a,pos(a)) / sum_{b != a} exp(s_ab) )``.
    Every view is an anchor (SCAN's code uses only the first view as anchor).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must be (B, d) of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * B, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(z.device)
    return F.cross_entropy(logits, positives)
