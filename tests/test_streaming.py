"""Bounded memory: arrays above the in-memory budget are read in chunks / streamed per batch,
with the same results as the in-memory path (budget forced to 0 here, on small data)."""
import numpy as np
import pytest
import torch

from nolabel import methods
from nolabel.errors import NolabelError
from nolabel import memory
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
    monkeypatch.setattr(memory, "IN_MEMORY_BYTES", 0)


def test_validate_keeps_a_large_memmap_and_finds_bad_rows(tmp_path, no_budget, monkeypatch):
    x = memmap(tmp_path, clustered())
    out = base.validate_embeddings(x, 4)
    assert out is x and out.dtype == np.float16  # no float32 copy
    monkeypatch.setattr(memory, "CHUNK_BYTES", 24 * 4 * 7)  # 7-row chunks: the bad rows span chunks
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
    monkeypatch.setattr(memory, "IN_MEMORY_BYTES", 0)
    streamed = klass(n_clusters=4, seed=3, **params).fit(x, nb)
    assert seen  # the batches did come from the memory map
    np.testing.assert_array_equal(streamed.labels_, ref.labels_)
    for key, value in ref.head_.state_dict().items():
        assert torch.equal(streamed.head_.state_dict()[key], value), key
    np.testing.assert_array_equal(streamed.predict_proba(x), ref.predict_proba(x))


@pytest.mark.parametrize("backend, extra", [("faiss", {}), ("faiss-ivf", {"nlist": 6, "nprobe": 6})])
def test_knn_above_the_budget_stores_float16_with_measured_recall(tmp_path, no_budget, backend, extra):
    import faiss

    x = memmap(tmp_path, clustered(n=400, d=32))
    exact = knn(np.array(x, dtype=np.float32), 8, backend="faiss")
    made = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("IndexScalarQuantizer", "IndexIVFScalarQuantizer"):
            real = getattr(faiss, name)
            mp.setattr(faiss, name, lambda *a, _real=real, _name=name: made.append(_name) or _real(*a))
        approx = knn(x, 8, backend=backend, **extra)
    assert made == ["IndexScalarQuantizer" if backend == "faiss" else "IndexIVFScalarQuantizer"]
    hits = np.mean([len(set(a) & set(e)) / 8 for a, e in zip(approx.indices, exact.indices)])
    assert hits > 0.97 and approx.recall > 0.97  # float16 rounding swaps only near-ties
    np.testing.assert_allclose(approx.similarities, exact.similarities, atol=2e-3)


class FakeCloner:
    """Stands in for faiss.GpuMultipleClonerOptions on a CPU-only faiss."""
    shard = useFloat16 = None


@pytest.fixture
def fake_gpu(monkeypatch):
    """A faiss that reports one GPU; cloning to it records the options and keeps the CPU index."""
    import faiss

    clones = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", FakeCloner, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", faiss.ParameterSpace, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus",
                        lambda index, co=None, ngpu=-1: clones.append((type(index).__name__, co.shard, co.useFloat16)) or index,
                        raising=False)
    return clones


@pytest.mark.parametrize("budget, fp16", [(None, False), (0, True)])
def test_faiss_uses_the_gpus_when_present(fake_gpu, monkeypatch, budget, fp16):
    if budget is not None:
        monkeypatch.setattr(memory, "IN_MEMORY_BYTES", budget)
    x = clustered(n=300, d=16, dtype=np.float32)
    flat = knn(x, 5, backend="faiss")
    assert fake_gpu == [("IndexFlatIP", True, fp16)]  # fp16: the GPU stores float16, not an SQ index
    ivf = knn(x, 5, backend="faiss-ivf", nlist=4, nprobe=4)
    assert fake_gpu[1] == ("IndexIVFScalarQuantizer" if fp16 else "IndexIVFFlat", True, False)
    same = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(ivf.indices, flat.indices)])
    assert same > (0.97 if fp16 else 0.999)  # every list probed: exact up to the float16 lists' rounding


def test_gpu_nprobe_is_capped(fake_gpu, monkeypatch):
    import nolabel.neighbors as nbm

    monkeypatch.setattr(nbm, "GPU_MAX_NPROBE", 2)
    x = np.random.default_rng(7).normal(size=(800, 24)).astype(np.float32)  # no structure: wants every list
    nb = knn(x, 10, backend="faiss-ivf", nlist=16)
    assert nb.search["nprobe"] == 2 and nb.recall < 0.9


def test_kmeans_uses_the_gpus_when_present(monkeypatch):
    import faiss

    calls = []
    real = faiss.Kmeans

    def spy(d, k, **kw):
        calls.append(kw.pop("gpu", False))
        return real(d, k, **kw)

    monkeypatch.setattr(faiss, "Kmeans", spy)
    x = clustered(n=300, d=16, dtype=np.float32)
    methods.get("kmeans")(n_clusters=4, backend="faiss", n_init=1).fit(x)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    methods.get("kmeans")(n_clusters=4, backend="faiss", n_init=1).fit(x)
    assert calls == [False, True]


def test_kmeans_above_the_budget_takes_the_chunked_faiss_path(tmp_path, no_budget):
    x = memmap(tmp_path, clustered(n=300, d=16))
    small = methods.get("kmeans")(n_clusters=4, seed=0)
    assert len(x) * 4 <= 1_000_000  # Lloyd's range by size alone
    reference = methods.get("kmeans")(n_clusters=4, backend="faiss", n_init=3, seed=0).fit(np.array(x, dtype=np.float32))
    small.fit(x)
    np.testing.assert_array_equal(small.labels_, reference.labels_)
    np.testing.assert_allclose(small.inertia_, reference.inertia_, rtol=1e-5)
