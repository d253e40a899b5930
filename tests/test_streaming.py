"""Bounded memory: arrays above the in-memory budget are read in chunks / streamed per batch,
with the same results as the in-memory path (budget forced to 0 here, on small data)."""
import numpy as np
import pytest
import torch

from nolabel import methods
from nolabel.errors import NolabelError
from nolabel.methods import base, heads_base
from nolabel.methods.heads_base import StreamedRows
from nolabel.neighbors import knn


def clustered(n=240, d=24, k=4, seed=0, dtype=np.float16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    return (centres[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))).astype(dtype)


def memmap(tmp_path, x):
    path = tmp_path / "x.npy"
    np.save(path, x)
    return np.load(path, mmap_mode="r")


@pytest.fixture
def no_budget(monkeypatch):
    """Every array counts as larger than the in-memory budget."""
    monkeypatch.setattr(base, "IN_MEMORY_BYTES", 0)


def test_validate_keeps_a_large_memmap_and_finds_bad_rows(tmp_path, no_budget, monkeypatch):
    x = memmap(tmp_path, clustered())
    out = base.validate_embeddings(x, 4)
    assert out is x and out.dtype == np.float16  # no float32 copy
    monkeypatch.setattr(base, "_CHUNK_BYTES", 24 * 4 * 7)  # 7-row chunks: the bad rows span chunks
    bad = np.array(x)
    bad[[3, 100]] = np.inf
    with pytest.raises(NolabelError, match="NaN or inf in 2 rows \\(first: 3\\)"):
        base.validate_embeddings(bad, 4)


def test_validate_small_array_is_float32():
    out = base.validate_embeddings(clustered(), 4)
    assert out.dtype == np.float32


def test_streamed_rows_equal_in_memory_rows(tmp_path):
    x = memmap(tmp_path, clustered())
    full = torch.nn.functional.normalize(torch.from_numpy(np.array(x, dtype=np.float32)), dim=1)
    rows = StreamedRows(x, True, torch.device("cpu"))
    idx = torch.tensor([5, 0, 5, 239, 17])
    assert len(rows) == 240 and rows.shape == full.shape
    assert torch.equal(rows[idx], full[idx])
    assert torch.equal(rows[10:30], full[10:30])
    assert torch.equal(rows.float(), full)


@pytest.mark.parametrize("name, params", [
    ("scan", {"epochs": 2, "batch_size": 64, "n_heads": 3}),
    ("temi", {"epochs": 2, "batch_size": 64, "n_heads": 2, "n_neighbors": 5, "hidden": 32, "bottleneck": 16}),
    ("sela", {"epochs": 2, "batch_size": 64, "n_heads": 2}),
    ("lsdc", {"epochs": 2, "batch_size": 64}),
])
def test_streamed_heads_equal_in_memory_heads(tmp_path, monkeypatch, name, params):
    x = memmap(tmp_path, clustered())
    nb = knn(np.array(x, dtype=np.float32), 10, backend="faiss").indices
    klass = methods.get(name)
    ref = klass(n_clusters=4, seed=3, **params).fit(x, nb)
    seen = []
    real = heads_base.StreamedRows.__getitem__
    monkeypatch.setattr(heads_base.StreamedRows, "__getitem__", lambda self, i: seen.append(1) or real(self, i))
    monkeypatch.setattr(base, "IN_MEMORY_BYTES", 0)
    streamed = klass(n_clusters=4, seed=3, **params).fit(x, nb)
    assert seen  # the batches did come from the memory map
    np.testing.assert_array_equal(streamed.labels_, ref.labels_)
    for key, value in ref.head_.state_dict().items():
        assert torch.equal(streamed.head_.state_dict()[key], value), key
    np.testing.assert_array_equal(streamed.predict_proba(x), ref.predict_proba(x))
