"""The interactive embedding map: an inline SVG scatter, one ``<circle class="pt">`` per point.

2-D layout: UMAP (``umap-learn``, cosine, 15 neighbours, seed 0) when it is installed,
else t-SNE (:func:`.plots.embed_2d`). Hovering a point shows its thumbnail (or text) and
its id; a selector recolours the points by the clusters of any method or by true class.
Everything is inline (SVG, JSON data, script): the page stays one offline file.
"""
from __future__ import annotations

import json
from html import escape
from typing import Sequence

import numpy as np

from ..data.base import Dataset
from . import plots
from .gallery import thumbnail_uri, truncate

#: hover thumbnails fit in this many pixels (kept small: one per map point)
HOVER_PX = 48
#: at most this many points on the map (a seeded subsample beyond)
MAX_POINTS = 2000
SIZE = 640


def layout_2d(x: np.ndarray, seed: int = 0, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, str]:
    """(indices of the subsample, (n, 2) coordinates, "UMAP" or "t-SNE")."""
    try:
        import umap  # noqa: F401
    except ImportError:
        idx, xy = plots.embed_2d(x, seed=seed, max_points=max_points)
        return idx, xy, "t-SNE"
    n = len(x)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(idx) - 1), metric="cosine", random_state=seed,
                        n_jobs=1)  # seeded UMAP runs single-threaded anyway; saying so silences its warning
    return idx, reducer.fit_transform(np.asarray(x[idx], dtype=np.float32)), "UMAP"


def _palette(n: int) -> list[str]:
    colors = plots._cluster_colors(n)
    return ["#%02x%02x%02x" % tuple(int(round(255 * v)) for v in c[:3]) for c in colors]


def map_html(x: np.ndarray, ids: Sequence[str], colourings: list[tuple[str, np.ndarray, int, Sequence[str] | None]],
             dataset: Dataset | None, seed: int = 0) -> str:
    """The map section's HTML. ``colourings``: (title, values per item, number of values,
    value names or None), the first shown first (e.g. each method's clusters, then true class)."""
    idx, xy, how = layout_2d(x, seed=seed)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pos = 10 + (SIZE - 20) * (xy - lo) / np.maximum(hi - lo, 1e-12)
    first = colourings[0]
    palette0 = _palette(first[2])
    circles = "".join(
        f'<circle class="pt" data-i="{j}" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{palette0[int(first[1][i])]}"></circle>'
        for j, (i, (px, py)) in enumerate(zip(idx, pos))
    )
    previews: list[str] = []
    for i in idx:
        if dataset is not None and dataset.modality == "image":
            previews.append(thumbnail_uri(dataset.load(int(i)), HOVER_PX)[0])
        elif dataset is not None and dataset.modality == "text":
            previews.append("text:" + truncate(dataset.load(int(i)), 160))
        else:
            previews.append("")
    data = {
        "ids": [str(ids[i]) for i in idx],
        "previews": previews,
        "colourings": [
            {"title": title, "values": [int(values[i]) for i in idx], "palette": _palette(count),
             "names": [str(names[v]) if names is not None and v < len(names) else str(v) for v in range(count)]}
            for title, values, count, names in colourings
        ],
    }
    # no "<", ">" or "&" inside the script element: ids and texts cannot end it or open markup
    blob = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    options = "".join(f'<option value="{c}">{escape(title)}</option>' for c, (title, _, _, _) in enumerate(colourings))
    return (
        f"<p>{how} of {len(idx)} of {len(x)} embeddings (seed {seed}). Hover a point to see the item; "
        f'colour by <select id="map-colour">{options}</select></p>'
        f'<div class="map"><svg id="map-svg" viewBox="0 0 {SIZE} {SIZE}" width="{SIZE}" height="{SIZE}" '
        f'role="img" aria-label="embedding map">{circles}</svg>'
        '<div id="map-tip" class="tip" hidden><img alt=""><p class="text"></p><span class="id"></span></div></div>'
        f'<script type="application/json" id="map-data">{blob}</script>'
    )
