"""The in-memory budget: how large an embedding matrix may be copied to float32 in memory.

Above :data:`IN_MEMORY_BYTES` (float32 bytes; 512 MiB, or ``NOLABEL_IN_MEMORY_MIB``) the
array (typically a memory-mapped float16 ``.npy``) is not copied: the stages read it in
row chunks (:func:`row_chunks`), converting each chunk, and head training gathers its
batches from it. No torch import here (the k-NN backends use it).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

IN_MEMORY_BYTES = int(float(os.environ.get("NOLABEL_IN_MEMORY_MIB", 512)) * 2**20)
CHUNK_BYTES = 64 << 20  # float32 bytes per chunk of rows


def in_memory(x: np.ndarray) -> bool:
    """Whether a float32 copy of ``x`` fits :data:`IN_MEMORY_BYTES`."""
    return x.shape[0] * int(np.prod(x.shape[1:])) * 4 <= IN_MEMORY_BYTES


def as_float32(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 when that fits :data:`IN_MEMORY_BYTES` (a copy only if its dtype
    differs), else ``x`` itself (e.g. a float16 memory map, then read in chunks)."""
    return x.astype(np.float32, copy=False) if in_memory(x) else x


def row_chunks(x: np.ndarray, chunk_bytes: int | None = None):
    """``(start, float32 rows)`` over the rows of 2-D ``x``, about ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`) at a time."""
    step = max(1, (chunk_bytes or CHUNK_BYTES) // (4 * max(x.shape[1], 1)))
    for start in range(0, len(x), step):
        yield start, np.asarray(x[start : start + step], dtype=np.float32)


def row_buffer(n: int, d: int) -> np.ndarray:
    """An uninitialised (n, d) float32 array to fill row by row: in memory when it fits
    :data:`IN_MEMORY_BYTES`, else a memory map on an already-unlinked temporary file (in ``$TMPDIR``),
    whose pages the kernel writes out instead of holding them all in RAM; the file goes with the array."""
    if n * d * 4 <= IN_MEMORY_BYTES:
        return np.empty((n, d), dtype=np.float32)
    return np.memmap(tempfile.TemporaryFile(prefix="nolabel-rows-"), dtype=np.float32, mode="w+", shape=(n, d))
