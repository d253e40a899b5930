"""Per-cluster galleries: the most confident members ("prototypes", as in SCAN's figures)
and the least confident ones, as small embedded thumbnails or escaped text snippets.

Members are ranked by the assignment confidence (the top cluster probability, rounded
to ``CONFIDENCE_DECIMALS``) and, among equal confidences (saturated soft assignments),
by the cosine similarity of their embedding to the cluster's mean embedding. A cluster
with at most ``n_prototypes`` members shows them all as prototypes; a larger one also
shows its ``n_least`` lowest-ranked members, disjoint from the prototypes.
"""
from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..data.base import Dataset, array_to_pil

#: thumbnails fit in a square of this many pixels (never enlarged; shown in a 96 px box)
THUMB_PX = 128
#: texts longer than this are cut (with an ellipsis)
TEXT_CHARS = 180
#: ids (relative paths) longer than this are shown with their start cut; the full id stays in the tooltip
ID_CHARS = 34
JPEG_QUALITY = 85
#: confidences equal to this many decimals count as tied
CONFIDENCE_DECIMALS = 3


@dataclass
class Member:
    """One shown item: its position in the data, id, confidence, true class (if known)
    and its rendering (an image data URI with its size, or a text)."""

    index: int
    item_id: str
    confidence: float
    class_name: str | None = None
    image: str | None = None
    size: tuple[int, int] = (0, 0)
    text: str | None = None
    #: ``file://`` URI of the original image, when the item is a file on this machine
    href: str | None = None


@dataclass
class ClusterGallery:
    cluster: int
    size: int
    mean_confidence: float
    majority: str | None = None
    purity: float | None = None
    prototypes: list[Member] = field(default_factory=list)
    least: list[Member] = field(default_factory=list)


def thumbnail_uri(image: Any, px: int = THUMB_PX) -> tuple[str, tuple[int, int]]:
    """A data URI of ``image`` (PIL image or array) shrunk to fit ``px`` x ``px``, and its size.

    Grey images are stored as one channel; the encoding is PNG, or JPEG when that is
    smaller (photographs), which keeps a 100-cluster report to a few megabytes.
    """
    img = image if isinstance(image, Image.Image) else array_to_pil(np.asarray(image))
    img = img.convert("RGB")
    img.thumbnail((px, px), Image.Resampling.LANCZOS)
    rgb = np.asarray(img)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        img = img.convert("L")
    encoded = []
    for fmt, kwargs in (("png", {"optimize": True}), ("jpeg", {"quality": JPEG_QUALITY})):
        buf = io.BytesIO()
        img.save(buf, format=fmt.upper(), **kwargs)
        encoded.append((len(buf.getvalue()), fmt, buf.getvalue()))
    _, fmt, data = min(encoded)
    return f"data:image/{fmt};base64," + base64.b64encode(data).decode("ascii"), img.size


def truncate(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def tail(text: str, limit: int) -> str:
    """``text`` with its start cut (an ellipsis first) when longer than ``limit``: a path keeps its file name."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "\u2026" + text[len(text) - limit + 1:]


def file_uri(dataset: Dataset | None, index: int) -> str | None:
    """``file://`` URI of item ``index`` when the dataset stores it as a path to an existing file."""
    if dataset is None or isinstance(dataset.source, np.ndarray):
        return None
    raw = dataset.source[index]
    if not isinstance(raw, (str, os.PathLike)):
        return None
    path = Path(raw)
    return path.resolve().as_uri() if path.is_absolute() and path.is_file() else None


def short_id(item_id: str) -> str:
    """The last component of a path-like id (the whole id stays in the tooltip)."""
    return item_id.rstrip("/").rsplit("/", 1)[-1] or item_id


def select_members(confidences: np.ndarray, members: np.ndarray, n_prototypes: int, n_least: int,
                   central: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes, least confident) among the item indices ``members``.

    Members are ranked by confidence (rounded to ``CONFIDENCE_DECIMALS``), then by
    ``central`` (one value per member, higher first) when given, then by item index.
    Prototypes are the first ``n_prototypes`` (best first); least confident are the last
    ``n_least`` of the rest (worst first).
    """
    members = np.asarray(members, dtype=np.int64)
    conf = np.round(np.asarray(confidences, dtype=np.float64)[members], CONFIDENCE_DECIMALS)
    central = np.zeros(len(members)) if central is None else np.asarray(central, dtype=np.float64)
    order = members[np.lexsort((members, -central, -conf))]
    prototypes = order[:n_prototypes]
    least = order[n_prototypes:][::-1][:n_least]
    return prototypes, least


def centrality(embeddings: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Cosine similarity of each member's embedding to the mean of the L2-normalised members."""
    z = np.asarray(embeddings[np.asarray(members, dtype=np.int64)], dtype=np.float64)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    mean = z.mean(axis=0)
    return z @ (mean / max(np.linalg.norm(mean), 1e-12))


def build_galleries(
    clusters: np.ndarray,
    confidences: np.ndarray,
    ids: Sequence[str],
    dataset: Dataset | None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    cluster_ids: Sequence[int] | None = None,
    n_prototypes: int = 12,
    n_least: int = 4,
    embeddings: np.ndarray | None = None,
) -> list[ClusterGallery]:
    """One :class:`ClusterGallery` per cluster in ``cluster_ids`` (default: every non-empty
    cluster, in id order). Items are rendered from ``dataset.load(i)`` when a dataset is
    given (images as thumbnails, texts cut to ``TEXT_CHARS``); otherwise only ids show.
    ``embeddings`` (N, d), when given, break confidence ties by :func:`centrality`."""
    clusters = np.asarray(clusters, dtype=np.int64)
    if cluster_ids is None:
        cluster_ids = np.unique(clusters).tolist()
    galleries = []
    for cluster in cluster_ids:
        members = np.flatnonzero(clusters == cluster)
        if len(members) == 0:
            continue
        gallery = ClusterGallery(int(cluster), len(members), float(np.mean(confidences[members])))
        if labels is not None:
            counts = np.bincount(labels[members])
            top = int(counts.argmax())
            gallery.majority = _class_name(top, class_names)
            gallery.purity = float(counts[top] / len(members))
        central = centrality(embeddings, members) if embeddings is not None else None
        prototypes, least = select_members(confidences, members, n_prototypes, n_least, central)
        gallery.prototypes = [_member(i, confidences, ids, dataset, labels, class_names) for i in prototypes]
        gallery.least = [_member(i, confidences, ids, dataset, labels, class_names) for i in least]
        galleries.append(gallery)
    return galleries


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _member(index: int, confidences: np.ndarray, ids: Sequence[str], dataset: Dataset | None,
            labels: np.ndarray | None, class_names: Sequence[str] | None) -> Member:
    member = Member(int(index), str(ids[index]), float(confidences[index]))
    if labels is not None:
        member.class_name = _class_name(int(labels[index]), class_names)
    if dataset is not None and dataset.modality == "image":
        member.image, member.size = thumbnail_uri(dataset.load(int(index)))
        member.href = file_uri(dataset, int(index))
    elif dataset is not None and dataset.modality == "text":
        member.text = truncate(dataset.load(int(index)), TEXT_CHARS)
    return member


# ---- HTML ------------------------------------------------------------------------------
def render_gallery(gallery: ClusterGallery, anchor_prefix: str = "") -> str:
    """The ``<section class="cluster" id="{anchor_prefix}cluster-{id}">`` of one cluster (every user string escaped)."""
    facts = [f"{gallery.size} items", f"mean confidence {gallery.mean_confidence:.2f}"]
    if gallery.majority is not None:
        facts.append(f"majority class <b>{escape(gallery.majority)}</b> (purity {100 * gallery.purity:.1f}%)")
    parts = [
        f'<section class="cluster" id="{anchor_prefix}cluster-{gallery.cluster}">',
        f'<h3>Cluster {gallery.cluster} <span class="facts">{" &middot; ".join(facts)}</span></h3>',
        '<h4>Prototypes <span class="hint">(most confident)</span></h4>',
        _grid(gallery.prototypes, gallery.majority),
    ]
    if gallery.least:
        parts += ['<h4>Least confident</h4>', _grid(gallery.least, gallery.majority)]
    parts.append("</section>")
    return "\n".join(parts)


def _grid(members: list[Member], majority: str | None) -> str:
    kind = "texts" if members and members[0].text is not None else "grid"
    return f'<div class="{kind}">' + "".join(_card(m, majority) for m in members) + "</div>"


def _card(member: Member, majority: str | None) -> str:
    """One item: thumbnail (a link to the original file when there is one; the page's script
    shows it large on click), caption with the relative path, confidence and class."""
    off = majority is not None and member.class_name != majority
    classes = "item off" if off else "item"
    tooltip = f"{member.item_id} | confidence {member.confidence:.3f}"
    if member.class_name is not None:
        tooltip += f" | class {member.class_name}"
    caption = f'<span class="id">{escape(tail(member.item_id, ID_CHARS))}</span><span class="conf">{member.confidence:.2f}</span>'
    if member.class_name is not None:
        caption += f'<span class="cls">{escape(truncate(member.class_name, ID_CHARS))}</span>'
    if member.image is not None:
        w, h = member.size
        img = f'<img src="{member.image}" width="{w}" height="{h}" alt="{escape(member.item_id)}">'
        href = escape(member.href) if member.href else "#"
        body = f'<a class="open" href="{href}" data-id="{escape(member.item_id)}">{img}</a>'
    elif member.text is not None:
        body = f'<p class="text">{escape(member.text)}</p>'
    else:
        body = ""
    return f'<figure class="{classes}" title="{escape(tooltip)}">{body}<figcaption>{caption}</figcaption></figure>'
