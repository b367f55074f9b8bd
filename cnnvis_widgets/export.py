"""Static exports: PNG files, and the matplotlib figures of tile grids and of each view (``to_figure``)."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnvis_widgets import pixels as px


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    """Save one (H, W, C) [0, 1] image as PNG, optionally enlarged by nearest-neighbour ``scale``."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)) or 0 in arr.shape:
        raise ValueError(f"save_png takes one image (H, W) or (H, W, 1|3|4), got shape {arr.shape}.")
    if arr.dtype != np.uint8 and not np.all(np.isfinite(arr)):
        raise ValueError("save_png: the image contains NaN or Inf values; give values in [0, 1].")
    img = arr if arr.dtype == np.uint8 else px.to_uint8(arr)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    if img.shape[-1] == 1:
        img = img[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def grid_figure(
    tiles: np.ndarray,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    ncols: int | None = None,
    cmap: str | None = None,
    tile_inches: float = 1.1,
):
    """A matplotlib Figure of N tiles (N, H, W, C in [0, 1]) with a label under each."""

    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] not in (1, 3, 4) or len(tiles) == 0:
        raise ValueError(f"grid_figure takes tiles (N, H, W, 1|3|4) with N >= 1, got shape {tiles.shape}.")
    if labels is not None and len(labels) < len(tiles):
        raise ValueError(f"Got {len(tiles)} tiles but {len(labels)} labels; give one label per tile.")
    rows, cols = px.grid_shape(len(tiles), ncols)
    fig = _figure_class()(
        figsize=(cols * tile_inches, rows * tile_inches + (0.4 if title else 0)), layout="constrained"
    )
    draw_tiles(fig, tiles, labels, ncols, cmap or "gray")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def draw_tiles(fig, tiles, labels=None, ncols: int | None = None, cmap: str = "gray") -> None:
    """Draw N tiles (N, H, W, C in [0, 1]) into a Figure or SubFigure, a label above each."""
    rows, cols = px.grid_shape(len(tiles), ncols)
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).flat):
        ax.set_axis_off()
        if i >= len(tiles):
            continue
        tile = tiles[i]
        if tile.shape[-1] == 1:
            ax.imshow(tile[..., 0], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.clip(tile, 0, 1), interpolation="nearest")
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=7, pad=2)


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (what Jupyter shows, and what an ipywidgets.Image takes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure(**kwargs):
    """A new matplotlib Figure (``figsize=``, ``layout=``…) that Jupyter shows as PNG; no pyplot state."""
    return _figure_class()(**kwargs)


@functools.lru_cache(maxsize=1)
def _figure_class():
    """A matplotlib Figure that shows itself in Jupyter as PNG, with no pyplot state involved."""
    from matplotlib.figure import Figure

    class DisplayFigure(Figure):
        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return DisplayFigure


def save_grid(
    tiles: np.ndarray,
    path: str | os.PathLike,
    labels=None,
    title=None,
    ncols=None,
    dpi: int = 150,
    tile_inches: float = 1.1,
) -> Path:
    """Save N tiles as a labelled figure PNG (``grid_figure``) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_figure(tiles, labels, title, ncols, tile_inches=tile_inches).savefig(path, dpi=dpi)
    return path


def filter_detail_figure(
    image: np.ndarray, objective: np.ndarray, title: str, attribution=None, stage_starts: Sequence[int] = ()
):
    """One filter's optimized image at full resolution, where it looked (when ``attribution`` is
    given: the image faded where the gradient was weak, as MACO's transparency mask) and its
    objective curve, side by side (the curve in its own axes, never over the image). A dashed line
    marks each of ``stage_starts`` (steps where a progressive run grew the image)."""
    image = np.asarray(image)
    panels = 3 if attribution is not None else 2
    fig = figure(figsize=(3.2 * panels, 3.2), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.1, wspace=0.06)  # room between the pictures and the curve's label
    axes = fig.subplots(1, panels, width_ratios=[1] * (panels - 1) + [1.3])
    shown = image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1)
    smooth = "lanczos" if max(image.shape[:2]) > 64 else "nearest"  # small images: show their pixels
    axes[0].imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation=smooth)
    axes[0].set_title(title, fontsize=10)
    axes[0].set_axis_off()
    if attribution is not None:
        alpha = np.clip(np.asarray(attribution) / max(float(np.percentile(attribution, 95)), 1e-12), 0, 1)
        rgb = np.repeat(shown[..., None], 3, -1) if shown.ndim == 2 else shown
        axes[1].imshow(np.concatenate([rgb, alpha[..., None]], -1), interpolation=smooth)
        axes[1].set_facecolor("white")
        axes[1].set_title("where it looks", fontsize=10)
        axes[1].set_xticks([])
        axes[1].set_yticks([])
    curve = axes[-1]
    curve.plot(np.arange(1, len(objective) + 1), objective, color="C0")
    for start in stage_starts:
        curve.axvline(start + 0.5, color="0.5", linestyle="--", linewidth=1)
        curve.annotate("full size", (start + 0.5, 1.0), xycoords=("data", "axes fraction"),
                       xytext=(3, -12), textcoords="offset points", fontsize=8, color="0.4")  # fmt: skip
    curve.set_xlabel("step", fontsize=9)
    curve.set_ylabel("objective (activation)", fontsize=9)
    curve.tick_params(labelsize=8)
    curve.grid(alpha=0.3)
    return fig


def saliency_figure(tiles, labels, top5, title: str, cascade=None, faithfulness=None):
    """Saliency maps (over their images) with the top-5 classes beside them; when ``cascade`` is given
    as (tiles, labels), the sanity check's randomization row under them; when ``faithfulness`` is given
    as rows (method, deletion AUC, insertion AUC), best first, the faithfulness ranking under those."""
    rows, cols = px.grid_shape(len(tiles), 2 if len(tiles) == 2 else None)
    width = max(cols * 1.6 + 2.2, len(cascade[0]) * 1.3 if cascade else 0)
    heights = [rows * 1.7] + ([1.8] if cascade else [])
    heights += [0.5 + 0.15 * len(faithfulness)] if faithfulness else []
    fig = figure(figsize=(width, sum(heights) + 0.4), layout="constrained")
    parts = list(fig.subfigures(len(heights), 1, height_ratios=heights)) if len(heights) > 1 else [fig]
    main, side = parts[0].subfigures(1, 2, width_ratios=[cols * 1.6, 2.2])
    draw_tiles(main, tiles, labels, cols)
    ax = side.add_subplot()
    ax.set_axis_off()
    text = "top-5\n" + "\n".join(f"{p:6.3f}  {name}" for name, p in top5)
    ax.text(0, 1, text, va="top", family="monospace", fontsize=8, transform=ax.transAxes)
    if cascade:
        draw_tiles(parts[1], cascade[0], cascade[1], len(cascade[0]))
        parts[1].suptitle("sanity check: randomized from the top (ρ: Spearman vs trained)", fontsize=8)
    if faithfulness:
        ax = parts[-1].add_subplot()
        ax.set_axis_off()
        table = [f"{'#':>2}  {'method':<22}{'deletion':>9}{'insertion':>10}{'ins-del':>9}"]
        for k, (method, d, i) in enumerate(faithfulness, 1):
            table.append(f"{k:>2}  {method:<22}{d:9.3f}{i:10.3f}{i - d:+9.3f}")
        ax.text(0, 1, "\n".join(table), va="top", family="monospace", fontsize=8, transform=ax.transAxes)
        parts[-1].suptitle(
            "faithfulness (Petsiuk et al. 2018): areas under deletion (lower is better), insertion (higher)",
            fontsize=8,
        )
    fig.suptitle(title, fontsize=10)
    return fig


def feature_maps_figure(tiles, labels, title: str, detail=None, patches_of: str = ""):
    """A layer's feature maps (viridis) and, when ``detail`` is given (an ``ActivationExplorer``'s ``Detail``:
    one filter's top patches, their values and its optimized image), that filter under them."""
    if detail is None:
        return grid_figure(tiles, labels, title=title, cmap="viridis")
    d = detail
    rows, cols = px.grid_shape(len(tiles))
    fig = figure(figsize=(max(cols, len(d.values) + 2) * 1.1, rows * 1.1 + 2.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[rows * 1.1 + 0.4, 1.8])
    draw_tiles(top, tiles, labels, cols, "viridis")
    top.suptitle(title, fontsize=10)
    left, right = bottom.subfigures(1, 2, width_ratios=[len(d.values), 2])
    draw_tiles(left, d.patches, [f"{v:.2f}" for v in d.values], len(d.values), "gray")
    left.suptitle(f"filter {d.unit}: top {len(d.values)} patches over {patches_of}", fontsize=8)
    draw_tiles(right, d.optimized[None], [f"filter {d.unit}"], 1, "gray")
    right.suptitle("optimized", fontsize=8)
    return fig


def training_figure(history: dict, curves: dict, kernel_tiles, dead_counts: dict):
    """A training run: the loss curve, the accuracy curves (``curves``: label → (colour, key of
    ``history``)), the conv1 kernels and the dead-filter counts at the last evaluation."""
    h = history
    fig = figure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    ax_loss, ax_acc = top.subplots(1, 2)
    ax_loss.plot(h["loss_step"], h["loss"], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    for label, (color, key) in curves.items():
        ax_acc.plot(h["eval_step"], h[key], label=label, color=color)
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    ax_acc.legend(loc="lower right", fontsize=8)
    axes = bottom.subplots(2, -(-len(kernel_tiles) // 2), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(kernel_tiles):
            ax.imshow(kernel_tiles[i, ..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(str(i), fontsize=7, pad=2)
    dead = " · ".join(f"{name} {n}" for name, n in dead_counts.items())
    bottom.suptitle(f"conv1 kernels at step {h['eval_step'][-1]} · dead filters: {dead}", fontsize=10)
    return fig


def embedding_figure(coords, points, colors, title: str, axis_labels, query=None, neighbours=None):
    """A 2-D embedding's scatter (``coords``; ``points``: the embedded points' names, class codes
    and images), a colour per class; with a ``query`` point, rings on it and its neighbours in the
    first of ``neighbours`` (space → indices), and under the scatter a row of their images per
    space, each saying how many share the query's class."""
    colors = np.asarray(colors)
    ringed = next(iter(neighbours.values())) if query is not None else []  # the first space's neighbours
    k = len(ringed)
    # the scatter on top; with a query, a row per space below: the query and its neighbours
    width, rows = max(6.5, 0.8 * (k + 1)), 0.95 * len(neighbours) if query is not None else 0.0
    fig = figure(figsize=(width, 6 + rows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[6, rows]) if query is not None else (fig, None)
    ax = top.subplots()
    for code, name in enumerate(points.names):
        mask = points.codes == code
        ax.scatter(*coords[mask].T, s=12, c=colors[code], label=name, alpha=0.85, linewidths=0)
    if points.labelled and len(points.names) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, frameon=False, loc="best")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=10)
    if query is None:
        return fig
    ring = coords[np.concatenate([[query], ringed])]
    ax.scatter(*ring.T, s=90, facecolors="none", edgecolors="black", linewidths=1.2)
    axes = bottom.subplots(len(neighbours), k + 1, squeeze=False)
    for row, (space, found) in enumerate(neighbours.items()):
        for col, (a, j) in enumerate(zip(axes[row], np.concatenate([[query], found]))):
            image = points.images[j]
            a.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            a.set_axis_off()
            a.set_title(("query " if col == 0 else "") + points.names[points.codes[j]], fontsize=7)
        same = int((points.codes[found] == points.codes[query]).sum())
        axes[row][0].text(
            -0.1, 0.5, f"{space}\n{same}/{k}", transform=axes[row][0].transAxes,
            ha="right", va="center", fontsize=8,
        )  # fmt: skip
    return fig


# ------------------------------------------------- concepts: the ConceptExplorer and `cnnvis concepts`
CONCEPT_METHODS = {"lrp": "LRP", "grad_x_act": "gradient × activation"}  # engine.concepts.METHODS, in words


def concept_target(probe, result) -> str:
    """The target a ``ConceptResult`` explains, in words: "class tabby" or "conv3:5"."""
    from cnnvis_widgets.engine.saliency import unit_label

    label = unit_label(probe, result.target, result.target_layer)
    return label if result.target_layer else f"class {label}"


def concept_title(probe, result) -> str:
    """"conv3 inside conv4:40: 6 concepts for class 1 (LRP)"."""
    inside = f" inside {result.within[0]}:{result.within[1]}" if result.within else ""
    return (
        f"{result.layer}{inside}: {len(result.channels)} concepts for {concept_target(probe, result)} "
        f"({CONCEPT_METHODS.get(result.method, result.method)})"
    )


def concept_main(probe, image, result, selected: int, opacity: float = 0.5, cmap: str = "RdBu_r"):
    """(tiles (2, H, W, 3), labels): ``image`` (H, W, C), and concept ``selected``'s conditional heatmap
    over it (``concept_overlays``)."""
    i = selected
    overlay = concept_overlays(image, result.heatmaps[i : i + 1], opacity, cmap)
    concept = f"{result.layer}:{int(result.channels[i])} · {result.shares[i]:+.1%}"
    labels = [f"target {concept_target(probe, result)}", concept]
    return np.concatenate([px.to_rgb(image)[None], overlay]), labels


def concept_overlays(image, heatmaps, opacity: float = 0.5, cmap: str = "RdBu_r") -> np.ndarray:
    """(k, H, W, 3): each signed conditional heatmap (k, H, W) over ``image`` (H, W, C), 0 at the
    colormap's centre, each map scaled to its own 99.5th percentile (``pixels.display_maps``)."""
    heat = px.colorize(px.display_maps(heatmaps, signed=True), cmap)
    return px.overlay(np.asarray(image)[None], heat, opacity)


def concept_cards(image, result, examples, features=None, patches=3, opacity=0.5, cmap="RdBu_r"):
    """(tiles (rows * k, S, S, 3), labels): the k concepts of ``result`` as cards, one montage's tiles
    row-major, a column a card: its feature visualization (a row only when ``features`` is given),
    its heatmap over ``image``, then its top ``patches`` patches (``ConceptExamples``); what is not
    there yet (None) is grey, and so is a patch whose relevance is not at least ``EXAMPLE_SHARE`` of
    its card's best (in a few reference images the next best may not show the concept at all). S is
    the image's height, at most 112 px; the labels (channel, signed share of the relevance) go under
    the first row."""
    rows = [] if features is None else [list(features)]
    rows.append(list(concept_overlays(image, result.heatmaps, opacity, cmap)))
    for j in range(patches):
        rows.append([_example_patch(ex, j) for ex in examples])
    size = min(np.shape(image)[0], 112)
    tiles = np.concatenate([_square_tiles(row, size) for row in rows])
    labels = [f"{int(c)} · {s:+.1%}" for c, s in zip(result.channels, result.shares)]
    return tiles, labels + [""] * (len(tiles) - len(labels))


def concept_caption(path: str, image_name: str, patches_over: str) -> str:
    """The text beside the main tiles: the path of decompositions, the image, the patches' dataset."""
    return (
        f"path: {path}\nimage: {image_name}\ntop patches over {patches_over}\n"
        "(grey: no other image where it is relevant)\n\nheatmaps: red raises the score,\nblue lowers it"
    )


EXAMPLE_SHARE = 0.25  # a concept's example patch is shown if its relevance is this share of the best's


def _example_patch(examples, j: int):
    """Patch ``j`` of a ``ConceptExamples``, or None where there is none or it is hardly relevant."""
    if examples is None or j >= len(examples.patches):
        return None
    best = float(examples.values[0])
    return examples.patches[j] if best > 0 and examples.values[j] >= EXAMPLE_SHARE * best else None


def concept_rows(features: bool, patches: int) -> list[str]:
    """The names of ``concept_cards``' rows, one per row (the patch rows after the first unnamed)."""
    return (["feature visualization"] if features else []) + ["heatmap on the image"] + (
        ["top patches"] + [""] * (patches - 1) if patches else []
    )


def _square_tiles(images, size: int) -> np.ndarray:
    """Images of any sizes (or None: grey) as (n, size, size, 3) RGB tiles in [0, 1]."""
    from cnnvis_widgets import data

    out = np.full((len(images), size, size, 3), 0.5, np.float32)
    for i, image in enumerate(images):
        if image is not None:
            rgb = px.to_rgb(image)
            fitted = rgb if rgb.shape[:2] == (size, size) else data.resize(rgb, (size, size))
            out[i] = np.clip(fitted, 0.0, 1.0)
    return out


def concepts_figure(main, main_labels, cards, card_labels, rows: Sequence[str], title: str, caption=""):
    """The ConceptExplorer's picture: ``main`` (``concept_main``) above the concept cards
    (``concept_cards``: a column per concept, a row per name in ``rows``, ``card_labels`` over the
    first row), ``caption`` (the path, the image, the patches' dataset) beside the main tiles."""
    n_rows = len(rows)
    k = len(cards) // n_rows
    width = max(k * 1.25 + 0.9, 6.6)  # the cards, or the main tiles (4.4 in) and the caption (2.2 in)
    fig = figure(figsize=(width, 2.5 + n_rows * 1.3), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.5, n_rows * 1.3])
    left, right = top.subfigures(1, 2, width_ratios=[4.4, width - 4.4])
    draw_tiles(left, main, main_labels, 2)
    ax = right.add_subplot()
    ax.set_axis_off()
    ax.text(0, 1, caption, va="top", fontsize=7.5, wrap=True, transform=ax.transAxes)
    axes = bottom.subplots(n_rows, k + 1, squeeze=False, width_ratios=[0.9] + [1.25] * k)
    for r, row in enumerate(axes):
        row[0].set_axis_off()
        row[0].text(1, 0.5, rows[r], ha="right", va="center", fontsize=7, transform=row[0].transAxes)
        for c, ax in enumerate(row[1:]):
            ax.set_axis_off()
            ax.imshow(cards[r * k + c], interpolation="nearest")
            if r == 0:
                ax.set_title(card_labels[c], fontsize=7, pad=2)
    fig.suptitle(title, fontsize=10)
    return fig
