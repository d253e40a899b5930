import json

import numpy as np
import pytest
import torch

from nolabel.data.base import Dataset
from nolabel.errors import NolabelError
from nolabel.features import embed_dataset, extract_features, load_features
from toy_backbone import D_IN, DIM, LinearBackbone

N = 30


@pytest.fixture
def dataset():
    x = np.random.default_rng(0).normal(size=(N, D_IN)).astype(np.float32)
    return Dataset(name="toy", modality="vector", source=x, ids=[str(i) for i in range(N)], labels=np.arange(N) % 3)


def expected(dataset):
    return dataset.source @ LinearBackbone().weight.numpy()


def test_extract_writes_array_and_sidecar(tmp_path, dataset):
    emb = extract_features(dataset, LinearBackbone(), tmp_path / "f.npy", batch_size=8, progress=False)
    np.testing.assert_allclose(emb.array, expected(dataset), rtol=1e-5, atol=1e-6)
    assert isinstance(emb.array, np.memmap) and emb.array.dtype == np.float32
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta["count"] == N and meta["dim"] == DIM and meta["dtype"] == "float32" and meta["normalized"] is False
    assert meta["backbone"]["spec"] == "test:linear" and meta["dataset"]["name"] == "toy" and meta["created"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "f.npy"]
    again = load_features(tmp_path / "f.npy")
    np.testing.assert_array_equal(again.array, emb.array)
    assert again.meta == meta


def test_normalised_float16(tmp_path, dataset):
    emb = extract_features(dataset, LinearBackbone(), tmp_path / "f.npy", batch_size=7, normalize=True, dtype="float16", progress=False)
    ref = expected(dataset)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert emb.array.dtype == np.float16 and emb.meta["normalized"] is True
    np.testing.assert_allclose(emb.array.astype(np.float32), ref, atol=1e-3)


def test_killed_extraction_resumes_where_it_stopped(tmp_path, dataset):
    ref = extract_features(dataset, LinearBackbone(), tmp_path / "ref.npy", batch_size=4, progress=False).array
    out = tmp_path / "f.npy"
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(dataset, LinearBackbone(fail_on=4), out, batch_size=4, progress=False)
    assert not out.exists() and (tmp_path / "f.partial.npy").exists()
    assert json.loads((tmp_path / "f.partial.json").read_text())["done"] == 12  # 3 batches of 4 flushed
    with pytest.raises(NolabelError, match="unfinished"):
        load_features(out)
    backbone = LinearBackbone()
    emb = extract_features(dataset, backbone, out, batch_size=4, progress=False)
    assert backbone.calls == 8 - 3  # ceil(30 / 4) = 8 batches, 3 already on disk
    np.testing.assert_array_equal(emb.array, ref)
    assert not (tmp_path / "f.partial.npy").exists() and not (tmp_path / "f.partial.json").exists()


def test_partial_with_other_settings_is_not_resumed(tmp_path, dataset):
    out = tmp_path / "f.npy"
    with pytest.raises(RuntimeError):
        extract_features(dataset, LinearBackbone(fail_on=3), out, batch_size=4, progress=False)
    backbone = LinearBackbone()
    emb = extract_features(dataset, backbone, out, batch_size=4, normalize=True, progress=False)
    assert backbone.calls == 8
    np.testing.assert_allclose(np.linalg.norm(emb.array, axis=1), 1.0, rtol=1e-6)


def test_worker_processes_give_the_same_rows(tmp_path, dataset):
    emb = extract_features(dataset, LinearBackbone(), tmp_path / "f.npy", batch_size=8, num_workers=1, progress=False)
    np.testing.assert_allclose(emb.array, expected(dataset), rtol=1e-5, atol=1e-6)


def test_embed_dataset_in_memory(dataset):
    x = embed_dataset(dataset, LinearBackbone(), batch_size=16, normalize=True)
    ref = expected(dataset)
    np.testing.assert_allclose(x, ref / np.linalg.norm(ref, axis=1, keepdims=True), rtol=1e-5)


def test_embed_dataset_above_the_budget_fills_a_memory_map(dataset, monkeypatch):
    from nolabel import memory

    monkeypatch.setattr(memory, "IN_MEMORY_BYTES", 0)
    x = embed_dataset(dataset, LinearBackbone(), batch_size=16)
    assert isinstance(x, np.memmap) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected(dataset), rtol=1e-5, atol=1e-6)


def test_unknown_dim_is_probed(tmp_path, dataset):
    backbone = LinearBackbone()
    backbone.dim = 0
    emb = extract_features(dataset, backbone, tmp_path / "f.npy", batch_size=16, progress=False)
    assert emb.array.shape == (N, DIM) and emb.meta["dim"] == DIM


def test_load_features_rejects_broken_files(tmp_path, dataset):
    with pytest.raises(NolabelError, match="no embeddings"):
        load_features(tmp_path / "nothing.npy")
    extract_features(dataset, LinearBackbone(), tmp_path / "f.npy", progress=False)
    side = tmp_path / "f.json"
    meta = json.loads(side.read_text())
    side.write_text("{not json")
    with pytest.raises(NolabelError, match="corrupt"):
        load_features(tmp_path / "f.npy")
    side.write_text(json.dumps(dict(meta, count=N + 1)))
    with pytest.raises(NolabelError, match="sidecar says"):
        load_features(tmp_path / "f.npy")
    side.unlink()  # embeddings made elsewhere: read as they are, with a warning
    with pytest.warns(UserWarning, match=r"f.npy has no sidecar f.json: read as plain \(30, 3\) embeddings"):
        plain = load_features(tmp_path / "f.npy")
    assert plain.meta == {"count": N, "dim": DIM, "dtype": "float32", "sidecar": False}
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(3, 2))
    with pytest.raises(NolabelError, match=r"no sidecar ints.json and holds a \(3, 2\) int64 array"):
        load_features(tmp_path / "ints.npy")
    (tmp_path / "g.npy").write_bytes(b"garbage")
    (tmp_path / "g.json").write_text(json.dumps(meta))
    with pytest.raises(NolabelError, match="not a readable"):
        load_features(tmp_path / "g.npy")


def test_bad_arguments(tmp_path, dataset):
    with pytest.raises(NolabelError, match="dtype"):
        extract_features(dataset, LinearBackbone(), tmp_path / "f.npy", dtype="int8", progress=False)
    with pytest.raises(NolabelError, match="empty"):
        extract_features(dataset.subset([]), LinearBackbone(), tmp_path / "f.npy", progress=False)


def _conv_image_backbone():
    """A small conv net as an image backbone (PIL -> 16x16 tensor -> 4 pooled channels)."""
    from torchvision import transforms as T

    from nolabel.backbones.image import ImageModelBackbone

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    transform = T.Compose([T.Resize((16, 16)), T.ToTensor()])
    return ImageModelBackbone("test:conv", net, transform, 4, {"input_size": [3, 16, 16]})


def test_image_extraction_in_workers_channels_last_matches_a_plain_forward(tmp_path, monkeypatch):
    """Decoding in DataLoader workers, inference_mode and channels-last change no row; the
    module is left in its own memory format; workers come from the CPUs only for image models
    on more than one batch."""
    from PIL import Image

    from nolabel import feature_batches, features

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (40, 20, 24, 3), dtype=np.uint8)
    data = Dataset(name="imgs", modality="image", source=arrays, ids=[str(i) for i in range(40)],
                   loader=lambda a: Image.fromarray(a))
    bb = _conv_image_backbone()
    with torch.no_grad():
        plain = bb.model(torch.stack([bb.preprocess(data.load(i)) for i in range(40)])).numpy()
    monkeypatch.setattr(feature_batches, "available_cpus", lambda: 3)
    assert features.auto_workers(40, 8, bb) == 2 and features.auto_workers(8, 8, bb) == 0
    assert features.auto_workers(40, 8, LinearBackbone()) == 0  # no module, not images
    seen = []
    forward = bb.forward_batch

    def spy(batch):
        seen.append((batch.is_contiguous(memory_format=torch.channels_last), torch.is_inference_mode_enabled()))
        return forward(batch)

    monkeypatch.setattr(bb, "forward_batch", spy)
    emb = extract_features(data, bb, tmp_path / "f.npy", batch_size=8, progress=False)  # auto: 2 workers
    assert seen == [(True, True)] * 5
    np.testing.assert_allclose(emb.array, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed_dataset(data, bb, batch_size=16, num_workers=0), plain, rtol=1e-5, atol=1e-6)
    assert bb.model[0].weight.is_contiguous() and torch.is_grad_enabled()


def test_non_finite_vectors_are_refused_naming_the_item(tmp_path):
    from nolabel import backbones

    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    x[7, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    data = Dataset(name="x", modality="vector", source=np.load(tmp_path / "x.npy", mmap_mode="r"),
                   ids=[str(i) for i in range(12)])
    with pytest.raises(NolabelError, match=r"features of item 7 are NaN or inf") as err:
        extract_features(data, backbones.get("pixels", device="cpu"), tmp_path / "f.npy", batch_size=5, progress=False)
    assert "\n" not in str(err.value)
