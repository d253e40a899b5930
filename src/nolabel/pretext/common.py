"""What every pretext task shares: the task interface, the training run, checkpoints and resume.

Images come decoded from :func:`nolabel.data.images.image_source`.

The loop feeds batches by index from that tensor (no DataLoader). After every
``checkpoint_every`` epochs (and the last) it writes ``<stem>.state.pt`` beside the
output: backbone, head, optimiser, scheduler, epoch, torch RNG states and the
settings, atomically; a later call with ``resume=True`` and the same settings goes on
from there and gives the same weights as an uninterrupted run (same device). The end
result is ``<stem>.safetensors`` + ``<stem>.json`` (:func:`save_backbone_checkpoint`),
loadable as ``nolabel.backbones.get("local:<stem>.safetensors")``, and
``<stem>.train.json`` with the settings and per-epoch history.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from ..backbones.archs import archs
from ..backbones.local import save_backbone_checkpoint
from ..data.images import ImageSource
from ..errors import NolabelError
from ..io import atomic_path, write_json

class PretextTask(ABC):
    """A self-supervised objective: a head on the backbone features and a loss on a uint8 batch."""

    name: str = ""

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


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _optimizer(name: str, params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise NolabelError(f"unknown optimizer {name!r}; use 'sgd' or 'adam'")


def _mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> Optional[str]:
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            return f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now"
    return None


def fit_pretext(
    task: PretextTask,
    source: ImageSource,
    out_path: str | Path,
    *,
    arch: str,
    arch_kwargs: Optional[dict[str, Any]],
    mean: list[float],
    std: list[float],
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    device: Optional[str | torch.device],
    seed: int,
    checkpoint_every: int,
    resume: bool,
    progress: bool,
    amp: Optional[bool],
    on_epoch_end: Optional[Callable[[int, dict[str, Any]], None]],
) -> Path:
    """Train ``archs[arch]`` with ``task`` on ``source`` and save it; returns the ``.safetensors`` path.

    SGD (momentum, weight decay) or Adam; the learning rate follows a cosine from ``lr``
    down to ``lr / 1000`` over ``epochs``, stepped per epoch (SCAN's schedule). Batches
    are random permutations of the data, the last partial batch dropped. ``amp`` (default:
    on for CUDA) runs the forward pass in bfloat16 autocast. ``on_epoch_end(epoch, stats)``
    is called after each epoch's checkpoint (epochs count from 1); an exception there
    leaves a resumable state.
    """
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
    device = torch.device(device or default_device())
    use_amp = device.type == "cuda" if amp is None else bool(amp)
    kwargs = {**(arch_kwargs or {}), "in_chans": source.in_chans}
    batch = min(batch_size, len(source))
    steps = len(source) // batch
    settings = {
        "task": task.name, **task.settings(), "arch": arch, "arch_kwargs": kwargs, "epochs": epochs,
        "batch_size": batch, "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
        "momentum": momentum if optimizer == "sgd" else None, "seed": seed, "image_size": source.size,
        "in_chans": source.in_chans, "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "amp": use_amp, "data": source.dataset.describe(),
    }
    spath, lpath = state_path(out_path), log_path(out_path)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            backbone = archs.get(arch)(**kwargs)
        except (TypeError, ValueError) as exc:
            raise NolabelError(f"bad arch_kwargs for {arch}: {exc}") from None
        head = task.build_head(int(backbone.feature_dim))
        backbone.to(device)
        head.to(device)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = _optimizer(optimizer, params, lr, weight_decay, momentum)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 1e-3)
        start, history = 0, []
        if resume and spath.is_file():
            state = torch.load(spath, map_location="cpu", weights_only=True)
            problem = _mismatch(state["settings"], settings)
            if problem is not None:
                raise NolabelError(
                    f"{spath} was made with other settings ({problem}); pass resume=False to start over "
                    "or choose another output path"
                )
            backbone.load_state_dict(state["backbone"])
            head.load_state_dict(state["head"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, history = int(state["epoch"]), list(state["history"])
            _set_rng_state(state["rng"], device)
        if start >= epochs and out_path.is_file():
            return out_path
        from tqdm.auto import tqdm

        for epoch in range(start, epochs):
            backbone.train()
            head.train()
            order = torch.randperm(len(source))
            t0, total, seen = time.perf_counter(), 0.0, 0
            bar = tqdm(range(steps), desc=f"{task.name} {epoch + 1}/{epochs}", disable=not progress, leave=False)
            for step in bar:
                images = source.batch(order[step * batch:(step + 1) * batch])
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = task.loss(backbone, head, images, device)
                if not torch.isfinite(loss):
                    raise NolabelError(f"{task.name} loss is {loss.item()} at epoch {epoch + 1}; lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().item()
                seen += images.shape[0]
                bar.set_postfix(loss=f"{total / (step + 1):.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            seconds = time.perf_counter() - t0
            stats = {"epoch": epoch + 1, "loss": total / steps, "lr": opt.param_groups[0]["lr"],
                     "seconds": seconds, "images_per_s": seen / seconds}
            sched.step()
            history.append(stats)
            if progress:
                tqdm.write(f"{task.name} epoch {epoch + 1}/{epochs}: loss {stats['loss']:.4f}, "
                           f"{stats['images_per_s']:.0f} img/s, {seconds:.1f} s")
            if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
                state = {"backbone": backbone.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history,
                         "rng": _rng_state(device), "settings": settings}
                with atomic_path(spath, suffix=".pt") as tmp:
                    torch.save(state, tmp)
                write_json(lpath, {"settings": settings, "history": history, "state": spath.name})
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, stats)
    backbone.eval()
    save_backbone_checkpoint(backbone, out_path, arch, kwargs, source.size, source.in_chans, mean, std)
    return out_path


def resolve_lr(lr: Optional[float], optimizer: str, sgd_default: float) -> float:
    """``lr`` or the default of the optimiser (``sgd_default`` for SGD, 1e-3 for Adam)."""
    if lr is not None:
        return float(lr)
    return sgd_default if optimizer == "sgd" else 1e-3
