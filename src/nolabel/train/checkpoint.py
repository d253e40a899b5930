"""Training checkpoints: model, optimiser, scheduler, epoch, RNG states, config, extras.

One file, written atomically with ``torch.save`` (temporary name, then rename), read
back with ``weights_only=True``: every value is a tensor, a number, a string, or a
list / dict of those. RNG states cover torch (CPU and, when used, the current CUDA
device), numpy's global generator and Python's ``random``, so a resumed run draws the
same augmentations and batches as an uninterrupted one.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import NolabelError
from ..io import atomic_path

#: keys every checkpoint written by :func:`save_checkpoint` holds
KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config", "history", "extra")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def rng_state(device: Optional[torch.device] = None) -> dict[str, Any]:
    """RNG states of torch (CPU, plus CUDA for a CUDA ``device``), numpy and Python ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
    }
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict[str, Any], device: Optional[torch.device] = None) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if device is not None and torch.device(device).type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int, config: dict[str, Any], history: list[dict[str, Any]],
                    extra: Optional[dict[str, Any]] = None, device: Optional[torch.device] = None) -> Path:
    """Write the training state after ``epoch`` completed epochs to ``path`` atomically."""
    path = Path(path)
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "epoch": int(epoch),
        "rng": rng_state(device),
        "config": config,
        "history": history,
        "extra": extra or {},
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict :func:`save_checkpoint` wrote (tensors on the CPU)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError on a damaged file
        raise NolabelError(f"cannot read checkpoint {path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                           "delete it to start over") from None
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise NolabelError(f"{path} is not a training checkpoint (lacks {', '.join(missing)}); delete it to start over")
    return state


def config_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> Optional[str]:
    """The first key whose value differs between two configs, as ``'key: a there, b now'``, else None."""
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            return f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now"
    return None
