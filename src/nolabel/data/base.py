"""The one dataset abstraction every loader returns.

A :class:`Dataset` is a sequence of items of one modality with an id per item and,
when known, integer labels and class names. Items are materialised lazily by
:meth:`Dataset.load` so a folder of a million images costs only its list of paths.

Modalities and what ``load(i)`` returns:

- ``"image"``: a ``PIL.Image.Image``, in RGB mode when the data set has any colour
  image and in L mode when all of its images are gray: decided once per data set, so
  every item of one data set has the same number of channels;
- ``"text"``: a ``str``;
- ``"vector"``: a 1-D ``numpy.float32`` array (precomputed features, tabular data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

MODALITIES = ("image", "text", "vector")


@dataclass
class Dataset:
    """Items of one modality, with ids and optional labels.

    ``source`` holds the raw storage: a list of file paths, a ``uint8`` array of
    images (N, H, W) or (N, H, W, C), a list of strings, or a float array (N, d).
    ``loader`` turns ``source[i]`` into the item; it defaults to the identity.
    """

    name: str
    modality: str
    source: Sequence[Any] | np.ndarray
    ids: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    loader: Callable[[Any], Any] | None = None
    skipped: list[str] = field(default_factory=list)
    origin: str = ""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if len(self.ids) != len(self.source):
            raise ValueError(f"{len(self.ids)} ids for {len(self.source)} items")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if len(self.labels) != len(self.source):
                raise ValueError(f"{len(self.labels)} labels for {len(self.source)} items")

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> Any:
        raw = self.source[index]
        return self.loader(raw) if self.loader is not None else raw

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None:
            return int(self.labels.max()) + 1
        return None

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "Dataset":
        """A new dataset holding ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.source, np.ndarray):
            source: Any = self.source[idx]
        else:
            source = [self.source[i] for i in idx]
        return Dataset(
            name=name or f"{self.name}[subset {len(idx)}]",
            modality=self.modality,
            source=source,
            ids=[self.ids[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            class_names=self.class_names,
            loader=self.loader,
            origin=self.origin,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary, stored beside every artifact made from this data."""
        return {
            "name": self.name,
            "modality": self.modality,
            "count": len(self),
            "num_classes": self.num_classes,
            "has_labels": self.labels is not None,
            "origin": self.origin,
        }


def array_to_pil(array: np.ndarray) -> Image.Image:
    """An (H, W) or (H, W, 1) array to an L image, an (H, W, 3) one to RGB (uint8, or float
    in [0, 1]); an array data set has one shape, hence one channel count."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a).convert("L" if a.ndim == 2 else "RGB")


def as_path(path: str | Path) -> Path:
    return Path(path).expanduser()
