"""THE training loop (torchvision reference style): :func:`train_one_epoch` and :func:`fit`.

Head training on frozen embeddings (:mod:`nolabel.methods.heads_base`), pretext
training (:mod:`nolabel.pretext.common`) and whole-network clustering
(:mod:`nolabel.methods.network`) all run their epochs through :func:`train_one_epoch`;
the last two through :func:`fit`, which adds checkpoints and resume.

``fit`` runs ``epochs`` epochs of ``for batch in batches_fn(epoch): step_fn(batch, epoch)``,
back-propagates the returned loss and steps the optimiser; after each epoch it steps
the scheduler and (on the main rank, every ``checkpoint_every`` epochs and after the
last) writes ``out_dir/<checkpoint_name>`` atomically (:mod:`.checkpoint`: model,
optimiser, scheduler, epoch, RNG states, config, history, hook states) plus
``out_dir/<history_name>``. With ``resume=True`` a later call with the same ``config``
continues after the last saved epoch and, on one process and device, ends with the
same weights as an uninterrupted run (the RNG states are restored, so the same batches
and augmentations are drawn); another ``config`` is refused with the first differing key.

``step_fn(batch, epoch) -> dict``: ``"loss"`` (a scalar tensor to minimise, or
``None`` to skip the update for that batch), optionally ``"n"`` (images in the batch,
for the throughput; default: the first dimension of the batch or of its first tensor)
and any other scalars, each averaged per epoch over the batches that gave it.
With ``optimizer=None`` the step updates the model itself and ``"loss"`` is only recorded.

``hooks`` are objects (EMA, pseudo-label stores, ...) with ``state_dict`` /
``load_state_dict`` saved in the checkpoint; any of them may also define
``on_epoch_start(epoch)``, ``on_step_end()`` and ``on_epoch_end(epoch, stats)``,
called by the loop in that order. ``on_epoch_end(epoch_number, stats)`` (epochs count
from 1) is called after the epoch's checkpoint, so an exception there leaves a
resumable state.

:func:`make_optimizer` and :func:`make_scheduler` are the one optimiser factory and the
one schedule factory of the package.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..device import resolve_device
from ..errors import NolabelError
from ..io import write_json
from . import distributed as D
from .checkpoint import config_mismatch, load_checkpoint, save_checkpoint, set_rng_state, unwrap

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "multistep")


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """``"adam"`` (Adam), ``"adamw"`` (AdamW) or ``"sgd"`` (``momentum``, optionally Nesterov)."""
    if lr <= 0:
        raise NolabelError(f"learning rate must be > 0, got {lr}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    raise NolabelError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int,
                   milestones: Optional[Iterable[int]] = None, gamma: float = 0.1):
    """``"constant"`` (None), ``"cosine"`` (from the learning rate to a thousandth of it over ``epochs``)
    or ``"multistep"`` (the learning rate times ``gamma`` at each epoch of ``milestones``; default
    ``round(epochs * 140 / 220)`` and ``round(epochs * 180 / 220)``, LSD-C's CIFAR-10 steps 140 and 180 of
    220 epochs), each stepped per epoch (torch's ``CosineAnnealingLR`` / ``MultiStepLR``)."""
    if name == "constant":
        return None
    if name == "cosine":
        lr = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=lr * 1e-3)
    if name == "multistep":
        if milestones is None:
            milestones = sorted({max(1, round(epochs * 140 / 220)), max(1, round(epochs * 180 / 220))})
        milestones = [int(m) for m in milestones]
        if any(m < 1 for m in milestones):
            raise NolabelError(f"milestones are epochs >= 1, got {milestones}")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    raise NolabelError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def _count(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _count(batch[0])
    if isinstance(batch, dict) and batch:
        return _count(next(iter(batch.values())))
    return 0


def _summary_writer(out_dir: Optional[Path], enabled: bool):
    """A TensorBoard SummaryWriter under ``out_dir/tb`` when asked for and importable, else None."""
    if not enabled or out_dir is None or not D.is_main():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        import warnings

        warnings.warn("tensorboard is not installed (`pip install tensorboard`); logging to history.json only")
        return None
    return SummaryWriter(str(out_dir / "tb"))


def train_one_epoch(
    step_fn: Callable[[Any, int], dict[str, Any]],
    batches: Iterable[Any],
    optimizer: Optional[torch.optim.Optimizer],
    epoch: int,
    device: torch.device,
    use_amp: bool = False,
    hooks: Optional[dict[str, Any]] = None,
    progress: bool = False,
    desc: str = "train",
    log_every: int = 20,
    writer: Any = None,
    global_step: int = 0,
) -> dict[str, Any]:
    """One pass over ``batches``: the epoch's stats (mean of each value ``step_fn`` gave,
    ``steps``, ``skipped_steps``, ``seconds``, ``images_per_s``)."""
    from tqdm.auto import tqdm

    hooks = hooks or {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    steps = seen = skipped = 0
    t0 = time.perf_counter()
    bar = tqdm(batches, desc=desc, disable=not (progress and D.is_main()), leave=False)
    for batch in bar:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            result = step_fn(batch, epoch)
        loss = result.get("loss")
        if loss is None:
            skipped += 1
        elif optimizer is not None:
            if not torch.isfinite(loss):
                raise NolabelError(f"{desc.split()[0]} loss is {loss.item()} at epoch {epoch + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for hook in hooks.values():
                if hasattr(hook, "on_step_end"):
                    hook.on_step_end()
        for key, value in result.items():
            if key == "n" or value is None:
                continue
            sums[key] = sums.get(key, 0.0) + float(value.detach() if isinstance(value, torch.Tensor) else value)
            counts[key] = counts.get(key, 0) + 1
        steps += 1
        seen += int(result.get("n", _count(batch)))
        if progress and (steps % max(1, log_every) == 0 or steps == 1):
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{sums.get('loss', 0.0) / max(counts.get('loss', 1), 1):.4f}", img_s=f"{rate:.0f}")
        if writer is not None and loss is not None and steps % max(1, log_every) == 0:
            writer.add_scalar(f"{desc.split()[0]}/loss", float(loss.detach()), global_step + steps)
    seconds = time.perf_counter() - t0
    means = {k: D.all_reduce_mean(v / counts[k]) for k, v in sorted(sums.items())}
    return {**means, "steps": steps, "skipped_steps": skipped, "seconds": seconds,
            "images_per_s": seen * D.world_size() / max(seconds, 1e-9)}


def fit(
    model: nn.Module,
    step_fn: Callable[[Any, int], dict[str, Any]],
    batches_fn: Callable[[int], Iterable[Any]],
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    out_dir: Optional[str | Path] = None,
    resume: bool = True,
    device: Optional[str | torch.device] = None,
    amp: Optional[bool] = None,
    progress: bool = False,
    log_every: int = 20,
    tensorboard: bool = False,
    config: Optional[dict[str, Any]] = None,
    hooks: Optional[dict[str, Any]] = None,
    name: str = "train",
    checkpoint_every: int = 1,
    checkpoint_name: str = CHECKPOINT,
    history_name: str = HISTORY,
    on_epoch_end: Optional[Callable[[int, dict[str, Any]], None]] = None,
) -> list[dict[str, Any]]:
    """Train and return the per-epoch history (``epoch``, mean ``loss`` and other stats, ``lr``, ``seconds``, ``images_per_s``).

    ``amp`` (default: on for CUDA) runs ``step_fn`` under bfloat16 autocast. ``model``
    may be DDP-wrapped (:func:`.distributed.wrap_ddp`); the checkpoint then holds the
    inner module. Without ``out_dir`` nothing is written.
    """
    if epochs < 0:
        raise NolabelError(f"epochs must be >= 0, got {epochs}")
    if checkpoint_every < 1:
        raise NolabelError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    device = resolve_device(device)
    use_amp = device.type == "cuda" if amp is None else bool(amp)
    hooks = dict(hooks or {})
    config = dict(config or {})
    out = Path(out_dir).expanduser() if out_dir is not None else None
    ckpt = out / checkpoint_name if out is not None else None
    start, history = 0, []
    if resume and ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt)
        problem = config_mismatch(state["config"], config)
        if problem is not None:
            raise NolabelError(f"{ckpt} was made with other settings ({problem}); pass resume=False "
                               "to start over or use another output folder")
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"]:
            scheduler.load_state_dict(state["scheduler"])
        for key, hook in hooks.items():
            if key in state["extra"]:
                hook.load_state_dict(state["extra"][key])
        start, history = int(state["epoch"]), list(state["history"])
        set_rng_state(state["rng"], device)
    writer = _summary_writer(out, tensorboard)
    global_step = sum(int(h.get("steps", 0)) for h in history)
    for epoch in range(start, epochs):
        model.train()
        for hook in hooks.values():
            if hasattr(hook, "on_epoch_start"):
                hook.on_epoch_start(epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(step_fn, batches_fn(epoch), optimizer, epoch, device, use_amp, hooks, progress,
                                f"{name} {epoch + 1}/{epochs}", log_every, writer, global_step)
        global_step += stats["steps"]
        stats = {"epoch": epoch + 1, **stats, "lr": lr}
        if scheduler is not None:
            scheduler.step()
        for hook in hooks.values():
            if hasattr(hook, "on_epoch_end"):
                hook.on_epoch_end(epoch, stats)
        history.append(stats)
        if writer is not None:
            for key, value in stats.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(f"{name}/epoch_{key}", value, epoch + 1)
        if progress and D.is_main():
            from tqdm.auto import tqdm

            tqdm.write(f"{name} epoch {epoch + 1}/{epochs}: loss {stats.get('loss', float('nan')):.4f}, "
                       f"{stats['images_per_s']:.0f} img/s, {stats['seconds']:.1f} s")
        if ckpt is not None and D.is_main() and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            extra = {key: hook.state_dict() for key, hook in hooks.items()}
            save_checkpoint(ckpt, model, optimizer, scheduler, epoch + 1, config, history, extra, device)
            write_json(out / history_name, {"config": config, "history": history, "checkpoint": checkpoint_name})
        D.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, stats)
    if writer is not None:
        writer.close()
    return history
