"""SeLa (Asano et al.) on frozen embeddings: Sinkhorn-Knopp labels alternating with
cross-entropy training of ``n_heads`` heads.

Each head has its own labels. At ``n_relabel`` points spaced quadratically over the
training steps (``step_j = round(T (j / M)^2)``, j = 0..M-1, dense early as in the
code; the first at step 0 from the randomly initialised heads) every head's labels are
re-solved: :func:`~nolabel.nn.sinkhorn.sinkhorn_knopp` on the head's log-probabilities
over the whole data (``lam``, ``tol``), hard label = argmax of Q. Marginals: with
``marginals="uniform"`` the equal partition (SeLa); with ``"kmeans"`` (default) the
sorted cluster sizes of k-means on the same embeddings
(:func:`~nolabel.methods.heads_base.kmeans_size_prior`), given to each head's clusters in
the order of their current predicted mass (the largest mass gets the largest marginal):
non-uniform marginals as later SeLa work uses, for uneven class sizes. Between
re-labellings each head is trained by cross-entropy on its labels, with the
embedding perturbed (:func:`~nolabel.methods.heads_base.perturb`: ``dropout``, ``noise``)
in place of SeLa's image augmentation. After training the labels are solved once more
and the head with the lowest cross-entropy to its own final labels (clean embeddings)
is kept: a label-free choice.

Defaults: 10 linear heads, ``lam`` 10 and ``tol`` 0.01 (the CIFAR code), 100 epochs with
50 re-labellings (the code re-labels ~80-100 times in 160-400 epochs), Adam lr 1e-3,
weight decay 1e-4, batch 256, dropout 0.1, noise 0.1.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import NolabelError
from .heads_base import HeadMethod, kmeans_size_prior, make_optimizer, perturb
from ..nn.losses import balanced_cross_entropy
from ..nn.sinkhorn import sinkhorn_knopp
from . import register


@register("sela")
class SeLa(HeadMethod):
    """Self-labelling with balanced Sinkhorn-Knopp pseudo-labels on frozen embeddings."""

    def __init__(
        self,
        n_clusters: int = 10,
        n_heads: int = 10,
        hidden: int | None = None,
        n_layers: int = 1,
        lam: float = 10.0,
        tol: float = 1e-2,
        n_relabel: int = 50,
        dropout: float = 0.1,
        noise: float = 0.1,
        marginals: str = "kmeans",
        epochs: int = 100,
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
        self.n_heads = n_heads
        self.hidden = hidden
        self.n_layers = n_layers
        self.lam = lam
        self.tol = tol
        self.n_relabel = n_relabel
        self.dropout = dropout
        self.noise = noise
        if marginals not in ("kmeans", "uniform"):
            raise NolabelError(f"unknown marginals {marginals!r}; choose kmeans or uniform")
        self.marginals = marginals

    def _labels(self, head, X: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        """Sinkhorn-Knopp hard labels ``(H, N)``, one head at a time (bounded memory).
        With a size ``prior`` (sorted descending) each head's clusters get its sizes in the
        order of their current predicted mass (largest mass, largest marginal)."""
        logp = torch.log_softmax(self._all_logits(head, X), dim=-1)
        labels = []
        for h in range(len(logp)):
            marginals = None
            if prior is not None:
                order = logp[h].exp().mean(0).argsort(descending=True)
                marginals = torch.empty_like(prior).scatter_(0, order, prior)
            labels.append(sinkhorn_knopp(logp[h], self.lam, self.tol, marginals=marginals)[1])
        return torch.stack(labels)

    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        X = self._setup(x)
        head = self._new_head(X.shape[1], self.n_heads, self.hidden, self.n_layers)
        opt = make_optimizer("adam", head.parameters(), self.lr, self.weight_decay)
        total = self._steps_per_epoch(len(X)) * self.epochs
        m = max(1, int(self.n_relabel))
        relabel_at = {int(round(total * (j / m) ** 2)) for j in range(m)}
        labels = torch.zeros(self.n_heads, len(X), dtype=torch.int64, device=self._device)
        prior = kmeans_size_prior(X, self.n_clusters, self.seed) if self.marginals == "kmeans" else None

        def step(idx: torch.Tensor, t: int) -> float:
            nonlocal labels
            if t in relabel_at:
                labels = self._labels(head, X, prior)
            logits = head(perturb(X[idx], self.dropout, self.noise, self._dev_gen))
            loss = balanced_cross_entropy(logits, labels[:, idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach()) / self.n_heads

        self._run_epochs(len(X), step)
        labels = self._labels(head, X, prior)
        ce = balanced_cross_entropy(self._all_logits(head, X), labels).cpu()
        self.head_losses_ = ce.tolist()
        self.head_ = head.select([int(ce.argmin())])
