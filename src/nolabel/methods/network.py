"""The whole-network regime the learned methods share: backbone and heads trained together on images.

Every learned method has two regimes with one set of parameter names:
``est.fit(embeddings, neighbors)`` trains heads on frozen embeddings
(:mod:`.heads_base`), ``est.fit_dataset(dataset, backbone)`` trains the backbone of a
pretext checkpoint together with fresh heads (:class:`NetworkMethod`, this module). The
method's file holds both step functions; this module holds what they share:

- :class:`ClusterNet`: backbone features -> :class:`~nolabel.nn.heads.MultiHead` logits
  (H, B, K); :class:`Network` prepares it (images decoded once by
  :func:`~nolabel.data.images.image_source`, the backbone's input size, channels and
  normalisation; DDP under torchrun) and trains it with :func:`nolabel.train.loop.fit`
  (optimiser ``est.optimizer``, schedule ``est.schedule`` and ``est.milestones`` when the method has them,
  checkpoint + resume in ``out_dir``);
- :class:`HeadLosses` (per-head mean loss of the last epoch, which picks the head to
  keep: label-free), :class:`EmaHook`, :class:`FrozenBlocks` (train only the last
  backbone blocks) and :func:`mine_neighbors` (k-NN on the pretext features).

After ``fit_dataset`` the estimator is an ordinary fitted head whose inputs are the
trained backbone's raw features: ``head_`` is the kept head (not L2-normalised inputs)
and ``backbone_`` the trained backbone. ``save(path)`` stores both (and writes
``path/backbone.safetensors``, loadable as ``local:``), so ``predict_proba`` on that
backbone's embeddings is the network's prediction, and run folders, ``nolabel
report``, ``predict`` and ``export`` work on whole-network results unchanged.
Labels of the dataset are never read.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
from torch import nn

from ..data.base import Dataset
from ..data.images import ImageSource, image_source
from ..errors import NolabelError
from ..memory import row_buffer
from ..nn.augment import Normalizer, make_augment
from ..nn.heads import MultiHead
from ..train import distributed as D
from ..train.loop import fit, make_optimizer, make_scheduler

#: the file ``save`` writes beside the model: the trained backbone, loadable as ``local:``
BACKBONE_FILE = "backbone.safetensors"
#: the input settings a trained network keeps (from its pretext checkpoint)
INPUT_KEYS = ("arch", "arch_kwargs", "input_size", "in_chans", "mean", "std")


class ClusterNet(nn.Module):
    """``forward(x) -> logits (H, B, K)``; ``forward(x, features=True) -> (logits, features (B, d))``."""

    def __init__(self, backbone: nn.Module, heads: MultiHead):
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, x: torch.Tensor, features: bool = False):
        f = self.backbone(x)
        logits = self.heads(f)
        return (logits, f) if features else logits


class Network:
    """A :class:`ClusterNet` ready to train on a dataset's images (see the module doc)."""

    def __init__(self, net: ClusterNet, config: dict[str, Any], dataset: Dataset, seed: int,
                 device: Optional[str], find_unused_parameters: bool = True):
        if dataset.modality != "image":
            raise NolabelError(f"whole-network training needs images, {dataset.name} holds {dataset.modality} items")
        self.device = D.init_distributed(device)
        self.config = {k: config[k] for k in INPUT_KEYS}
        self.images: ImageSource = image_source(dataset, image_size=int(config["input_size"]),
                                                in_chans=int(config["in_chans"]))
        self.net = net.to(self.device)
        self.model = D.wrap_ddp(self.net, self.device, find_unused_parameters=find_unused_parameters)
        self.norm = Normalizer(self.config["mean"], self.config["std"])
        self.seed = int(seed)
        seed_all(self.seed + D.rank())

    @classmethod
    def from_checkpoint(cls, dataset: Dataset, checkpoint: str | Path, n_clusters: int, n_heads: int = 1,
                        hidden: Optional[int] = None, n_layers: int = 1, seed: int = 0,
                        device: Optional[str] = None, **kwargs: Any) -> "Network":
        """The backbone of a pretext checkpoint (``nolabel pretext``) with fresh heads."""
        from ..backbones.local import load_backbone_checkpoint

        if n_clusters < 2:
            raise NolabelError(f"n_clusters must be at least 2, got {n_clusters}")
        if n_heads < 1:
            raise NolabelError(f"n_heads must be at least 1, got {n_heads}")
        if len(dataset) < n_clusters:
            raise NolabelError(f"{len(dataset)} images cannot fill {n_clusters} clusters")
        backbone, config = load_backbone_checkpoint(checkpoint)
        seed_all(seed)
        heads = MultiHead(int(backbone.feature_dim), n_clusters, n_heads, hidden=hidden, n_layers=n_layers)
        return cls(ClusterNet(backbone, heads), config, dataset, seed, device, **kwargs)

    @classmethod
    def from_estimator(cls, dataset: Dataset, est: "NetworkMethod", seed: int = 0,
                       device: Optional[str] = None, **kwargs: Any) -> "Network":
        """A trainable copy of a network-fitted estimator's backbone and kept head."""
        import copy

        if getattr(est, "backbone_", None) is None:
            raise NolabelError(f"{est.name} was not trained end to end: fit it with fit_dataset first "
                               "(or give the folder of a `nolabel train` run)")
        net = ClusterNet(copy.deepcopy(est.backbone_), copy.deepcopy(est.head_))
        net.requires_grad_(True)
        return cls(net, est.backbone_config_, dataset, seed, device, **kwargs)

    def augment(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return make_augment(name, self.images.size, self.images.in_chans, self.config["mean"], self.config["std"])

    @torch.no_grad()
    def log_probs(self, batch: int = 500) -> torch.Tensor:
        """(H, N, K) log-softmax of every head on the un-augmented images (network in eval mode)."""
        was = self.net.training
        self.net.eval()
        out = [torch.log_softmax(self.net(self.norm(self.images.batch(torch.arange(s, min(s + batch, len(self.images)))))
                                          .to(self.device)).float(), -1).cpu()
               for s in range(0, len(self.images), batch)]
        self.net.train(was)
        return torch.cat(out, dim=1)

    def fit(self, est: "NetworkMethod", step: Callable[[torch.Tensor, int], dict[str, Any]],
            out_dir: Optional[str | Path], resume: bool, hooks: Optional[dict[str, Any]] = None,
            **config: Any) -> list[dict[str, Any]]:
        """Train with the estimator's optimiser settings; ``config`` adds to the resume check."""
        if est.batch_size < 2:
            raise NolabelError(f"batch_size must be at least 2, got {est.batch_size}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = make_optimizer(est.optimizer, params, est.lr, est.weight_decay, nesterov=getattr(est, "nesterov", True))
        sched = make_scheduler(getattr(est, "schedule", "constant"), opt, est.epochs, getattr(est, "milestones", None))
        sampler = D.ShardedBatches(len(self.images), est.batch_size, self.seed)
        settings = {k: v for k, v in est.get_params().items() if k not in ("device", "progress")}
        config = {**self.config, "method": est.name, **settings, **config, "world_size": D.world_size()}
        return fit(self.model, step, sampler.batches, est.epochs, opt, sched, out_dir, resume, self.device,
                   getattr(est, "amp", None), est.progress and D.is_main(), config=config, hooks=hooks, name=est.name)


class NetworkMethod:
    """Mixin of a :class:`~nolabel.methods.heads_base.HeadMethod` for the whole-network regime.

    Subclasses implement ``_fit_network(dataset, backbone, neighbors, out_dir, resume)
    -> (Network, kept head index, history)``. ``network_defaults`` are the parameter
    values of the method's whole-network setting (the paper's), used by :meth:`for_network`.
    """

    network_defaults: ClassVar[dict[str, Any]] = {}
    backbone_: Optional[nn.Module] = None
    backbone_config_: Optional[dict[str, Any]] = None

    @classmethod
    def for_network(cls, **params: Any):
        """The estimator with the whole-network defaults, overridden by ``params``."""
        return cls(**{**cls.network_defaults, **params})

    def fit(self, embeddings: np.ndarray, neighbors: np.ndarray | None = None):
        """The frozen regime (heads on ``embeddings``); forgets a backbone trained before."""
        self.backbone_, self.backbone_config_ = None, None
        return super().fit(embeddings, neighbors)

    def fit_dataset(self, dataset: Dataset, backbone: Optional[str | Path] = None, neighbors: Any = None,
                    out_dir: Optional[str | Path] = None, resume: bool = True):
        """Train the whole network on ``dataset`` from the pretext checkpoint ``backbone``;
        ``out_dir`` holds the resumable checkpoint and ``history.json``. Sets ``labels_``."""
        network, head, history = self._fit_network(dataset, backbone, neighbors, out_dir, resume)
        net = network.net
        net.eval()
        self.backbone_ = net.backbone.requires_grad_(False)
        self.backbone_config_ = dict(network.config)
        self.head_ = net.heads.select([int(head)]).requires_grad_(False)
        self._device = network.device
        self._normalize_inputs = False
        self.history_ = [float(h.get("loss", math.nan)) for h in history]
        self.head_losses_ = list(history[-1].get("head_losses", [])) if history else []
        self.labels_ = self.predict_dataset(dataset)
        return self

    @torch.no_grad()
    def embed_dataset(self, dataset: Dataset, batch_size: int = 500) -> np.ndarray:
        """(N, d) float32 features of the trained backbone on the un-augmented images (in memory, or
        a memory map above the in-memory budget: :func:`nolabel.memory.row_buffer`)."""
        self._check_fitted()
        if self.backbone_ is None:
            raise NolabelError(f"{self.name} was fitted on embeddings, not end to end: embed the data with its backbone")
        c = self.backbone_config_
        images = image_source(dataset, image_size=int(c["input_size"]), in_chans=int(c["in_chans"]))
        norm = Normalizer(c["mean"], c["std"])
        self.backbone_.to(self._device).eval()
        out = None
        for s in range(0, len(images), batch_size):
            batch = norm(images.batch(torch.arange(s, min(s + batch_size, len(images))))).to(self._device)
            feats = self.backbone_(batch).float().cpu().numpy()
            if out is None:
                out = row_buffer(len(images), feats.shape[1])
            out[s : s + len(feats)] = feats
        return out

    def predict_proba_dataset(self, dataset: Dataset) -> np.ndarray:
        """(N, K) probabilities of the trained network on the un-augmented images."""
        return self.predict_proba(self.embed_dataset(dataset))

    def predict_dataset(self, dataset: Dataset) -> np.ndarray:
        """The argmax of :meth:`predict_proba_dataset`, in row chunks (no (N, K) array)."""
        return self.predict(self.embed_dataset(dataset))

    # ---- persistence: the backbone joins the head ----------------------------------------
    def save(self, path: str | Path) -> Path:
        from ..backbones.local import save_backbone_checkpoint

        out = super().save(path)
        if self.backbone_ is not None:
            c = self.backbone_config_
            save_backbone_checkpoint(self.backbone_, Path(path) / BACKBONE_FILE, c["arch"], c["arch_kwargs"],
                                     c["input_size"], c["in_chans"], c["mean"], c["std"])
        return out

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = super()._state_tensors()
        if self.backbone_ is not None and tensors:
            tensors.update({f"backbone.{k}": v for k, v in self.backbone_.state_dict().items()})
        return tensors

    def _state_extra(self) -> dict[str, Any]:
        extra = super()._state_extra()
        if self.backbone_ is not None:
            extra["backbone"] = self.backbone_config_
        return extra

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        from ..backbones.archs import archs

        super()._load_state({k: v for k, v in tensors.items() if not k.startswith("backbone.")}, extra)
        self.backbone_, self.backbone_config_ = None, None
        if "backbone" in extra:
            c = extra["backbone"]
            backbone = archs.get(c["arch"])(**c["arch_kwargs"])
            backbone.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
            self.backbone_, self.backbone_config_ = backbone.eval().requires_grad_(False), dict(c)


def seed_all(seed: int) -> None:
    """Seed torch, numpy's global generator and Python's ``random``."""
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def mine_neighbors(dataset: Dataset, checkpoint: str | Path, k: int, device: Optional[str] = None) -> np.ndarray:
    """(N, k) cosine nearest neighbours (self excluded) on the L2-normalised features of a pretext checkpoint."""
    from .. import backbones
    from ..features import embed_dataset
    from ..neighbors import knn

    if not 1 <= k < len(dataset):
        raise NolabelError(f"n_neighbors must lie in [1, {len(dataset) - 1}] for {len(dataset)} images, got {k}")
    feats = embed_dataset(dataset, backbones.get(f"local:{checkpoint}", device=device), normalize=True)
    return knn(feats, k).indices


def as_neighbors(neighbors: Any, n: int) -> torch.Tensor:
    """An (N, k) index tensor from an array or a ``Neighbors``, checked against N."""
    idx = getattr(neighbors, "indices", neighbors)
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    if idx.ndim != 2 or idx.shape[0] != n or idx.shape[1] < 1:
        raise NolabelError(f"neighbours must be an (N={n}, k) index array, got shape {tuple(idx.shape)}")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise NolabelError("neighbour indices fall outside the dataset: were they mined on other data?")
    return idx


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


class EmaHook:
    """EMA of the network's weights, updated after every optimiser step (:class:`nolabel.nn.ema.EMA`)."""

    def __init__(self, net: nn.Module, decay: float):
        from ..nn.ema import EMA

        if not 0.0 < decay < 1.0:
            raise NolabelError(f"ema decay must lie in (0, 1), got {decay}")
        self.net, self.decay, self.ema = net, float(decay), EMA(net)

    def on_step_end(self) -> None:
        self.ema.update(self.net, self.decay)

    def copy_to(self, net: nn.Module) -> None:
        net.load_state_dict(self.ema.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.ema.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state["module"])


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
    """Freeze every backbone parameter outside the last ``n`` blocks; frozen BatchNorm layers stay in eval mode
    (with ``bn_eval=False`` they follow the network's mode: batch statistics and running averages, as
    LSD-C's authors leave them)."""

    def __init__(self, backbone: nn.Module, n: int, bn_eval: bool = True):
        blocks = backbone_blocks(backbone)
        if not 1 <= n <= len(blocks):
            raise NolabelError(f"train_blocks must lie in [1, {len(blocks)}] for this backbone, got {n}")
        trainable = {id(p) for b in blocks[len(blocks) - n:] for p in b.parameters()}
        self.frozen = [m for m in backbone.modules()
                       if bn_eval and isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m.weight) not in trainable]
        for p in backbone.parameters():
            if id(p) not in trainable:
                p.requires_grad_(False)

    def apply(self) -> None:
        for m in self.frozen:
            m.eval()
