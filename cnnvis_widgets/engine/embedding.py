"""A dataset seen through a layer: features, 2-D embeddings (PCA, t-SNE), mosaics and neighbours.

References: van der Maaten & Hinton 2008 (t-SNE); Karpathy, "t-SNE visualization of
CNN codes" (2014) for the mosaic; Krizhevsky et al. 2012 (nearest neighbours in
feature space vs pixel space).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnvis_widgets.engine.activations import batches
from cnnvis_widgets.models.probe import owned_by_probe, require_probe

METHODS = ("tsne", "pca")
MAX_GRID = 1000  # mosaic cells per side
SPACES = ("feature", "pixel")


class Neighbours(NamedTuple):
    """For each query (rows): the k nearest other points, nearest first, and their distances."""

    indices: np.ndarray
    distances: np.ndarray


def penultimate_layer(probe) -> str:
    """The last layer before the logits.

    The model's output is the logits: if the last listed layer has the output's shape
    (a model that lists its logits, like the zoo's), the layer before it; otherwise the
    last listed layer (the output is not a listed layer).
    """
    dummy = jnp.zeros((1, *probe.input_shape), jnp.float32)
    out = jax.eval_shape(lambda x: probe.forward(probe.variables, x)[0], dummy)
    last = probe.layers[-1]
    if tuple(last.shape) == tuple(out.shape[1:]):
        if len(probe.layers) < 2:
            raise ValueError(
                f"{probe.name} lists only its output layer {last.name!r}: there is no penultimate layer."
            )
        return probe.layers[-2].name
    return last.name


def features(
    probe,
    images: Any,
    layer: str | None = None,
    batch_size: int = 256,
    pool: str = "flatten",
    variables: Any = None,
) -> np.ndarray:
    """(N, D) features of ``images`` at ``layer`` (default :func:`penultimate_layer`).

    ``pool``: "flatten" keeps every position (D = H' * W' * C for a spatial layer);
    "mean" averages spatial layers over positions (D = C).
    """
    if pool not in ("flatten", "mean"):
        raise ValueError(f"pool must be 'flatten' or 'mean', got {pool!r}.")
    require_probe(probe, "features")
    name = probe.layer(layer).name if layer is not None else penultimate_layer(probe)
    variables = probe.variables if variables is None else variables
    fn = _features_fn(probe, name, pool)
    chunks = [np.asarray(fn(variables, x))[valid] for x, valid in batches(probe, images, batch_size)]
    return np.concatenate(chunks).astype(np.float32)


def embed(feats: Any, method: str = "tsne", seed: int = 0, threads: int | None = 1, **kwargs) -> np.ndarray:
    """(N, 2) coordinates of (N, D) features, with scikit-learn.

    "tsne": ``TSNE(init="pca", learning_rate="auto", random_state=seed)`` (perplexity
    defaults to min(30, (N - 1) / 3) so small sets work); "pca": ``PCA(2)``, first
    coordinate the direction of largest variance. ``kwargs`` go to the estimator.

    ``threads`` caps the OpenMP threads of t-SNE's gradient (None: scikit-learn's
    default, all cores). One is the default because each of the ~1000 iterations
    synchronizes the threads, which is cheap only on idle cores: t-SNE of the 1797
    digits on a shared 2-core machine took 5-11 s with one thread, 3-67 s with two.
    """
    x = _points(feats, "features")
    n = len(x)
    if n < 3:
        raise ValueError(f"embed needs at least 3 points, got {n}.")
    if method == "tsne":
        from sklearn.manifold import TSNE

        kwargs.setdefault("perplexity", min(30.0, (n - 1) / 3))
        kwargs = {"init": "pca", "learning_rate": "auto", "random_state": seed, **kwargs}
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads, user_api="openmp"):
            coords = TSNE(n_components=2, **kwargs).fit_transform(x)
    elif method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=seed, **kwargs).fit_transform(x)
    else:
        raise ValueError(f"Unknown embedding method {method!r}; valid: {', '.join(METHODS)}.")
    return np.asarray(coords, np.float32)


def mosaic_layout(coords: Any, grid: Sequence[int] = (20, 20), fill: bool = False) -> np.ndarray:
    """(rows, cols) image indices of a mosaic: each cell holds the image nearest its centre, -1 if empty.

    Coordinates are scaled to fill the grid (y up, as in a scatter plot: the top row
    holds the largest y). A cell holds the nearest of the images that fall inside it;
    with ``fill=True`` every cell holds the nearest image overall (images repeat).
    """
    xy = _points(coords, "coords")
    if xy.shape[1] != 2:
        raise ValueError(f"coords must have shape (N, 2), got {xy.shape}.")
    rows, cols = _grid(grid)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    unit = (xy - lo) / np.where(hi > lo, hi - lo, 1.0)  # [0, 1]
    pos = np.stack([(1 - unit[:, 1]) * rows, unit[:, 0] * cols], axis=1)  # (row, col) continuous
    cy, cx = np.meshgrid(np.arange(rows) + 0.5, np.arange(cols) + 0.5, indexing="ij")
    centres = np.stack([cy.ravel(), cx.ravel()], axis=1)
    if fill:
        from sklearn.neighbors import NearestNeighbors

        nearest = NearestNeighbors(n_neighbors=1).fit(pos).kneighbors(centres, return_distance=False)[:, 0]
        return nearest.reshape(rows, cols).astype(np.int64)
    cell_r = np.clip(pos[:, 0].astype(int), 0, rows - 1)
    cell_c = np.clip(pos[:, 1].astype(int), 0, cols - 1)
    cell = cell_r * cols + cell_c
    dist = np.linalg.norm(pos - centres[cell], axis=1)
    layout = np.full(rows * cols, -1, np.int64)
    for i in np.lexsort((np.arange(len(cell)), -dist)):  # farthest first: the nearest writes last
        layout[cell[i]] = i
    return layout.reshape(rows, cols)


def mosaic(
    images: Any,
    coords: Any,
    grid: Sequence[int] = (20, 20),
    tile: int | Sequence[int] | None = None,
    fill: bool = False,
    background: float = 1.0,
) -> np.ndarray:
    """One image (rows * th, cols * tw, C) of thumbnails placed on a grid by their 2-D coordinates.

    Layout by :func:`mosaic_layout`. ``tile``: thumbnail (h, w) (default the images'
    size, shrunk to at most 64 px); empty cells are ``background``.

    References: Karpathy, "t-SNE visualization of CNN codes", 2014.
    """
    imgs = np.asarray(images)
    if imgs.dtype == np.uint8:
        imgs = imgs.astype(np.float32) / 255.0
    if imgs.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {imgs.shape}.")
    if not np.issubdtype(imgs.dtype, np.number) or not np.all(np.isfinite(imgs)):
        raise ValueError(
            f"images must be finite numbers in [0, 1] (or uint8), got dtype {imgs.dtype} with NaN/Inf or non-numbers."
        )
    if imgs.size and (imgs.min() < 0 or imgs.max() > 1):
        raise ValueError(
            f"images must hold values in [0, 1] (or be uint8), got range [{imgs.min():.3g}, {imgs.max():.3g}]."
        )
    if len(imgs) != len(np.asarray(coords)):
        raise ValueError(
            f"Got {len(imgs)} images but {len(np.asarray(coords))} coordinates; give one per image."
        )
    layout = mosaic_layout(coords, grid, fill)
    rows, cols = layout.shape
    th, tw = _tile(tile, imgs.shape[1:3])
    if rows * th * cols * tw > 2**26:
        raise ValueError(
            f"A {rows}x{cols} mosaic of {th}x{tw} tiles would be {rows * th}x{cols * tw} pixels; "
            f"keep it under {2**26:,} pixels (a smaller grid or tile)."
        )
    used = np.unique(layout[layout >= 0])
    thumbs = np.zeros((len(imgs), th, tw, imgs.shape[-1]), np.float32)
    if (th, tw) == imgs.shape[1:3]:
        thumbs[used] = imgs[used]
    else:
        from cnnvis_widgets.data import resize

        thumbs[used] = resize(imgs[used], (th, tw))
    canvas = np.full((rows, cols, th, tw, imgs.shape[-1]), background, np.float32)
    filled = layout >= 0
    canvas[filled] = thumbs[layout[filled]]
    return np.clip(canvas.transpose(0, 2, 1, 3, 4).reshape(rows * th, cols * tw, -1), 0.0, 1.0)


def neighbours(
    points: Any, query: int | Sequence[int], k: int = 5, space: str = "feature", metric: str = "euclidean"
) -> Neighbours:
    """The ``k`` nearest neighbours of the points at ``query`` (indices), excluding each query itself.

    ``space`` names what ``points`` holds: "feature" — (N, D) features (see
    :func:`features`); "pixel" — the images themselves (N, H, W, C), compared pixel
    by pixel. Uses scikit-learn ``NearestNeighbors``; ``query`` as an int gives (k,)
    arrays, as a list (Q, k).
    """
    if space not in SPACES:
        raise ValueError(f"Unknown space {space!r}; valid: {', '.join(SPACES)}.")
    arr = np.asarray(points)
    if space == "feature" and arr.ndim != 2:
        raise ValueError(
            f"Feature-space points must have shape (N, D), got {arr.shape}; for images use space='pixel'."
        )
    x = _points(arr.reshape(len(arr), -1) if arr.ndim > 1 else arr, "points")
    n = len(x)
    single = np.ndim(query) == 0
    q = np.asarray(query).reshape(-1)
    if not np.issubdtype(q.dtype, np.integer) or q.size == 0:
        raise TypeError(f"query must be point indices (integers), got {np.asarray(query).tolist()!r}.")
    bad = q[(q < 0) | (q >= n)]
    if bad.size:
        raise ValueError(f"query index {int(bad[0])} is out of range for {n} points (valid: 0..{n - 1}).")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k={k!r} is out of range: there are {n - 1} other points (valid: 1..{n - 1}).")
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x).kneighbors(x[q])
    keep = idx != q[:, None]
    keep[keep.sum(axis=1) > k, -1] = False  # the query was not among them (duplicates): drop the farthest
    idx = idx[keep].reshape(len(q), k)
    dist = dist[keep].reshape(len(q), k).astype(np.float32)
    return Neighbours(idx[0], dist[0]) if single else Neighbours(idx, dist)


# ----------------------------------------------------------------- helpers
def _points(x: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must be a numeric array (N, D), got {type(x).__name__} {str(x)[:40]!r}."
        ) from None
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (N, D), got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contain NaN or Inf values.")
    return arr


def _grid(grid: Sequence[int]) -> tuple[int, int]:
    g = tuple(np.atleast_1d(grid).tolist())
    g = g * 2 if len(g) == 1 else g
    if len(g) != 2 or not all(isinstance(v, int) and 1 <= v <= MAX_GRID for v in g):
        raise ValueError(
            f"grid must be (rows, cols) of positive integers, got {grid!r} (at most {MAX_GRID} each)."
        )
    return g


def _tile(tile, size) -> tuple[int, int]:
    if tile is None:
        scale = min(1.0, 64 / max(size))
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    t = tuple(np.atleast_1d(tile).tolist())
    t = t * 2 if len(t) == 1 else t
    if len(t) != 2 or not all(isinstance(v, int) and v >= 1 for v in t):
        raise ValueError(f"tile must be a positive int or (h, w), got {tile!r}.")
    return t


@owned_by_probe
def _features_fn(probe, layer: str, pool: str):
    def fn(variables, x):
        acts = probe.forward(variables, x)[1][layer]
        if pool == "mean" and acts.ndim == 4:
            acts = acts.mean(axis=(1, 2))
        return acts.reshape(acts.shape[0], -1)

    return jax.jit(fn)
