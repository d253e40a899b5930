"""SCAN's self-labelling step on top of any clustering method, on frozen embeddings or the whole network.

``SelfLabel(base=<estimator>)`` first fits ``base`` (unless it is already fitted), then
fine-tunes a head on its own confident predictions. At every step, for a batch ``x``:

- the "weak view" is the clean embedding: ``p = softmax(head(x))`` (no gradient);
- samples with ``max_c p_c > threshold`` (0.99, SCAN) get the pseudo-label
  ``y = argmax_c p_c``; a batch with none makes no update (never an error);
- ``top_fraction`` (0 = off, SCAN) adds a threshold relative to each cluster: at the start
  of every epoch the head predicts all items, and the ``top_fraction`` most confident
  items of each predicted cluster also count as confident (:func:`relative_cutoffs`).
  On frozen features a linear head's confidences rarely reach 0.99, so the absolute
  threshold alone leaves nothing to train on; the relative one always gives every
  non-empty cluster targets. It helps only where those targets are mostly right:
  on 4 overlapping blobs a 2-epoch SCAN head goes from 71.8 to 96.3 ACC (the
  absolute threshold: unchanged); on frozen real features (seed 0) it does not:
  StackOverflow MiniLM SCAN 60.7 -> 60.1 (``top_fraction=0.5``, lr 1e-3; 17 % of
  items moved), CIFAR-10 EfficientNet-Lite0 SCAN 46.5 -> 43.3, because the top half of
  each SCAN cluster is only 57 % correct there (top 10 %: 67 %; above 0.99: 76 %, 9 %
  of items): self-training re-fits the head to its own errors;
- the "strong view" is the perturbed embedding
  (:func:`~nolabel.methods.heads_base.perturb`: ``dropout``, ``noise``), the stand-in for
  SCAN's RandAugment + Cutout in feature space;
- loss: class-balanced cross-entropy on the strong view,
  ``sum_b w[y_b] CE(head(x'_b), y_b) / sum_b w[y_b]``, ``w_c = B_conf / count_c`` among
  the confident samples of the batch (SCAN's code).

The head starts as a copy of the base's kept head when the base has one (SCAN, TEMI,
SeLa, LSD-C: ``cluster_head()``). Other bases (k-means) have none: a linear head is first
fitted by cross-entropy to the base's hard assignments for ``warmup_epochs`` (a
distillation, Adam lr 1e-2), so that confident predictions exist. With ``ema`` (e.g. 0.999, SCAN's
optional setting) the predictions come from an EMA of the head's weights.

Whole network (``SelfLabel(base=<estimator fitted with fit_dataset>).fit_dataset(dataset)``,
:mod:`.network`): the base's trained backbone and kept head are fine-tuned together;
confidence on a weakly augmented view (``weak_augment``, network in training mode, no
gradient, as SCAN's code), class-balanced cross-entropy on a strongly augmented one
(``augment``: ``"auto"`` = SCAN's strong augmentation, ``"digits"`` for one-channel
images); ``ema`` keeps an EMA of the whole network's weights and returns it.
:func:`confident_counts` warns before training when a cluster has no confident image.
Whole-network defaults (``network_defaults``): Adam lr 1e-4, weight decay 1e-4, batch
256, 50 epochs.

Defaults on frozen embeddings: Adam lr 1e-4 (SCAN), weight decay 1e-4, batch 1000
(SCAN), 50 epochs (SCAN runs 200 on images; the frozen head converges much sooner).
``history_`` holds the mean loss per epoch; ``confident_start_`` and ``confident_`` the
fraction of items above the threshold before and after, ``changed_`` the fraction whose
cluster changed. When no item passes the threshold at the start (common on frozen
features: confidences of a linear head rarely reach 0.99) nothing can be trained and a
warning says so plainly, naming the median confidence.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch

from ..errors import NolabelError
from ..nn.ema import EMA
from ..nn.losses import balanced_cross_entropy, class_balance_weights
from ..train import distributed as D
from . import register
from .base import ClusterMethod
from .heads_base import HeadMethod, make_optimizer, perturb
from .network import EmaHook, Network, NetworkMethod

#: Adam step size of the distillation onto a new head (bases without a head, e.g. k-means)
DISTILL_LR = 1e-2


def _as_estimator(base: Any, n_clusters: int, seed: int) -> ClusterMethod:
    """``base`` as an estimator: one already, a ``{"method", "params"}`` dict, or a name."""
    from . import get

    if isinstance(base, ClusterMethod):
        return base
    if isinstance(base, str):
        base = {"method": base, "params": {}}
    if isinstance(base, dict) and "method" in base:
        params = {k: v for k, v in base.get("params", {}).items() if k not in ("n_clusters", "seed")}
        return get(base["method"])(n_clusters=n_clusters, seed=seed, **params)
    raise NolabelError(f"selflabel needs a base method (an estimator or a method name), got {base!r}")


@register("selflabel")
class SelfLabel(NetworkMethod, HeadMethod):
    """Self-labelling (SCAN step 3) of a base method's confident predictions (frozen or whole network)."""

    network_defaults = {"batch_size": 256, "epochs": 50, "lr": 1e-4}

    def __init__(
        self,
        n_clusters: int = 10,
        base: Any = "scan",
        threshold: float = 0.99,
        top_fraction: float = 0.0,
        ema: float | None = None,
        dropout: float = 0.1,
        noise: float = 0.1,
        warmup_epochs: int = 50,
        augment: str = "auto",
        weak_augment: str = "weak",
        optimizer: str = "adam",
        amp: bool | None = None,
        epochs: int = 50,
        batch_size: int = 1000,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        seed: int = 0,
        device: str | None = None,
        progress: bool = False,
    ):
        super().__init__(n_clusters=n_clusters, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, normalize=True, device=device, progress=progress)
        if not 0.0 < threshold <= 1.0:
            raise NolabelError(f"threshold must lie in (0, 1], got {threshold}")
        if not 0.0 <= top_fraction <= 1.0:
            raise NolabelError(f"top_fraction must lie in [0, 1], got {top_fraction}")
        self.base = _as_estimator(base, n_clusters, seed)
        if self.base.n_clusters != n_clusters:
            raise NolabelError(f"the base method makes {self.base.n_clusters} clusters, selflabel was asked for {n_clusters}")
        self.needs_neighbors = self.base.needs_neighbors
        self.n_neighbors = getattr(self.base, "n_neighbors", None)
        self.threshold = threshold
        self.top_fraction = top_fraction
        self.ema = ema
        self.dropout = dropout
        self.noise = noise
        self.warmup_epochs = warmup_epochs
        self.augment = augment
        self.weak_augment = weak_augment
        self.optimizer = optimizer
        self.amp = amp
        self.confident_: float = 0.0
        self.confident_start_: float = 0.0
        self.changed_: float = 0.0

    @classmethod
    def neighbors_needed(cls, params: dict[str, Any]) -> int:
        """What the base method needs (``base``: an estimator, a name or ``{"method", "params"}``)."""
        from . import get

        base = params.get("base", "scan")
        if isinstance(base, ClusterMethod):
            return type(base).neighbors_needed(base.get_params())
        if isinstance(base, str):
            base = {"method": base, "params": {}}
        return get(base["method"]).neighbors_needed(base.get("params", {}))

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["base"] = {"method": self.base.name, "params": self.base.get_params()}
        return params

    def _start_head(self, x: np.ndarray, neighbors: np.ndarray | None, X: torch.Tensor):
        """The head to fine-tune and whether it reads L2-normalised embeddings."""
        if not self.base._is_fitted():
            self.base.fit(x, neighbors)
        if isinstance(self.base, HeadMethod):
            head, normalized = self.base.cluster_head()
            return head.to(self._device), normalized
        targets = torch.as_tensor(self.base.predict(x), device=self._device)
        head = self._new_head(X.shape[1], 1)
        opt = make_optimizer("adam", head.parameters(), DISTILL_LR, self.weight_decay)

        def distill(idx: torch.Tensor, t: int) -> float:
            loss = balanced_cross_entropy(head(X[idx]), targets[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        self._run_epochs(len(X), distill, epochs=self.warmup_epochs)
        return head, True

    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        X = self._setup(x)
        head, normalized = self._start_head(x, neighbors, X)
        if not normalized:
            self._normalize_inputs = False
            X = self._inputs(x)
        teacher = EMA(head) if self.ema else None
        opt = make_optimizer("adam", head.parameters(), self.lr, self.weight_decay)
        self._cutoffs = None
        with torch.no_grad():
            start, start_labels = self._all_max_proba(head, X)
        self.confident_start_ = float(self._confident(start, start_labels).float().mean())
        if self.confident_start_ == 0.0:
            warnings.warn(f"selflabel: no item passes the confidence threshold {self.threshold:g} (median confidence "
                          f"{float(start.median()):.2f}), so the result is the base method's unchanged: the base is not "
                          f"confident enough for self-labelling to help; to self-label anyway, each cluster's most "
                          f"confident items: -p selflabel.top_fraction=0.5", stacklevel=2)

        per_epoch = self._steps_per_epoch(len(X))

        def step(idx: torch.Tensor, t: int) -> float | None:
            model = teacher.module if teacher else head
            if self.top_fraction > 0 and t % per_epoch == 0:
                with torch.no_grad():
                    c_all, y_all = self._all_max_proba(model, X)
                self._cutoffs = relative_cutoffs(c_all, y_all, self.n_clusters, self.top_fraction)
            with torch.no_grad():
                p = torch.softmax(model(X[idx])[0], dim=-1)
            conf, y = p.max(-1)
            mask = self._confident(conf, y)
            if not bool(mask.any()):
                return None
            y = y[mask]
            strong = perturb(X[idx][mask], self.dropout, self.noise, self._dev_gen)
            loss = balanced_cross_entropy(head(strong), y, class_balance_weights(y, self.n_clusters)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if teacher:
                teacher.update(head, self.ema)
            return float(loss.detach())

        self._run_epochs(len(X), step)
        self.head_ = copy.deepcopy(teacher.module if teacher else head)
        for p in self.head_.parameters():
            p.requires_grad_(True)
        conf, labels = self._all_max_proba(self.head_, X)
        self.confident_ = float((conf > self.threshold).float().mean())
        self._cutoffs = None
        self.changed_ = float((labels != start_labels).float().mean())
        self.head_losses_ = [self.history_[-1]] if self.history_ else []

    def _confident(self, conf: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Items that get a pseudo-label: above ``threshold``, or (``top_fraction``) at or
        above their cluster's cutoff (:func:`relative_cutoffs`, recomputed each epoch)."""
        mask = conf > self.threshold
        if self.top_fraction > 0:
            cut = getattr(self, "_cutoffs", None)
            if cut is None:
                cut = relative_cutoffs(conf, labels, self.n_clusters, self.top_fraction)
            mask |= conf >= cut[labels]
        return mask

    def _fit_network(self, dataset, backbone, neighbors, out_dir, resume: bool):
        net = Network.from_estimator(dataset, self.base, seed=self.seed, device=self.device)
        weak, strong = net.augment(self.weak_augment), net.augment(self.augment)
        hooks = {"ema": EmaHook(net.net, self.ema)} if self.ema else {}
        k = self.n_clusters

        def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
            x = net.images.batch(idx)
            with torch.no_grad():
                p = torch.softmax(net.model(weak(x).to(net.device))[0].float(), dim=-1)
            conf, target = p.max(dim=-1)
            mask = conf > self.threshold
            n_conf = int(mask.sum())
            if n_conf == 0:
                return {"loss": None, "confident": 0.0, "n": len(idx)}
            logits = net.model(strong(x[mask.cpu()]).to(net.device))[0].float()
            y = target[mask]
            loss = balanced_cross_entropy(logits, y, class_balance_weights(y, k))
            return {"loss": loss, "confident": n_conf / len(idx), "n": len(idx) + n_conf}

        self.confident_at_start_ = confident_counts(net, self.threshold)
        history = net.fit(self, step, out_dir, resume, hooks=hooks)
        if self.ema:
            hooks["ema"].copy_to(net.net)
        probs = net.log_probs()[0].exp()
        self.confident_ = float((probs.max(-1).values > self.threshold).float().mean())
        return net, 0, history

    def _state_extra(self) -> dict[str, Any]:
        return {**super()._state_extra(), "confident": self.confident_, "confident_start": self.confident_start_,
                "changed": self.changed_}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        super()._load_state(tensors, extra)
        self.confident_ = float(extra.get("confident", 0.0))
        self.confident_start_ = float(extra.get("confident_start", 0.0))
        self.changed_ = float(extra.get("changed", 0.0))


def relative_cutoffs(conf: torch.Tensor, labels: torch.Tensor, n_clusters: int, fraction: float) -> torch.Tensor:
    """Per cluster ``c``, the confidence of its ``ceil(fraction * n_c)``-th most confident
    item (``n_c`` items predicted ``c``); ``inf`` for an empty cluster. ``conf >= cut[c]``
    keeps the top ``fraction`` of every cluster (ties may add a few): a threshold relative
    to each cluster, so that clusters whose confidences are all low still get targets."""
    cut = torch.full((n_clusters,), float("inf"), device=conf.device)
    for c in range(n_clusters):
        vals = conf[labels == c]
        if len(vals):
            cut[c] = vals.sort(descending=True).values[math.ceil(fraction * len(vals)) - 1] if fraction > 0 else float("inf")
    return cut


def confident_counts(net: Network, threshold: float) -> list[int]:
    """Per cluster, how many un-augmented images the network gives ``max p > threshold``.

    Self-labelling only trains on those, so a cluster with none gets no target and is
    usually emptied by the others: warn then (the clustering step stopped too early,
    or the threshold is too high for it).
    """
    log_p = net.log_probs()[0]
    conf, cluster = log_p.exp().max(-1)
    counts = torch.bincount(cluster[conf > threshold], minlength=log_p.shape[-1]).tolist()
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty and D.is_main():
        warnings.warn(f"self-labelling: {len(empty)} of {len(counts)} clusters have no image above confidence "
                      f"{threshold} (clusters {', '.join(map(str, empty[:10]))}{', ...' if len(empty) > 10 else ''}); "
                      "they get no pseudo-label and will likely be emptied: train the clustering step longer "
                      "(SCAN's default is 50 epochs) or lower the threshold", stacklevel=3)
    return counts
