"""One training loop for every end-to-end method.

``fit`` runs ``epochs`` epochs of ``for batch in batches_fn(epoch): step_fn(batch, epoch)``,
back-propagates the returned loss and steps the optimiser; after each epoch it steps
the scheduler and (on the main rank) writes ``out_dir/checkpoint.pt`` atomically
(:mod:`.checkpoint`) plus ``out_dir/history.json``. With ``resume=True`` a later call
with the same ``config`` continues after the last completed epoch and, on one process
and device, ends with the same weights as an uninterrupted run (the RNG states are
restored, so the same batches and augmentations are drawn).

``step_fn(batch, epoch) -> dict``: ``"loss"`` (a scalar tensor to minimise, or
``None`` to skip the update for that batch), optionally ``"n"`` (images in the batch,
for the throughput; default: the first dimension of the batch or of its first tensor)
and any other scalars, averaged per epoch into the history.

``hooks`` are objects (EMA, pseudo-label stores, ...) with ``state_dict`` /
``load_state_dict`` saved in the checkpoint; any of them may also define
``on_epoch_start(epoch)``, ``on_step_end()`` and ``on_epoch_end(epoch, stats)``,
called by the loop in that order.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..errors import NolabelError
from ..io import write_json
from . import distributed as D
from .checkpoint import config_mismatch, load_checkpoint, save_checkpoint, set_rng_state, unwrap

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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
) -> list[dict[str, Any]]:
    """Train and return the per-epoch history (``epoch``, mean ``loss`` and other stats, ``lr``, ``seconds``, ``images_per_s``).

    ``amp`` (default on for CUDA, ignored elsewhere) runs ``step_fn`` under bfloat16
    autocast. ``model`` may be DDP-wrapped (:func:`.distributed.wrap_ddp`); the
    checkpoint then holds the inner module. Without ``out_dir`` nothing is written.
    """
    if epochs < 0:
        raise NolabelError(f"epochs must be >= 0, got {epochs}")
    device = torch.device(device or default_device())
    use_amp = device.type == "cuda" and (amp is None or bool(amp))
    hooks = dict(hooks or {})
    config = dict(config or {})
    out = Path(out_dir).expanduser() if out_dir is not None else None
    ckpt = out / CHECKPOINT if out is not None else None
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
    from tqdm.auto import tqdm

    global_step = sum(int(h.get("steps", 0)) for h in history)
    for epoch in range(start, epochs):
        model.train()
        for hook in hooks.values():
            if hasattr(hook, "on_epoch_start"):
                hook.on_epoch_start(epoch)
        sums: dict[str, float] = {}
        steps = seen = skipped = 0
        t0 = time.perf_counter()
        bar = tqdm(batches_fn(epoch), desc=f"{name} {epoch + 1}/{epochs}", disable=not (progress and D.is_main()),
                   leave=False)
        for batch in bar:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                result = step_fn(batch, epoch)
            loss = result.get("loss")
            if loss is None:
                skipped += 1
            else:
                if not torch.isfinite(loss):
                    raise NolabelError(f"{name} loss is {loss.item()} at epoch {epoch + 1}; lower the learning rate")
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
            steps += 1
            global_step += 1
            seen += int(result.get("n", _count(batch)))
            if steps % max(1, log_every) == 0 or steps == 1:
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{sums.get('loss', 0.0) / steps:.4f}", img_s=f"{rate:.0f}")
                if writer is not None and loss is not None:
                    writer.add_scalar(f"{name}/loss", float(loss.detach()), global_step)
        seconds = time.perf_counter() - t0
        stats: dict[str, Any] = {"epoch": epoch + 1, **{k: D.all_reduce_mean(v / max(steps, 1)) for k, v in sorted(sums.items())},
                                 "lr": optimizer.param_groups[0]["lr"], "steps": steps, "skipped_steps": skipped,
                                 "seconds": seconds, "images_per_s": seen * D.world_size() / max(seconds, 1e-9)}
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
            tqdm.write(f"{name} epoch {epoch + 1}/{epochs}: loss {stats.get('loss', float('nan')):.4f}, "
                       f"{stats['images_per_s']:.0f} img/s, {seconds:.1f} s")
        if ckpt is not None and D.is_main():
            extra = {key: hook.state_dict() for key, hook in hooks.items()}
            save_checkpoint(ckpt, model, optimizer, scheduler, epoch + 1, config, history, extra, device)
            write_json(out / HISTORY, {"config": config, "history": history})
        D.barrier()
    if writer is not None:
        writer.close()
    return history
