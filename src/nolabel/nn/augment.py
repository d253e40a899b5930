"""Image augmentations (torchvision.transforms.v2) and batch composition (MixUp, RICAP).

Per-image pipelines. Each builder returns a ``v2.Compose`` taking a PIL image or a
``uint8`` (C, H, W) tensor and giving a normalised float32 (C, H, W) plain tensor with
``in_chans`` channels (RGB inputs become luma for one channel, one-channel inputs are
repeated for three). ``mean``/``std`` default to 0.5 per channel and need ``in_chans``
values. All randomness comes from torch's global generator: ``torch.manual_seed``
repeats a run.

- :func:`eval_transform`: shorter side to ``size``, centre crop, normalise.
- :func:`weak_augment`: ``crop="pad"``: random ``size`` crop of the image zero-padded by
  ``size // 8``; ``crop="resized"``: RandomResizedCrop(``scale``); then a horizontal flip
  unless ``hflip=False`` (digits).
- :func:`simclr_augment`: SCAN's CIFAR SimCLR view: RandomResizedCrop(scale 0.2-1), flip,
  ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale with p 0.2. One-channel data (or
  ``color=False``): brightness/contrast jitter only, no grayscale step.
- :func:`strong_augment`: SCAN's strong view: random ``size`` crop (no padding, as SCAN's
  ``RandomCrop(crop_size)``), flip, ``n_ops`` operations, then Cutout: one
  ``cutout`` x ``cutout`` square (default ``size // 2``) set to 0 after normalisation
  (the data mean).

Operations of ``policy="scan"`` (:class:`ScanRandAugment`, :data:`SCAN_OPS`): SCAN's
list of 14, each drawn uniformly with replacement and applied with a magnitude drawn
uniformly from SCAN's range: AutoContrast, Equalize, Identity, Rotate [-30, 30] degrees,
Solarize threshold [0, 256], Color/Contrast/Brightness/Sharpness factor [0.05, 0.95],
ShearX/ShearY [-0.1, 0.1], TranslateX/TranslateY [-0.1, 0.1] of the side, Posterize
[4, 8] bits. Each operation is torchvision's ``v2.functional`` implementation (affine
ops about the top-left corner as PIL's, nearest interpolation, zero fill).
``policy="randaugment"`` uses ``v2.RandAugment(num_ops=n_ops)`` instead: the same 14
operations but one fixed magnitude (bin 9 of 31) with a random sign, factors 1 +- 0.27
instead of [0.05, 0.95], shear up to 0.09 and translation up to 14% of the side.
Cutout is ``v2.RandomErasing(p=1, value=0)`` with a fixed square ratio and area, which
keeps the square inside the image; SCAN's Cutout centres it anywhere and clips it at
the border (smaller holes near edges).

Batch composition (LSD-C), on (B, C, H, W) float tensors:

- :func:`mixup`: ``lam ~ Beta(alpha, alpha)``, ``x_mixed = lam x + (1 - lam) x[perm]``.
- :func:`ricap`: boundary ``(w, h) = round((W, H) * Beta(beta, beta))`` (one per batch);
  four crops of sizes (w, h), (W-w, h), (w, H-h), (W-w, H-h), each at a random position
  in the images of its own random permutation, placed in the top-left, top-right,
  bottom-left, bottom-right corners; weights = crop area / (H W).
- :func:`mix_targets`: ``T[i, j] = sum_c weights[j, c] * A[i, indices[c, j]]``.

Batch augmentation by name (whole-network training), ``uint8`` (B, C, S, S) -> normalised
float (:func:`make_augment`): ``"strong"`` (SCAN's 4 random ops + Cutout), ``"weak"``
(padded random crop, flip for colour images), ``"simclr"``, ``"digits"``
(:class:`DigitAugment`: batched random affine - rotation +-15 deg, translation 10 %,
scale 0.9-1.1, shear +-10 deg - and a Cutout of side ``size // 4`` with probability
0.5; no flips, no colour ops: SCAN's solarize / equalize / flips destroy or change
digits) and ``"none"`` (:class:`Normalizer` only). ``"auto"`` means ``"strong"`` for
colour images, ``"digits"`` for one-channel images.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import check_choice

POLICIES = ("scan", "randaugment")
AUGMENTS = ("auto", "strong", "weak", "simclr", "digits", "none")
CROPS = ("pad", "resized")


def _affine(x: torch.Tensor, translate=(0, 0), shear=(0.0, 0.0)) -> torch.Tensor:
    return F.affine(x, angle=0.0, translate=list(translate), scale=1.0, shear=list(shear),
                    interpolation=v2.InterpolationMode.NEAREST, fill=0, center=[0, 0])


def _solarize(x: torch.Tensor, v: float) -> torch.Tensor:
    """Invert pixels >= v (v above 255 leaves the image as it is)."""
    return x if v > 255 else F.solarize(x, threshold=float(v))


#: SCAN's strong-augmentation operations: (name, low, high, op(uint8 image, magnitude))
SCAN_OPS: list[tuple[str, float, float, Callable[[torch.Tensor, float], torch.Tensor]]] = [
    ("autocontrast", 0.0, 1.0, lambda x, v: F.autocontrast(x)),
    ("equalize", 0.0, 1.0, lambda x, v: F.equalize(x)),
    ("identity", 0.0, 1.0, lambda x, v: x),
    ("rotate", -30.0, 30.0, lambda x, v: F.rotate(x, float(v), interpolation=v2.InterpolationMode.NEAREST, fill=0)),
    ("solarize", 0.0, 256.0, _solarize),
    ("color", 0.05, 0.95, lambda x, v: F.adjust_saturation(x, float(v))),
    ("contrast", 0.05, 0.95, lambda x, v: F.adjust_contrast(x, float(v))),
    ("brightness", 0.05, 0.95, lambda x, v: F.adjust_brightness(x, float(v))),
    ("sharpness", 0.05, 0.95, lambda x, v: F.adjust_sharpness(x, float(v))),
    ("shear_x", -0.1, 0.1, lambda x, v: _affine(x, shear=(math.degrees(math.atan(v)), 0.0))),
    ("translate_x", -0.1, 0.1, lambda x, v: _affine(x, translate=(round(v * x.shape[-1]), 0))),
    ("translate_y", -0.1, 0.1, lambda x, v: _affine(x, translate=(0, round(v * x.shape[-2])))),
    ("posterize", 4.0, 8.0, lambda x, v: F.posterize(x, int(v))),
    ("shear_y", -0.1, 0.1, lambda x, v: _affine(x, shear=(0.0, math.degrees(math.atan(v))))),
]


class ScanRandAugment(v2.Transform):
    """``num_ops`` operations of :data:`SCAN_OPS`, drawn with replacement, each with a uniform magnitude."""

    def __init__(self, num_ops: int = 4):
        super().__init__()
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        self.num_ops = int(num_ops)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_ops):
            _, low, high, op = SCAN_OPS[int(torch.randint(len(SCAN_OPS), ()))]
            img = op(img, low + float(torch.rand(())) * (high - low))
        return img


class ToChannels(v2.Transform):
    """PIL image or uint8 tensor -> uint8 ``tv_tensors.Image`` with ``channels`` channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, img: Any) -> torch.Tensor:
        if isinstance(img, Image.Image):
            img = img.convert("L" if self.channels == 1 else "RGB")
        img = F.to_image(img)
        if img.dtype != torch.uint8:
            raise TypeError(f"augmentations take uint8 images, got a {img.dtype} tensor")
        c = img.shape[-3]
        if c == self.channels:
            return img
        if c == 1 and self.channels == 3:
            return F.to_image(img.expand(3, *img.shape[-2:]).clone())
        if c == 3 and self.channels == 1:
            return F.rgb_to_grayscale(img, num_output_channels=1)
        raise ValueError(f"cannot make {self.channels}-channel images from {c} channels")


def _stats(mean: Optional[Sequence[float]], std: Optional[Sequence[float]], in_chans: int) -> tuple[list, list]:
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    mean = [0.5] * in_chans if mean is None else [float(v) for v in mean]
    std = [0.5] * in_chans if std is None else [float(v) for v in std]
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean and std need {in_chans} values each (in_chans), got {len(mean)} and {len(std)}")
    return mean, std


def _finish(mean: list, std: list) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def eval_transform(size: int, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                   in_chans: int = 3) -> v2.Compose:
    """No augmentation: shorter side to ``size`` (bilinear, antialiased), centre crop, normalise."""
    mean, std = _stats(mean, std, in_chans)
    return v2.Compose([ToChannels(in_chans), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                       *_finish(mean, std), v2.ToPureTensor()])


def weak_augment(size: int, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 in_chans: int = 3, hflip: bool = True, crop: str = "pad",
                 scale: tuple[float, float] = (0.2, 1.0)) -> v2.Compose:
    """Random crop (``"pad"``: ``size // 8`` zero padding; ``"resized"``: RandomResizedCrop(scale)), flip if ``hflip``."""
    mean, std = _stats(mean, std, in_chans)
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    steps: list[v2.Transform] = [ToChannels(in_chans)]
    if crop == "pad":
        steps.append(v2.RandomCrop(size, padding=size // 8, pad_if_needed=True))
    else:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _finish(mean, std) + [v2.ToPureTensor()])


def simclr_augment(size: int, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                   in_chans: int = 3, hflip: bool = True, scale: tuple[float, float] = (0.2, 1.0),
                   color: Optional[bool] = None) -> v2.Compose:
    """SimCLR view: RandomResizedCrop(scale), flip, ColorJitter(0.4,0.4,0.4,0.1) p=0.8, grayscale p=0.2.

    ``color`` (default: ``in_chans == 3``) False keeps brightness/contrast jitter only, no grayscale.
    """
    mean, std = _stats(mean, std, in_chans)
    color = in_chans == 3 if color is None else bool(color)
    steps: list[v2.Transform] = [ToChannels(in_chans), v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color:
        steps += [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    else:
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8))
    return v2.Compose(steps + _finish(mean, std) + [v2.ToPureTensor()])


def strong_augment(size: int, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                   in_chans: int = 3, n_ops: int = 4, cutout: Optional[int] = None, hflip: bool = True,
                   policy: str = "scan") -> v2.Compose:
    """SCAN's strong view: crop, flip, ``n_ops`` operations (``policy``), Cutout (``cutout`` px, 0 = none)."""
    mean, std = _stats(mean, std, in_chans)
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    cutout = size // 2 if cutout is None else int(cutout)
    if not 0 <= cutout < size:
        raise ValueError(f"cutout must be in [0, {size}), got {cutout}")
    steps: list[v2.Transform] = [ToChannels(in_chans), v2.RandomCrop(size, pad_if_needed=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(ScanRandAugment(n_ops) if policy == "scan" else v2.RandAugment(num_ops=n_ops))
    steps += _finish(mean, std)
    if cutout:
        area = (cutout / size) ** 2
        steps.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    return v2.Compose(steps + [v2.ToPureTensor()])


def augment_batch(transform: Callable[[Any], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """``uint8`` (B, C, H, W) -> float (B, C', S, S): ``transform`` drawn afresh for every image."""
    return torch.stack([transform(img) for img in images])


class Normalizer:
    """``uint8`` (B, C, H, W) -> float ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


class DigitAugment:
    """Batched random affine + Cutout for small grayscale images (see the module doc), then normalise."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], degrees: float = 15.0,
                 translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1), shear: float = 10.0,
                 cutout_p: float = 0.5):
        self.size, self.norm = size, Normalizer(mean, std)
        self.degrees, self.translate, self.scale, self.shear, self.cutout_p = degrees, translate, scale, shear, cutout_p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        u = torch.rand(b, 6)
        angle = torch.deg2rad((2 * u[:, 0] - 1) * self.degrees)
        shear = torch.deg2rad((2 * u[:, 1] - 1) * self.shear)
        s = self.scale[0] + u[:, 2] * (self.scale[1] - self.scale[0])
        tx, ty = (2 * u[:, 3] - 1) * 2 * self.translate, (2 * u[:, 4] - 1) * 2 * self.translate
        # inverse map output -> input coordinates (grid_sample samples the input)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos / s, (-sin + torch.tan(shear) * cos) / s, tx], 1),
                             torch.stack([sin / s, (cos + torch.tan(shear) * sin) / s, ty], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        out = torch.nn.functional.grid_sample(x.float() / 255.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = (out - self.norm.mean) / self.norm.std
        side = max(1, self.size // 4)
        cut = u[:, 5] < self.cutout_p
        cy, cx = torch.randint(0, self.size - side + 1, (2, b))
        rows = torch.arange(self.size)
        inside_y = (rows[None, :] >= cy[:, None]) & (rows[None, :] < cy[:, None] + side)
        inside_x = (rows[None, :] >= cx[:, None]) & (rows[None, :] < cx[:, None] + side)
        mask = (inside_y[:, :, None] & inside_x[:, None, :] & cut[:, None, None])[:, None]
        return out.masked_fill(mask, 0.0)


def make_augment(name: str, size: int, in_chans: int, mean: Sequence[float],
                 std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``uint8`` (B, C, S, S) -> normalised float batch, random per image (names: module doc)."""
    check_choice("augmentation", name, AUGMENTS)
    if name == "auto":
        name = "digits" if in_chans == 1 else "strong"
    if name == "none":
        return Normalizer(mean, std)
    if name == "digits":
        return DigitAugment(size, mean, std)
    colour = in_chans == 3
    if name == "strong":
        t = strong_augment(size, mean, std, in_chans=in_chans, hflip=colour)
    elif name == "weak":
        t = weak_augment(size, mean, std, in_chans=in_chans, hflip=colour)
    else:
        t = simclr_augment(size, mean, std, in_chans=in_chans, hflip=colour)
    return lambda x: augment_batch(t, x)


def _beta(a: float, generator: Optional[torch.Generator]) -> float:
    """One draw from Beta(a, a), seeded from ``generator`` (torch's global generator when None)."""
    if a <= 0:
        raise ValueError(f"the Beta parameter must be positive, got {a}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(a, a))


def mixup(x: torch.Tensor, alpha: float = 1.0,
          generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(lam x + (1 - lam) x[perm], perm, lam)`` with ``lam ~ Beta(alpha, alpha)`` and a random permutation."""
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def ricap(x: torch.Tensor, beta: float = 0.3,
          generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RICAP composites of a (B, C, H, W) batch: ``(composite, indices (4, B), weights (B, 4))``.

    Corner c of composite j is a crop of ``x[indices[c, j]]``, corners ordered top-left,
    top-right, bottom-left, bottom-right; ``weights[j, c]`` is its area fraction.
    """
    (out,), indices, weights = _ricap([x], beta, generator, keep_largest=False)
    return out, indices, weights


def ricap_pair(x: torch.Tensor, x2: torch.Tensor, beta: float = 0.3, generator: Optional[torch.Generator] = None,
               keep_largest: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two RICAP composites of two views ``x``, ``x2`` (B, C, H, W) of the same images, as
    LSD-C's authors build them: one boundary and the same source image per corner for both,
    each corner's crop offset drawn separately per view. With ``keep_largest`` the corner
    larger than a quarter of the image (if any) keeps the identity order, so composite j is
    mostly image j. Returns ``(composite, composite2, indices (4, B), weights (B, 4))``."""
    if x.shape != x2.shape:
        raise ValueError(f"the two views must have one shape, got {tuple(x.shape)} and {tuple(x2.shape)}")
    (out, out2), indices, weights = _ricap([x, x2], beta, generator, keep_largest)
    return out, out2, indices, weights


def _ricap(xs: list[torch.Tensor], beta: float, generator: Optional[torch.Generator],
           keep_largest: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    x = xs[0]
    if x.ndim != 4:
        raise ValueError(f"ricap takes a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, _, height, width = x.shape
    w = int(round(width * _beta(beta, generator)))
    h = int(round(height * _beta(beta, generator)))
    sizes = [(w, h), (width - w, h), (w, height - h), (width - w, height - h)]
    corners = [(0, 0), (w, 0), (0, h), (w, h)]
    outs = [torch.empty_like(v) for v in xs]
    indices = torch.empty(4, b, dtype=torch.long)
    for c, ((cw, ch), (left, top)) in enumerate(zip(sizes, corners)):
        keep = keep_largest and 4 * cw * ch > width * height
        indices[c] = torch.arange(b) if keep else torch.randperm(b, generator=generator)
        for v, out in zip(xs, outs):
            x0 = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
            y0 = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
            if cw and ch:
                out[:, :, top:top + ch, left:left + cw] = v[indices[c].to(v.device), :, y0:y0 + ch, x0:x0 + cw]
    areas = torch.tensor([cw * ch for cw, ch in sizes], dtype=x.dtype) / (height * width)
    return outs, indices.to(x.device), areas.to(x.device).expand(b, 4).clone()


def mix_targets(a: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor | float) -> torch.Tensor:
    """Targets between pure images (rows) and composites (columns): ``T[i, j] = sum_c w[j, c] A[i, sigma_c(j)]``.

    MixUp: ``indices`` is ``perm`` (B,) and ``weights`` is ``lam`` (components: the image
    itself with ``lam``, ``perm`` with ``1 - lam``). RICAP: ``indices`` (C, B) and
    ``weights`` (B, C) as :func:`ricap` returns them.
    """
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"the target matrix must be square (B, B), got shape {tuple(a.shape)}")
    n = a.shape[0]
    if indices.ndim == 1:
        lam = float(weights)
        indices = torch.stack([torch.arange(n, device=indices.device), indices])
        weights = torch.tensor([lam, 1.0 - lam], dtype=a.dtype).expand(n, 2)
    weights = torch.as_tensor(weights, dtype=a.dtype, device=a.device)
    if indices.ndim != 2 or indices.shape[1] != n or weights.shape != (n, indices.shape[0]):
        raise ValueError(f"shapes do not fit: A {tuple(a.shape)}, indices {tuple(indices.shape)} "
                         f"(need (C, {n})), weights {tuple(weights.shape)} (need ({n}, C))")
    gathered = a[:, indices.to(a.device)]  # gathered[i, c, j] = A[i, indices[c, j]]
    return (gathered * weights.t()[None]).sum(dim=1)
