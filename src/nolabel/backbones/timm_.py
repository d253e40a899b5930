"""``timm:<model>``: any timm model with its classifier removed (``num_classes=0``).

Features are timm's pooled pre-logits (``model(x)`` with ``num_classes=0``).
Preprocessing comes from ``timm.data.resolve_data_config`` / ``create_transform``
(input size, interpolation, crop_pct, crop_mode, mean, std of the pretrained config).
``?pretrained=false`` builds the architecture with random weights; ``?weights=PATH``
loads a local state dict (torch file or .safetensors) strictly instead, renamed from the
``efficientnet_pytorch`` layout when it is in that layout (:mod:`.state_dicts`);
``?size=S`` sets the input size (resize to S / crop_pct, centre crop S); ``?crop=F`` the crop
fraction crop_pct (1 keeps the whole image: resize to S, no border cut off).

Images smaller than the input (shorter side below S) keep their whole frame by default: resize to S,
no crop (crop_pct 1), where a larger photo gets the config's resize to S / crop_pct and centre crop.
The centre crop frames a photo larger than the input; a thumbnail is upsampled either way, and the
crop would only cut off a border of its content. Measured (``benchmarks/results/extract_crop.md``,
EfficientNet-Lite0, 1,000 CIFAR-10 test images of 32 px, labels only score): 20-NN purity 44.6 %
against 43.0 % at 224 px, 46.0 % against 44.6 % at 160 px. ``?crop=F`` applies F to every image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import NolabelError
from . import hub
from .image import ImageModelBackbone, transform_info
from .spec import Spec, adapter
from .state_dicts import file_sha256, load_into, read_state_dict


def _cached_weights(cfg: Any) -> Optional[str]:
    """A local copy of the config's weights: HF hub cache first, then torch hub's."""
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["pytorch_model.bin"]
        names = [alt for n in names for alt in hub.safe_alternatives(n)] + names
        found = hub.cached_hf_file(repo, names, revision or None)
        if found:
            return found
    if cfg.url:
        return hub.cached_url_file(cfg.url, hub.torch_checkpoints_dir())
    return None


def build_timm(spec: str, name: str, pretrained: bool = True, file: Optional[str] = None,
               size: Optional[int] = None, crop: Optional[float] = None) -> ImageModelBackbone:
    """timm model ``name`` without classifier; weights from ``file`` when given (loaded strictly), else timm's own."""
    import timm
    import timm.data
    from huggingface_hub.errors import HfHubHTTPError

    if not timm.is_model(name):
        raise NolabelError(f"unknown timm model {name!r}; see timm.list_models('*{name.split('.')[0][:8]}*')")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as exc:
        raise NolabelError(f"timm: {exc} (see timm.list_pretrained('{name.split('.')[0]}*'))") from None
    if file is not None:
        return _with_file(spec, name, file, size, crop)
    places = [hub.hf_cache_dir(), hub.torch_checkpoints_dir()]
    weights = None
    if pretrained:
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            raise NolabelError(f"timm model {name} has no pretrained weights; use timm:{name}?pretrained=false")
        weights = _cached_weights(cfg)
        if weights is None:
            # timm prefers the hub when the config names a hub repo
            online = hub.hf_online() if cfg.hf_hub_id else hub.reachable(cfg.url)
            if not online:
                raise hub.no_weights_error(spec, places, f"local:FILE?arch=timm:{name}")
    overlay = {"file": str(weights)} if weights else None
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, pretrained_cfg_overlay=overlay)
    except (OSError, HfHubHTTPError) as exc:
        raise hub.download_error(spec, exc, places, f"local:FILE?arch=timm:{name}") from None
    extra = {"weights": str(weights) if weights else ("timm default" if pretrained else None)}
    return _wrap(spec, model, extra, size, crop)


def _with_file(spec: str, name: str, file: str, size: Optional[int], crop: Optional[float]) -> ImageModelBackbone:
    """The architecture with random weights, then ``file`` loaded strictly (classifier dropped)."""
    import timm

    path = Path(file).expanduser()
    if not path.is_file():
        raise NolabelError(f"weights file {file} not found for {spec}")
    model = timm.create_model(name, pretrained=False)
    count = load_into(model, read_state_dict(path), str(path))
    extra = {"weights": str(path), "sha256": file_sha256(path), "tensors_loaded": count}
    return _wrap(spec, model, extra, size, crop)


def _wrap(spec: str, model: Any, extra: dict[str, Any], size: Optional[int], crop: Optional[float]) -> ImageModelBackbone:
    """The backbone with the transform of the model's pretrained config (input size replaced by ``size``,
    crop fraction by ``crop``)."""
    import timm.data

    args = {"input_size": (3, size, size)} if size else {}
    if crop:
        args["crop_pct"] = crop
    data_cfg = timm.data.resolve_data_config(args, model=model)
    transform = timm.data.create_transform(**data_cfg, is_training=False)
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    side = int(data_cfg["input_size"][-1])
    small = None
    if not crop and data_cfg["crop_pct"] < 1:
        small = timm.data.create_transform(**{**data_cfg, "crop_pct": 1.0}, is_training=False)
    preprocessing = {
        "input_size": list(data_cfg["input_size"]),
        "interpolation": data_cfg["interpolation"],
        "crop_pct": data_cfg["crop_pct"],
        "crop_mode": data_cfg.get("crop_mode", "center"),
        "mean": list(data_cfg["mean"]),
        "std": list(data_cfg["std"]),
        "transform": transform_info(transform),
    }
    if small is not None:
        preprocessing["below_input_size"] = transform_info(small)
    return ImageModelBackbone(spec, model, transform, dim, preprocessing, extra, small, side)


@adapter("timm", "timm:<model>[?pretrained=false|weights=PATH][&size=<px>][&crop=<fraction>]", ("image",),
         ("pretrained", "weights", "size", "crop"))
def _build(spec: Spec, modality: Optional[str]) -> ImageModelBackbone:
    """timm model without its classifier, e.g. timm:vit_small_patch16_224.dino (see timm.list_models())."""
    if not spec.body:
        raise NolabelError("timm spec needs a model name, e.g. timm:vit_small_patch16_224.dino")
    weights = spec.options.get("weights")
    return build_timm(spec.text, spec.body, pretrained=spec.option_bool("pretrained", True), file=weights,
                      size=spec.option_int("size", 16, 1024), crop=spec.option_fraction("crop"))
