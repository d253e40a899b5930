"""What every pretext task shares: the task interface, the training run, checkpoints and resume.

Tasks register in :data:`pretext_tasks`; :func:`train_pretext` trains any of them. Images
come decoded from :func:`nolabel.data.images.image_source`.

Training runs through :func:`nolabel.train.loop.fit` (batches by index, no DataLoader):
after every ``checkpoint_every`` epochs (and the last) it writes ``<stem>.state.pt``
beside the output (model = ``{"backbone", "head"}``, optimiser, scheduler, epoch, RNG
states, settings as the config); a later call with ``resume=True`` and the same settings
goes on from there and gives the same weights as an uninterrupted run (same device). The end
result is ``<stem>.safetensors`` + ``<stem>.json`` (:func:`save_backbone_checkpoint`),
loadable as ``nolabel.backbones.get("local:<stem>.safetensors")``, and
``<stem>.train.json`` with the settings and per-epoch history.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..backbones.archs import archs
from ..backbones.local import save_backbone_checkpoint
from ..data.base import Dataset
from ..data.images import DEFAULT_MAX_CACHE_BYTES, image_source
from ..device import resolve_device
from ..errors import NolabelError
from ..registry import Registry
from ..train.loop import fit, make_optimizer, make_scheduler


class PretextTask(ABC):
    """A self-supervised objective: a head on the backbone features and a loss on a uint8 batch."""

    #: the paper's training defaults: epochs, images per step, SGD learning rate, weight decay
    epochs: int
    batch_size: int
    sgd_lr: float
    weight_decay: float

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able hyper-parameters (a resumed run must match them)."""

    @abstractmethod
    def build_head(self, feature_dim: int) -> nn.Module:
        """The task's head on top of the (B, feature_dim) backbone features."""

    @abstractmethod
    def loss(self, backbone: nn.Module, head: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Scalar loss of one batch of ``uint8`` (B, C, S, S) images (on the CPU)."""


def state_path(out_path: Path) -> Path:
    """``<stem>.state.pt``: the resumable training state beside the output."""
    return out_path.with_name(out_path.stem + ".state.pt")


def log_path(out_path: Path) -> Path:
    """``<stem>.train.json``: settings and per-epoch history."""
    return out_path.with_name(out_path.stem + ".train.json")


#: the pretext tasks by name; each class carries its paper's training defaults
pretext_tasks: Registry[type[PretextTask]] = Registry("pretext task")


def train_pretext(
    task: str,
    dataset: Dataset,
    out_path: str | Path,
    *,
    options: Optional[dict[str, Any]] = None,
    arch: str = "resnet18_cifar",
    arch_kwargs: Optional[dict[str, Any]] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    optimizer: str = "sgd",
    lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    momentum: float = 0.9,
    augment: Optional[dict[str, Any]] = None,
    image_size: Optional[int] = None,
    in_chans: Optional[int] = None,
    mean: Optional[list[float]] = None,
    std: Optional[list[float]] = None,
    device: Optional[str | torch.device] = None,
    seed: int = 0,
    checkpoint_every: int = 1,
    resume: bool = True,
    progress: bool = True,
    amp: Optional[bool] = None,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    on_epoch_end: Optional[Callable[[int, dict[str, Any]], None]] = None,
) -> Path:
    """Train ``archs[arch]`` on ``dataset`` with pretext ``task`` (``"simclr"``, ``"rotnet"``) and
    save it; returns ``out_path`` (a ``.safetensors`` file). No labels are read.

    ``options`` are the task's own (SimCLR: ``temperature``, ``proj_dim``); ``augment``
    the keyword arguments of its augmentation (e.g. ``{"hflip": False}`` for digits).
    ``epochs``, ``batch_size``, ``weight_decay`` and the SGD ``lr`` default to the task's
    paper (class attributes); Adam's ``lr`` to 1e-3. ``mean``/``std`` default to the
    data's per-channel pixel statistics. SGD (momentum, weight decay) or Adam; the
    learning rate follows a cosine from ``lr`` down to ``lr / 1000`` over ``epochs``,
    stepped per epoch (SCAN's schedule). Batches are random permutations of the data,
    the last partial batch dropped. ``amp`` (default: on for CUDA) runs the forward pass
    in bfloat16 autocast. ``on_epoch_end(epoch, stats)`` is called after each epoch's
    checkpoint (epochs count from 1); an exception there leaves a resumable state.
    """
    kind = pretext_tasks.get(task)
    source = image_source(dataset, image_size, in_chans, max_cache_bytes, progress)
    if mean is None or std is None:
        mean, std = source.stats()
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    try:
        job = kind(source.size, source.in_chans, mean, std, augment=augment, **(options or {}))
    except TypeError as exc:
        raise NolabelError(f"bad options for pretext task {task}: {exc}") from None
    epochs = kind.epochs if epochs is None else int(epochs)
    batch_size = kind.batch_size if batch_size is None else int(batch_size)
    weight_decay = kind.weight_decay if weight_decay is None else float(weight_decay)
    lr = (kind.sgd_lr if optimizer == "sgd" else 1e-3) if lr is None else float(lr)
    out_path = Path(out_path).expanduser()
    if out_path.suffix != ".safetensors":
        raise NolabelError(f"output must be a .safetensors file, got {out_path.name}")
    if arch not in archs:
        raise NolabelError(
            f"unknown architecture {arch!r}; pretext training builds one of {', '.join(archs.names())}"
        )
    if epochs < 1 or batch_size < 2 or checkpoint_every < 1:
        raise NolabelError(f"need epochs >= 1, batch_size >= 2, checkpoint_every >= 1 "
                           f"(got {epochs}, {batch_size}, {checkpoint_every})")
    if lr <= 0:
        raise NolabelError(f"learning rate must be > 0, got {lr}")
    device = resolve_device(device)
    use_amp = device.type == "cuda" if amp is None else bool(amp)
    kwargs = {**(arch_kwargs or {}), "in_chans": source.in_chans}
    batch = min(batch_size, len(source))
    steps = len(source) // batch
    settings = {
        "task": task, **job.settings(), "arch": arch, "arch_kwargs": kwargs, "epochs": epochs,
        "batch_size": batch, "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
        "momentum": momentum if optimizer == "sgd" else None, "seed": seed, "image_size": source.size,
        "in_chans": source.in_chans, "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "amp": use_amp, "data": source.dataset.describe(),
    }
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            backbone = archs.get(arch)(**kwargs)
        except (TypeError, ValueError) as exc:
            raise NolabelError(f"bad arch_kwargs for {arch}: {exc}") from None
        model = nn.ModuleDict({"backbone": backbone, "head": job.build_head(int(backbone.feature_dim))}).to(device)
        opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
        sched = make_scheduler("cosine", opt, epochs)

        def batches(epoch: int) -> list[torch.Tensor]:
            order = torch.randperm(len(source))
            return [order[i * batch:(i + 1) * batch] for i in range(steps)]

        def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
            return {"loss": job.loss(backbone, model["head"], source.batch(idx), device), "n": len(idx)}

        fit(model, step, batches, epochs, opt, sched, out_path.parent, resume, device, amp=use_amp, progress=progress,
            config=settings, name=task, checkpoint_every=checkpoint_every,
            checkpoint_name=state_path(out_path).name, history_name=log_path(out_path).name, on_epoch_end=on_epoch_end)
    backbone.eval()
    save_backbone_checkpoint(backbone, out_path, arch, kwargs, source.size, source.in_chans, mean, std)
    return out_path
