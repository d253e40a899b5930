"""Sharded feature extraction: 2 CPU processes (gloo) write the same array as 1 process,
and a resume computes only the shards without a done marker."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nolabel import features_sharded
from nolabel.data.base import Dataset
from nolabel.feature_store import jsonable, partial_paths
from nolabel.features import extract_features, load_features
from toy_backbone import D_IN, DIM, LinearBackbone

N, SHARD = 37, 4  # 10 shards, the last one short


def RecordingBackbone(log=None):
    """tanh(x @ W) that logs the first value of every batch it embeds."""
    return LinearBackbone(log=log, squash=True)


def make_dataset():
    x = np.random.default_rng(0).normal(size=(N, D_IN)).astype(np.float32)
    x[:, 0] = np.arange(N)  # column 0 names the row, so the log says which rows were embedded
    return Dataset(name="toy", modality="vector", source=x, ids=[str(i) for i in range(N)])


def _rank(rank, world, init, folder):
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        features_sharded.SHARD_ROWS = SHARD
        for name in ("fresh", "resumed"):
            backbone = RecordingBackbone(log=f"{folder}/rank{rank}.{name}.log")
            emb = extract_features(make_dataset(), backbone, f"{folder}/{name}.npy", batch_size=3, progress=False)
            assert emb.array.shape == (N, DIM)
    finally:
        dist.destroy_process_group()


def logged_rows(folder, name):
    rows = {}
    for r in (0, 1):
        path = folder / f"rank{r}.{name}.log"
        rows[r] = sorted(int(v) for line in path.read_text().split("\n") if line for v in line.split()) if path.exists() else []
    return rows


def killed_run_state(out, single, done):
    """What a killed sharded run leaves: the partial array (unwritten rows NaN), its state,
    and done markers for the shards in ``done``."""
    settings = jsonable({"backbone": RecordingBackbone().describe(), "dataset": make_dataset().describe(),
                          "count": N, "dim": DIM, "dtype": "float32", "normalized": False})  # as extract_features records
    partial, state = partial_paths(out)
    marks = features_sharded.shard_dir(partial)
    features_sharded._prepare(partial, state, marks, settings, (N, DIM), "float32", SHARD)
    array = np.lib.format.open_memmap(partial, mode="r+")
    array[:] = np.nan
    for s in done:
        array[s * SHARD:(s + 1) * SHARD] = single[s * SHARD:(s + 1) * SHARD]
        (marks / f"{s}.done").touch()
    array.flush()
    return marks


def test_two_processes_equal_one_and_resume_only_missing_shards(tmp_path):
    single = extract_features(make_dataset(), RecordingBackbone(), tmp_path / "one.npy", batch_size=5, progress=False).array
    done = {0, 3, 9}
    marks = killed_run_state(tmp_path / "resumed.npy", single, done)
    mp.spawn(_rank, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)

    # a fresh run: equal to one process; rank r did shards r, r + 2, ... and nothing twice
    np.testing.assert_allclose(load_features(tmp_path / "fresh.npy").array, single, rtol=1e-6, atol=1e-7)
    rows = logged_rows(tmp_path, "fresh")
    assert rows[0] == [i for i in range(N) if (i // SHARD) % 2 == 0]
    assert rows[1] == [i for i in range(N) if (i // SHARD) % 2 == 1]
    meta = json.loads((tmp_path / "fresh.json").read_text())
    assert meta["count"] == N and meta["dim"] == DIM
    assert sorted(p.name for p in tmp_path.glob("fresh*")) == ["fresh.json", "fresh.npy"]

    # the resumed run computed only the shards without a marker, and finished the array
    np.testing.assert_allclose(load_features(tmp_path / "resumed.npy").array, single, rtol=1e-6, atol=1e-7)
    rows = logged_rows(tmp_path, "resumed")
    assert sorted(rows[0] + rows[1]) == [i for i in range(N) if i // SHARD not in done]
    assert not marks.exists()
