"""``hf:<repo or folder>``: a Hugging Face transformers model, image or text.

Image models (an image processor is present): the processor's own resize, crop,
rescale and normalisation; features = the model's image embedding when it has one
(``get_image_features``, e.g. CLIP), else ``pooler_output`` when the model returns one
(DINOv2: the layer-normed CLS token), else the CLS token ``last_hidden_state[:, 0]``.
Text models (a tokenizer, no image processor): ``get_text_features`` when present, else
the mean of ``last_hidden_state`` over non-padding tokens. ``modality`` forces a side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image

from ..errors import NolabelError
from ..extras import require
from . import hub
from .base import Backbone
from .image import as_pil, freeze
from .spec import Spec, adapter


def _features(out: Any) -> tuple[torch.Tensor, str]:
    """(features, how): a tensor as is; else ``pooler_output`` when present; else the CLS token."""
    if isinstance(out, torch.Tensor):
        return out, "output"
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1), "pooler_output"
    return out.last_hidden_state[:, 0], "cls_token"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_t mask_t h_t / sum_t mask_t over the token axis."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class HFBackbone(Backbone):
    """A transformers ``AutoModel`` with its image processor (images) or tokenizer (texts)."""

    def __init__(self, spec: str, model: torch.nn.Module, modality: str, processor: Any, max_length: int,
                 preprocessing: dict[str, Any]):
        super().__init__()
        self.spec = spec
        self.model = freeze(model)
        self.modality = modality
        self.processor = processor
        self.max_length = max_length
        self.preprocessing = preprocessing
        self.pooling = ""
        probe = Image.new("RGB", (64, 64)) if modality == "image" else "a sentence"
        self.dim = int(self.embed([probe]).shape[1])

    def module(self) -> torch.nn.Module:
        return self.model

    def preprocess(self, item: Any) -> Any:
        if self.modality == "image":
            return self.processor(images=as_pil(item), return_tensors="pt")["pixel_values"][0]
        return str(item)

    def forward_batch(self, batch: Any) -> torch.Tensor:
        if self.modality == "image":
            if hasattr(self.model, "get_image_features"):
                features, how = _features(self.model.get_image_features(pixel_values=batch))
                how = "get_image_features." + how
            else:
                features, how = _features(self.model(pixel_values=batch))
        else:
            tokens = self.processor(list(batch), padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(self.device)
            if hasattr(self.model, "get_text_features"):
                features, how = _features(self.model.get_text_features(**tokens))
                how = "get_text_features." + how
            else:
                features = mean_pool(self.model(**tokens).last_hidden_state, tokens["attention_mask"])
                how = "mean_of_tokens"
        self.pooling = how
        return features

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pooling": self.pooling, "preprocessing": self.preprocessing}


def _image_processor_info(processor: Any) -> dict[str, Any]:
    keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std")
    info = processor.to_dict()
    return {"processor": type(processor).__name__, **{k: info[k] for k in keys if k in info}}


@adapter("hf", "hf:<repo or folder>", ("image", "text"))
def _build(spec: Spec, modality: Optional[str]) -> HFBackbone:
    """transformers AutoModel, e.g. hf:facebook/dinov2-small (pooler output, else CLS; texts: mean of tokens)."""
    transformers = require("transformers", "hf")
    AutoConfig, AutoImageProcessor = transformers.AutoConfig, transformers.AutoImageProcessor
    AutoModel, AutoTokenizer = transformers.AutoModel, transformers.AutoTokenizer

    source = spec.body
    if not source:
        raise NolabelError("hf spec needs a repo id or a folder, e.g. hf:facebook/dinov2-small")
    local = Path(source).expanduser().is_dir()
    if local:
        source = str(Path(source).expanduser())
    offline = not local and not hub.hf_online()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as exc:
        if offline:
            raise hub.no_weights_error(spec.text, [hub.hf_cache_dir()], "hf:FOLDER") from None
        first = str(exc).strip().splitlines()[0]
        raise NolabelError(f"cannot load {spec.text}: {first}") from None
    processor = None
    if modality in (None, "image"):
        try:
            processor = AutoImageProcessor.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError, KeyError):
            if modality == "image":
                raise NolabelError(
                    f"{spec.text} has no image processor (preprocessor_config.json); it is not an image model"
                ) from None
    modality = "image" if processor is not None else "text"
    if modality == "text":
        try:
            processor = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise NolabelError(f"{spec.text} has neither an image processor nor a tokenizer: {first}") from None
    try:
        model = AutoModel.from_pretrained(source, config=config, local_files_only=offline)
    except OSError as exc:
        if offline:
            raise hub.no_weights_error(spec.text, [hub.hf_cache_dir()], "hf:FOLDER") from None
        raise hub.download_error(spec.text, exc, [hub.hf_cache_dir()], "hf:FOLDER") from None
    if modality == "image":
        preprocessing = _image_processor_info(processor)
        max_length = 0
    else:
        limits = [processor.model_max_length, getattr(config, "max_position_embeddings", None) or 512, 512]
        max_length = int(min(v for v in limits if v))
        preprocessing = {"tokenizer": type(processor).__name__, "max_length": max_length}
    return HFBackbone(spec.text, model, modality, processor, max_length, preprocessing)
