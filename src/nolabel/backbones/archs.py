"""Backbone architectures trained by this project (pretext tasks) or loaded from local files.

Every constructor in :data:`archs` returns an ``nn.Module`` whose ``forward(x)`` gives
features of shape (B, feature_dim) and that carries the attribute ``feature_dim``.

- ``resnet{20,32,44,56}_cifar``: the CIFAR ResNets of He et al. (2016), three stages of
  n = (depth - 2) / 6 basic blocks with 16, 32, 64 channels and "option A" shortcuts
  (identity; at a stride-2 stage the input is subsampled by 2 and its channels
  zero-padded). Features: 64-d after global average pooling. ``num_classes > 0`` adds
  the classifier ``linear`` (not used by ``forward``; see :meth:`CifarResNet.logits`).
- ``resnet18_cifar``: torchvision's ResNet-18 with the CIFAR stem (3x3 conv, stride 1,
  no max-pool); 512-d features.
- ``small_cnn``: four conv-BN-ReLU blocks for 28x28 images (MNIST size); 4 * width features.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

archs: Registry[Callable[..., nn.Module]] = Registry("architecture")


class ShortcutA(nn.Module):
    """Option-A shortcut: ``x[:, :, ::2, ::2]`` with ``pad`` zero channels on each side."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockA(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convolutions."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA((planes - in_planes) // 2)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images; ``forward`` returns the 64-d pooled features."""

    def __init__(self, depth: int, in_chans: int = 3, num_classes: int = 0):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.feature_dim = 64
        self.conv1 = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.linear = nn.Linear(64, num_classes) if num_classes > 0 else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlockA(in_planes, planes, stride)]
        layers += [BasicBlockA(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``linear(forward(x))`` (only when built with ``num_classes > 0``)."""
        if self.linear is None:
            raise ValueError("this CIFAR ResNet was built without a classifier (num_classes=0)")
        return self.linear(self.forward(x))


def _register_cifar_resnet(depth: int) -> None:
    def build(in_chans: int = 3, num_classes: int = 0) -> CifarResNet:
        return CifarResNet(depth, in_chans=in_chans, num_classes=num_classes)

    doc = f"ResNet-{depth} for 32x32 images (He et al. 2016, option-A shortcuts), 64-d features"
    archs.register(f"resnet{depth}_cifar", doc)(build)


for _depth in (20, 32, 44, 56):
    _register_cifar_resnet(_depth)


@archs.register("resnet18_cifar")
def resnet18_cifar(in_chans: int = 3) -> nn.Module:
    """ResNet-18 with the CIFAR stem (3x3 conv stride 1, no max-pool), 512-d features."""
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.feature_dim = 512
    return model


class SmallCNN(nn.Module):
    """[conv3x3-BN-ReLU] x4 with 2x2 max-pools after blocks 1 and 2, global average pool."""

    def __init__(self, in_chans: int = 1, width: int = 32):
        super().__init__()
        chans = (width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        prev = in_chans
        for i, c in enumerate(chans):
            layers += [nn.Conv2d(prev, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            prev = c
        self.features = nn.Sequential(*layers)
        self.feature_dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


@archs.register("small_cnn")
def small_cnn(in_chans: int = 1, width: int = 32) -> SmallCNN:
    """Small conv net for 28x28 images (MNIST size), 4 * width (default 128) features."""
    return SmallCNN(in_chans=in_chans, width=width)


class TimmTrunk(nn.Module):
    """A timm model without its classifier (``num_classes=0``): pooled features, ``feature_dim`` wide."""

    def __init__(self, name: str, in_chans: int = 3, **kwargs):
        super().__init__()
        import timm

        try:
            self.model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ValueError(str(exc)) from None
        self.feature_dim = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@archs.register("timm")
def timm_trunk(name: str = "resnet18", in_chans: int = 3, **kwargs) -> TimmTrunk:
    """Any timm architecture, randomly initialised, for pretext training (``name``: timm model name;
    other keyword arguments go to ``timm.create_model``, e.g. ``img_size`` for a ViT)."""
    return TimmTrunk(name, in_chans=in_chans, **kwargs)
