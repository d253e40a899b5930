"""Data: every loader returns a :class:`~nolabel.data.base.Dataset`.

:func:`load_dataset` turns one spec string into a dataset:

- a registered name, alone or as ``NAME:ARG``: ``digits``, ``mnist:DIR``,
  ``fashion-mnist:DIR``, ``cifar10:DIR``, ``cifar100:DIR``, ``cifar100-20:DIR``,
  ``stl10:DIR`` (these take ``split``, default ``"test"``), or an explicit
  ``folder:PATH``, ``mat:PATH``, ``array:PATH``, ``text:PATH``, ``csv:PATH``, ``jsonl:PATH``;
- otherwise a path, whose kind follows from what it is: a folder of images, an image
  file, ``.mat``, ``.npy``/``.npz``, ``.txt`` (labels from ``NAME_label.txt`` beside
  it), ``.csv``/``.tsv``, ``.jsonl``.

A registered name wins over a same-named path in the working folder; write
``./digits`` for the path. Extra keyword arguments go to the loader.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from ..errors import NolabelError
from ..registry import Registry
from .arrays import array_dataset, load_array
from .base import Dataset, as_path
from .benchmarks import load_cifar, load_mnist, load_stl10
from .digits import load_digits
from .folder import IMAGE_EXTENSIONS, images_dataset, is_image_file, load_image_folder, to_rgb
from .matlab import load_mat
from .text import load_csv, load_jsonl, load_text, text_dataset

__all__ = [
    "Dataset",
    "array_dataset",
    "describe",
    "images_dataset",
    "items_dataset",
    "load_array",
    "load_cifar",
    "load_csv",
    "load_jsonl",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mat",
    "load_mnist",
    "load_stl10",
    "load_text",
    "registry",
]

Loader = Callable[..., Dataset]
registry: Registry[Loader] = Registry("dataset")


def _needs_dir(name: str, arg: str) -> str:
    if not arg:
        raise NolabelError(
            f"{name} needs the folder holding its files: {name}:DIR "
            f"(fetch them with nolabel.data.download.fetch_benchmark({name!r}, DIR))"
        )
    return arg


@registry.register("digits", "digits  scikit-learn's 1,797 8x8 handwritten digits, 10 classes (ships with the code)")
def _digits(arg: str, split: str, **kw: Any) -> Dataset:
    return load_digits(**kw)


@registry.register("mnist", "mnist:DIR  MNIST idx files (t10k-/train-images-idx3-ubyte[.gz]), split train|test")
def _mnist(arg: str, split: str, **kw: Any) -> Dataset:
    return load_mnist(_needs_dir("mnist", arg), split=split, kind="mnist", **kw)


@registry.register("fashion-mnist", "fashion-mnist:DIR  Fashion-MNIST idx files, split train|test")
def _fashion(arg: str, split: str, **kw: Any) -> Dataset:
    return load_mnist(_needs_dir("fashion-mnist", arg), split=split, kind="fashion", **kw)


@registry.register("cifar10", "cifar10:DIR  CIFAR-10 python pickles (cifar-10-batches-py/), split train|test")
def _cifar10(arg: str, split: str, **kw: Any) -> Dataset:
    return load_cifar(_needs_dir("cifar10", arg), name="cifar10", split=split, **kw)


@registry.register("cifar100", "cifar100:DIR  CIFAR-100 python pickles (cifar-100-python/), 100 fine classes")
def _cifar100(arg: str, split: str, **kw: Any) -> Dataset:
    return load_cifar(_needs_dir("cifar100", arg), name="cifar100", split=split, **kw)


@registry.register("cifar100-20", "cifar100-20:DIR  CIFAR-100 with its 20 superclasses as labels")
def _cifar100_20(arg: str, split: str, **kw: Any) -> Dataset:
    return load_cifar(_needs_dir("cifar100-20", arg), name="cifar100-20", split=split, **kw)


@registry.register("stl10", "stl10:DIR  STL-10 binaries (stl10_binary/), split train|test|unlabeled")
def _stl10(arg: str, split: str, **kw: Any) -> Dataset:
    return load_stl10(_needs_dir("stl10", arg), split=split, **kw)


@registry.register("folder", "folder:PATH  images below PATH; labels from first-level sub-folders")
def _folder(arg: str, split: str, **kw: Any) -> Dataset:
    return load_image_folder(arg, split=split, **kw)


@registry.register("mat", "mat:FILE  MATLAB .mat with fea (pixels x N or N x pixels) and gnd labels")
def _mat(arg: str, split: str, **kw: Any) -> Dataset:
    return load_mat(arg, **kw)


@registry.register("array", "array:FILE  .npy/.npz: (N,H,W[,C]) images or (N,d) vectors, optional labels")
def _array(arg: str, split: str, **kw: Any) -> Dataset:
    return load_array(arg, **kw)


@registry.register("text", "text:FILE  one document per line; labels from FILE_label.txt beside it")
def _text(arg: str, split: str, **kw: Any) -> Dataset:
    return load_text(arg, **kw)


@registry.register("csv", "csv:FILE  CSV/TSV of documents with text and label columns (e.g. AG News)")
def _csv(arg: str, split: str, **kw: Any) -> Dataset:
    return load_csv(arg, **kw)


@registry.register("jsonl", "jsonl:FILE  JSON Lines, one object per line with text and label fields")
def _jsonl(arg: str, split: str, **kw: Any) -> Dataset:
    return load_jsonl(arg, **kw)


_SUFFIX_KIND = {".mat": "mat", ".npy": "array", ".npz": "array", ".txt": "text", ".csv": "csv", ".tsv": "csv",
               ".jsonl": "jsonl"}


def _path_kind(path: Path) -> str:
    if path.is_dir():
        _refuse_a_folder_of_one_data_file(path)
        return "folder"
    kind = _SUFFIX_KIND.get(path.suffix.lower())
    if kind is None:
        raise NolabelError(
            f"cannot tell what {path} holds from its extension; use a folder of images, an image, "
            ".txt, .csv, .tsv, .jsonl, .mat, .npy or .npz"
        )
    return kind


def _refuse_a_folder_of_one_data_file(path: Path) -> None:
    """A folder whose only visible file is one nolabel reads as data (``orl/orl.mat``) names
    that file, rather than report a folder without images."""
    files = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(files) == 1 and files[0].is_file() and files[0].suffix.lower() in _SUFFIX_KIND:
        raise NolabelError(f"{path} holds one file, {files[0].name}, and no images; pass the file itself: {files[0]}")


def load_dataset(spec: str | os.PathLike, split: str = "test", **kw: Any) -> Dataset:
    """The dataset named by ``spec`` (see the module docstring); ``split`` for benchmarks and split folders."""
    text = str(spec).strip()
    if not text:
        raise NolabelError("no data given: pass a folder, a file, 'digits' or FORMAT:DIR (see `nolabel list datasets`)")
    prefix, sep, rest = text.partition(":")
    if prefix in registry:
        return registry.get(prefix)(rest if sep else "", split, **kw)
    path = as_path(text)
    if path.exists():
        if path.is_file() and is_image_file(path):
            return images_dataset([path], name=path.stem, **kw)
        return registry.get(_path_kind(path))(text, split, **kw)
    if sep and len(prefix) > 1 and not any(c in prefix for c in "/\\."):
        raise NolabelError(f"unknown dataset format {prefix!r} in {text!r}; known: {', '.join(registry.names())}")
    raise NolabelError(f"no such file or folder: {text} (and not a dataset name; see `nolabel list datasets`)")


def items_dataset(items: Sequence[Any], verify: bool = True) -> Dataset:
    """A dataset of loose items: image file paths, ``PIL`` images, or texts (ids are positions or paths)."""
    items = list(items)
    if not items:
        raise NolabelError("no items given")
    if all(isinstance(i, Image.Image) for i in items):
        return Dataset(
            name="images", modality="image", source=items, ids=[str(i) for i in range(len(items))], loader=to_rgb
        )
    if all(isinstance(i, (str, os.PathLike)) and is_image_file(i) for i in items):
        return images_dataset(items, verify=verify)
    if all(isinstance(i, str) for i in items):
        return text_dataset(items)
    raise NolabelError(
        f"items must all be image paths ({', '.join(IMAGE_EXTENSIONS)}), PIL images, or texts; got a mix"
    )


def describe(pattern: str = "*") -> list[tuple[str, str]]:
    """[(name, one-line doc)] of the registered dataset formats."""
    return registry.describe(pattern)
