"""Text data sets: one document per line, or a CSV/TSV (or JSON Lines) with text and label columns.

Plain text: ``NAME.txt`` holds one document per line (lines split on "\\n" only, so
a stray form feed inside a document cannot shift it against its label); labels come
from a file with one label per line, by default ``NAME_label.txt`` (or
``NAME_labels.txt``) beside it. The two files must have the same number of lines.

CSV: ``text_columns`` (indices or header names) are joined with a space into the
document; ``label_column`` names the label. Defaults: the first row is a header when
it names a known column (text, label, class, title, ...) or ``csv.Sniffer`` says so;
with a header the label is the column named label/class/category/target/y and the
text is the columns named text/title/description/... (else all other columns);
without one the label is column 0 when every value there is an integer
(``class,title,description`` as in AG News) and the text is the rest.

JSON Lines (``.jsonl``): one object per line, its keys the header of a CSV.

Blank documents (empty or only white space, after joining a CSV row's text columns)
are dropped with one warning giving their count and line numbers, and listed in
``dataset.skipped``; a file with no non-blank document is an error. Ids are the
0-based line (row) numbers, so they stay those of the file when lines are dropped.
When the text columns of a CSV are guessed (no header names one), a warning says
which columns were used; ``text_columns`` (``--text-column``) chooses them.

Labels: integer labels with a class-names file beside the data (``NAME_classes.txt``,
the same without its last ``_part`` as in ``agnews_test.csv`` -> ``agnews_classes.txt``,
or ``classes.txt``; one name per line) index those names, 1-based unless a 0 occurs;
otherwise labels are encoded to 0..C-1 in sorted order (numbers numerically).
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import NolabelError
from .arrays import encode_labels
from .base import Dataset, as_path

LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "y", "topic")
TEXT_COLUMNS = ("text", "sentence", "content", "body", "document", "title", "description", "abstract", "question", "review")


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 file (a final newline ends the last line, it does not add one)."""
    path = as_path(path)
    if not path.is_file():
        raise NolabelError(f"no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NolabelError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}); re-save it as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def find_class_names(data_path: Path) -> Path | None:
    """A class-names file beside ``data_path`` (see the module docstring), or None."""
    stem = data_path.stem
    candidates = []
    while stem:
        candidates.append(data_path.with_name(f"{stem}_classes.txt"))
        stem = stem.rpartition("_")[0]
    candidates.append(data_path.with_name("classes.txt"))
    return next((c for c in candidates if c.is_file()), None)


def labels_with_names(raw: Sequence[str], names_path: Path | None, what: str) -> tuple[np.ndarray, list[str]]:
    """Encode raw label strings; integer labels index the names in ``names_path`` when given."""
    empty = next((i for i, v in enumerate(raw) if not str(v).strip()), None)
    if empty is not None:
        raise NolabelError(f"{what}: label {empty + 1} is empty; every item needs a label")
    if names_path is not None and all(str(v).strip().lstrip("+-").isdigit() for v in raw):
        names = [line.strip() for line in read_lines(names_path) if line.strip()]
        values = np.asarray([int(v) for v in raw], dtype=np.int64)
        codes = values if (values == 0).any() else values - 1
        if codes.size and (codes.min() < 0 or codes.max() >= len(names)):
            raise NolabelError(f"{what}: labels {values.min()}..{values.max()} do not fit the {len(names)} names in {names_path}")
        return codes, names
    return encode_labels([str(v).strip() for v in raw])


def text_dataset(docs: list[str], labels=None, class_names=None, name: str = "texts", origin: str = "",
                 first_line: int = 0) -> Dataset:
    """Documents with ids = their 0-based positions; with ``origin`` (a file), blank documents
    are dropped with a warning (see the module docstring)."""
    width = len(str(max(len(docs) - 1, 0)))
    ids = [f"{i:0{width}d}" for i in range(len(docs))]
    skipped: list[str] = []
    blank = [i for i, d in enumerate(docs) if not d.strip()]
    if origin and blank:
        if len(blank) == len(docs):
            raise NolabelError(f"{origin}: all {len(docs)} documents are blank; expected one document per line (row)")
        lines = ", ".join(str(i + 1 + first_line) for i in blank[:5]) + (", ..." if len(blank) > 5 else "")
        warnings.warn(f"{origin}: skipped {len(blank)} blank document(s) (line {lines}); listed in dataset.skipped",
                      stacklevel=3)
        keep = [i for i in range(len(docs)) if docs[i].strip()]
        skipped = [ids[i] for i in blank]
        docs, ids = [docs[i] for i in keep], [ids[i] for i in keep]
        labels = None if labels is None else np.asarray(labels)[keep]
    return Dataset(
        name=name,
        modality="text",
        source=docs,
        ids=ids,
        labels=labels,
        class_names=class_names,
        skipped=skipped,
        origin=origin,
    )


def load_text(path: str | os.PathLike, labels: str | os.PathLike | None = None, name: str | None = None) -> Dataset:
    """One document per line of ``path``; labels one per line from ``labels`` or ``NAME_label.txt``."""
    path = as_path(path)
    docs = read_lines(path)
    if not docs:
        raise NolabelError(f"{path} is empty; expected one document per line")
    if not any(d.strip() for d in docs):
        raise NolabelError(f"{path} has only blank lines; expected one document per line")
    if labels is None:
        beside = [path.with_name(f"{path.stem}_{s}{path.suffix}") for s in ("label", "labels")]
        label_path = next((p for p in beside if p.is_file()), None)
    else:
        label_path = as_path(labels)
    codes = class_names = None
    if label_path is not None:
        raw = read_lines(label_path)
        if len(raw) != len(docs):
            raise NolabelError(
                f"{path} has {len(docs)} lines but {label_path} has {len(raw)}; they must match line by line"
            )
        labelled = [i for i, d in enumerate(docs) if d.strip()]  # blank documents are dropped: so are their labels
        codes, class_names = labels_with_names([raw[i] for i in labelled], find_class_names(path), str(label_path))
        full = np.zeros(len(docs), dtype=np.int64)
        full[labelled] = codes
        codes = full
    return text_dataset(docs, codes, class_names, name=name or path.stem, origin=str(path))


def _column(spec: int | str, header: list[str] | None, width: int, path: Path) -> int:
    if isinstance(spec, int):
        if not -width <= spec < width:
            raise NolabelError(f"{path} has {width} columns; column {spec} does not exist")
        return spec % width
    if header is None:
        raise NolabelError(f"{path} has no header row; give columns by index, not by name {spec!r}")
    lowered = [h.strip().lower() for h in header]
    if spec.strip().lower() not in lowered:
        raise NolabelError(f"{path} has no column {spec!r}; its columns are {', '.join(header)}")
    return lowered.index(spec.strip().lower())


def _has_header(first: list[str], sample: str) -> bool:
    known = set(LABEL_COLUMNS) | set(TEXT_COLUMNS) | {"id"}
    if any(cell.strip().lower() in known for cell in first):
        return True
    try:
        return csv.Sniffer().has_header(sample)
    except csv.Error:
        return False


def load_csv(
    path: str | os.PathLike,
    text_columns: int | str | Sequence[int | str] | None = None,
    label_column: int | str | None = "auto",
    header: bool | None = None,
    delimiter: str | None = None,
    name: str | None = None,
) -> Dataset:
    """Documents from a CSV (or ``.tsv``) file; ``label_column=None`` loads no labels."""
    path = as_path(path)
    if not path.is_file():
        raise NolabelError(f"no such file: {path}")
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(1 << 16)
            f.seek(0)
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise NolabelError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}); re-save it as UTF-8") from None
    except csv.Error as exc:
        raise NolabelError(f"cannot parse {path} as CSV ({exc})") from None
    rows = [r for r in rows if r]
    if not rows:
        raise NolabelError(f"{path} is empty")
    named = any(isinstance(c, str) for c in _as_list(text_columns) + [label_column] if c != "auto")
    has_header = header if header is not None else named or _has_header(rows[0], sample)
    head = rows[0] if has_header else None
    body = rows[1:] if has_header else rows
    if not body:
        raise NolabelError(f"{path} has a header but no rows")
    width = len(rows[0])
    bad = next((i for i, r in enumerate(body) if len(r) != width), None)
    if bad is not None:
        raise NolabelError(f"{path} row {bad + 1 + int(has_header)} has {len(body[bad])} fields, expected {width}")

    return table_dataset(path, head, body, text_columns, label_column, name, first_line=int(has_header))


def table_dataset(path: Path, head: list[str] | None, body: list[list[str]],
                  text_columns: int | str | Sequence[int | str] | None, label_column: int | str | None,
                  name: str | None, first_line: int) -> Dataset:
    """Documents from the rows of a table (CSV rows, or JSON Lines objects as rows under
    their keys): the text and label columns chosen as the module docstring says."""
    width = len(head) if head else len(body[0])
    lowered = [h.strip().lower() for h in head] if head else []
    if label_column == "auto":
        if head is not None:
            label_index = next((lowered.index(c) for c in LABEL_COLUMNS if c in lowered), None)
        else:
            integers = all(r[0].strip().lstrip("+-").isdigit() for r in body)
            label_index = 0 if width > 1 and integers else None
    else:
        label_index = None if label_column is None else _column(label_column, head, width, path)
    if text_columns is not None:
        text_index = [_column(c, head, width, path) for c in _as_list(text_columns)]
    else:
        named_text = [i for i, h in enumerate(lowered) if h in TEXT_COLUMNS and i != label_index]
        text_index = named_text or [i for i in range(width) if i != label_index and (not lowered or lowered[i] != "id")]
        if not named_text and text_index:
            used = ", ".join(repr(head[i]) if head else str(i) for i in text_index)
            label = f"label column {head[label_index]!r}" if head and label_index is not None else (
                f"label column {label_index}" if label_index is not None else "no label column")
            warnings.warn(f"{path}: no column is named like text ({', '.join(TEXT_COLUMNS[:4])}, ...); "
                          f"using column(s) {used} as the text and {label} (choose with --text-column)", stacklevel=2)
    if not text_index:
        raise NolabelError(f"{path} has no text column besides the label; give text_columns (--text-column)")

    docs = [" ".join(r[i].strip() for i in text_index if r[i].strip()) for r in body]
    if not any(d.strip() for d in docs):
        raise NolabelError(f"{path}: the text column(s) are blank in every row; choose others with --text-column")
    codes = class_names = None
    if label_index is not None:
        filled = [i for i, d in enumerate(docs) if d.strip()]  # blank documents are dropped: so are their labels
        codes, class_names = labels_with_names([body[i][label_index] for i in filled], find_class_names(path), str(path))
        full = np.zeros(len(docs), dtype=np.int64)
        full[filled] = codes
        codes = full
    return text_dataset(docs, codes, class_names, name=name or path.stem, origin=str(path), first_line=first_line)




def load_jsonl(
    path: str | os.PathLike,
    text_columns: int | str | Sequence[int | str] | None = None,
    label_column: int | str | None = "auto",
    name: str | None = None,
) -> Dataset:
    """Documents from a JSON Lines file (``.jsonl``), one JSON object per line; its keys are
    the columns (chosen as in a CSV with a header); a key missing from a line reads as blank."""
    path = as_path(path)
    records = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NolabelError(f"{path} line {number} is not JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(record, dict):
            raise NolabelError(f"{path} line {number} holds a {type(record).__name__}, not an object like "
                               '{"text": ..., "label": ...}')
        records.append(record)
    if not records:
        raise NolabelError(f"{path} is empty; expected one JSON object per line")
    head = list(dict.fromkeys(key for record in records for key in record))
    body = [["" if r.get(key) is None else str(r[key]) for key in head] for r in records]
    return table_dataset(path, head, body, text_columns, label_column, name, first_line=0)


def _as_list(columns: int | str | Sequence[int | str] | None) -> list[int | str]:
    if columns is None:
        return []
    if isinstance(columns, (int, str)):
        return [columns]
    return list(columns)
