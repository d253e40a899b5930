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


# SCAN, SeLa, TEMI and LSD-C from a random start: their default k-means start runs nolabel's k-means, which itself changes
# algorithm at the budget (scikit-learn Lloyd below, chunked faiss above), so the starts would differ
@pytest.mark.parametrize("name, params", [
    ("scan", {"epochs": 2, "batch_size": 64, "n_heads": 3, "init": "random"}),
    ("temi", {"epochs": 2, "batch_size": 64, "n_heads": 2, "n_neighbors": 5, "hidden": 32, "bottleneck": 16,
              "init": "random"}),
    ("sela", {"epochs": 2, "batch_size": 64, "n_heads": 2, "init": "random"}),
    ("lsdc", {"epochs": 2, "batch_size": 64, "init": "random"}),
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


@pytest.mark.parametrize("backend, extra", [("faiss", {}), ("faiss-ivf", {"nlist": 6, "nprobe": 6}), ("faiss-hnsw", {})])
def test_knn_above_the_budget_stores_float16_with_measured_recall(tmp_path, no_budget, backend, extra):
    import faiss

    x = memmap(tmp_path, clustered(n=400, d=32))
    exact = knn(np.array(x, dtype=np.float32), 8, backend="faiss")
    made = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("IndexScalarQuantizer", "IndexIVFScalarQuantizer", "IndexHNSWSQ"):
            real = getattr(faiss, name)
            mp.setattr(faiss, name, lambda *a, _real=real, _name=name: made.append(_name) or _real(*a))
        approx = knn(x, 8, backend=backend, **extra)
    assert made == [{"faiss": "IndexScalarQuantizer", "faiss-ivf": "IndexIVFScalarQuantizer", "faiss-hnsw": "IndexHNSWSQ"}[backend]]
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


def test_hnsw_stays_on_the_cpu_when_gpus_are_present(fake_gpu):
    x = clustered(n=300, d=16, dtype=np.float32)
    nb = knn(x, 5, backend="faiss-hnsw")
    assert fake_gpu == [] and nb.recall >= 0.9  # faiss has no GPU HNSW: nothing is cloned


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


# ---- whole-data statistics of the heads without (H, N, K) arrays --------------------------------------------

def _fitted_scan(x, nb, **params):
    return methods.get("scan")(n_clusters=4, seed=1, epochs=2, batch_size=64, n_heads=3, **params).fit(x, nb)


def test_head_labels_in_chunks_equal_the_argmax_of_all_logits(monkeypatch):
    x = clustered(n=300, dtype=np.float32)
    nb = knn(x, 10, backend="faiss").indices
    est = _fitted_scan(x, nb)
    head = est.head_
    X = est._inputs(x)
    ref = est._all_logits(head, X).argmax(-1)
    assert torch.equal(est._all_labels(head, X), ref)
    monkeypatch.setattr(memory, "CHUNK_BYTES", 4 * 4 * 7)  # 7-row chunks
    assert est._chunk_rows(1) == 7
    assert torch.equal(est._all_labels(head, X), ref)
    # select_head on labels is select_head on logits
    from nolabel.methods.size_prior import select_head

    logits = torch.randn(3, 300, 4, generator=torch.Generator().manual_seed(0))
    nbt = torch.as_tensor(nb)
    assert select_head(logits.argmax(-1), nbt, 4) == select_head(logits, nbt)


def test_head_predict_is_the_chunked_argmax_of_predict_proba(monkeypatch):
    x = clustered(n=300, dtype=np.float32)
    nb = knn(x, 10, backend="faiss").indices
    est = _fitted_scan(x, nb)
    monkeypatch.setattr(heads_base, "PREDICT_CHUNK", 16)
    np.testing.assert_array_equal(est.predict(x), est.predict_proba(x).argmax(axis=1))


@pytest.mark.parametrize("size_prior", ["uniform", "kmeans"])
def test_scan_selection_streamed_equals_in_memory(monkeypatch, size_prior):
    from nolabel.methods.scan import streamed_scan_loss, whole_data_scan_loss

    x = clustered(n=300, dtype=np.float32)
    nb = knn(x, 10, backend="faiss").indices
    est = _fitted_scan(x, nb, size_prior=size_prior)
    X, nbt = est._inputs(x), est._neighbors(nb)
    head = est._new_head(X.shape[1], 3)  # an untrained 3-head: selection among distinct heads
    prior = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)), -1)
    ref = whole_data_scan_loss(torch.softmax(est._all_logits(head, X), -1), nbt, 5.0, prior)
    for chunk in (300, 64, 7):
        got = streamed_scan_loss(head, X, nbt, 5.0, prior, chunk)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        assert int(got.argmin()) == int(ref.argmin())
    # a whole fit that takes the streamed path picks the same head and labels
    real = est._predictions_in_memory
    small = _fitted_scan(x, nb, size_prior=size_prior)
    monkeypatch.setattr(heads_base.HeadMethod, "_predictions_in_memory", lambda self, n, h: False)
    streamed = _fitted_scan(x, nb, size_prior=size_prior)
    assert real(300, 3)
    np.testing.assert_array_equal(streamed.labels_, small.labels_)
    np.testing.assert_allclose(streamed.head_losses_, small.head_losses_, rtol=1e-5)


def test_sela_labels_per_head_above_the_budget_equal_in_memory(monkeypatch):
    x = clustered(n=300, dtype=np.float32)
    sela = methods.get("sela")(n_clusters=4, seed=0, epochs=2, batch_size=64, n_heads=3, marginals="uniform").fit(x)
    X = sela._inputs(x)
    head = sela._new_head(X.shape[1], 3)
    ref = sela._labels(head, X, None)
    monkeypatch.setattr(heads_base.HeadMethod, "_predictions_in_memory", lambda self, n, h: False)
    got = sela._labels(head, X, None)
    assert (got == ref).float().mean() > 0.99  # one head's logits alone: equal up to float32 rounding
    fit = methods.get("sela")(n_clusters=4, seed=0, epochs=2, batch_size=64, n_heads=3, marginals="uniform").fit(x)
    assert len(fit.head_losses_) == 3 and np.isfinite(fit.head_losses_).all()


def test_kmeans_size_prior_above_the_budget_copies_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    centres = 5.0 * rng.normal(size=(3, 16))
    sizes = [300, 200, 100]
    x = np.concatenate([c + 0.2 * rng.normal(size=(s, 16)) for c, s in zip(centres, sizes)]).astype(np.float16)
    mm = memmap(tmp_path, x)
    ref = heads_base.kmeans_size_prior(torch.from_numpy(np.array(x, dtype=np.float32)), 3, seed=0)
    monkeypatch.setattr(StreamedRows, "float", lambda self: pytest.fail("a full copy of the rows"))
    got = heads_base.kmeans_size_prior(StreamedRows(mm, True, torch.device("cpu")), 3, seed=0)
    assert torch.equal(got, ref)
    torch.testing.assert_close(got, torch.tensor([301.0, 201.0, 101.0]) / 603)


def test_torch_knn_above_the_budget_is_chunked_and_exact(tmp_path, monkeypatch):
    import nolabel.neighbors as nbm

    x = memmap(tmp_path, clustered(n=500, d=16))
    ref = knn(np.array(x, dtype=np.float32), 7, backend="torch", device="cpu")
    monkeypatch.setattr(memory, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(nbm, "_CHUNK_BYTES", 4 * 16 * 64)  # 64-row chunks of the base
    monkeypatch.setattr(nbm, "normalize_rows", lambda _: pytest.fail("a float32 copy of all rows"))
    got = knn(x, 7, backend="torch", chunk_size=50, device="cpu")
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.similarities, ref.similarities, atol=1e-6)


def test_max_proba_in_chunks_equals_the_softmax_of_all_logits(monkeypatch):
    x = clustered(n=300, dtype=np.float32)
    nb = knn(x, 10, backend="faiss").indices
    est = _fitted_scan(x, nb)
    X = est._inputs(x)
    ref = torch.softmax(est._all_logits(est.head_, X)[0], dim=-1).max(-1)
    monkeypatch.setattr(memory, "CHUNK_BYTES", 4 * 4 * 7)  # 7-row chunks
    conf, labels = est._all_max_proba(est.head_, X)
    assert torch.equal(conf, ref.values) and torch.equal(labels, ref.indices)


def test_neighbor_kappa_in_blocks_equals_the_edge_list_formula(monkeypatch):
    from nolabel.methods import size_prior

    g = torch.Generator().manual_seed(0)
    nb = torch.randint(0, 500, (500, 6), generator=g)
    labels = torch.randint(0, 5, (3, 500), generator=g)
    rows = torch.arange(500).repeat_interleave(6)
    cols = nb.reshape(-1)
    deg = torch.full((500,), 6.0, dtype=torch.float64).index_add_(0, cols, torch.ones(3000, dtype=torch.float64))
    want = []
    for lab in labels:
        p_o = 2.0 * float((lab[rows] == lab[cols]).sum()) / 6000
        p_e = float(((torch.zeros(5, dtype=torch.float64).index_add_(0, lab, deg) / 6000) ** 2).sum())
        want.append((p_o - p_e) / (1 - p_e))
    got = size_prior.neighbor_kappa(nb, labels, 5)
    assert got.tolist() == want


@pytest.mark.parametrize("name, params", [("kmeans", {"overcluster": 2.0}), ("scan", {"epochs": 2, "batch_size": 64})])
def test_predict_top_is_the_head_of_predict_proba(name, params):
    x = clustered(dtype=np.float32)
    est = methods.get(name)(n_clusters=6, seed=0, **params).fit(x, knn(x, 20).indices)
    p = est.predict_proba(x)
    top, top_p = est.predict_top(x, 5)
    assert top.shape == top_p.shape == (len(x), 5)
    np.testing.assert_array_equal(top[:, 0], p.argmax(1))
    np.testing.assert_allclose(top_p, -np.sort(-p, axis=1)[:, :5], rtol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(p, top, axis=1), top_p, rtol=1e-6)
    every, every_p = est.predict_top(x, 1000)  # k above K: all clusters, sorted
    assert every.shape[1] == p.shape[1]
    np.testing.assert_allclose(every_p, -np.sort(-p, axis=1), rtol=1e-6)


def test_assignment_above_the_budget_keeps_the_top_clusters_and_scores_alike(tmp_path, monkeypatch):
    from nolabel.assignments import TOP_K, Assignment
    from nolabel.metrics import evaluate

    x = clustered(dtype=np.float32)
    y = np.repeat(np.arange(4), 60)
    est = methods.get("kmeans")(n_clusters=8, seed=0).fit(x)
    full = Assignment.from_estimator(est, x)
    assert full.probabilities is not None and full.top_clusters is None
    monkeypatch.setattr(memory, "IN_MEMORY_BYTES", len(x) * 8 * 4 - 1)  # (N, K) float32 no longer fits
    top = Assignment.from_estimator(est, x)
    assert top.probabilities is None and top.top_clusters.shape == (len(x), TOP_K) and top.n_clusters == 8
    np.testing.assert_array_equal(top.clusters, full.clusters)
    np.testing.assert_allclose(top.confidences, full.confidences, rtol=1e-6)
    top.save(tmp_path / "a.npz")
    loaded = Assignment.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.top_clusters, top.top_clusters)
    assert loaded.n_clusters == 8
    scored, reference = loaded.score(y), evaluate(y, full.clusters, full.probabilities)
    assert scored == reference and 0 < scored["top5"] <= 1
