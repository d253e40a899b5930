"""The estimator contract every clustering method follows (scikit-learn style).

``ClusterMethod(n_clusters, ..., seed)``: hyper-parameters only in ``__init__``;
``fit(embeddings, neighbors=None) -> self`` sets ``labels_``;
``predict_proba(embeddings) -> (N, K)``, ``predict(embeddings) -> (N,)``,
``predict_top(embeddings, k) -> ((N, k) clusters, (N, k) probabilities)`` (bounded memory);
``save(dir)`` writes ``config.json`` (+ ``state.safetensors``) atomically and
``ClusterMethod.load(dir)`` restores a fitted estimator.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import NolabelError
from ..io import atomic_path, read_json, write_json
from ..memory import CHUNK_BYTES, as_float32, row_chunks


class ClusterMethod(ABC):
    """Base class: subclasses implement ``_fit``, ``_predict_proba`` and state I/O."""

    #: registry name, set by ``methods.register``
    name: ClassVar[str] = ""
    #: whether ``fit`` needs the k-NN of the embeddings
    needs_neighbors: ClassVar[bool] = False

    def __init__(self, n_clusters: int = 10, seed: int = 0):
        self.n_clusters = n_clusters
        self.seed = seed

    # ---- the public contract -------------------------------------------------------
    def fit(self, embeddings: np.ndarray, neighbors: np.ndarray | None = None) -> "ClusterMethod":
        x = validate_embeddings(embeddings, self.n_clusters)
        if self.needs_neighbors:
            if neighbors is None:
                raise NolabelError(f"method {self.name!r} needs neighbours: run `nolabel neighbors` first or pass --neighbors")
            neighbors = validate_neighbors(neighbors, len(x))
        self._fit(x, neighbors)
        self.labels_ = self.predict(x)
        return self

    @classmethod
    def neighbors_needed(cls, params: dict[str, Any]) -> int:
        """How many mined neighbours ``fit`` reads with these parameters (0: none), known
        from the class alone (no estimator is built): ``n_neighbors`` when it needs them."""
        if not cls.needs_neighbors:
            return 0
        return int(params.get("n_neighbors", default_param(cls, "n_neighbors") or 20))

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self._predict_proba(validate_embeddings(embeddings, None))

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        return self.predict_proba(embeddings).argmax(axis=1).astype(np.int64)

    def predict_top(self, embeddings: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``min(k, K)`` most probable clusters of every row, most probable first, and their
        probabilities: ``(N, k)`` int64 and float32. Computed in row chunks of ``predict_proba``, so
        memory stays O(N k) where ``predict_proba`` holds (N, K) (5 GB at 1.28M rows and K = 1,000)."""
        self._check_fitted()
        x = validate_embeddings(embeddings, None)
        n_out = self._predict_proba(np.asarray(x[:1], dtype=np.float32)).shape[1]  # K, overclustering included
        step = max(1, CHUNK_BYTES // (4 * max(x.shape[1], n_out)))
        clusters, probs = [], []
        for start in range(0, len(x), step):
            p = self._predict_proba(np.asarray(x[start : start + step], dtype=np.float32))
            top = np.argsort(-p, axis=1, kind="stable") if k >= p.shape[1] else \
                np.argpartition(-p, k - 1, axis=1)[:, :k]
            top_p = np.take_along_axis(p, top, axis=1)
            order = np.argsort(-top_p, axis=1, kind="stable")
            clusters.append(np.take_along_axis(top, order, axis=1).astype(np.int64))
            probs.append(np.take_along_axis(top_p, order, axis=1).astype(np.float32))
        return np.concatenate(clusters), np.concatenate(probs)

    def fit_predict(self, embeddings: np.ndarray, neighbors: np.ndarray | None = None) -> np.ndarray:
        return self.fit(embeddings, neighbors).labels_

    # ---- parameters and persistence ------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._state_tensors().items()}
        with atomic_path(path / "state.safetensors", suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(path / "config.json", {"method": self.name, "params": self.get_params(), "extra": self._state_extra()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ClusterMethod":
        from . import get  # the registry, imported late to avoid a cycle

        path = Path(path)
        if not (path / "config.json").exists():
            raise NolabelError(f"no fitted method at {path} (config.json missing)")
        config = read_json(path / "config.json")
        klass = get(config["method"]) if cls is ClusterMethod else cls
        obj = klass(**config["params"])
        obj._load_state(load_file(str(path / "state.safetensors")), config.get("extra", {}))
        return obj

    # ---- for subclasses ------------------------------------------------------------
    @abstractmethod
    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        """Learn from validated (N, d) float32 embeddings (and (N, k) neighbours)."""

    @abstractmethod
    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Validated (N, d) embeddings -> (N, K) probabilities (rows sum to 1)."""

    @abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted state as named tensors (empty before ``fit``)."""

    def _state_extra(self) -> dict[str, Any]:
        return {}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        pass

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NolabelError(f"{self.name or type(self).__name__} is not fitted yet: call fit first")

    def _is_fitted(self) -> bool:
        return bool(self._state_tensors())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def default_param(cls: type, name: str) -> Any:
    """The default of ``cls.__init__``'s parameter ``name`` (None when it has none)."""
    param = inspect.signature(cls.__init__).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def validate_embeddings(embeddings: Any, n_clusters: int | None) -> np.ndarray:
    """Check a (N, d) finite float matrix (and 2 <= K <= N when ``n_clusters`` is given).

    Returns float32 rows in memory when they fit :data:`nolabel.memory.IN_MEMORY_BYTES`; a larger array
    (a memory map of any float dtype) is returned unchanged, checked in row chunks."""
    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if x.ndim != 2:
        raise NolabelError(f"embeddings must be a 2-D array (N, d), got shape {x.shape}")
    if len(x) == 0:
        raise NolabelError("embeddings are empty (0 samples)")
    if x.dtype.kind not in "fiub":
        raise NolabelError(f"embeddings must be numbers, got dtype {x.dtype}")
    x = as_float32(x)
    bad = np.concatenate([start + np.flatnonzero(~np.isfinite(rows).all(axis=1)) for start, rows in row_chunks(x)])
    if len(bad):
        raise NolabelError(f"embeddings hold NaN or inf in {len(bad)} rows (first: {bad[0]}); re-extract the features")
    if n_clusters is not None:
        if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
            raise NolabelError(f"the number of clusters must be an integer >= 2, got {n_clusters!r}")
        if n_clusters > len(x):
            raise NolabelError(f"cannot make {n_clusters} clusters from {len(x)} samples: lower --k")
    return x


def validate_neighbors(neighbors: Any, n: int) -> np.ndarray:
    """Check an (N, k) integer index matrix whose entries lie in [0, N)."""
    nb = np.asarray(neighbors)
    if nb.ndim != 2 or len(nb) != n:
        raise NolabelError(f"neighbours must have shape ({n}, k), got {nb.shape}")
    if nb.size and (nb.min() < 0 or nb.max() >= n):
        raise NolabelError("neighbour indices fall outside the embeddings: were they mined on other data?")
    return nb.astype(np.int64, copy=False)

