"""End-to-end clustering: a backbone and clustering heads trained together on images.

Four procedures share one model (:class:`ClusterNet`: backbone features -> ``MultiHead``
logits (H, B, K)), one data path and the loop of :mod:`.loop`:

- :func:`scan_end_to_end` - SCAN's clustering step: for each anchor a neighbour drawn
  uniformly from its k pretext neighbours, both augmented, loss
  ``-mean log <p(x), p(n)> - w * H(pbar)`` per head (``pbar`` the global-batch mean of
  the anchor predictions, see :mod:`.distributed`), summed over heads; the whole
  network is updated. The head with the lowest mean loss over the last epoch is kept.
- :func:`selflabel_end_to_end` - SCAN's self-labelling step: pseudo-labels
  ``argmax p`` of a weakly augmented view where ``max p > threshold``, cross-entropy on
  a strongly augmented view, class-balanced; optional EMA of the weights. A batch
  without a confident sample makes no update.
- :func:`sela_end_to_end` - SeLa: cross-entropy on pseudo-labels that Sinkhorn-Knopp
  re-solves (equal-size clusters) at quadratically spaced epochs.
- :func:`lsdc_end_to_end` - LSD-C: in-batch pairwise targets from the (detached)
  backbone features of the clean images, BCE between ``p(clean)`` and the
  predictions on RICAP / MixUp composites of an augmented view (targets mixed by
  area / weight), plus a ramped-up consistency term; optionally only the last blocks
  of the backbone are trained.

Images are decoded once into a ``uint8`` tensor (:func:`nolabel.pretext.image_source`,
the same resize / crop / grayscale as the ``local:`` backbone) and augmented per batch.
Augmentation names: ``"strong"`` (SCAN's 4 random ops + Cutout, :func:`strong_augment`),
``"weak"`` (padded random crop, flip for colour images), ``"simclr"``, ``"digits"``
(batched random affine - rotation +-15 deg, translation 10 %, scale 0.9-1.1, shear
+-10 deg - and a Cutout of side ``size // 4`` with probability 0.5; no flips, no
colour ops: SCAN's solarize / equalize / flips destroy or change digits) and ``"none"``.
``"auto"`` means ``"strong"`` for colour images, ``"digits"`` for one-channel images.

Labels of the dataset are never read. Each function returns a :class:`EndToEndModel`
(``predict_proba(dataset) -> (N, K)``), saved under ``out_dir`` as ``model.safetensors``
+ ``model.json``; ``out_dir/checkpoint.pt`` makes a killed run resumable.
"""
from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.archs import archs
from ..backbones.local import load_backbone_checkpoint
from ..data.base import Dataset
from ..errors import NolabelError
from ..io import atomic_path, read_json, write_json
from ..nn.augment import Normalizer, make_augment
from ..nn.heads import MultiHead
from ..nn.losses import scan_loss
from . import distributed as D
from .checkpoint import unwrap
from ..device import resolve_device
from .loop import fit, make_optimizer, make_scheduler

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
EPS = 1e-8


class ClusterNet(nn.Module):
    """``forward(x) -> logits (H, B, K)``; ``forward(x, features=True) -> (logits, features (B, d))``."""

    def __init__(self, backbone: nn.Module, n_clusters: int, n_heads: int = 1,
                 hidden: Optional[int] = None, n_layers: int = 1):
        super().__init__()
        self.backbone = backbone
        self.heads = MultiHead(int(backbone.feature_dim), n_clusters, n_heads, hidden=hidden, n_layers=n_layers)

    def forward(self, x: torch.Tensor, features: bool = False):
        f = self.backbone(x)
        logits = self.heads(f)
        return (logits, f) if features else logits


class EndToEndModel:
    """A trained :class:`ClusterNet` with its input preprocessing and the head to use."""

    def __init__(self, net: ClusterNet, config: dict[str, Any], head: int = 0,
                 history: Optional[list[dict[str, Any]]] = None):
        self.net = net
        self.config = config
        self.head = int(head)
        self.history = list(history or [])

    @property
    def n_clusters(self) -> int:
        return self.net.heads.n_clusters

    @torch.no_grad()
    def predict_proba(self, dataset: Dataset, batch_size: int = 500,
                      device: Optional[str | torch.device] = None) -> np.ndarray:
        """(N, K) float32 softmax of the chosen head on the un-augmented images."""
        device = resolve_device(device)
        images = _images(dataset, self.config)
        norm = Normalizer(self.config["mean"], self.config["std"])
        self.net.to(device).eval()
        out = []
        for s in range(0, len(images), batch_size):
            x = norm(images.batch(torch.arange(s, min(s + batch_size, len(images))))).to(device)
            out.append(torch.softmax(self.net(x)[self.head].float(), dim=-1).cpu())
        return torch.cat(out).numpy()

    def predict(self, dataset: Dataset, **kwargs: Any) -> np.ndarray:
        return self.predict_proba(dataset, **kwargs).argmax(axis=1)

    def save(self, out_dir: str | Path) -> Path:
        """``out_dir/model.safetensors`` (all weights) + ``out_dir/model.json`` (config, head, history)."""
        from safetensors.torch import save_file

        out = Path(out_dir).expanduser()
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_path(out / MODEL_FILE, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        write_json(out / CONFIG_FILE, {**self.config, "head": self.head, "heads": self.net.heads.config(),
                                       "history": self.history})
        return out / MODEL_FILE

    @classmethod
    def load(cls, path: str | Path) -> "EndToEndModel":
        """Read a folder (or its ``model.safetensors``) written by :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path).expanduser()
        folder = path if path.is_dir() else path.parent
        if not (folder / MODEL_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise NolabelError(f"{folder} holds no end-to-end model ({MODEL_FILE} + {CONFIG_FILE})")
        config = read_json(folder / CONFIG_FILE)
        heads = config.pop("heads")
        head = int(config.pop("head"))
        history = config.pop("history", [])
        backbone = archs.get(config["arch"])(**config["arch_kwargs"])
        net = ClusterNet(backbone, heads["n_clusters"], heads["n_heads"], heads["hidden"], heads["n_layers"])
        net.load_state_dict(load_file(str(folder / MODEL_FILE)))
        net.eval()
        return cls(net, config, head, history)


def _images(dataset: Dataset, config: dict[str, Any]):
    from ..data.images import image_source

    if dataset.modality != "image":
        raise NolabelError(f"end-to-end training needs images, {dataset.name} holds {dataset.modality} items")
    return image_source(dataset, image_size=int(config["input_size"]), in_chans=int(config["in_chans"]))


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _start(dataset: Dataset, backbone_checkpoint: str | Path, n_clusters: int, n_heads: int,
           hidden: Optional[int], n_layers: int, seed: int, device: Optional[str]):
    """(net on device, input config, uint8 image source, device): the backbone from its checkpoint, fresh heads."""
    device = D.init_distributed(device)
    if n_clusters < 2:
        raise NolabelError(f"n_clusters must be at least 2, got {n_clusters}")
    if n_heads < 1:
        raise NolabelError(f"n_heads must be at least 1, got {n_heads}")
    backbone, bconf = load_backbone_checkpoint(backbone_checkpoint)
    config = {k: bconf[k] for k in ("arch", "arch_kwargs", "input_size", "in_chans", "mean", "std")}
    config["backbone_checkpoint"] = str(backbone_checkpoint)
    images = _images(dataset, config)
    if len(images) < n_clusters:
        raise NolabelError(f"{len(images)} images cannot fill {n_clusters} clusters")
    _seed_all(seed)
    net = ClusterNet(backbone, n_clusters, n_heads, hidden, n_layers).to(device)
    _seed_all(seed + D.rank())
    return net, config, images, device


def _from_model(dataset: Dataset, model: EndToEndModel | str | Path, seed: int, device: Optional[str]):
    """(net with only the chosen head, config, images, device) from a fitted model or its folder."""
    device = D.init_distributed(device)
    model = EndToEndModel.load(model) if not isinstance(model, EndToEndModel) else model
    backbone = archs.get(model.config["arch"])(**model.config["arch_kwargs"])
    heads = model.net.heads.select([model.head])
    net = ClusterNet(backbone, heads.n_clusters, 1, heads.hidden, heads.n_layers)
    net.backbone.load_state_dict(model.net.backbone.state_dict())
    net.heads.load_state_dict(heads.state_dict())
    config = {k: model.config[k] for k in ("arch", "arch_kwargs", "input_size", "in_chans", "mean", "std",
                                           "backbone_checkpoint")}
    images = _images(dataset, config)
    _seed_all(seed + D.rank())
    return net.to(device), config, images, device


class HeadLosses:
    """Per-head mean training loss of each epoch (the last one picks the head to keep)."""

    def __init__(self, n_heads: int):
        self.sums = torch.zeros(n_heads, dtype=torch.float64)
        self.count = 0
        self.last = torch.full((n_heads,), math.inf, dtype=torch.float64)

    def add(self, losses: torch.Tensor) -> None:
        self.sums += losses.detach().double().cpu()
        self.count += 1

    def on_epoch_start(self, epoch: int) -> None:
        self.sums.zero_()
        self.count = 0

    def on_epoch_end(self, epoch: int, stats: dict[str, Any]) -> None:
        sums = self.sums.clone()
        if D.is_distributed():
            torch.distributed.all_reduce(sums)
            sums /= D.world_size()
        self.last = sums / max(self.count, 1)
        stats["head_losses"] = [float(v) for v in self.last]

    def best(self) -> int:
        return int(torch.argmin(self.last))

    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = state["last"].clone()


def _as_neighbors(neighbors: Any, n: int) -> torch.Tensor:
    idx = getattr(neighbors, "indices", neighbors)
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    if idx.ndim != 2 or idx.shape[0] != n or idx.shape[1] < 1:
        raise NolabelError(f"neighbours must be an (N={n}, k) index array, got shape {tuple(idx.shape)}")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise NolabelError("neighbour indices fall outside the dataset: were they mined on other data?")
    return idx


def _finish(net: nn.Module, config: dict[str, Any], head: int, history: list, out_dir: Optional[str | Path],
            select: bool = True) -> EndToEndModel:
    """The fitted model keeping only ``head`` (when ``select``), saved under ``out_dir`` on the main rank."""
    net = unwrap(net)
    if select and net.heads.n_heads > 1:
        config["selected_head"] = int(head)
        net.heads = net.heads.select([head])
        head = 0
    net.eval()
    model = EndToEndModel(net, config, head, history)
    if out_dir is not None and D.is_main():
        model.save(out_dir)
    D.barrier()
    return model


def scan_end_to_end(
    dataset: Dataset,
    backbone_checkpoint: str | Path,
    n_clusters: int,
    neighbors: Any,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    entropy_weight: float = 5.0,
    n_heads: int = 1,
    augment: str = "auto",
    optimizer: str = "adam",
    device: Optional[str] = None,
    seed: int = 0,
    out_dir: Optional[str | Path] = None,
    resume: bool = True,
    amp: Optional[bool] = None,
    progress: bool = False,
    tensorboard: bool = False,
) -> EndToEndModel:
    """SCAN clustering step with the whole network trained (module doc); ``neighbors`` (N, k) or a ``Neighbors``.

    ``batch_size`` is per process (under torchrun the global batch is that times the
    world size). Returns the model with the lowest-loss head only.
    """
    net, config, images, device = _start(dataset, backbone_checkpoint, n_clusters, n_heads, None, 1, seed, device)
    nbrs = _as_neighbors(neighbors, len(images))
    aug = make_augment(augment, images.size, images.in_chans, config["mean"], config["std"])
    model = D.wrap_ddp(net, device)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay, nesterov=True)
    sampler = ShardedBatchesFor(len(images), batch_size, seed)
    heads = HeadLosses(n_heads)
    config.update(method="scan", n_clusters=n_clusters, n_heads=n_heads, batch_size=sampler.batch_size,
                  lr=lr, weight_decay=weight_decay, entropy_weight=entropy_weight, augment=augment,
                  optimizer=optimizer, seed=seed, k=int(nbrs.shape[1]), world_size=D.world_size())

    def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
        nb = nbrs[idx, torch.randint(nbrs.shape[1], (len(idx),))]
        x = torch.cat([aug(images.batch(idx)), aug(images.batch(nb))]).to(device, non_blocking=True)
        p = torch.softmax(model(x).float(), dim=-1)
        pa = p[:, :len(idx)]
        total, consistency, entropy = scan_loss(pa, p[:, len(idx):], entropy_weight, pbar=D.global_mean(pa, dim=-2))
        heads.add(total)
        return {"loss": total.sum(), "consistency": consistency.mean(), "entropy": entropy.mean(), "n": len(x)}

    history = fit(model, step, sampler.batches, epochs, opt, None, out_dir, resume, device, amp, progress,
                  tensorboard=tensorboard, config=config, hooks={"heads": heads}, name="scan")
    return _finish(net, config, heads.best(), history, out_dir)


class ShardedBatchesFor(D.ShardedBatches):
    """:class:`ShardedBatches` that refuses data smaller than one batch per process."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size < 2:
            raise NolabelError(f"batch_size must be at least 2, got {batch_size}")
        super().__init__(n, batch_size, seed)


class EmaHook:
    """EMA of the network's weights, updated after every optimiser step (:class:`nolabel.nn.ema.EMA`)."""

    def __init__(self, net: nn.Module, decay: float):
        from ..nn.ema import EMA

        self.net, self.decay, self.ema = net, float(decay), EMA(net)

    def on_step_end(self) -> None:
        self.ema.update(self.net, self.decay)

    def copy_to(self, net: nn.Module) -> None:
        net.load_state_dict(self.ema.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.ema.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state["module"])


def selflabel_end_to_end(
    dataset: Dataset,
    model: EndToEndModel | str | Path,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    threshold: float = 0.99,
    class_balance: bool = True,
    ema: Optional[float] = None,
    weak: str = "weak",
    strong: str = "auto",
    optimizer: str = "adam",
    device: Optional[str] = None,
    seed: int = 0,
    out_dir: Optional[str | Path] = None,
    resume: bool = True,
    amp: Optional[bool] = None,
    progress: bool = False,
    tensorboard: bool = False,
) -> EndToEndModel:
    """SCAN self-labelling (module doc) from a fitted clustering model (its chosen head).

    Confidence on the ``weak`` view (network in training mode, no gradient, as SCAN's
    code), cross-entropy on the ``strong`` view. ``ema`` (e.g. 0.999): keep an
    exponential moving average of the weights and return it. Batches without any
    sample above ``threshold`` are skipped (no update). The per-cluster counts above
    ``threshold`` before training are kept in ``config["confident_at_start"]``
    (:func:`confident_counts` warns when a cluster has none).
    """
    from ..nn import losses as L

    if not 0.0 < threshold <= 1.0:
        raise NolabelError(f"threshold must lie in (0, 1], got {threshold}")
    net, config, images, device = _from_model(dataset, model, seed, device)
    k = net.heads.n_clusters
    weak_aug = make_augment(weak, images.size, images.in_chans, config["mean"], config["std"])
    strong_aug = make_augment(strong, images.size, images.in_chans, config["mean"], config["std"])
    wrapped = D.wrap_ddp(net, device)
    opt = make_optimizer(optimizer, wrapped.parameters(), lr, weight_decay, nesterov=True)
    sampler = ShardedBatchesFor(len(images), batch_size, seed)
    hooks: dict[str, Any] = {}
    if ema is not None:
        if not 0.0 < ema < 1.0:
            raise NolabelError(f"ema decay must lie in (0, 1), got {ema}")
        hooks["ema"] = EmaHook(net, ema)
    config.update(method="selflabel", n_clusters=k, n_heads=1, batch_size=sampler.batch_size, lr=lr,
                  weight_decay=weight_decay, threshold=threshold, class_balance=class_balance, ema=ema,
                  weak=weak, strong=strong, optimizer=optimizer, seed=seed, world_size=D.world_size())

    def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
        x = images.batch(idx)
        with torch.no_grad():
            p = torch.softmax(wrapped(weak_aug(x).to(device))[0].float(), dim=-1)
        conf, target = p.max(dim=-1)
        mask = conf > threshold
        n_conf = int(mask.sum())
        if n_conf == 0:
            return {"loss": None, "confident": 0.0, "n": len(idx)}
        logits = wrapped(strong_aug(x[mask.cpu()]).to(device))[0].float()
        weights = L.class_balance_weights(target[mask], k) if class_balance else None
        loss = L.balanced_cross_entropy(logits, target[mask], weights)
        return {"loss": loss, "confident": n_conf / len(idx), "n": len(idx) + n_conf}

    start_counts = confident_counts(net, images, Normalizer(config["mean"], config["std"]), device, threshold)
    history = fit(wrapped, step, sampler.batches, epochs, opt, None, out_dir, resume, device, amp, progress,
                  tensorboard=tensorboard, config=config, hooks=hooks, name="selflabel")
    config["confident_at_start"] = start_counts
    if ema is not None:
        hooks["ema"].copy_to(net)
    return _finish(net, config, 0, history, out_dir)


def relabel_epochs(epochs: int, n_relabel: int) -> list[int]:
    """Epochs at whose start SeLa re-solves the labels: ``floor(epochs * (m / M)^2)``, m = 0..M-1 (distinct)."""
    if n_relabel < 1:
        raise NolabelError(f"n_relabel must be at least 1, got {n_relabel}")
    return sorted({int(epochs * (m / n_relabel) ** 2) for m in range(n_relabel)})


@torch.no_grad()
def _log_probs(net: nn.Module, images, norm: Normalizer, device: torch.device, batch: int = 500) -> torch.Tensor:
    """(H, N, K) log-softmax of every head on the un-augmented images (network in eval mode)."""
    was = net.training
    net.eval()
    out = [torch.log_softmax(net(norm(images.batch(torch.arange(s, min(s + batch, len(images))))).to(device)).float(), -1).cpu()
           for s in range(0, len(images), batch)]
    net.train(was)
    return torch.cat(out, dim=1)


def confident_counts(net: nn.Module, images, norm: Normalizer, device: torch.device, threshold: float) -> list[int]:
    """Per cluster, how many un-augmented images the network gives ``max p > threshold``.

    Self-labelling only trains on those, so a cluster with none gets no target and is
    usually emptied by the others: warn then (the clustering step stopped too early,
    or the threshold is too high for it).
    """
    log_p = _log_probs(net, images, norm, device)[0]
    conf, cluster = log_p.exp().max(-1)
    counts = torch.bincount(cluster[conf > threshold], minlength=log_p.shape[-1]).tolist()
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty and D.is_main():
        warnings.warn(f"self-labelling: {len(empty)} of {len(counts)} clusters have no image above confidence "
                      f"{threshold} (clusters {', '.join(map(str, empty[:10]))}{', ...' if len(empty) > 10 else ''}); "
                      "they get no pseudo-label and will likely be emptied: train the clustering step longer "
                      "(SCAN's default is 50 epochs) or lower the threshold", stacklevel=3)
    return counts


class SinkhornLabels:
    """SeLa's pseudo-labels (H, N), re-solved by Sinkhorn-Knopp at the start of the scheduled epochs."""

    def __init__(self, net: nn.Module, images, norm: Normalizer, device: torch.device, schedule: list[int],
                 lam: float, tol: float):
        self.net, self.images, self.norm, self.device = net, images, norm, device
        self.schedule, self.lam, self.tol = set(schedule), lam, tol
        self.labels = torch.zeros((net.heads.n_heads, len(images)), dtype=torch.long)

    def relabel(self) -> None:
        from ..nn.sinkhorn import sinkhorn_knopp

        log_p = _log_probs(self.net, self.images, self.norm, self.device)
        self.labels = sinkhorn_knopp(log_p.double(), lam=self.lam, tol=self.tol)[1].to(torch.long).cpu()
        if D.is_distributed():
            torch.distributed.broadcast(self.labels, src=0)

    def on_epoch_start(self, epoch: int) -> None:
        if epoch in self.schedule:
            self.relabel()

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = state["labels"].clone()


def sela_end_to_end(
    dataset: Dataset,
    backbone_checkpoint: str | Path,
    n_clusters: int,
    epochs: int = 50,
    n_relabel: int = 20,
    batch_size: int = 256,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    lam: float = 10.0,
    tol: float = 0.01,
    n_heads: int = 1,
    augment: str = "weak",
    optimizer: str = "adam",
    schedule: str = "constant",
    device: Optional[str] = None,
    seed: int = 0,
    out_dir: Optional[str | Path] = None,
    resume: bool = True,
    amp: Optional[bool] = None,
    progress: bool = False,
    tensorboard: bool = False,
) -> EndToEndModel:
    """SeLa end to end (module doc): CE on Sinkhorn labels re-solved at :func:`relabel_epochs`.

    Every head gets its own labels (all heads re-solved at each scheduled epoch, from
    predictions on the un-augmented images); the head with the lowest last-epoch loss
    is kept.
    """
    net, config, images, device = _start(dataset, backbone_checkpoint, n_clusters, n_heads, None, 1, seed, device)
    aug = make_augment(augment, images.size, images.in_chans, config["mean"], config["std"])
    times = relabel_epochs(epochs, n_relabel)
    labels = SinkhornLabels(net, images, Normalizer(config["mean"], config["std"]), device, times, lam, tol)
    model = D.wrap_ddp(net, device)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay, nesterov=True)
    sched = make_scheduler(schedule, opt, epochs)
    sampler = ShardedBatchesFor(len(images), batch_size, seed)
    heads = HeadLosses(n_heads)
    config.update(method="sela", n_clusters=n_clusters, n_heads=n_heads, batch_size=sampler.batch_size, lr=lr,
                  weight_decay=weight_decay, lam=lam, tol=tol, relabel_epochs=times, augment=augment,
                  optimizer=optimizer, schedule=schedule, seed=seed, world_size=D.world_size(),
                  **({"epochs": epochs} if schedule == "cosine" else {}))

    def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
        logits = model(aug(images.batch(idx)).to(device)).float()
        target = labels.labels[:, idx].to(device)
        per_head = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape).mean(1)
        heads.add(per_head)
        return {"loss": per_head.sum(), "n": len(idx)}

    history = fit(model, step, sampler.batches, epochs, opt, sched, out_dir, resume, device, amp, progress,
                  tensorboard=tensorboard, config=config, hooks={"labels": labels, "heads": heads}, name="sela")
    return _finish(net, config, heads.best(), history, out_dir)


def adjacency(features: torch.Tensor, kind: str, threshold: Optional[float], k: int, temperature: float) -> torch.Tensor:
    """LSD-C in-batch pairwise targets (B, B) in {0, 1} from features (B, d) (see nolabel.nn.losses)."""
    from ..nn import losses as L

    if kind == "cosine":
        return L.adjacency_cosine(features, tau=0.9 if threshold is None else threshold)
    if kind == "l2":
        if threshold is None:
            raise NolabelError("the l2 adjacency needs a threshold on squared distances")
        return L.adjacency_l2(features, tau=threshold)
    if kind == "sne":
        return L.adjacency_sne(features, tau=0.01 if threshold is None else threshold, temperature=temperature)
    if kind == "knn":
        return L.adjacency_knn(features, k=k)
    raise NolabelError(f"unknown adjacency {kind!r}; use cosine, l2, sne or knn")


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in input order: ``layer1..layerN`` (ResNets), else one per conv of ``features``."""
    layers = [getattr(backbone, f"layer{i}") for i in range(1, 10) if hasattr(backbone, f"layer{i}")]
    if layers:
        return layers
    seq = getattr(backbone, "features", None)
    if isinstance(seq, nn.Sequential):
        blocks: list[list[nn.Module]] = []
        for m in seq:
            if isinstance(m, nn.Conv2d) or not blocks:
                blocks.append([])
            blocks[-1].append(m)
        return [nn.Sequential(*b) for b in blocks]
    raise NolabelError(f"cannot split {type(backbone).__name__} into blocks; leave train_blocks unset")


class FrozenBlocks:
    """Freeze every backbone parameter outside the last ``n`` blocks; frozen BatchNorm layers stay in eval mode."""

    def __init__(self, backbone: nn.Module, n: int):
        blocks = backbone_blocks(backbone)
        if not 1 <= n <= len(blocks):
            raise NolabelError(f"train_blocks must lie in [1, {len(blocks)}] for this backbone, got {n}")
        trainable = {id(p) for b in blocks[len(blocks) - n:] for p in b.parameters()}
        self.frozen = [m for m in backbone.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m.weight) not in trainable]
        for p in backbone.parameters():
            if id(p) not in trainable:
                p.requires_grad_(False)

    def apply(self) -> None:
        for m in self.frozen:
            m.eval()


def lsdc_end_to_end(
    dataset: Dataset,
    backbone_checkpoint: str | Path,
    n_clusters: int,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    adjacency_kind: str = "knn",
    threshold: Optional[float] = None,
    knn_k: int = 20,
    temperature: float = 1.0,
    composition: str = "ricap",
    ricap_beta: float = 0.3,
    mixup_alpha: float = 1.0,
    consistency_weight: float = 5.0,
    rampup_epochs: int = 50,
    train_blocks: Optional[int] = None,
    augment: str = "auto",
    optimizer: str = "adam",
    schedule: str = "constant",
    device: Optional[str] = None,
    seed: int = 0,
    out_dir: Optional[str | Path] = None,
    resume: bool = True,
    amp: Optional[bool] = None,
    progress: bool = False,
    tensorboard: bool = False,
) -> EndToEndModel:
    """LSD-C end to end (module doc), one head.

    Per batch: clean images -> ``p``, features ``f`` (adjacency ``A`` from ``f.detach()``);
    an augmented view -> ``p_aug``; with ``composition`` ``"ricap"`` / ``"mixup"`` the
    augmented view is composed and ``p_mix`` predicted on the composites, targets
    ``mix_targets(A, ...)``; ``"none"`` uses ``p_aug`` and ``A``. Loss
    ``BCE(p, p_mix, targets) + rampup(epoch, rampup_epochs, consistency_weight) * MSE(p, p_aug)``.
    ``train_blocks``: train only the last that many backbone blocks (and the head); the
    authors' code trains only the last macro-block (``train_blocks=1``).
    Default adjacency: in-batch kNN (k 20, the paper's CIFAR-10 value; it finds kNN and
    SNE the best labelings). Every row keeps about k positives, whereas a cosine
    threshold on features that are themselves being trained can drift towards
    all-positive: on MNIST with the whole network trained, cosine > 0.9 went from 14 %
    to 20 % positives in 8 epochs and ended in a few clusters.
    Under torchrun the adjacency is computed within each rank's own batch.
    """
    from ..nn import augment as A
    from ..nn import losses as L

    if composition not in ("ricap", "mixup", "none"):
        raise NolabelError(f"unknown composition {composition!r}; use ricap, mixup or none")
    net, config, images, device = _start(dataset, backbone_checkpoint, n_clusters, 1, None, 1, seed, device)
    frozen = FrozenBlocks(net.backbone, train_blocks) if train_blocks is not None else None
    aug = make_augment(augment, images.size, images.in_chans, config["mean"], config["std"])
    norm = Normalizer(config["mean"], config["std"])
    model = D.wrap_ddp(net, device, find_unused_parameters=False)
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay, nesterov=True)
    sched = make_scheduler(schedule, opt, epochs)
    sampler = ShardedBatchesFor(len(images), batch_size, seed)
    config.update(method="lsdc", n_clusters=n_clusters, n_heads=1, batch_size=sampler.batch_size, lr=lr,
                  weight_decay=weight_decay, adjacency=adjacency_kind, threshold=threshold, knn_k=knn_k,
                  temperature=temperature, composition=composition, ricap_beta=ricap_beta, mixup_alpha=mixup_alpha,
                  consistency_weight=consistency_weight, rampup_epochs=rampup_epochs, train_blocks=train_blocks,
                  augment=augment, optimizer=optimizer, schedule=schedule, seed=seed, world_size=D.world_size(),
                  **({"epochs": epochs} if schedule == "cosine" else {}))

    def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
        if frozen is not None:
            frozen.apply()
        x = images.batch(idx)
        b = len(idx)
        clean, view = norm(x).to(device), aug(x).to(device)
        if composition == "ricap":
            mixed, parts, weights = A.ricap(view, beta=ricap_beta)
        elif composition == "mixup":
            mixed, parts, weights = A.mixup(view, alpha=mixup_alpha)
        batch = torch.cat([clean, view] + ([mixed] if composition != "none" else []))
        logits, feats = model(batch, features=True)
        p_all = torch.softmax(logits[0].float(), dim=-1)
        p, p_aug = p_all[:b], p_all[b:2 * b]
        adj = adjacency(feats[:b].detach().float(), adjacency_kind, threshold, min(knn_k, b - 1), temperature)
        if composition == "none":
            p_pair, targets = p_aug, adj
        else:
            p_pair, targets = p_all[2 * b:], A.mix_targets(adj.float(), parts, weights)
        bce = L.lsdc_pairwise_bce(p, p_pair, targets)
        w = L.rampup(epoch, rampup_epochs, consistency_weight)
        mse = L.consistency_mse(p, p_aug)
        return {"loss": bce + w * mse, "bce": bce, "consistency": mse, "positives": adj.float().mean(),
                "n": len(batch)}

    history = fit(model, step, sampler.batches, epochs, opt, sched, out_dir, resume, device, amp, progress,
                  tensorboard=tensorboard, config=config, name="lsdc")
    return _finish(net, config, 0, history, out_dir)
