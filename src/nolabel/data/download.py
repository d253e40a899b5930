"""Downloads that resume and verify, and the official sources of the benchmarks.

:func:`download` streams ``url`` into ``DEST.part``; when a ``.part`` is already there
it asks the server for the rest (HTTP ``Range: bytes=N-``) and appends when the answer
is ``206 Partial Content``, or starts over when it is a plain ``200``. The finished
file is checked (md5 or sha256; a mismatch deletes it) and renamed onto ``DEST``, so a
file under its final name is always whole. :func:`fetch_benchmark` downloads (and
unpacks) the official files of MNIST, Fashion-MNIST, CIFAR-10/100 and STL-10 into a
folder that the matching loader in :mod:`nolabel.data.benchmarks` reads.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import NolabelError

_CHUNK = 1 << 20


class DownloadError(NolabelError):
    """The server could not be reached or the transfer broke off (the ``.part`` is kept)."""


@dataclass(frozen=True)
class Resource:
    """One official file: its name, mirrors (tried in order), md5, and for archives the folder they unpack to."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    folder: str | None = None


def _idx_files(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[Resource, ...]:
    return tuple(Resource(name, tuple(m + name for m in mirrors), md5) for name, md5 in md5s.items())


SOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": _idx_files(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        },
    ),
    "fashion-mnist": _idx_files(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        },
    ),
    "cifar10": (
        Resource(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "c58f30108f718f92721af3b95e74349a",
            folder="cifar-10-batches-py",
        ),
    ),
    "cifar100": (
        Resource(
            "cifar-100-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            "eb9058c3a382ffc7106e4002c42a8d85",
            folder="cifar-100-python",
        ),
    ),
    "stl10": (
        Resource(
            "stl10_binary.tar.gz",
            ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
            "91f7769df0f17e558f3565bffb0c7dfb",
            folder="stl10_binary",
        ),
    ),
}
ALIASES = {"fashion": "fashion-mnist", "cifar100-20": "cifar100"}


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part`` (resumed when present), verify, rename.

    An existing ``dest`` that passes the checksum (or any existing ``dest`` when no
    checksum is given) is kept as it is. Raises :class:`NolabelError` on a checksum
    mismatch (the file is deleted) and :class:`DownloadError` when the transfer fails.
    """
    dest = Path(dest)
    checks = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}
    if dest.is_file():
        if all(file_digest(dest, a) == v for a, v in checks.items()):
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            part.unlink(missing_ok=True)
    except OSError as exc:
        raise NolabelError(f"cannot write to {dest.parent}: {exc.strerror}") from None
    try:
        _fetch(url, part, progress, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(
            f"could not download {url} ({_why(exc)}); put {dest.name} in {dest.parent} yourself"
        ) from None
    for algorithm, expected in checks.items():
        got = file_digest(part, algorithm)
        if got != expected:
            part.unlink()
            raise NolabelError(
                f"checksum mismatch for {url}: {algorithm} {got}, expected {expected}; the download was deleted "
                f"(try again, or put a good {dest.name} in {dest.parent} yourself)"
            )
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "nolabel"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # Range not satisfiable: the part is complete when the server's size equals it.
        if exc.headers.get("Content-Range", "").strip() == f"bytes */{offset}":
            return
        part.unlink()
        _fetch(url, part, progress, timeout)
        return
    with response:
        if not (offset and response.status == 206 and _range_start(response.headers.get("Content-Range")) == offset):
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(".part")], disable=not progress
        ) as bar:
            while block := response.read(_CHUNK):
                out.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(f"connection closed after {size} of {total} bytes")


def _range_start(content_range: str | None) -> int | None:
    """``N`` from ``bytes N-M/T``."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    start = content_range[len("bytes ") :].split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a tar archive into ``dest`` safely; returns ``dest``.

    Only regular files and folders are unpacked, and only inside ``dest`` (a member
    named ``/x`` or ``../x`` is refused). Everything is unpacked into a temporary
    folder first and moved into place at the end, so a killed extraction leaves no
    half-filled folder under the final name.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest)).resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                target = (tmp / member.name).resolve()
                if os.path.isabs(member.name) or not target.is_relative_to(tmp):
                    raise NolabelError(f"{archive} holds an unsafe path {member.name!r}; not unpacking it")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out, _CHUNK)
        for entry in tmp.iterdir():
            final = dest / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(entry, final)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise NolabelError(f"cannot unpack {archive} ({_why(exc)}); delete it and download it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_benchmark(name: str, root: str | os.PathLike, progress: bool = True) -> Path:
    """Download (and unpack) the official files of benchmark ``name`` into ``root``; returns ``root``.

    Files already there with the right md5, and archives already unpacked, are reused.
    """
    key = ALIASES.get(name, name)
    if key not in SOURCES:
        raise NolabelError(f"no download source for {name!r}; known: {', '.join(sorted(SOURCES))}")
    root = Path(root).expanduser()
    for resource in SOURCES[key]:
        if resource.folder and (root / resource.folder).is_dir():
            continue
        archive = root / resource.filename
        _download_mirrors(resource, archive, progress)
        if resource.folder:
            extract_archive(archive, root)
    return root


def _download_mirrors(resource: Resource, dest: Path, progress: bool) -> None:
    first: DownloadError | None = None
    for url in resource.urls:
        try:
            download(url, dest, md5=resource.md5, progress=progress)
            return
        except DownloadError as exc:
            first = first or exc
    assert first is not None
    raise first
