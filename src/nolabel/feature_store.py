"""The on-disk embeddings: ``x.npy`` (an (N, dim) array) with its JSON sidecar ``x.json``,
and while they are being written ``x.partial.npy`` (a memory map) with ``x.partial.json``
(the settings that made the rows and how far they got).

Shared by :mod:`nolabel.features` (one process) and :mod:`nolabel.features_sharded`
(torchrun): open or resume a partial array (:func:`open_partial`), check and cast a
batch of rows (:func:`finish_rows`), rename the finished array into place with its
sidecar (:func:`publish`), and read it back (:func:`load_features`).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import NolabelError
from .io import read_json, write_json

DTYPES = ("float32", "float16")


@dataclass
class Embeddings:
    """An (N, dim) array (usually a read-only memory map), its sidecar and its path."""

    array: np.ndarray
    meta: dict[str, Any]
    path: Path

    def __len__(self) -> int:
        return len(self.array)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``x.npy`` -> ``x.json``."""
    path = Path(path)
    return path.with_name(_stem(path) + ".json")


def _stem(path: Path) -> str:
    return path.name.removesuffix(".npy")


def partial_paths(path: Path) -> tuple[Path, Path]:
    """``x.npy`` -> (``x.partial.npy``, ``x.partial.json``)."""
    return path.with_name(_stem(path) + ".partial.npy"), path.with_name(_stem(path) + ".partial.json")


def load_features(path: str | os.PathLike) -> Embeddings:
    """Open embeddings written by :func:`extract_features` (read-only memory map).

    A ``.npy`` without its sidecar (embeddings made elsewhere) is read as it is when it
    holds an (N, d) floating-point array, with a warning; anything else is an error."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        partial, _ = partial_paths(path)
        if partial.exists():
            raise NolabelError(f"{path} is unfinished (found {partial.name}); re-run `nolabel embed` to resume it")
        raise NolabelError(f"no embeddings at {path}; create them with `nolabel embed`")
    try:
        meta = read_json(side)
    except FileNotFoundError:
        meta = None
    except (OSError, ValueError):
        raise NolabelError(f"sidecar {side} is unreadable or corrupt; re-run `nolabel embed`") from None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        raise NolabelError(f"{path} is not a readable .npy file; re-run `nolabel embed`") from None
    if meta is None:
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise NolabelError(f"{path} has no sidecar {side.name} and holds a {array.shape} {array.dtype} array, "
                               "not (N, d) floating-point embeddings; make them with `nolabel embed`")
        warnings.warn(f"{path} has no sidecar {side.name}: read as plain ({array.shape[0]}, {array.shape[1]}) "
                      "embeddings made elsewhere", stacklevel=2)
        meta = {"count": int(array.shape[0]), "dim": int(array.shape[1]), "dtype": str(array.dtype), "sidecar": False}
    if not isinstance(meta, dict) or not {"count", "dim", "dtype"} <= meta.keys():
        raise NolabelError(f"sidecar {side} lacks count/dim/dtype; re-run `nolabel embed`")
    if array.shape != (meta["count"], meta["dim"]) or str(array.dtype) != meta["dtype"]:
        raise NolabelError(
            f"{path} holds {array.shape} {array.dtype} but its sidecar says "
            f"({meta['count']}, {meta['dim']}) {meta['dtype']}; re-run `nolabel embed`"
        )
    return Embeddings(array=array, meta=meta, path=path)


def open_partial(partial: Path, state_path: Path, settings: dict, shape: tuple[int, int], dtype: str):
    """The partial memory map and the first row still to compute (0 unless resumable)."""
    start = 0
    array = None
    if partial.exists() and state_path.exists():
        try:
            state = read_json(state_path)
            if state.get("settings") == settings and 0 <= int(state["done"]) <= shape[0]:
                candidate = np.lib.format.open_memmap(partial, mode="r+")
                if candidate.shape == shape and str(candidate.dtype) == dtype:
                    array, start = candidate, int(state["done"])
        except (OSError, ValueError, KeyError, TypeError):
            array = None
    if array is None:
        state_path.unlink(missing_ok=True)
        try:
            partial.parent.mkdir(parents=True, exist_ok=True)
            _check_space(partial.parent, shape[0] * shape[1] * np.dtype(dtype).itemsize)
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
            _allocate(partial)
        except OSError as exc:
            raise NolabelError(f"cannot write {partial}: {exc.strerror} (is the disk full?)") from None
    return array, start


def _check_space(folder: Path, need: int) -> None:
    """A one-line "disk full" error when ``folder``'s file system has less than ``need`` bytes free."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise NolabelError(f"disk full: need {need / 1e6:,.1f} MB at {folder}, only {free / 1e6:,.1f} MB free; "
                           "free some space or write elsewhere")


def _allocate(path: Path) -> None:
    """Give the (sparse) memory-mapped file real blocks, so a disk that fills up meanwhile
    is an error now instead of a SIGBUS when a row is written later."""
    if not hasattr(os, "posix_fallocate"):  # not on macOS: the free-space check above stands alone
        return
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            os.close(fd)
            fd = -1
            path.unlink(missing_ok=True)
            raise NolabelError(f"disk full: need {size / 1e6:,.1f} MB at {path.parent}; free some space or write elsewhere") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        if fd >= 0:
            os.close(fd)


def finish_rows(feats: torch.Tensor, normalize: bool, dtype: str, row: int, dim: int) -> np.ndarray:
    """Check, optionally L2-normalise (x / max(||x||, 1e-12)) and cast one batch."""
    x = feats.detach().to(torch.float32).cpu().numpy()
    if x.ndim != 2 or x.shape[1] != dim:
        raise RuntimeError(f"backbone returned shape {tuple(x.shape)} for rows from {row}, expected (B, {dim})")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise NolabelError(f"the features of item {row + int(np.flatnonzero(bad)[0])} are NaN or inf; check that item "
                           "(vectors given as data must be finite) and the model")
    if normalize:  # norms in float64: finite float32 values up to 3e38 must not overflow to inf (rows of zeros)
        x = (x / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), 1e-12)).astype(np.float32)
    out = x.astype(dtype)
    if not np.isfinite(out).all():
        raise NolabelError(f"features from item {row} overflow {dtype}; use float32 or --normalize")
    return out


def publish(partial: Path, out_path: Path, settings: dict) -> None:
    """Rename the finished ``partial`` onto ``out_path`` in one step, then write its sidecar
    (``settings`` plus the creation time) and drop the partial's state file."""
    meta = dict(settings, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    side = sidecar_path(out_path)
    try:
        side.unlink(missing_ok=True)
        os.replace(partial, out_path)
    except OSError as exc:
        raise NolabelError(f"cannot write {out_path}: {exc.strerror}") from None
    write_json(side, meta)
    partial_paths(out_path)[1].unlink(missing_ok=True)


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (so settings compare equal after a round trip)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))
