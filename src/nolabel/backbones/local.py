"""``local:<file>``: a checkpoint on disk, built on an architecture of :data:`archs`.

Two formats:

(a) ``<stem>.safetensors`` with ``<stem>.json`` (or ``config.json``) beside it, as
    written by :func:`save_backbone_checkpoint`::

        {"arch": "resnet18_cifar", "arch_kwargs": {...}, "input_size": 32, "in_chans": 3,
         "mean": [...], "std": [...], "feature": "backbone"}

(b) a ``torch.save`` file (``.th``/``.pt``/``.pth``/``.bin``) read with
    ``weights_only=True``: a plain state dict or one under ``state_dict``/``model``,
    ``module.`` prefixes stripped; the config comes from a JSON beside it, or, for the
    CIFAR ResNets of He et al. (option A; e.g. the legacy ``resnet56-*.th`` files), is
    inferred: depth = 6 * (blocks in layer1) + 2, 32x32 inputs, ImageNet mean/std.

Weights load strictly. ``local:<file>?arch=timm:<name>`` instead loads the file into a
timm model (its classifier dropped). Preprocessing: resize the shorter side to
``input_size`` and centre-crop (bilinear unless the config names ``interpolation``),
grayscale when ``in_chans`` is 1, normalise with mean/std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import NolabelError
from ..io import atomic_path, read_json, write_json
from .archs import archs
from .image import ImageModelBackbone, transform_info
from .spec import Spec, adapter
from .state_dicts import file_sha256, read_state_dict
from .timm_ import build_timm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_SUFFIXES = (".th", ".pt", ".pth", ".bin", ".tar")
REQUIRED_KEYS = ("arch", "input_size", "in_chans", "mean", "std")
FEATURES = ("backbone",)


def config_path(path: str | Path) -> Path:
    """``<stem>.json`` beside a checkpoint (the name :func:`save_backbone_checkpoint` writes)."""
    return Path(path).with_suffix(".json")


def save_backbone_checkpoint(
    module: nn.Module,
    path: str | Path,
    arch: str,
    arch_kwargs: dict[str, Any],
    input_size: int,
    in_chans: int,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    dtype: Optional[torch.dtype] = None,
) -> Path:
    """Write ``path`` (.safetensors; floats cast to ``dtype`` when given) and ``<stem>.json``, atomically.

    ``module`` must be ``archs.get(arch)(**arch_kwargs)`` (trained); returns the config path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path.name}")
    archs.get(arch)
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean and std need {in_chans} values each, got {len(mean)} and {len(std)}")
    tensors = {}
    for key, value in module.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.clone().contiguous()
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "arch": arch})
    config = {
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "input_size": int(input_size),
        "in_chans": int(in_chans),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "feature": "backbone",
        "dim": int(getattr(module, "feature_dim")),
        "dtype": str(dtype or next((v.dtype for v in tensors.values() if v.is_floating_point()), torch.float32))
        .removeprefix("torch."),
    }
    json_path = config_path(path)
    write_json(json_path, config)
    return json_path


def infer_cifar_resnet(state: dict[str, torch.Tensor]) -> Optional[dict[str, Any]]:
    """The config of a CIFAR option-A ResNet state dict, or None when it is not one."""
    stem = state.get("conv1.weight")
    if stem is None or stem.ndim != 4 or stem.shape[0] != 16 or any(k.startswith("layer4.") for k in state):
        return None
    blocks = {k.split(".")[1] for k in state if k.startswith("layer1.") and k.endswith(".conv1.weight")}
    arch = f"resnet{6 * len(blocks) + 2}_cifar"
    if arch not in archs:
        return None
    in_chans = int(stem.shape[1])
    num_classes = int(state["linear.weight"].shape[0]) if "linear.weight" in state else 0
    return {"arch": arch, "arch_kwargs": {"in_chans": in_chans, "num_classes": num_classes}, "input_size": 32,
            "in_chans": in_chans, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "feature": "backbone"}


def read_config(path: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The JSON beside ``path`` (``<stem>.json``, then ``config.json``, holding an ``arch``), else inferred."""
    for candidate in (config_path(path), path.parent / "config.json"):
        if candidate.is_file():
            config = read_json(candidate)
            if isinstance(config, dict) and "arch" in config:
                missing = [k for k in REQUIRED_KEYS if k not in config]
                if missing:
                    raise NolabelError(f"{candidate} lacks {', '.join(missing)}")
                return config
    config = infer_cifar_resnet(state)
    if config is None:
        raise NolabelError(
            f"cannot tell the architecture of {path}: write {config_path(path).name} beside it "
            f'({{"arch": one of {", ".join(archs.names())}, "arch_kwargs", "input_size", "in_chans", "mean", "std"}}) '
            "or use local:PATH?arch=timm:NAME"
        )
    return config


def load_backbone_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(module in eval mode with the checkpoint's weights loaded strictly, config)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NolabelError(f"checkpoint {path} not found")
    if path.suffix != ".safetensors" and path.suffix not in TORCH_SUFFIXES:
        raise NolabelError(f"{path.name}: expected a .safetensors or torch ({', '.join(TORCH_SUFFIXES)}) file")
    state = read_state_dict(path)
    config = read_config(path, state)
    feature = config.get("feature", "backbone")
    if feature not in FEATURES:
        raise NolabelError(f"{path}: feature {feature!r} is not supported; use one of {', '.join(FEATURES)}")
    try:
        module = archs.get(config["arch"])(**config.get("arch_kwargs", {}))
    except TypeError as exc:
        raise NolabelError(f"{path}: bad arch_kwargs for {config['arch']}: {exc}") from None
    # BatchNorm fills num_batches_tracked itself for state dicts saved before it existed
    expected = {k for k in module.state_dict() if not k.endswith("num_batches_tracked") or k in state}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise NolabelError(
            f"{path} does not fit {config['arch']}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise NolabelError(f"{path} does not fit {config['arch']}: {detail}") from None
    module.eval()
    return module, config


def local_transform(config: dict[str, Any]):
    """Grayscale if in_chans == 1, resize shorter side, centre crop, to tensor, normalise."""
    from torchvision import transforms as T

    size = int(config["input_size"])
    in_chans = int(config["in_chans"])
    if in_chans not in (1, 3):
        raise NolabelError(f"local checkpoints take 1 or 3 input channels, config says {in_chans}")
    try:
        interpolation = T.InterpolationMode(config.get("interpolation", "bilinear"))
    except ValueError:
        raise NolabelError(f"unknown interpolation {config.get('interpolation')!r} in the checkpoint config") from None
    steps = [T.Grayscale(1)] if in_chans == 1 else []
    steps += [T.Resize(size, interpolation=interpolation, antialias=True), T.CenterCrop(size), T.ToTensor(),
              T.Normalize(config["mean"], config["std"])]
    return T.Compose(steps), interpolation.value


@adapter("local", "local:<file>[?arch=timm:<name>]", ("image",), ("arch",))
def _build(spec: Spec, modality: Optional[str]) -> ImageModelBackbone:
    """checkpoint on disk: .safetensors + JSON config, or a torch file (CIFAR ResNets inferred)."""
    path = Path(spec.body).expanduser()
    if not spec.body or not path.is_file():
        raise NolabelError(f"local checkpoint {spec.body!r} not found; give a file: local:PATH")
    arch = spec.options.get("arch")
    if arch is not None:
        if not arch.startswith("timm:") or len(arch) == 5:
            raise NolabelError(f"arch={arch} in {spec.text!r}: only arch=timm:<model name> is supported")
        backbone = build_timm(spec.text, arch[5:], pretrained=True, file=str(path))
        backbone.extra["sha256"] = file_sha256(path)
        return backbone
    module, config = load_backbone_checkpoint(path)
    transform, interpolation = local_transform(config)
    size = int(config["input_size"])
    preprocessing = {
        "input_size": [int(config["in_chans"]), size, size],
        "resize": f"shorter side to {size}",
        "crop": f"center {size}",
        "interpolation": interpolation,
        "mean": list(config["mean"]),
        "std": list(config["std"]),
        "transform": transform_info(transform),
    }
    extra = {"checkpoint": str(path), "sha256": file_sha256(path), "arch": config["arch"],
             "arch_kwargs": config.get("arch_kwargs", {})}
    return ImageModelBackbone(spec.text, module, transform, module.feature_dim, preprocessing, extra)
