"""Benchmarks in their official file formats: MNIST / Fashion-MNIST, CIFAR-10/100, STL-10.

- MNIST, Fashion-MNIST: IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
  (big-endian header: magic 0x00000803 for images, 0x00000801 for labels, then one
  uint32 per dimension, then uint8 data).
- CIFAR-10: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``);
  CIFAR-100: ``cifar-100-python/`` (``train``, ``test``, ``meta``). Each batch is a
  pickled dict whose ``data`` is (N, 3072) uint8, each row a 3x32x32 image channel by
  channel, row-major. ``cifar100-20`` uses the 20 coarse labels (superclasses).
  The pickles are read with an unpickler that admits only numpy arrays.
- STL-10: ``stl10_binary/{train,test,unlabeled}_X.bin`` (uint8, per image 3 channels of
  96x96 in column-major order), ``*_y.bin`` labels 1..10, ``class_names.txt``. Images
  are memory-mapped, so the 100,000 unlabeled images cost no memory until used.

``root`` is the folder holding the files (for CIFAR/STL also its parent). When the
unpacked folder is missing but the official archive lies in ``root`` it is unpacked;
with ``download=True`` missing files are fetched first (see :mod:`.download`).
Images are uint8 arrays in ``Dataset.source``, loaded with ``array_to_pil``.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NolabelError
from .base import Dataset, array_to_pil, as_path
from .download import SOURCES, extract_archive, fetch_benchmark

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def _split_error(split: str, allowed: tuple[str, ...], what: str) -> NolabelError:
    return NolabelError(f"{what} has no split {split!r}; use one of {', '.join(allowed)}")


def _ids(split: str, n: int) -> list[str]:
    width = len(str(max(n - 1, 0)))
    return [f"{split}/{i:0{width}d}" for i in range(n)]


# ---- MNIST / Fashion-MNIST ---------------------------------------------------------------
def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """The uint8 array in IDX file ``path`` (gzip or raw), checking its magic number and size."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise NolabelError(f"{path} is a corrupt gzip file ({exc}); download it again") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "none (file too short)" if found is None else f"0x{found:08x}"
        raise NolabelError(f"{path} is not an IDX file of the expected kind: magic number {shown}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NolabelError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise NolabelError(f"{path} is truncated or corrupt: {len(raw)} bytes where its header {dims} promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(root: Path, stem: str, kind: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    source = "fashion-mnist" if kind == "fashion" else "mnist"
    raise NolabelError(
        f"no {stem}.gz in {root}; fetch it with nolabel.data.download.fetch_benchmark({source!r}, DIR) or put it there yourself"
    )


def load_mnist(root: str | os.PathLike, split: str = "test", kind: str = "mnist", download: bool = False) -> Dataset:
    """MNIST (``kind="mnist"``) or Fashion-MNIST (``kind="fashion"``) from IDX files in ``root``."""
    if kind not in ("mnist", "fashion"):
        raise NolabelError(f"unknown MNIST kind {kind!r}; use 'mnist' or 'fashion'")
    if split not in ("train", "test"):
        raise _split_error(split, ("train", "test"), kind)
    root = as_path(root)
    if download:
        fetch_benchmark("fashion-mnist" if kind == "fashion" else "mnist", root)
    prefix = "t10k" if split == "test" else "train"
    images_path = _idx_file(root, f"{prefix}-images-idx3-ubyte", kind)
    labels_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte", kind)
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise NolabelError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    if labels.size and labels.max() >= 10:
        raise NolabelError(f"{labels_path} has label {labels.max()}; MNIST labels are 0..9")
    name = "fashion-mnist" if kind == "fashion" else "mnist"
    return Dataset(
        name=f"{name}-{split}",
        modality="image",
        source=images,
        ids=_ids(split, len(images)),
        labels=labels,
        class_names=list(FASHION_CLASSES if kind == "fashion" else MNIST_CLASSES),
        loader=array_to_pil,
        origin=str(root),
    )


# ---- shared: locating the unpacked folder ------------------------------------------------
def _benchmark_dir(root: str | os.PathLike, key: str, marker: str, title: str, download: bool) -> Path:
    """The unpacked official folder of benchmark ``key`` in (or at) ``root``."""
    root = as_path(root)
    resource = SOURCES[key][0]
    assert resource.folder is not None
    if (root / marker).is_file():
        return root
    folder = root / resource.folder
    if not folder.is_dir():
        if (root / resource.filename).is_file():
            extract_archive(root / resource.filename, root)
        elif download:
            fetch_benchmark(key, root)
        else:
            raise NolabelError(
                f"no {title} in {root}: expected {resource.folder}/ or {resource.filename} there; "
                f"fetch it with nolabel.data.download.fetch_benchmark({key!r}, DIR) or put {resource.filename} there yourself"
            )
    if not (folder / marker).is_file():
        raise NolabelError(f"{folder} is incomplete (no {marker}); delete it and unpack {resource.filename} again")
    return folder


def _part(folder: Path, name: str, archive: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise NolabelError(f"{path} is missing; {folder} is incomplete: delete it and unpack {archive} again")
    return path


# ---- CIFAR --------------------------------------------------------------------------------
_NUMPY_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(path: str | os.PathLike) -> dict[bytes, Any]:
    """One official CIFAR pickle (a Python 2 pickle; keys come back as bytes)."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise NolabelError(f"{path} is not an official CIFAR pickle ({exc}); unpack the archive again") from None
    if not isinstance(obj, dict):
        raise NolabelError(f"{path} is not an official CIFAR pickle (holds a {type(obj).__name__}, not a dict)")
    return obj


def _field(batch: dict[bytes, Any], key: str, path: Path) -> Any:
    if key.encode() not in batch:
        raise NolabelError(f"{path} has no {key!r} entry; it is not an official CIFAR pickle")
    return batch[key.encode()]


_CIFAR = {
    # name: (download key, marker file, splits -> batch files, label key, meta file, class-name key)
    "cifar10": ("cifar10", "batches.meta", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "labels", "batches.meta", "label_names"),
    "cifar100": ("cifar100", "meta", {"train": ["train"], "test": ["test"]}, "fine_labels", "meta", "fine_label_names"),
    "cifar100-20": ("cifar100", "meta", {"train": ["train"], "test": ["test"]}, "coarse_labels", "meta", "coarse_label_names"),
}


def load_cifar(root: str | os.PathLike, name: str = "cifar10", split: str = "test", download: bool = False) -> Dataset:
    """CIFAR-10, CIFAR-100 (100 fine classes) or CIFAR-100-20 (20 superclasses) from the official pickles."""
    if name not in _CIFAR:
        raise NolabelError(f"unknown CIFAR variant {name!r}; use one of {', '.join(_CIFAR)}")
    key, marker, splits, label_key, meta_file, names_key = _CIFAR[name]
    if split not in splits:
        raise _split_error(split, tuple(splits), name)
    folder = _benchmark_dir(root, key, marker, name.upper(), download)
    archive = SOURCES[key][0].filename
    data, labels = [], []
    for batch_name in splits[split]:
        path = _part(folder, batch_name, archive)
        batch = read_cifar_pickle(path)
        x = np.asarray(_field(batch, "data", path))
        y = np.asarray(_field(batch, label_key, path), dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
            raise NolabelError(f"{path} holds data {x.dtype} {x.shape} with {len(y)} labels; expected uint8 (N, 3072)")
        data.append(x)
        labels.append(y)
    meta_path = _part(folder, meta_file, archive)
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in _field(read_cifar_pickle(meta_path), names_key, meta_path)]
    y = np.concatenate(labels)
    if y.size and (y.min() < 0 or y.max() >= len(class_names)):
        raise NolabelError(f"labels in {folder} run to {y.max()} but {meta_path} names {len(class_names)} classes")
    images = np.ascontiguousarray(np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return Dataset(
        name=f"{name}-{split}",
        modality="image",
        source=images,
        ids=_ids(split, len(images)),
        labels=y,
        class_names=class_names,
        loader=array_to_pil,
        origin=str(folder),
    )


# ---- STL-10 -------------------------------------------------------------------------------
STL10_SIDE = 96


def load_stl10(root: str | os.PathLike, split: str = "test", download: bool = False) -> Dataset:
    """STL-10 ``train`` (5,000), ``test`` (8,000, labelled) or ``unlabeled`` (100,000) from the binaries."""
    splits = ("train", "test", "unlabeled")
    if split not in splits:
        raise _split_error(split, splits, "stl10")
    folder = _benchmark_dir(root, "stl10", f"{split}_X.bin", "STL-10", download)
    archive = SOURCES["stl10"][0].filename
    x_path = _part(folder, f"{split}_X.bin", archive)
    per_image = 3 * STL10_SIDE * STL10_SIDE
    size = x_path.stat().st_size
    if size == 0 or size % per_image:
        raise NolabelError(f"{x_path} has {size} bytes, not a whole number of 96x96x3 images; unpack {archive} again")
    n = size // per_image
    # Per image: channel planes, each 96x96 column-major -> (N, C, W, H) -> (N, H, W, C).
    images = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(n, 3, STL10_SIDE, STL10_SIDE)).transpose(0, 3, 2, 1)
    labels = None
    if split != "unlabeled":
        y_path = _part(folder, f"{split}_y.bin", archive)
        labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != n:
            raise NolabelError(f"{y_path} holds {len(labels)} labels for {n} images in {x_path}")
        if labels.size and (labels.min() < 0 or labels.max() >= 10):
            raise NolabelError(f"{y_path} has labels outside 1..10")
    names_path = folder / "class_names.txt"
    class_names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()] if names_path.is_file() else list(STL10_CLASSES)
    return Dataset(
        name=f"stl10-{split}",
        modality="image",
        source=images,
        ids=_ids(split, n),
        labels=labels,
        class_names=class_names,
        loader=array_to_pil,
        origin=str(folder),
    )
