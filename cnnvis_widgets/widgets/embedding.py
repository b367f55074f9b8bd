"""EmbeddingExplorer: a dataset seen through one layer, as a 2-D map you can hover and click.

Features of every image at the chosen layer are embedded in 2-D (t-SNE, PCA) on the
widget's worker thread and drawn as a bqplot scatter coloured by label. Hovering a point
shows its image; clicking one selects it and shows its k nearest neighbours in feature
space beside its k nearest neighbours in pixel space, with how many share its label. The
mosaic view places thumbnails on a grid by their coordinates instead; clicking one selects it.

References: van der Maaten & Hinton 2008 (t-SNE); Karpathy, "t-SNE visualization of CNN
codes" (2014) for the mosaic; Krizhevsky et al. 2012 (feature vs pixel neighbours).
"""

from __future__ import annotations

import functools
import html
import threading
import time
from typing import NamedTuple

import bqplot
import ipywidgets as widgets
import numpy as np
import traitlets

from cnnvis_widgets import validation
from cnnvis_widgets.engine import embedding as emb
from cnnvis_widgets.widgets.controls import LayerSlider
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View, as_probe

METHOD_LABELS = {"tsne": "t-SNE", "pca": "PCA"}
AXIS_LABELS = {"tsne": ("t-SNE 1", "t-SNE 2"), "pca": ("PC 1", "PC 2")}
THUMB_PX = 32  # mosaic thumbnails: at most this many pixels a side


class Points(NamedTuple):
    """The explored images (N, H, W, C) in [0, 1], a class code per image and each code's name."""

    images: np.ndarray
    codes: np.ndarray
    names: list[str]
    labelled: bool


class Embedding(NamedTuple):
    """One finished run: features (N, D) at ``layer`` and their 2-D ``coords`` (N, 2)."""

    layer: str
    method: str
    pool: str
    seed: int
    features: np.ndarray
    coords: np.ndarray
    points: Points
    seconds: float


def _drawing(method):
    """Run a drawing method under the view's lock: one thread at a time touches the marks and grids."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._draw_lock:
            return method(self, *args, **kwargs)

    return locked


class EmbeddingExplorer(View):
    """A layer's features of a dataset as a 2-D scatter (or mosaic); hover to see, click for neighbours.

    Args:
      probe: a Probe or a zoo name ("digits-cnn").
      dataset: a ``data.Dataset``, ``(images, labels)`` or images alone, (N, H, W, C) in [0, 1]
        (uint8 is scaled; (N, H, W) for grayscale models). Default: the 450 test digits for
        grayscale models, the bundled photos for RGB ones.
      layer: the layer whose features are embedded (default the penultimate one).
      method: "tsne" or "pca" (see ``engine.embedding.embed``).
      limit: use only the first ``limit`` images.
      k: neighbours shown for a clicked point.
      pool: "flatten" or "mean" (average spatial layers over positions).
      seed: the embedding's random seed.
      autorun: compute the first embedding at once.
    """

    selected = traitlets.Int(-1)  # the clicked point, -1 for none
    hovered = traitlets.Int(-1)  # the point under the mouse, -1 for none

    def __init__(
        self,
        probe,
        dataset=None,
        *,
        layer: str | None = None,
        method: str = "tsne",
        limit: int | None = None,
        k: int = 8,
        pool: str = "flatten",
        seed: int = 0,
        autorun: bool = True,
    ):
        super().__init__(name="cnnvis-embedding")
        self._draw_lock = threading.RLock()  # the worker and the kernel's event handlers both draw
        self.probe = probe = as_probe(probe)
        if method not in emb.METHODS:
            raise ValueError(f"Unknown embedding method {method!r}; valid: {', '.join(emb.METHODS)}.")
        if pool not in ("flatten", "mean"):
            raise ValueError(f"pool must be 'flatten' or 'mean', got {pool!r}.")
        validation.positive_int(k, "k", what="neighbours shown")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}.")
        self.points = as_points(probe, dataset, limit)
        self.result: Embedding | None = None
        self.runs_started = 0
        # per dataset: ("features", layer, pool) -> (N, D); ("coords", layer, pool, method, seed) -> (N, 2);
        # "thumbs" -> mosaic thumbnails. A new dataset gets a new dict, so an old job cannot pollute it.
        self._cache: dict = {}
        self._layout: np.ndarray | None = None  # the mosaic's (rows, cols) image indices
        self.mosaic: np.ndarray | None = None  # the mosaic picture last drawn
        self._neighbour_indices: dict[str, np.ndarray] = {}
        n = len(self.points.images)

        # ------------------------------------------------------------ controls
        self.layer_slider = LayerSlider(probe, layer or emb.penultimate_layer(probe), spatial_only=False)
        self.method = widgets.Dropdown(
            options=[(METHOD_LABELS.get(m, m), m) for m in emb.METHODS],
            value=method,
            description="method",
            layout=widgets.Layout(width="180px"),
        )
        self.pool = widgets.Dropdown(
            options=[("flatten", "flatten"), ("mean over positions", "mean")],
            value=pool,
            description="pool",
            layout=widgets.Layout(width="240px"),
        )
        self.seed = widgets.IntText(seed, description="seed", layout=widgets.Layout(width="140px"))
        self.view = widgets.ToggleButtons(
            options=[("scatter", "scatter"), ("mosaic", "mosaic")],
            style={"button_width": "72px"},
            layout=widgets.Layout(flex="0 0 auto"),
        )
        self.k = widgets.BoundedIntText(
            min(k, n - 1), min=1, max=n - 1, description="k", layout=widgets.Layout(width="130px")
        )
        self.cells = widgets.IntSlider(
            _default_cells(n), min=2, max=60, description="mosaic", continuous_update=False
        )
        self.fill = widgets.Checkbox(False, description="fill empty cells", indent=False)

        # --------------------------------------------------------- the scatter
        self._sx, self._sy = bqplot.LinearScale(), bqplot.LinearScale()
        self._sc = bqplot.OrdinalColorScale()
        self.scatter = bqplot.Scatter(
            x=np.zeros(0),
            y=np.zeros(0),
            color=np.zeros(0, np.int32),
            scales={"x": self._sx, "y": self._sy, "color": self._sc},
            default_size=24,
            stroke_width=0.5,
            opacities=[0.85],
            # no "click": "select": bqplot 0.13.1's select handler throws in the browser (its event
            # is null) before the element_click message goes out; `selected` is set from here
            interactions={"hover": "tooltip"},
            selected_style={"stroke": "black", "stroke-width": 2.5},
        )
        self.scatter.on_hover(self._on_hover)
        self.scatter.on_element_click(self._on_click)
        # rings around the selected point and its feature-space neighbours, under the points
        self.rings = bqplot.Scatter(
            x=np.zeros(0),
            y=np.zeros(0),
            scales={"x": self._sx, "y": self._sy},
            default_size=150,
            fill=False,
            stroke="black",
            stroke_width=1.5,
            colors=["black"],
            enable_hover=False,
            interactions={},
        )
        self._ax_x = bqplot.Axis(scale=self._sx, label="", num_ticks=4, grid_lines="none")
        self._ax_y = bqplot.Axis(scale=self._sy, side="left", label="", num_ticks=4, grid_lines="none")
        self.figure = bqplot.Figure(
            marks=[self.rings, self.scatter],
            axes=[self._ax_x, self._ax_y],
            padding_x=0.05,
            padding_y=0.05,
            fig_margin={"top": 30, "bottom": 40, "left": 45, "right": 10},
            layout=widgets.Layout(width="520px", height="480px"),
            title_style={"font-size": "13px"},
        )
        self.mosaic_grid = ImageGrid(cmap="gray", tile_px=480)
        # clicks on the mosaic, in image coordinates (the grid's own MouseInteraction)
        self.mosaic_grid.mouse.on_msg(self._on_mosaic_mouse)
        self.legend = widgets.HTML()

        # ---------------------------------------------------- hover and click
        h, w, c = self.points.images.shape[1:]
        self.preview = ImageGrid(
            np.ones((1, h, w, c), np.float32), ["hover a point"], cmap="gray", tile_px=96
        )
        self.query = ImageGrid(np.ones((1, h, w, c), np.float32), ["click a point"], cmap="gray", tile_px=64)
        self.feature_grid = ImageGrid(cmap="gray", tile_px=56)
        self.pixel_grid = ImageGrid(cmap="gray", tile_px=56)
        self.feature_header = widgets.HTML()
        self.pixel_header = widgets.HTML()
        self.agreement: dict[str, float] = {}  # space -> fraction of neighbours sharing the label

        self.stage = widgets.Box([self.figure])
        self.neighbour_row = widgets.HBox(
            [
                self.query,
                widgets.VBox([self.feature_header, self.feature_grid, self.pixel_header, self.pixel_grid]),
            ]
        )
        self.children = [
            widgets.HBox([self.layer_slider, self.method, self.pool]),
            widgets.HBox([self.view, self.k, self.seed, self.cells, self.fill]),
            self.status,
            widgets.HBox([self.stage, widgets.VBox([self.preview, self.legend])]),
            self.neighbour_row,
        ]
        self._show_legend()
        self._blank_neighbours()

        for control in (self.layer_slider, self.method, self.pool, self.seed):
            control.observe(lambda _change: self.run(), "value")
        self.view.observe(self._switch_view, "value")
        self.k.observe(lambda _change: self._show_neighbours(), "value")
        self.cells.observe(lambda _change: self._draw_mosaic(), "value")
        self.fill.observe(lambda _change: self._draw_mosaic(), "value")
        self.feature_grid.observe(lambda change: self._jump(change, "feature"), "selected")
        self.pixel_grid.observe(lambda change: self._jump(change, "pixel"), "selected")
        self.observe(self._show_hovered, "hovered")
        self.observe(lambda _change: self._show_neighbours(), "selected")
        if autorun:
            self.run()

    # --------------------------------------------------------------- running
    def run(self) -> int:
        """(Re)compute features and embedding with the controls' current values; returns its generation."""
        try:
            layer = self.probe.layer(self.layer_slider.value).name
            if self.method.value not in emb.METHODS:
                raise ValueError(f"Unknown embedding method {self.method.value!r}.")
        except (ValueError, TypeError) as err:
            self.runner.cancel()
            self.show_error(err)
            return self.runner.generation
        request = {
            "layer": layer,
            "method": self.method.value,
            "pool": self.pool.value,
            "seed": int(self.seed.value),
            "points": self.points,
            "cache": self._cache,
        }
        self.runs_started += 1
        self.show_status(f"{layer}: starting…")
        return self.runner.submit(lambda cancelled: self._job(request, cancelled))

    def set_dataset(self, dataset, limit: int | None = None) -> int:
        """Explore other images: a Dataset, (images, labels) or images. A bad one shows an error."""
        try:
            points = as_points(self.probe, dataset, limit)
        except (ValueError, TypeError) as err:
            self.runner.cancel()
            self.show_error(err)
            return self.runner.generation
        self.runner.cancel()
        self.points, self._cache, self.result, self._layout = points, {}, None, None
        n = len(points.images)
        self.k.max = max(1, n - 1)
        self.cells.value = _default_cells(n)
        self.selected, self.hovered = -1, -1
        self._neighbour_indices = {}
        with self.rings.hold_sync():
            self.rings.x, self.rings.y = np.zeros(0), np.zeros(0)
        h, w, c = points.images.shape[1:]
        self.preview.update(np.ones((1, h, w, c), np.float32), ["hover a point"])
        self._blank_neighbours()
        self._show_legend()
        return self.run()

    def _job(self, request, cancelled):
        start = time.monotonic()
        points: Points = request["points"]
        layer, method, pool, seed = request["layer"], request["method"], request["pool"], request["seed"]
        n = len(points.images)
        label = METHOD_LABELS.get(method, method)
        cache = request["cache"]
        fkey, ckey = ("features", layer, pool), ("coords", layer, pool, method, seed)
        feats = cache.get(fkey)
        if feats is None:
            self.show_status(f"{layer}: features of {n} images… (1/3)")
            feats = emb.features(self.probe, points.images, layer, pool=pool)
            if cancelled():
                return
            cache[fkey] = feats
        coords = cache.get(ckey)
        if coords is None:
            self.show_status(f"{layer}: {label} of {n} points in {feats.shape[1]}-D… (2/3)")
            coords = emb.embed(feats, method, seed=seed)
            if cancelled():
                return
            cache[ckey] = coords
        if "thumbs" not in cache:
            cache["thumbs"] = _thumbnails(points.images)
        if cancelled():
            return
        self.show_status(f"{layer}: drawing… (3/3)")
        result = Embedding(layer, method, pool, seed, feats, coords, points, time.monotonic() - start)
        self.result = result
        self._draw_scatter(result)
        self._draw_mosaic()
        self._show_neighbours()
        if cancelled():
            return
        self.show_status(
            f"{layer} · {label}: {n} images, {feats.shape[1]}-D features → 2-D in {result.seconds:.1f} s"
        )

    # --------------------------------------------------------------- drawing
    @_drawing
    def _draw_scatter(self, result: Embedding) -> None:
        points = result.points
        colors = _palette(len(points.names))
        ax_x, ax_y = AXIS_LABELS.get(result.method, ("1", "2"))
        with self.figure.hold_sync(), self.scatter.hold_sync():
            self._sc.domain = list(range(len(points.names)))
            self._sc.colors = colors
            self.scatter.x = result.coords[:, 0]
            self.scatter.y = result.coords[:, 1]
            self.scatter.color = points.codes
            self.scatter.selected = [self.selected] if 0 <= self.selected < len(result.coords) else None
            self._ax_x.label, self._ax_y.label = ax_x, ax_y
            self.figure.title = (
                f"{self.probe.name} · {result.layer} · {METHOD_LABELS.get(result.method, result.method)}"
            )

    @_drawing
    def _draw_mosaic(self) -> None:
        result = self.result
        thumbs = self._cache.get("thumbs")
        if result is None or thumbs is None:
            return
        grid = (int(self.cells.value), int(self.cells.value))
        try:
            picture = emb.mosaic(thumbs, result.coords, grid, fill=bool(self.fill.value))
            self._layout = emb.mosaic_layout(result.coords, grid, fill=bool(self.fill.value))
        except (ValueError, TypeError) as err:
            self.show_error(err)
            return
        self.mosaic = picture
        if self.view.value == "mosaic":
            self.mosaic_grid.update(picture[None])

    def _switch_view(self, change):
        if change["new"] == "mosaic":
            self.stage.children = [self.mosaic_grid]
            self._draw_mosaic()
        else:
            self.stage.children = [self.figure]

    def _show_legend(self) -> None:
        points = self.points
        if not points.labelled:
            self.legend.value = "<small>no labels: one colour</small>"
            return
        counts = np.bincount(points.codes, minlength=len(points.names))
        rows = [
            f"<span style='color:{c}'>●</span> {html.escape(name)} <small>({k})</small>"
            for c, name, k in zip(_palette(len(points.names)), points.names, counts)
        ]
        self.legend.value = "<div style='line-height:1.3'>" + "<br>".join(rows) + "</div>"

    # -------------------------------------------------------- hover and click
    def _on_hover(self, _mark, event):
        index = _event_index(event)
        if index is not None and 0 <= index < len(self.points.images):
            self.hovered = index

    def _on_click(self, _mark, event):
        index = _event_index(event)
        if index is not None and 0 <= index < len(self.points.images):
            self.selected = index

    def _on_mosaic_mouse(self, _interaction, content, _buffers=None):
        """MouseInteraction sends ``{"event": "click", "domain": {"x": .., "y": ..}}`` (y up)."""
        data = content.get("domain", {}) if isinstance(content, dict) else {}
        layout, thumbs = self._layout, self._cache.get("thumbs")
        if content.get("event") != "click" or layout is None or thumbs is None or "x" not in data:
            return
        th, tw = thumbs.shape[1:3]
        height = layout.shape[0] * th
        row, col = int((height - float(data["y"])) // th), int(float(data["x"]) // tw)
        if 0 <= row < layout.shape[0] and 0 <= col < layout.shape[1] and layout[row, col] >= 0:
            self.selected = int(layout[row, col])

    @_drawing
    def _blank_neighbours(self) -> None:
        """White tiles and a hint until a point is clicked."""
        blank = np.ones((int(self.k.value), *self.points.images.shape[1:]), np.float32)
        self.query.update(blank[:1], ["click a point"])
        for grid, header, where in (
            (self.feature_grid, self.feature_header, "feature space"),
            (self.pixel_grid, self.pixel_header, "pixel space"),
        ):
            grid.ncols = len(blank)  # one row, nearest first
            grid.update(blank, [""] * len(blank))
            header.value = (
                f"<b>{where}</b>: <small>click a point for its {len(blank)} nearest neighbours</small>"
            )

    @_drawing
    def _show_hovered(self, change):
        i = change["new"]
        points = self.points
        if 0 <= i < len(points.images):
            self.preview.update(points.images[i : i + 1], [f"#{i} · {points.names[points.codes[i]]}"])

    def _jump(self, change, space: str):
        """A click on a neighbour tile selects that neighbour."""
        shown = self._neighbour_indices.get(space)
        if shown is not None and 0 <= change["new"] < len(shown):
            self.selected = int(shown[change["new"]])

    def neighbours(self, space: str = "feature") -> emb.Neighbours:
        """The selected point's k nearest other points in "feature" or "pixel" space."""
        result, i = self.result, self.selected
        if result is None or not 0 <= i < len(result.coords):
            raise RuntimeError("No point selected: click one (or set .selected) after the embedding ran.")
        k = min(int(self.k.value), len(result.coords) - 1)
        data = result.features if space == "feature" else result.points.images
        return emb.neighbours(data, i, k=k, space=space)

    @_drawing
    def _show_neighbours(self) -> None:
        result, i = self.result, self.selected
        if result is None or not 0 <= i < len(result.coords):
            return
        points = result.points
        try:
            found = {space: self.neighbours(space) for space in emb.SPACES}
        except (ValueError, TypeError) as err:
            self.show_error(err)
            return
        self._neighbour_indices = {space: nb.indices for space, nb in found.items()}
        name = points.names[points.codes[i]]
        self.query.update(points.images[i : i + 1], [f"#{i} · {name}"])
        for space, grid, header in (
            ("feature", self.feature_grid, self.feature_header),
            ("pixel", self.pixel_grid, self.pixel_header),
        ):
            idx = found[space].indices
            same = int((points.codes[idx] == points.codes[i]).sum())
            self.agreement[space] = same / len(idx)
            where = f"feature space ({html.escape(result.layer)})" if space == "feature" else "pixel space"
            share = f"{same}/{len(idx)} share the label {html.escape(name)}" if points.labelled else ""
            header.value = f"<b>{where}</b>: {share}"
            grid.ncols = len(idx)  # one row, nearest first
            grid.update(points.images[idx], [points.names[c] for c in points.codes[idx]])
            grid.selected = -1  # so clicking the same tile again selects again
        ring = np.concatenate([[i], found["feature"].indices])
        with self.rings.hold_sync(), self.scatter.hold_sync():
            self.rings.x, self.rings.y = result.coords[ring, 0], result.coords[ring, 1]
            self.scatter.selected = [i]

    # ----------------------------------------------------------------- export
    def to_figure(self):
        """The scatter (with the selected point's neighbours beside it), or the mosaic in mosaic view."""
        from cnnvis_widgets import export

        result = self.result
        if result is None:
            raise RuntimeError("No embedding yet: call run() and wait().")
        title = f"{self.probe.name} · {result.layer} · {METHOD_LABELS.get(result.method, result.method)}"
        if self.view.value == "mosaic":
            return export.grid_figure(self.mosaic[None], title=title, tile_inches=6.0)
        points = result.points
        query = self.selected if 0 <= self.selected < len(result.coords) else None
        found = None if query is None else {space: self.neighbours(space).indices for space in emb.SPACES}
        return export.embedding_figure(
            result.coords,
            points,
            _palette(len(points.names)),
            title,
            AXIS_LABELS.get(result.method, ("1", "2")),
            query=query,
            neighbours=found,
        )


# --------------------------------------------------------------------- helpers
def as_points(probe, dataset=None, limit: int | None = None) -> Points:
    """Images, label codes and names from a Dataset, (images, labels) or images; checked against the probe."""
    from cnnvis_widgets import data

    if dataset is None:
        if probe.input_shape[-1] == 1:
            dataset = data.digits_split(size=probe.input_shape[0])[1]
        else:
            photos = data.fit_to([data.photo(name) for name in data.PHOTOS], probe)
            dataset = data.Dataset(photos, np.arange(len(data.PHOTOS)), list(data.PHOTOS))
    names = None
    if isinstance(dataset, data.Dataset):
        images, labels, names = dataset
    elif (
        isinstance(dataset, tuple)
        and len(dataset) == 2
        and np.ndim(dataset[1]) == 1
        and np.ndim(dataset[0]) >= 3
    ):
        images, labels = dataset
    else:
        images, labels = dataset, None
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4):
        raise ValueError(f"Got one image of shape {images.shape}; give a batch (N, H, W, C) of at least 3.")
    if images.ndim == 3 and probe.input_shape[-1] == 1:
        images = images[..., None]  # (N, H, W) grayscale
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 3:
            raise ValueError(f"limit must be an integer of at least 3, got {limit!r}.")
        images = images[:limit]
        labels = None if labels is None else np.asarray(labels)[:limit]
    images = np.asarray(probe.check_images(images), np.float32)  # shape, channel and range errors
    n = len(images)
    if n < 3:
        raise ValueError(f"An embedding needs at least 3 images, got {n}.")
    if labels is None:
        return Points(images, np.zeros(n, np.int64), ["all"], False)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"Got {n} images but labels of shape {labels.shape}; give one label per image.")
    classes, codes = np.unique(labels, return_inverse=True)
    if names is not None and np.issubdtype(classes.dtype, np.integer):
        bad = classes[(classes < 0) | (classes >= len(names))]
        if bad.size:
            raise ValueError(f"Label {int(bad[0])} has no name: the dataset names {len(names)} classes.")
        class_names = [str(names[c]) for c in classes]
    else:
        class_names = [str(c) for c in classes]
    return Points(images, codes.astype(np.int64), class_names, True)


def _event_index(event) -> int | None:
    """The point index of a bqplot mark message: ``{"data": {"index": i, ...}}`` (hover and click)."""
    if not isinstance(event, dict):
        return None
    for key in ("data", "point"):
        item = event.get(key)
        if isinstance(item, dict) and item.get("index") is not None:
            try:
                return int(item["index"])
            except (TypeError, ValueError):
                return None
    return None


def _palette(n: int) -> list[str]:
    """n distinct colours as hex: tab10 / tab20, then samples of turbo."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n <= 10:
        cols = colormaps["tab10"].colors[:n]
    elif n <= 20:
        cols = colormaps["tab20"].colors[:n]
    else:
        cols = colormaps["turbo"](np.linspace(0.05, 0.95, n))
    return [to_hex(c) for c in cols]


def _default_cells(n: int) -> int:
    """Mosaic side: about one cell per image, within the slider's range."""
    return int(np.clip(round(np.sqrt(n)), 2, 60))


def _thumbnails(images: np.ndarray) -> np.ndarray:
    """Images shrunk to at most THUMB_PX a side (once per dataset), for the mosaic."""
    h, w = images.shape[1:3]
    scale = min(1.0, THUMB_PX / max(h, w))
    if scale == 1.0:
        return images
    from cnnvis_widgets.data import resize

    return resize(images, (max(1, round(h * scale)), max(1, round(w * scale))))
