"""``clip:<arch>/<pretrained>``: an open_clip model, image or text tower.

Images: ``encode_image`` of open_clip's evaluation transform (``image_transform_v2``
of the model's preprocess config: size, resize mode, interpolation, mean, std).
Texts: ``encode_text`` of the model's tokenizer output. Features are not normalised.
``<pretrained>`` is an open_clip tag (``open_clip.list_pretrained()``) or a checkpoint
file; ``clip:local-dir:<dir>`` loads a folder holding ``open_clip_config.json`` and
its weights, ``clip:hf-hub:<org/repo>`` a hub repo.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch
from PIL import Image

from ..errors import NolabelError
from ..extras import require
from . import hub
from .base import Backbone
from .image import as_pil, freeze, transform_info
from .spec import Spec, adapter

#: open_clip's preprocess-config keys, copied from a pretrained tag onto a cached file
_PREPROCESS_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")


def _cached_weights(cfg: dict[str, Any]) -> Optional[str]:
    """A local copy of a tag's weights: the HF hub cache, then open_clip's ``~/.cache/clip``."""
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        found = hub.cached_hf_file(repo, [*hub.safe_alternatives(filename), filename])
        if found:
            return found
    if cfg.get("url"):
        return hub.cached_url_file(cfg["url"], os.path.expanduser("~/.cache/clip"))
    return None


def _resolve(spec: str, body: str) -> tuple[str, Optional[str], dict[str, Any]]:
    """(model name, pretrained tag or file, forced preprocess config) for ``open_clip.create_model``."""
    open_clip = require("open_clip", "clip")

    if body.startswith("local-dir:"):
        return body, None, {}
    if body.startswith("hf-hub:"):
        if not hub.hf_online():
            raise NolabelError(
                f"cannot reach the Hugging Face hub for clip:{body}; download the repo and pass clip:local-dir:DIR"
            )
        return body, None, {}
    arch, _, tag = body.partition("/")
    if arch not in open_clip.list_models():
        raise NolabelError(f"unknown open_clip model {arch!r}; see open_clip.list_models()")
    if not tag:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise NolabelError(f"clip spec needs weights: clip:{arch}/<tag or file>; tags for {arch}: {tags}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        if os.path.isfile(tag):
            return arch, tag, {}
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise NolabelError(f"{tag!r} is neither a pretrained tag of {arch} nor a file; tags: {tags}")
    cached = _cached_weights(cfg)
    if cached:
        return arch, cached, {k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg}
    online = hub.hf_online() if cfg.get("hf_hub") else hub.reachable(cfg.get("url", ""))
    if not online:
        raise hub.no_weights_error(spec, [hub.hf_cache_dir(), os.path.expanduser("~/.cache/clip")], f"clip:{arch}/FILE")
    return arch, tag, {}


class OpenClipBackbone(Backbone):
    """An open_clip model embedding images (``encode_image``) or texts (``encode_text``)."""

    def __init__(self, spec: str, model: torch.nn.Module, modality: str, transform: Any, tokenizer: Any,
                 preprocessing: dict[str, Any]):
        super().__init__()
        self.spec = spec
        self.model = freeze(model)
        self.modality = modality
        self.transform = transform
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        probe = Image.new("RGB", (64, 64)) if modality == "image" else "a photo"
        self.dim = int(self.embed([probe]).shape[1])

    def module(self) -> torch.nn.Module:
        return self.model

    def preprocess(self, item: Any) -> Any:
        if self.modality == "image":
            return self.transform(as_pil(item))
        return str(item)

    def forward_batch(self, batch: Any) -> torch.Tensor:
        if self.modality == "image":
            return self.model.encode_image(batch)
        tokens = self.tokenizer(list(batch)).to(self.device)
        return self.model.encode_text(tokens)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocessing": self.preprocessing}


@adapter("clip", "clip:<arch>/<tag or file> | clip:local-dir:<dir>", ("image", "text"))
def _build(spec: Spec, modality: Optional[str]) -> OpenClipBackbone:
    """open_clip image or text tower, e.g. clip:ViT-B-32/laion2b_s34b_b79k (see open_clip.list_pretrained())."""
    open_clip = require("open_clip", "clip")
    from huggingface_hub.errors import HfHubHTTPError
    from open_clip.transform import PreprocessCfg, image_transform_v2

    modality = modality or "image"
    name, pretrained, force = _resolve(spec.text, spec.body)
    places = [hub.hf_cache_dir(), os.path.expanduser("~/.cache/clip")]
    try:
        model = open_clip.create_model(name, pretrained, force_preprocess_cfg=force or None)
        tokenizer = open_clip.get_tokenizer(name) if modality == "text" else None
    except (OSError, HfHubHTTPError) as exc:
        raise hub.download_error(spec.text, exc, places, "clip:ARCH/FILE") from None
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise NolabelError(f"open_clip cannot build {spec.text}: {first}") from None
    pp = PreprocessCfg(**model.visual.preprocess_cfg)
    if modality == "image":
        transform = image_transform_v2(pp, is_train=False)
        preprocessing: dict[str, Any] = {
            "input_size": list(pp.input_size),
            "resize_mode": pp.resize_mode,
            "interpolation": pp.interpolation,
            "mean": list(pp.mean),
            "std": list(pp.std),
            "transform": transform_info(transform),
        }
    else:
        transform = None
        preprocessing = {
            "tokenizer": type(tokenizer).__name__,
            "context_length": getattr(tokenizer, "context_length", None),
        }
    return OpenClipBackbone(spec.text, model, modality, transform, tokenizer, preprocessing)
