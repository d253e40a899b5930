"""Batched, resumable feature extraction to a memory-mapped ``.npy`` with a JSON sidecar.

``extract_features(dataset, backbone, "x.npy")`` writes

- ``x.npy``: the (N, dim) embeddings, row ``i`` for ``dataset.load(i)``;
- ``x.json``: ``{backbone, dataset, count, dim, dtype, normalized, created}``.

While it runs, rows go into ``x.partial.npy`` (a memory map) and, after every
flushed batch, ``x.partial.json`` records how many rows are on disk and the
settings that made them. A killed run restarted with the same backbone, data,
dtype and normalisation continues from that row; anything else starts afresh.
The finished array is renamed onto ``x.npy`` in one step.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones.base import Backbone
from .data.base import Dataset
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


def _partial_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(_stem(path) + ".partial.npy"), path.with_name(_stem(path) + ".partial.json")


def extract_features(
    dataset: Dataset,
    backbone: Backbone,
    out_path: str | os.PathLike,
    batch_size: int = 256,
    normalize: bool = False,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embed every item of ``dataset`` with ``backbone`` into ``out_path`` (resumable).

    ``normalize`` divides each row by its L2 norm (zero rows stay zero); ``dtype``
    ``"float16"`` halves the file. ``device`` moves the backbone first (``None``:
    leave it where it is). ``num_workers > 0`` loads and preprocesses items in a
    torch ``DataLoader`` with that many worker processes (``None``: :func:`auto_workers`).
    """
    out_path = Path(out_path)
    if dtype not in DTYPES:
        raise NolabelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise NolabelError(f"batch size must be a positive integer, got {batch_size!r}")
    if num_workers is not None and num_workers < 0:
        raise NolabelError(f"the number of workers must be >= 0, got {num_workers}")
    n = len(dataset)
    if n == 0:
        raise NolabelError(f"dataset {dataset.name!r} is empty: nothing to embed")
    if device is not None:
        backbone.to(device)
    module = backbone.module()
    if module is not None:
        module.eval()
    dim = backbone.dim if backbone.dim > 0 else int(backbone.embed([dataset.load(0)]).shape[1])
    settings = _jsonable({
        "backbone": backbone.describe(),
        "dataset": dataset.describe(),
        "count": n,
        "dim": dim,
        "dtype": dtype,
        "normalized": bool(normalize),
    })

    from . import features_sharded

    if features_sharded.active():  # under torchrun: each process computes its shards
        return features_sharded.extract_sharded(dataset, backbone, out_path, settings, batch_size, normalize,
                                                dtype, num_workers, progress)
    partial, state_path = _partial_paths(out_path)
    array, start = _open_partial(partial, state_path, settings, (n, dim), dtype)
    bar = tqdm(total=n, initial=start, unit="item", desc=f"embed {dataset.name}", disable=not progress)
    try:
        for row, feats in _batches(dataset, backbone, start, batch_size, num_workers):
            block = _finish_rows(feats, normalize, dtype, row, dim)
            array[row:row + len(block)] = block
            array.flush()
            write_json(state_path, {"settings": settings, "done": row + len(block)})
            bar.update(len(block))
    finally:
        bar.close()
    array.flush()
    del array

    meta = dict(settings, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    side = sidecar_path(out_path)
    try:
        side.unlink(missing_ok=True)
        os.replace(partial, out_path)
    except OSError as exc:
        raise NolabelError(f"cannot write {out_path}: {exc.strerror}") from None
    write_json(side, meta)
    state_path.unlink(missing_ok=True)
    return load_features(out_path)


def embed_dataset(
    dataset: Dataset,
    backbone: Backbone,
    batch_size: int = 256,
    normalize: bool = False,
    num_workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed ``dataset`` in memory (no files): an (N, dim) float32 array."""
    if len(dataset) == 0:
        raise NolabelError(f"dataset {dataset.name!r} is empty: nothing to embed")
    module = backbone.module()
    if module is not None:
        module.eval()
    blocks = []
    with tqdm(total=len(dataset), unit="item", disable=not progress) as bar:
        for row, feats in _batches(dataset, backbone, 0, batch_size, num_workers):
            blocks.append(_finish_rows(feats, normalize, "float32", row, feats.shape[1]))
            bar.update(len(feats))
    return np.concatenate(blocks)


def load_features(path: str | os.PathLike) -> Embeddings:
    """Open embeddings written by :func:`extract_features` (read-only memory map)."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        partial, _ = _partial_paths(path)
        if partial.exists():
            raise NolabelError(f"{path} is unfinished (found {partial.name}); re-run `nolabel embed` to resume it")
        raise NolabelError(f"no embeddings at {path}; create them with `nolabel embed`")
    try:
        meta = read_json(side)
    except FileNotFoundError:
        raise NolabelError(f"{path} has no sidecar {side.name}; re-run `nolabel embed`") from None
    except (OSError, ValueError):
        raise NolabelError(f"sidecar {side} is unreadable or corrupt; re-run `nolabel embed`") from None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        raise NolabelError(f"{path} is not a readable .npy file; re-run `nolabel embed`") from None
    if not isinstance(meta, dict) or not {"count", "dim", "dtype"} <= meta.keys():
        raise NolabelError(f"sidecar {side} lacks count/dim/dtype; re-run `nolabel embed`")
    if array.shape != (meta["count"], meta["dim"]) or str(array.dtype) != meta["dtype"]:
        raise NolabelError(
            f"{path} holds {array.shape} {array.dtype} but its sidecar says "
            f"({meta['count']}, {meta['dim']}) {meta['dtype']}; re-run `nolabel embed`"
        )
    return Embeddings(array=array, meta=meta, path=path)


def _open_partial(partial: Path, state_path: Path, settings: dict, shape: tuple[int, int], dtype: str):
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


def _finish_rows(feats: torch.Tensor, normalize: bool, dtype: str, row: int, dim: int) -> np.ndarray:
    """Check, optionally L2-normalise (x / max(||x||, 1e-12)) and cast one batch."""
    x = feats.detach().to(torch.float32).cpu().numpy()
    if x.ndim != 2 or x.shape[1] != dim:
        raise RuntimeError(f"backbone returned shape {tuple(x.shape)} for rows from {row}, expected (B, {dim})")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise NolabelError(f"the backbone produced NaN or inf for item {row + int(np.flatnonzero(bad)[0])}; check that item and the model")
    if normalize:  # norms in float64: finite float32 values up to 3e38 must not overflow to inf (rows of zeros)
        x = (x / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), 1e-12)).astype(np.float32)
    out = x.astype(dtype)
    if not np.isfinite(out).all():
        raise NolabelError(f"features from item {row} overflow {dtype}; use float32 or --normalize")
    return out


class _Preprocessed(torch.utils.data.Dataset):
    """``backbone.preprocess(dataset.load(i))`` for rows ``start..N-1`` (for DataLoader workers)."""

    def __init__(self, dataset: Dataset, backbone: Backbone, start: int) -> None:
        self.dataset, self.backbone, self.start = dataset, backbone, start

    def __len__(self) -> int:
        return len(self.dataset) - self.start

    def __getitem__(self, i: int) -> Any:
        return self.backbone.preprocess(self.dataset.load(self.start + i))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(n: int, batch_size: int, backbone: Backbone) -> int:
    """DataLoader workers for decoding and resizing: ``min(cpus - 1, 8)`` for image models on
    more than one batch, else 0 (raw pixels and texts cost less to prepare than to fork for)."""
    if backbone.module() is None or backbone.modality != "image" or n <= batch_size:
        return 0
    return max(0, min(available_cpus() - 1, 8))


def _channels_last(backbone: Backbone) -> bool:
    """Convolutional image models run channels-last (NHWC): EfficientNet-Lite0 at 224 px, batch 64,
    ran 3.8-5.5 images/s against 2.3-2.8 in NCHW on 2 busy CPU cores (interleaved runs); text models never."""
    module = backbone.module()
    if module is None or backbone.modality != "image":
        return False
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def _batches(dataset: Dataset, backbone: Backbone, start: int, batch_size: int,
             num_workers: int | None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first row, (B, dim) float32 CPU features)`` for rows ``start..N-1`` in order.

    Items are loaded and preprocessed in DataLoader workers (``num_workers``; ``None``:
    :func:`auto_workers`), the forward pass runs batched under ``torch.inference_mode``,
    channels-last for convolutional image models.
    """
    n = len(dataset)
    if num_workers is None:
        num_workers = auto_workers(n - start, batch_size, backbone)
    module = backbone.module()
    fast = _channels_last(backbone)
    if fast:
        module.to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        _Preprocessed(dataset, backbone, start), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=backbone.collate, persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    row = start
    try:
        for batch in loader:
            if isinstance(batch, torch.Tensor):
                batch = batch.to(backbone.device, non_blocking=True)
                if fast and batch.ndim == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():  # not around the yield: the caller's code runs outside it
                feats = backbone.forward_batch(batch).float().cpu()
            yield row, feats
            row += len(feats)
    finally:
        if fast:
            module.to(memory_format=torch.contiguous_format)


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (so settings compare equal after a round trip)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))
