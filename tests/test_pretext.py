"""Pretext training (SimCLR, RotNet): loss values, image decoding, checkpoints, resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import nolabel.backbones as backbones
from nolabel.backbones.archs import archs
from nolabel.backbones.local import local_transform
from nolabel.data.base import Dataset, array_to_pil
from nolabel.errors import NolabelError
from nolabel.pretext import image_source, nt_xent, rotate_batch, train_rotnet, train_simclr
from nolabel.pretext.common import log_path, state_path

TINY = {"arch": "small_cnn", "arch_kwargs": {"width": 8}, "batch_size": 32, "optimizer": "adam",
        "device": "cpu", "progress": False, "seed": 3}


def _digits(n: int = 64, size: int = 28) -> Dataset:
    """sklearn's 8x8 digits upscaled to size x size uint8 (MNIST-like), no labels."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images[:n] / 16.0).float()[:, None]
    big = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    array = (big[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Dataset("digits28", "image", array, [str(i) for i in range(n)], loader=array_to_pil)


def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # norms do not matter: cosine similarities
    t, c = 0.5, 1 / math.sqrt(2)
    # anchors z1[0], z1[1], z2[0], z2[1]; positives z2[0], z2[1], z1[0], z1[1]
    l0 = -1 / t + math.log(math.exp(0) + math.exp(1 / t) + math.exp(c / t))
    l1 = -c / t + math.log(math.exp(0) + math.exp(0) + math.exp(c / t))
    l2 = -1 / t + math.log(math.exp(1 / t) + math.exp(0) + math.exp(c / t))
    l3 = -c / t + math.log(3 * math.exp(c / t))
    expected = (l0 + l1 + l2 + l3) / 4
    assert float(nt_xent(z1, z2, temperature=t)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_falls_when_optimised_and_checks_inputs():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 8, generator=g, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g, requires_grad=True)
    opt = torch.optim.Adam([z1, z2], lr=0.05)
    first = float(nt_xent(z1, z2).detach())
    for _ in range(30):
        opt.zero_grad()
        nt_xent(z1, z2).backward()
        opt.step()
    assert float(nt_xent(z1, z2).detach()) < first - 1.0
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError):
        nt_xent(z1, z2, temperature=0.0)


def test_rotate_batch():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (8, 1, 3, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[:2], x)
    # rot90 turns counter-clockwise: the top row becomes the left column read upwards
    assert rotated[2, 0, :, 0].tolist() == x[0, 0, 0].flip(0).tolist()
    assert torch.equal(rotated[4], x[0].flip(-1).flip(-2))
    assert torch.equal(torch.rot90(rotated[7], 1, dims=(1, 2)), x[1])


def test_image_source_cache_matches_decoding_and_local_preprocessing():
    ds = _digits(12)
    cached = image_source(ds)
    assert cached.cache is not None and cached.cache.shape == (12, 1, 28, 28) and cached.cache.dtype == torch.uint8
    lazy = image_source(ds, max_cache_bytes=0)
    assert lazy.cache is None
    listed = Dataset("listed", "image", list(ds.source), ds.ids, loader=array_to_pil)  # not an array: decoded
    decoded = image_source(listed, image_size=28)
    assert decoded.in_chans == 1 and decoded.cache is not None
    idx = torch.tensor([3, 0, 11])
    assert torch.equal(lazy.batch(idx), cached.batch(idx))
    assert torch.equal(decoded.batch(idx), cached.batch(idx))
    mean, std = cached.stats()
    transform, _ = local_transform({"input_size": 28, "in_chans": 1, "mean": mean, "std": std})
    expected = (cached.batch(idx).float() / 255 - mean[0]) / std[0]
    got = torch.stack([transform(ds.load(int(i))) for i in idx])
    assert torch.allclose(got, expected, atol=1e-5)


def test_image_source_guesses_channels_and_size():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    src = image_source(Dataset("rgb", "image", rgb, list("abcde"), loader=array_to_pil))
    assert (src.in_chans, src.size) == (3, 16)
    assert src.cache.shape == (5, 3, 16, 16)
    assert torch.equal(src.cache[2], torch.from_numpy(rgb[2]).permute(2, 0, 1))
    listed = Dataset("gray-list", "image", list(rgb[..., 0]), list("abcde"), loader=array_to_pil)
    with pytest.raises(NolabelError, match="image_size"):
        image_source(listed)
    src = image_source(listed, image_size=8)
    assert (src.in_chans, src.size) == (1, 8) and src.batch([0]).shape == (1, 1, 8, 8)
    with pytest.raises(NolabelError, match="images"):
        image_source(Dataset("t", "text", ["a", "b"], ["0", "1"]))


def _reference_features(out_path, ds):
    """Features of the trained weights (from the training state) on the cached, normalised images."""
    state = torch.load(state_path(out_path), map_location="cpu", weights_only=True)
    settings = state["config"]
    model = archs.get(settings["arch"])(**settings["arch_kwargs"])
    model.load_state_dict({k.removeprefix("backbone."): v for k, v in state["model"].items() if k.startswith("backbone.")})
    model.eval()
    images = image_source(ds).cache.float() / 255
    x = (images - torch.tensor(settings["mean"])[:, None, None]) / torch.tensor(settings["std"])[:, None, None]
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("train", [train_simclr, train_rotnet])
def test_tiny_run_writes_a_checkpoint_that_local_loads(tmp_path, train):
    ds = _digits(64)
    out = train(ds, tmp_path / "model.safetensors", epochs=1, augment={"hflip": False}, **TINY)
    assert out.is_file() and out.with_suffix(".json").is_file() and log_path(out).is_file()
    backbone = backbones.get(f"local:{out}", device="cpu")
    assert backbone.dim == 32
    features = backbone.embed([ds.load(i) for i in range(len(ds))])
    assert torch.allclose(features, _reference_features(out, ds), atol=1e-4)
    assert torch.isfinite(features).all() and features.std(dim=0).mean() > 0


def test_resume_after_a_kill_gives_the_same_weights(tmp_path):
    ds = _digits(64)
    settings = dict(TINY, epochs=2, augment={"hflip": False})
    whole = train_simclr(ds, tmp_path / "a" / "m.safetensors", **settings)

    class Killed(Exception):
        pass

    def kill_after_first(epoch, stats):
        if epoch == 1:
            raise Killed

    target = tmp_path / "b" / "m.safetensors"
    with pytest.raises(Killed):
        train_simclr(ds, target, on_epoch_end=kill_after_first, **settings)
    assert state_path(target).is_file() and not target.exists()
    epochs_run = []
    train_simclr(ds, target, on_epoch_end=lambda e, s: epochs_run.append(e), **settings)
    assert epochs_run == [2]
    a, b = load_file(str(whole)), load_file(str(target))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = torch.load(state_path(target), weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["lr"] < history[0]["lr"]
    # a finished run is not trained again; other settings refuse to resume
    train_simclr(ds, target, on_epoch_end=lambda e, s: epochs_run.append(e), **settings)
    assert epochs_run == [2]
    with pytest.raises(NolabelError, match="temperature"):
        train_simclr(ds, target, temperature=0.5, **settings)


def test_bad_settings_are_user_errors(tmp_path):
    ds = _digits(8)
    with pytest.raises(NolabelError, match="architecture"):
        train_simclr(ds, tmp_path / "m.safetensors", **dict(TINY, arch="resnet999"))
    with pytest.raises(NolabelError, match="safetensors"):
        train_rotnet(ds, tmp_path / "m.pt", **TINY)
    with pytest.raises(NolabelError, match="optimizer"):
        train_rotnet(ds, tmp_path / "m.safetensors", **dict(TINY, optimizer="lbfgs"))


def test_bfloat16_autocast_run_is_recorded_and_loads(tmp_path):
    ds = _digits(32)
    out = train_simclr(ds, tmp_path / "amp.safetensors", epochs=1, amp=True, **TINY)
    log = torch.load(state_path(out), weights_only=True)
    assert log["config"]["amp"] is True and math.isfinite(log["history"][0]["loss"])
    features = backbones.get(f"local:{out}", device="cpu").embed([ds.load(i) for i in range(4)])
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
