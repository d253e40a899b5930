"""Feature extraction sharded over the processes of a ``torch.distributed`` group (torchrun).

The N rows are cut into shards of ``shard_rows`` rows (a fixed size, independent of the
number of processes, so a resume may use another world size); shard ``s`` covers rows
``[s R, min((s + 1) R, N))``. Rank ``r`` of ``W`` computes the missing shards ``s`` with
``s % W == r`` (one data loader over all of them) and writes their rows straight into
the shared memory-mapped ``x.partial.npy`` (each rank opens it ``r+``; ranks write
disjoint rows), then marks each shard done with an empty file ``x.partial.shards/<s>.done`` created after the rows are
flushed. A resume with the same settings (``x.partial.json``) computes only the shards
without a marker (rows a single-process run recorded as done count too). When every shard
is done, rank 0 renames the array onto ``x.npy`` and writes the sidecar; all ranks then
return the finished :class:`~nolabel.features.Embeddings`.

Needs a shared file system for ``out_path`` across nodes.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .errors import NolabelError
from .feature_batches import feature_batches
from .feature_store import finish_rows, load_features, open_partial, partial_paths, publish
from .io import read_json, write_json

SHARD_ROWS = 4096


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard_dir(partial: Path) -> Path:
    return partial.with_name(partial.name.removesuffix(".npy") + ".shards")


def extract_sharded(dataset, backbone, out_path: Path, settings: dict, batch_size: int,
                    normalize: bool, dtype: str, num_workers: int, progress: bool,
                    shard_rows: int | None = None):
    """The sharded body of :func:`nolabel.features.extract_features` (``shard_rows``
    defaults to ``SHARD_ROWS``)."""
    shard_rows = int(shard_rows or SHARD_ROWS)
    rank, world = dist.get_rank(), dist.get_world_size()
    n, dim = settings["count"], settings["dim"]
    partial, state_path = partial_paths(out_path)
    marks = shard_dir(partial)
    n_shards = -(-n // shard_rows)
    error = None
    if rank == 0:
        try:
            _prepare(partial, state_path, marks, settings, (n, dim), dtype, shard_rows)
        except NolabelError as exc:
            error = str(exc)
    error = _broadcast(error)
    if error:
        raise NolabelError(error)
    array = np.lib.format.open_memmap(partial, mode="r+")
    mine = [s for s in range(rank, n_shards, world) if not (marks / f"{s}.done").exists()]
    rows = np.concatenate([np.arange(s * shard_rows, min((s + 1) * shard_rows, n)) for s in mine] or [np.zeros(0, np.int64)])
    ends = np.cumsum([min(shard_rows, n - s * shard_rows) for s in mine])  # positions in ``rows`` where each shard ends
    bar = tqdm(total=len(rows), unit="item", desc=f"embed {dataset.name} [rank {rank}/{world}]", disable=not progress)
    done = 0
    try:
        if len(rows):  # one loader over all of this rank's missing rows
            for pos, feats in feature_batches(_Rows(dataset, rows), backbone, 0, batch_size, num_workers):
                block = finish_rows(feats, normalize, dtype, int(rows[pos]), dim)
                array[rows[pos:pos + len(block)]] = block
                bar.update(len(block))
                while done < len(mine) and ends[done] <= pos + len(block):
                    array.flush()
                    (marks / f"{mine[done]}.done").touch()
                    done += 1
    finally:
        bar.close()
    del array
    dist.barrier()
    missing = [s for s in range(n_shards) if not (marks / f"{s}.done").exists()]
    dist.barrier()  # every rank has read the markers before rank 0 removes them
    if rank == 0 and not missing:
        publish(partial, out_path, settings)
        shutil.rmtree(marks, ignore_errors=True)
    dist.barrier()
    if missing:
        raise NolabelError(f"{len(missing)} feature shards were not written (first: {missing[0]}); run again to finish them")
    return load_features(out_path)


def _prepare(partial: Path, state_path: Path, marks: Path, settings: dict, shape: tuple[int, int],
             dtype: str, shard_rows: int) -> None:
    """Keep a partial array and its shard markers made with the same settings and shard size;
    otherwise start afresh (a single-process partial's finished rows mark their shards done)."""
    state = None
    if partial.exists() and state_path.exists():
        try:
            state = read_json(state_path)
            candidate = np.load(partial, mmap_mode="r")
            if state.get("settings") != settings or candidate.shape != shape or str(candidate.dtype) != dtype:
                state = None
            del candidate
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            state = None
    if state is not None and "done" in state and "shard_rows" not in state:  # a single-process partial
        marks.mkdir(parents=True, exist_ok=True)
        for s in range(int(state["done"]) // shard_rows):
            (marks / f"{s}.done").touch()
        if int(state["done"]) >= shape[0]:
            for s in range(-(-shape[0] // shard_rows)):
                (marks / f"{s}.done").touch()
    elif state is None or state.get("shard_rows") != shard_rows:
        shutil.rmtree(marks, ignore_errors=True)
        state_path.unlink(missing_ok=True)
        open_partial(partial, state_path, settings, shape, dtype)  # creates and allocates the array
    marks.mkdir(parents=True, exist_ok=True)
    write_json(state_path, {"settings": settings, "shard_rows": shard_rows})


def _broadcast(value):
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Rows:
    """The given rows of a dataset, seen as a dataset of their own."""

    def __init__(self, dataset, rows: np.ndarray) -> None:
        self.dataset, self.rows = dataset, rows
        self.name = dataset.name

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int):
        return self.dataset.load(int(self.rows[i]))


def join_torchrun(device: str | None = None) -> None:
    """Join the torchrun process group (``env://``) when ``WORLD_SIZE`` > 1 and none is joined
    yet: NCCL when this rank uses CUDA, gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK") if v not in os.environ]
    if missing:
        raise NolabelError(f"WORLD_SIZE is set but {', '.join(missing)} are not: launch with torchrun")
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
