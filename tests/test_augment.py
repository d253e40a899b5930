"""Augmentations and batch composition (nolabel.nn.augment)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nolabel.nn import augment as A


def _pil(seed: int = 0, h: int = 40, w: int = 50) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("make", [A.weak_augment, A.simclr_augment, A.strong_augment, A.eval_transform])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_pipeline_gives_normalised_float_chw(make, in_chans):
    torch.manual_seed(0)
    transform = make(24, in_chans=in_chans)
    rgb_tensor = torch.randint(0, 256, (3, 30, 30), dtype=torch.uint8)
    gray_tensor = torch.randint(0, 256, (1, 24, 24), dtype=torch.uint8)
    for item in (_pil(), rgb_tensor, gray_tensor):
        out = transform(item)
        assert type(out) is torch.Tensor
        assert out.dtype == torch.float32 and out.shape == (in_chans, 24, 24)
        # mean = std = 0.5 maps [0, 1] onto [-1, 1]
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_eval_transform_is_exact_normalisation_and_gray_is_luma():
    mean, std = [0.2, 0.4, 0.6], [0.5, 0.25, 0.125]
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    out = A.eval_transform(16, mean, std)(x)
    expected = (x.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(out, expected, atol=1e-6)
    pil = _pil(1, 16, 16)
    gray = A.eval_transform(16, [0.0], [1.0], in_chans=1)(pil)
    luma = np.asarray(pil.convert("L"), dtype=np.float32) / 255
    assert np.abs(gray[0].numpy() - luma).max() <= 1.0 / 255 + 1e-6


def test_mean_std_must_match_channels():
    with pytest.raises(ValueError, match="3 values"):
        A.weak_augment(32, mean=[0.5], std=[0.5])


def test_weak_pad_crop_shows_only_image_or_zero_padding():
    torch.manual_seed(1)
    x = torch.full((1, 16, 16), 200, dtype=torch.uint8)
    transform = A.weak_augment(16, [0.0], [1.0], in_chans=1, hflip=False)
    seen = set()
    for _ in range(20):
        values = {round(v, 4) for v in torch.unique(transform(x)).tolist()}
        assert values <= {0.0, round(200 / 255, 4)}
        seen |= values
    assert seen == {0.0, round(200 / 255, 4)}  # padding (2 px) shows up in some crops


def test_hflip_parameter_turns_flipping_off():
    x = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8)
    flips = A.weak_augment(8, [0.0], [1.0], in_chans=1, crop="resized", scale=(1.0, 1.0))
    plain = A.weak_augment(8, [0.0], [1.0], in_chans=1, crop="resized", scale=(1.0, 1.0), hflip=False)
    torch.manual_seed(0)
    outs = [flips(x) for _ in range(20)]
    assert any(torch.equal(o, outs[0].flip(-1)) for o in outs) and any(torch.equal(o, outs[0]) for o in outs)
    assert all(torch.allclose(plain(x), x.float() / 255) for _ in range(10))


def test_simclr_gray_jitter_keeps_brightness_and_contrast_only():
    transform = A.simclr_augment(28, in_chans=1)
    jitters = [t for t in transform.transforms if isinstance(t, A.v2.RandomApply)]
    jitter = jitters[0].transforms[0]
    assert jitter.brightness is not None and jitter.contrast is not None
    assert jitter.saturation is None and jitter.hue is None
    assert not any(isinstance(t, A.v2.RandomGrayscale) for t in transform.transforms)
    rgb = A.simclr_augment(32)
    assert any(isinstance(t, A.v2.RandomGrayscale) for t in rgb.transforms)


def test_augment_batch_draws_per_image():
    torch.manual_seed(0)
    batch = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(8, 3, 32, 32)
    out = A.augment_batch(A.simclr_augment(32), batch)
    assert out.shape == (8, 3, 32, 32)
    assert len({tuple(o.flatten()[:50].tolist()) for o in out}) == 8


def test_cutout_erases_one_fixed_square_to_zero():
    torch.manual_seed(3)
    x = torch.randint(1, 256, (3, 32, 32), dtype=torch.uint8)
    transform = A.strong_augment(32, [0.0] * 3, [1.0] * 3, n_ops=0, hflip=False)
    for _ in range(5):
        out = transform(x)
        zero = (out == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert zero.sum() == 16 * 16 and len(rows) == 16 and len(cols) == 16
        assert torch.allclose(out[:, ~zero], x.float()[:, ~zero] / 255)
    no_cutout = A.strong_augment(32, [0.0] * 3, [1.0] * 3, n_ops=0, hflip=False, cutout=0)
    assert torch.allclose(no_cutout(x), x.float() / 255)


@pytest.mark.parametrize("policy", ["scan", "randaugment"])
def test_strong_augment_changes_the_image_and_keeps_its_shape(policy):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    plain = A.eval_transform(32)(x)
    transform = A.strong_augment(32, policy=policy, cutout=0)
    outs = [transform(x) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)
    assert sum(not torch.allclose(o, plain) for o in outs) >= 6


def test_every_scan_op_keeps_shape_and_dtype_at_its_extremes():
    x = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    names = [name for name, *_ in A.SCAN_OPS]
    assert len(names) == 14 and len(set(names)) == 14
    for name, low, high, op in A.SCAN_OPS:
        for v in (low, (low + high) / 2, high - 1e-6):
            y = op(x, v)
            assert y.shape == x.shape and y.dtype == torch.uint8, name
    solarize = dict((n, op) for n, _, _, op in A.SCAN_OPS)["solarize"]
    assert torch.equal(solarize(x, 255.5), x)
    assert torch.equal(solarize(x, 0.0), 255 - x)


def test_scan_randaugment_is_reproducible_under_the_torch_seed():
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    op = A.ScanRandAugment(4)
    torch.manual_seed(5)
    a = op(x)
    torch.manual_seed(5)
    assert torch.equal(op(x), a)
    assert torch.equal(A.ScanRandAugment(0)(x), x)


def test_mixup_is_a_convex_combination_with_a_permutation():
    x = torch.randn(10, 3, 4, 4)
    mixed, perm, lam = A.mixup(x, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(10))
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-6)
    again = A.mixup(x, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mixed) and again[2] == lam


def _coded_batch(B: int, H: int, W: int) -> torch.Tensor:
    """Pixel value = image * 10000 + row * 100 + column (channel 0), so each pixel names its source."""
    b = torch.arange(B)[:, None, None] * 10000
    y = torch.arange(H)[None, :, None] * 100
    x = torch.arange(W)[None, None, :]
    code = (b + y + x).double()
    return torch.stack([code, -code], dim=1)


def test_ricap_quadrants_come_from_the_right_images_and_areas_sum_to_one():
    B, H, W = 6, 10, 12
    x = _coded_batch(B, H, W)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        out, indices, weights = A.ricap(x, beta=0.3, generator=g)
        assert out.shape == x.shape and indices.shape == (4, B) and weights.shape == (B, 4)
        assert torch.allclose(weights.sum(dim=1), torch.ones(B, dtype=weights.dtype))
        assert all(sorted(row.tolist()) == list(range(B)) for row in indices)
        # boundary from the area fractions: h/H = w_tl + w_tr, w/W = w_tl + w_bl
        h = round(float(weights[0, 0] + weights[0, 1]) * H)
        w = round(float(weights[0, 0] + weights[0, 2]) * W)
        assert weights[0].tolist() == pytest.approx([w * h / (W * H), (W - w) * h / (W * H),
                                                     w * (H - h) / (W * H), (W - w) * (H - h) / (W * H)])
        regions = [(slice(0, h), slice(0, w)), (slice(0, h), slice(w, W)),
                   (slice(h, H), slice(0, w)), (slice(h, H), slice(w, W))]
        assert torch.equal(out[:, 1], -out[:, 0])
        for c, (rows, cols) in enumerate(regions):
            patch = out[:, 0, rows, cols].long()
            if patch.numel() == 0:
                continue
            assert torch.equal(patch // 10000, indices[c][:, None, None].expand_as(patch))
            ys, xs = (patch % 10000) // 100, patch % 100
            # a contiguous crop: rows and columns step by one from a shared offset
            assert torch.equal(ys - ys[:, :1, :1], torch.arange(ys.shape[1])[None, :, None].expand_as(ys))
            assert torch.equal(xs - xs[:, :1, :1], torch.arange(xs.shape[2])[None, None, :].expand_as(xs))


def test_ricap_boundary_follows_the_beta_parameter():
    x = torch.zeros(2, 1, 40, 40)

    def extreme_share(beta: float) -> float:
        g = torch.Generator().manual_seed(1)
        fractions = [float(A.ricap(x, beta, g)[2][0, 0] + A.ricap(x, beta, g)[2][0, 2]) for _ in range(150)]
        return float(np.mean([(f < 0.1) or (f > 0.9) for f in fractions]))

    assert extreme_share(0.3) > 0.4  # Beta(0.3, 0.3) is U-shaped: P = 0.57
    assert extreme_share(10.0) < 0.05


def test_mix_targets_by_hand():
    A_ = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]])
    indices = torch.tensor([[0, 1, 2], [2, 0, 1]])
    weights = torch.tensor([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0]])
    expected = torch.tensor([[0.875, 0.5, 0.5], [0.0, 0.5, 0.0], [0.625, 0.25, 1.0]])
    assert torch.allclose(A.mix_targets(A_, indices, weights), expected)


def test_mix_targets_for_mixup_perm_and_lam():
    perm = torch.tensor([2, 0, 1])
    T = A.mix_targets(torch.eye(3), perm, 0.7)
    P = torch.zeros(3, 3)
    P[perm, torch.arange(3)] = 1.0
    assert torch.allclose(T, 0.7 * torch.eye(3) + 0.3 * P)


def test_mix_targets_with_ricap_output_matches_a_loop():
    x = torch.randn(5, 1, 8, 8)
    _, indices, weights = A.ricap(x, generator=torch.Generator().manual_seed(2))
    adjacency = (torch.rand(5, 5, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    T = A.mix_targets(adjacency, indices, weights)
    for i in range(5):
        for j in range(5):
            value = sum(float(weights[j, c]) * float(adjacency[i, indices[c, j]]) for c in range(4))
            assert float(T[i, j]) == pytest.approx(value)
    with pytest.raises(ValueError, match="shapes"):
        A.mix_targets(adjacency, indices, weights[:, :3])
