"""Exponential moving average of a module's weights (mean teacher / TEMI teacher).

``EMA(module)`` keeps a frozen deep copy; ``update(momentum)`` sets every parameter and
floating buffer ``theta_ema <- m theta_ema + (1 - m) theta``.
:func:`cosine_momentum` is TEMI's (DINO's) schedule
``m(t) = m_end - (m_end - m_start) (cos(pi t / T) + 1) / 2``: ``m_start`` at ``t = 0``,
``m_end`` at ``t = T``.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class EMA:
    """An EMA copy (``.module``, no gradients) of ``module``."""

    def __init__(self, module: nn.Module):
        self.module = copy.deepcopy(module)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, source: nn.Module, momentum: float) -> None:
        """``theta_ema <- momentum * theta_ema + (1 - momentum) * theta_source``."""
        for ema_p, p in zip(self.module.parameters(), source.parameters()):
            ema_p.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
        for ema_b, b in zip(self.module.buffers(), source.buffers()):
            if ema_b.dtype.is_floating_point:
                ema_b.mul_(momentum).add_(b.detach(), alpha=1.0 - momentum)
            else:
                ema_b.copy_(b)


def cosine_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Momentum rising from ``start`` to ``end`` along half a cosine over ``total_steps``."""
    if total_steps <= 0:
        return end
    t = min(max(step, 0), total_steps) / total_steps
    return end - (end - start) * (math.cos(math.pi * t) + 1.0) / 2.0
