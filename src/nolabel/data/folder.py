"""A folder of image files as a :class:`~nolabel.data.base.Dataset`.

Layout: images anywhere below the root (recursive). When every image sits inside a
first-level sub-folder, that sub-folder's name is the image's label (class names
sorted); when images sit directly in the root, there are no labels. Hidden files and
folders (names starting with ".") are ignored. Ids are paths relative to the root.

Unreadable files. ``verify=True`` (the default) opens and decodes every image once at
load time (JPEGs in draft mode at 1/8 scale, which still reads the whole compressed
stream, so truncation is caught). Files that fail are skipped, listed in
``dataset.skipped`` and reported in one ``warnings.warn``; they never crash a later
stage and are never dropped silently. It costs about 1 s per 10,000 small (32x32)
JPEGs on one core; large photos are checked on a thread pool. ``verify=False`` only
lists files; an unreadable one then raises :class:`NolabelError` when it is loaded.

Channels are decided once per data set, never per image: when any file is stored in
colour (RGB, RGBA, CMYK, YCbCr, a palette with a non-gray colour ...) every image is
returned in RGB, otherwise every image is returned in L (gray). So a colour photo
collection whose few gray-looking pictures have R = G = B stays three-channel
throughout. The decision reads only the files' headers (also with ``verify=False``).
Conversion rules: palette images are converted, images with transparency (RGBA, LA,
palette or grayscale with a transparent colour) are composited on white, 16-bit and 32-bit integer images ("I;16", "I") are scaled from
0..65535 to 0..255, float images ("F") from [0, 1] (or clipped to 0..255 when their
values exceed 1), and the EXIF orientation is applied.
"""
from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import NolabelError
from ..io import walk_visible
from .base import Dataset, as_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".pnm")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation", "unlabeled", "unlabelled")

# Per-image decode time above which verification moves to a thread pool (decoding
# releases the GIL, so large images scale with cores; tiny ones only pay overhead).
_POOL_ABOVE_SECONDS = 0.002
_PROBE = 64


def is_image_file(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(IMAGE_EXTENSIONS)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB mode (see the module docstring for the rules per mode)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        a = np.asarray(image)
        if mode == "F":
            a = a * 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else a
            a = np.nan_to_num(a)
        else:
            a = a.astype(np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        mode = "L"
    if "A" in mode or "a" in mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _decode(path: str | os.PathLike, draft: bool = False) -> Image.Image:
    with open(path, "rb") as f:
        image = Image.open(f)
        if draft:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    return to_rgb(ImageOps.exif_transpose(image))


GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_colour_image(image: Image.Image) -> bool:
    """Whether ``image`` (opened, not necessarily decoded) is stored in colour: any mode
    but the gray ones, and a palette only when one of its entries has R != G or G != B."""
    if image.mode in GRAY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        return any(not (palette[i] == palette[i + 1] == palette[i + 2]) for i in range(0, len(palette) - 2, 3))
    return True


def _file_is_colour(path: str | os.PathLike) -> bool:
    try:
        with Image.open(path) as image:
            return is_colour_image(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False  # unreadable files are skipped or reported when loaded


def any_colour(paths: Sequence[str]) -> bool:
    """True when any of ``paths`` is stored in colour (reads headers until the first colour one)."""
    return any(_file_is_colour(p) for p in paths)


def open_gray(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` in L mode (the loader of data sets whose every file is gray)."""
    return open_rgb(path).convert("L")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` as an RGB ``PIL.Image`` (the loader of folder datasets)."""
    try:
        return _decode(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NolabelError(
            f"cannot read image {path}: {_reason(exc)}; load its folder with verify=True to skip unreadable files"
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_one(path: str) -> str | None:
    """None when ``path`` decodes, else the reason it does not."""
    try:
        _decode(path, draft=True)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return _reason(exc)
    return None


def check_images(paths: Sequence[str], workers: int | None = None) -> list[str | None]:
    """Decode every file once; per path None (readable) or the reason it is not.

    The first few images are decoded serially; when they take longer than a couple of
    milliseconds each, the rest go to ``workers`` threads (default: CPU count, at most 8).
    """
    probe = list(paths[:_PROBE])
    t0 = time.perf_counter()
    results = [_check_one(p) for p in probe]
    rest = paths[_PROBE:]
    per_image = (time.perf_counter() - t0) / max(1, len(probe))
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and per_image > _POOL_ABOVE_SECONDS and len(rest) > 0:
        with ThreadPoolExecutor(workers) as pool:
            results.extend(pool.map(_check_one, rest, chunksize=16))
    else:
        results.extend(_check_one(p) for p in rest)
    return results


def drop_unreadable(
    files: Sequence[str], names: Sequence[str], where: str, workers: int | None = None
) -> tuple[list[int], list[str]]:
    """Indices of the readable ``files`` and ``names`` of the others (reported in one warning).

    Raises :class:`NolabelError` when none is readable.
    """
    reasons = check_images(files, workers=workers)
    bad = [(n, why) for n, why in zip(names, reasons) if why is not None]
    if len(bad) == len(files):
        raise NolabelError(f"none of the {len(files)} images{where} could be read (e.g. {bad[0][0]}: {bad[0][1]})")
    if bad:
        shown = "; ".join(f"{n} ({why})" for n, why in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(f"skipped {len(bad)} unreadable image(s){where}: {shown}{more} (listed in dataset.skipped)", stacklevel=3)
    return [i for i, why in enumerate(reasons) if why is None], [n for n, _ in bad]


def scan_images(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of the image files below ``root``, sorted folder by folder."""
    found: list[str] = []
    for _, rel, files in walk_visible(root):
        found.extend((rel / name).as_posix() for name in files if is_image_file(name))
    return sorted(found, key=lambda r: r.split("/"))


def other_files(root: str | os.PathLike) -> str:
    """``"; it holds 12 .heic, 1 .md"``: the commonest extensions of the visible files below
    ``root`` (three at most), for the message of a folder without images; ``""`` when empty."""
    counts: dict[str, int] = {}
    for _, _, files in walk_visible(root):
        for name in files:
            ext = Path(name).suffix.lower() or "(no extension)"
            counts[ext] = counts.get(ext, 0) + 1
    if not counts:
        return ""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return "; it holds " + ", ".join(f"{n} {ext}" for ext, n in top) + (", ..." if len(counts) > 3 else "")


def resolve_split(root: Path, split: str | None) -> Path:
    """``root/split`` when ``root`` is split into train/test/... sub-folders, else ``root``."""
    if split is None or not root.is_dir():
        return root
    subdirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not subdirs or not all(name.lower() in SPLIT_NAMES for name in subdirs):
        return root
    if (root / split).is_dir():
        return root / split
    raise NolabelError(f"no split {split!r} in {root} (it has {', '.join(sorted(subdirs))}); pass one of those")


def load_image_folder(
    path: str | os.PathLike,
    verify: bool = True,
    split: str | None = None,
    name: str | None = None,
    workers: int | None = None,
) -> Dataset:
    """All images below ``path``; labels from first-level sub-folders (see module doc).

    ``split``: when ``path`` holds only split folders (train/, test/, ...), use that one.
    ``verify``: decode every image once and skip (and report) the unreadable ones.
    """
    root = as_path(path)
    if not root.exists():
        raise NolabelError(f"no such folder: {root}")
    if not root.is_dir():
        raise NolabelError(f"{root} is not a folder of images")
    root = resolve_split(root, split)
    base = root.resolve()  # items stay readable when the working folder changes
    rels = scan_images(root)
    if not rels:
        raise NolabelError(f"no images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}){other_files(root)}")
    skipped: list[str] = []
    if verify:
        keep, skipped = drop_unreadable([str(base / r) for r in rels], rels, where=f" in {root}", workers=workers)
        rels = [rels[i] for i in keep]
    labels, class_names = _folder_labels(rels, root)
    files = [str(base / r) for r in rels]
    return Dataset(
        name=name or _folder_name(root),
        modality="image",
        source=files,
        ids=rels,
        labels=labels,
        class_names=class_names,
        loader=open_rgb if any_colour(files) else open_gray,
        skipped=skipped,
        origin=str(root),
    )


def _folder_name(root: Path) -> str:
    """``cifar10-jpeg-test`` for a split folder ``cifar10-jpeg/test``, else the folder's name."""
    real = root.resolve()
    return f"{real.parent.name}-{real.name}" if real.name.lower() in SPLIT_NAMES else real.name


def _folder_labels(rels: list[str], root: Path) -> tuple[np.ndarray | None, list[str] | None]:
    tops = [r.split("/")[0] if "/" in r else None for r in rels]
    if all(t is None for t in tops):
        return None, None
    if any(t is None for t in tops):
        warnings.warn(
            f"images sit both directly in {root} and in its sub-folders: sub-folder names are not used as labels",
            stacklevel=3,
        )
        return None, None
    class_names = sorted(set(tops))
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[t] for t in tops], dtype=np.int64), class_names


def images_dataset(paths: Sequence[str | os.PathLike], verify: bool = True, name: str = "images") -> Dataset:
    """A dataset of the given image files (ids = the paths as given, no labels)."""
    ids = [str(p) for p in paths]
    files = [str(as_path(p).resolve()) for p in paths]
    missing = [i for i, f in zip(ids, files) if not Path(f).is_file()]
    if missing:
        raise NolabelError(f"no such image file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    skipped: list[str] = []
    if verify:
        keep, skipped = drop_unreadable(files, ids, where="")
        files, ids = [files[i] for i in keep], [ids[i] for i in keep]
    loader = open_rgb if any_colour(files) else open_gray
    return Dataset(name=name, modality="image", source=files, ids=ids, loader=loader, skipped=skipped)
