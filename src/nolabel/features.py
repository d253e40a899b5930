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

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import features_sharded
from .backbones.base import Backbone
from .data.base import Dataset
from .errors import NolabelError
from .feature_batches import auto_workers, available_cpus, feature_batches
from .feature_store import (DTYPES, Embeddings, finish_rows, jsonable, load_features, open_partial, partial_paths,
                            publish, sidecar_path)
from .io import write_json
from .memory import row_buffer

__all__ = ["DTYPES", "Embeddings", "auto_workers", "available_cpus", "embed_dataset", "extract_features",
           "load_features", "sidecar_path"]


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
    settings = jsonable({
        "backbone": backbone.describe(),
        "dataset": dataset.describe(),
        "count": n,
        "dim": dim,
        "dtype": dtype,
        "normalized": bool(normalize),
    })

    if features_sharded.active():  # under torchrun: each process computes its shards
        return features_sharded.extract_sharded(dataset, backbone, out_path, settings, batch_size, normalize,
                                                dtype, num_workers, progress)
    partial, state_path = partial_paths(out_path)
    array, start = open_partial(partial, state_path, settings, (n, dim), dtype)
    bar = tqdm(total=n, initial=start, unit="item", desc=f"embed {dataset.name}", disable=not progress)
    try:
        for row, feats in feature_batches(dataset, backbone, start, batch_size, num_workers):
            block = finish_rows(feats, normalize, dtype, row, dim)
            array[row:row + len(block)] = block
            array.flush()
            write_json(state_path, {"settings": settings, "done": row + len(block)})
            bar.update(len(block))
    finally:
        bar.close()
    array.flush()
    del array
    publish(partial, out_path, settings)
    return load_features(out_path)


def embed_dataset(
    dataset: Dataset,
    backbone: Backbone,
    batch_size: int = 256,
    normalize: bool = False,
    num_workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed ``dataset`` without writing a features file: an (N, dim) float32 array, in memory or, above
    the in-memory budget, a memory map on a temporary file (:func:`nolabel.memory.row_buffer`)."""
    if len(dataset) == 0:
        raise NolabelError(f"dataset {dataset.name!r} is empty: nothing to embed")
    module = backbone.module()
    if module is not None:
        module.eval()
    out = None
    with tqdm(total=len(dataset), unit="item", disable=not progress) as bar:
        for row, feats in feature_batches(dataset, backbone, 0, batch_size, num_workers):
            block = finish_rows(feats, normalize, "float32", row, feats.shape[1] if out is None else out.shape[1])
            if out is None:
                out = row_buffer(len(dataset), block.shape[1])
            out[row : row + len(block)] = block
            bar.update(len(feats))
    return out
