import numpy as np
import pytest

from nolabel.errors import NolabelError
from nolabel.neighbors import Neighbors, knn, neighbor_purity, purity_at_k

EXACT = ["torch", "faiss"]


def brute_force(x, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn.astype(np.float64) @ xn.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


@pytest.fixture
def data():
    return np.random.default_rng(0).normal(size=(150, 12)).astype(np.float32)


@pytest.mark.parametrize("backend", EXACT)
def test_exact_backends_equal_brute_force(data, backend):
    nb = knn(data, 7, backend=backend, device="cpu")
    idx, sims = brute_force(data, 7)
    assert nb.indices.dtype == np.int64 and nb.similarities.dtype == np.float32
    assert nb.indices.shape == (150, 7) and nb.k == 7
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.similarities, sims, atol=1e-5)


def test_scale_does_not_matter(data):
    scaled = data * np.random.default_rng(1).uniform(0.1, 10, size=(len(data), 1)).astype(np.float32)
    np.testing.assert_array_equal(knn(scaled, 5, backend="torch", device="cpu").indices, knn(data, 5, backend="torch", device="cpu").indices)


@pytest.mark.parametrize("backend", EXACT + ["faiss-ivf"])
def test_self_is_never_its_own_neighbour_even_with_duplicates(backend):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 6)).astype(np.float32)
    x = np.concatenate([base, np.repeat(base[:3], 6, axis=0)])  # rows 0..2 have 6 exact copies each
    nb = knn(x, 8, backend=backend, device="cpu", nlist=1)
    assert not (nb.indices == np.arange(len(x))[:, None]).any()
    copies_of_0 = {0} | set(range(40, 46))
    for row in copies_of_0:
        assert copies_of_0 - {row} <= set(nb.indices[row].tolist())
        np.testing.assert_allclose(nb.similarities[row, :6], 1.0, atol=1e-5)


def test_chunking_does_not_change_the_result(data):
    small = knn(data, 9, backend="torch", chunk_size=7, device="cpu")
    large = knn(data, 9, backend="torch", chunk_size=4096, device="cpu")
    np.testing.assert_array_equal(small.indices, large.indices)
    np.testing.assert_allclose(small.similarities, large.similarities, atol=1e-6)


def test_ivf_recall_on_clustered_data():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(30, 32))
    x = (centers[rng.integers(0, 30, 3000)] + 0.3 * rng.normal(size=(3000, 32))).astype(np.float32)
    exact = knn(x, 10, backend="faiss")
    approx = knn(x, 10, backend="faiss-ivf")
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.indices, exact.indices)])
    assert recall >= 0.9
    assert not (approx.indices == np.arange(3000)[:, None]).any()


def test_ivf_rows_short_of_neighbours_are_completed_exactly(data):
    # 75 lists for 150 rows, one probed: no list holds k + 1 = 13 rows, so every row is redone exactly
    nb = knn(data, 12, backend="faiss-ivf", nlist=75, nprobe=1, device="cpu")
    exact = knn(data, 12, backend="torch", device="cpu")
    np.testing.assert_array_equal(nb.indices, exact.indices)
    np.testing.assert_allclose(nb.similarities, exact.similarities, atol=1e-6)


def test_rows_sorted_by_similarity(data):
    nb = knn(data, 10, device="cpu")
    assert (np.diff(nb.similarities, axis=1) <= 0).all()


def test_save_and_load_round_trip(tmp_path, data):
    nb = knn(data, 4, backend="torch", device="cpu")
    nb.save(tmp_path / "x.knn4.npz")
    back = Neighbors.load(tmp_path / "x.knn4.npz")
    np.testing.assert_array_equal(back.indices, nb.indices)
    np.testing.assert_array_equal(back.similarities, nb.similarities)
    assert [p.name for p in tmp_path.iterdir()] == ["x.knn4.npz"]
    with pytest.raises(NolabelError):
        Neighbors.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(NolabelError):
        Neighbors.load(tmp_path / "bad.npz")


def test_user_errors(data):
    with pytest.raises(NolabelError, match="neighbours among"):
        knn(data, 150)
    zero = data.copy()
    zero[5] = 0
    with pytest.raises(NolabelError, match="row 5"):
        knn(zero, 3)
    with pytest.raises(NolabelError, match="backend"):
        knn(data, 3, backend="annoy")
    with pytest.raises(NolabelError):
        knn(data[0], 3)


def test_purity_known_answer():
    indices = np.array([[1, 2], [0, 2], [0, 1], [2, 0]])
    labels = np.array([0, 0, 1, 1])
    assert neighbor_purity(indices, labels) == pytest.approx(3 / 8)
    assert purity_at_k(indices, labels, ks=(1, 2, 5)) == pytest.approx({1: 3 / 4, 2: 3 / 8})
    with pytest.raises(NolabelError):
        neighbor_purity(indices, labels[:3])


def test_ivf_forced_at_small_n_probing_every_list_is_exact(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")  # read in chunks, never copied whole
    exact = knn(x, 10, backend="faiss")
    ivf = knn(mm, 10, backend="faiss-ivf", nlist=8, nprobe=8)
    assert ivf.backend == "faiss-ivf" and ivf.recall == 1.0 and exact.recall == 1.0
    np.testing.assert_array_equal(ivf.indices, exact.indices)
    np.testing.assert_allclose(ivf.similarities, exact.similarities, atol=1e-6)


def test_reported_ivf_recall_is_the_sampled_recall():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 24)).astype(np.float32)  # no structure: one probed list of 40 misses neighbours
    exact = knn(x, 10, backend="faiss")
    ivf = knn(x, 10, backend="faiss-ivf", nlist=40, nprobe=1)
    true = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ivf.indices, exact.indices)])
    assert ivf.recall < 0.9 and abs(ivf.recall - true) < 0.03  # RECALL_SAMPLE = 1000 of the 2000 rows


def test_auto_switches_to_ivf_above_the_threshold(monkeypatch):
    import nolabel.neighbors as nbm

    x = np.random.default_rng(6).normal(size=(300, 8)).astype(np.float32)
    assert knn(x, 5).backend == "faiss"
    monkeypatch.setattr(nbm, "IVF_ABOVE", 200)
    assert knn(x, 5).backend == "faiss-ivf"


def test_faiss_backends_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from nolabel.neighbors import knn; "
            "x = np.random.default_rng(0).normal(size=(500, 8)).astype('float32'); "
            "knn(x, 5, backend='faiss'); knn(x, 5, backend='faiss-ivf', nlist=4); knn(x, 5); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]


def test_ivf_raises_nprobe_until_the_sampled_recall_reaches_the_target():
    x = np.random.default_rng(7).normal(size=(2000, 24)).astype(np.float32)  # no structure: hard for IVF
    nb = knn(x, 10, backend="faiss-ivf", nlist=40)
    assert nb.recall >= 0.9 and nb.search["nprobe"] > 40 // 8 and nb.search["nlist"] == 40
    below = knn(x, 10, backend="faiss-ivf", nlist=40, nprobe=nb.search["nprobe"] - 1)
    assert below.recall < 0.9  # the smallest nprobe that meets the target, not the next doubling
    exact = knn(x, 10, backend="faiss")
    true = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(nb.indices, exact.indices)])
    assert abs(nb.recall - true) < 0.03


def _clustered(n, d, seed, centres=25):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return (c[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture
def one_faiss_thread():
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def test_hnsw_recall_against_exact_at_small_n_and_deterministic(one_faiss_thread):
    x = _clustered(3000, 32, seed=11)
    exact = knn(x, 10, backend="faiss")
    nb = knn(x, 10, backend="faiss-hnsw")
    true = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(nb.indices, exact.indices)])
    assert nb.backend == "faiss-hnsw" and true >= 0.95 and nb.recall >= 0.9
    assert abs(nb.recall - true) < 0.03  # the reported recall is the sampled one (1,000 of 3,000 rows)
    assert nb.search["M"] == 32 and nb.search["efSearch"] >= 11 and nb.search["storage"] == "float32"
    assert not (nb.indices == np.arange(len(x))[:, None]).any()
    assert (np.diff(nb.similarities, axis=1) <= 1e-6).all()
    again = knn(x, 10, backend="faiss-hnsw")
    np.testing.assert_array_equal(again.indices, nb.indices)


def test_hnsw_raises_ef_search_until_the_target_and_stores_float16_above_the_budget(monkeypatch, one_faiss_thread):
    import nolabel.neighbors as nbm
    from nolabel import memory

    x = np.random.default_rng(12).normal(size=(2000, 24)).astype(np.float32)  # no structure: hard for a graph
    fixed = knn(x, 10, backend="faiss-hnsw", ef_search=11, hnsw_m=4)
    assert fixed.search["efSearch"] == 11 and fixed.recall < 0.9
    raised = knn(x, 10, backend="faiss-hnsw", hnsw_m=4)
    assert raised.recall >= 0.9 and raised.search["efSearch"] > 11
    below = knn(x, 10, backend="faiss-hnsw", ef_search=raised.search["efSearch"] - 1, hnsw_m=4)
    assert below.recall < 0.9  # the smallest efSearch that meets the target
    monkeypatch.setattr(memory, "IN_MEMORY_BYTES", 1024)
    half = knn(x, 10, backend="faiss-hnsw")
    assert half.search["storage"] == "float16" and half.recall >= 0.9
    monkeypatch.setattr(nbm, "IVF_ABOVE", 200)
    assert knn(x, 5).backend == "faiss-ivf"  # auto never picks HNSW (see the module's docstring)


def test_hnsw_bad_options_are_one_line_errors(data):
    with pytest.raises(NolabelError, match="unknown k-NN backend 'hnsw'; choose one of .*faiss-hnsw"):
        knn(data, 3, backend="hnsw")
    with pytest.raises(NolabelError, match="ef_search"):
        knn(data, 3, backend="faiss-hnsw", ef_search=0)
    with pytest.raises(NolabelError, match="hnsw_m"):
        knn(data, 3, backend="faiss-hnsw", hnsw_m=1)
