"""TEMI (Adaloglou et al.): teacher-ensemble weighted PMI on frozen embeddings.

For each sample ``x`` a partner ``x'`` is drawn uniformly from its first ``n_neighbors``
mined neighbours. ``n_heads`` student MLP heads (``n_layers`` layers, ``hidden`` units,
one batched :class:`~nolabel.nn.heads.MultiHead`) are trained by AdamW; the teacher heads
are an EMA of the students with momentum rising from ``teacher_momentum`` to 1 along a
cosine. The code's 0.996 was set for ImageNet (about 2,500 steps an epoch); on small data
a teacher that slow hardly leaves its random initialisation within the run and the heads
stay near uniform. ``teacher_momentum=None`` (default) therefore starts at
``min(0.996, 1 - 1 / max(steps_per_epoch, 10))``: the teacher averages the student over
about one epoch (at least 10 steps), and large data sets get the code's value. With ``q = softmax(logits / tau)`` and the per-head cluster prior
``q~ <- m q~ + (1 - m) mean_batch q_t`` (``prior_momentum`` m, both views, updated after
each step), the loss is :func:`~nolabel.nn.losses.temi_loss`, averaged over heads:
``mean_i mean_b w(x, x') * -(pmi_i(x, x') + pmi_i(x', x)) / 2`` with
``pmi_i = log sum_c (q_s(c|x) q_t(c|x'))^beta / q~(c)`` and the teacher-ensemble weight
``w = mean_j sum_c q_t^j(c|x) q_t^j(c|x')`` (no gradient).
``beta`` 0.6 (the paper uses 1.0 when overclustering). Prediction: the TEACHER head with
the lowest mean training loss over the last epoch; ``predict_proba = softmax(logits/tau)``.

Frozen CPU-scale defaults: 16 heads (the paper's 50 lose < 1 point at 16), hidden 256
(the paper's DINO-style head is 2048 wide; 256 keeps 16 heads cheap on a CPU),
batch 256, AdamW lr 1e-3 (the code's 5e-4 per 256 rows, doubled because far fewer
steps are taken on small data) with a linear warm-up over the first ``warmup_epochs``
then constant, weight decay 1e-4, 100 epochs (the code's default).
"""
from __future__ import annotations

import numpy as np
import torch

from ..nn.ema import EMA, cosine_momentum
from .heads_base import HeadMethod, make_optimizer, random_neighbors
from ..nn.losses import temi_loss, temi_prior_update
from . import register


@register("temi")
class TEMI(HeadMethod):
    """TEMI weighted-PMI clustering with student/teacher MLP heads on frozen embeddings."""

    needs_neighbors = True

    def __init__(
        self,
        n_clusters: int = 10,
        n_neighbors: int = 50,
        n_heads: int = 16,
        hidden: int = 256,
        n_layers: int = 3,
        tau: float = 0.1,
        beta: float = 0.6,
        prior_momentum: float = 0.9,
        teacher_momentum: float | None = None,
        epochs: int = 100,
        warmup_epochs: int = 10,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        normalize: bool = True,
        seed: int = 0,
        device: str | None = None,
        progress: bool = False,
    ):
        super().__init__(n_clusters=n_clusters, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, normalize=normalize, device=device, progress=progress)
        self.n_neighbors = n_neighbors
        self.n_heads = n_heads
        self.hidden = hidden
        self.n_layers = n_layers
        self.tau = tau
        self.beta = beta
        self.prior_momentum = prior_momentum
        self.teacher_momentum = teacher_momentum
        self.warmup_epochs = warmup_epochs

    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        X = self._setup(x)
        nb = self._neighbors(neighbors)
        student = self._new_head(X.shape[1], self.n_heads, self.hidden, self.n_layers, cosine=True)
        teacher = EMA(student)
        opt = make_optimizer("adamw", student.parameters(), self.lr, self.weight_decay)
        prior = torch.full((self.n_heads, self.n_clusters), 1.0 / self.n_clusters, device=self._device)
        per_epoch = self._steps_per_epoch(len(X))
        total_steps = per_epoch * self.epochs
        momentum = self.teacher_momentum
        if momentum is None:
            momentum = min(0.996, 1.0 - 1.0 / max(per_epoch, 10))
        warmup_steps = per_epoch * min(self.warmup_epochs, self.epochs)
        head_sums = torch.zeros(self.n_heads, dtype=torch.float64, device=self._device)

        def step(idx: torch.Tensor, t: int) -> float:
            nonlocal prior, head_sums
            if t % per_epoch == 0:
                head_sums.zero_()
            for group in opt.param_groups:
                group["lr"] = self.lr * min(1.0, (t + 1) / warmup_steps) if warmup_steps else self.lr
            nbr = random_neighbors(nb, idx, self._cpu_gen)
            both = torch.cat([X[idx], X[nbr]])
            s = student(both)
            with torch.no_grad():
                tl = teacher.module(both)
            b = len(idx)
            losses = temi_loss(s[:, :b], s[:, b:], tl[:, :b], tl[:, b:], prior, self.beta, self.tau)
            loss = losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            teacher.update(student, cosine_momentum(t, total_steps, momentum, 1.0))
            prior = temi_prior_update(prior, torch.softmax(tl / self.tau, -1), self.prior_momentum)
            head_sums += losses.detach().double()
            return float(loss.detach())

        self._run_epochs(len(X), step)
        head_losses = (head_sums / per_epoch).cpu()
        self.head_losses_ = head_losses.tolist()
        self.head_ = teacher.module.select([int(head_losses.argmin())]).scale_output_(1.0 / self.tau)
