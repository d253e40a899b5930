"""Fingerprints of the files a cached stage was made from, so changed inputs are never reused.

- a folder: every non-hidden file below it (recursively, links followed): the sorted
  relative paths with their sizes and content identities, hashed with SHA-256; up to
  ``FOLDER_CONTENT_BYTES`` in all each file is identified like a single file below (so a
  copied or re-mounted data set keeps its cache), above that by its modification time
  (ns) alone (reading a large collection at every run would cost more than the cache saves);
- a file: its size and the SHA-256 of its content: the whole file up to
  ``FULL_HASH_BYTES``, else its first and last ``EDGE_BYTES`` plus its modification
  time; together with the files that travel with it (``NAME_*.*`` and ``classes.txt``
  beside it: label and class-name files of text data, the ``.json`` config of a checkpoint).

A fingerprint is a small dict ``{"kind", "files", "bytes", "sha256"}``; two equal
fingerprints mean the same content up to an edit that keeps every size and mtime and
(in large files) every byte of the edges.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .io import walk_visible

FULL_HASH_BYTES = 8 << 20
EDGE_BYTES = 1 << 20
FOLDER_CONTENT_BYTES = 256 << 20


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """The fingerprint of a folder or a file (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _folder(path)
    return _files([path] + _companions(path), kind="file")


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """``"110 files, 3.2 MB (was 90 files, 2.6 MB)"`` or ``"same size, content changed"``."""
    now = f"{new['files']} file{'s' * (new['files'] != 1)}, {_mb(new['bytes'])}"
    if not old:
        return now
    if (old.get("files"), old.get("bytes")) == (new["files"], new["bytes"]):
        return f"{now}, same count and size but changed files"
    return f"{now} (was {old.get('files')} files, {_mb(old.get('bytes', 0))})"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _folder(root: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    count = total = 0
    entries = []
    for folder, rel, files in walk_visible(root):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            entries.append(((rel / name).as_posix(), os.path.join(folder, name), st.st_size, st.st_mtime_ns))
    by_content = sum(e[2] for e in entries) <= FOLDER_CONTENT_BYTES
    for rel, full, size, mtime in sorted(entries):
        identity = _identity(Path(full), size, mtime) if by_content else str(mtime)
        digest.update(f"{rel}\0{size}\0{identity}\n".encode())
        count += 1
        total += size
    return {"kind": "folder", "files": count, "bytes": total, "sha256": digest.hexdigest()[:16]}


def _companions(path: Path) -> list[Path]:
    """Files beside ``path`` that belong to it: ``STEM_*``, ``STEM.json`` and ``classes.txt``."""
    if not path.parent.is_dir():
        return []
    stem = path.stem
    found = []
    for other in sorted(path.parent.iterdir()):
        if other == path or not other.is_file():
            continue
        if other.name.startswith(stem + "_") or other.name == stem + ".json" or other.name == "classes.txt":
            found.append(other)
    return found


def _files(paths: list[Path], kind: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    total = 0
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            digest.update(f"{path.name}\0missing\n".encode())
            continue
        total += st.st_size
        digest.update(f"{path.name}\0{st.st_size}\0{_identity(path, st.st_size, st.st_mtime_ns)}\n".encode())
    return {"kind": kind, "files": len(paths), "bytes": total, "sha256": digest.hexdigest()[:16]}


def _identity(path: Path, size: int, mtime_ns: int) -> str:
    """The content's SHA-256; for files above ``FULL_HASH_BYTES`` that of the edges plus the mtime."""
    content = _content_hash(path, size)
    return content if size <= FULL_HASH_BYTES else f"{mtime_ns}\0{content}"


def _content_hash(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if size <= FULL_HASH_BYTES:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            else:
                digest.update(f.read(EDGE_BYTES))
                f.seek(size - EDGE_BYTES)
                digest.update(f.read(EDGE_BYTES))
    except OSError:
        return "unreadable"
    return digest.hexdigest()
