"""ActivationExplorer: every feature map of a layer for one image, dead filters marked.

Controls (layer slider, image picker, normalization) change traits; any change submits a
request to the view's single worker thread, which computes the layer's maps and shows them
as one ImageGrid (one tile per filter, labelled with its index; "✗dead" where the filter is
silent on the whole reference dataset, measured once per layer with ``filter_stats``).
Clicking a map adds the detail row for that filter: the dataset patches it responds to most
(its receptive field at its k strongest responses) next to an image optimized to excite it.

References: Zeiler & Fergus 2014 (top-k patches); Yosinski et al. 2015 (live feature maps).
"""

from __future__ import annotations

import html
import time
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np

from cnnvis_widgets import data
from cnnvis_widgets import pixels as px
from cnnvis_widgets import validation
from cnnvis_widgets.compile_cache import enable_compilation_cache
from cnnvis_widgets.engine import ascent
from cnnvis_widgets.engine.activations import feature_maps, filter_stats, receptive_patches, top_images
from cnnvis_widgets.widgets.controls import ImagePicker, LayerSlider
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View, as_probe

NORMALIZATIONS = (("per map", "map"), ("shared across the layer", "layer"))
SNAPSHOT_EVERY = 16  # ascent steps per frame of the optimized image (one compiled call)
SHARED_IMAGE = "shared image"  # the picker entry set_image() fills


class Detail(NamedTuple):
    """What the detail row shows for one filter.

    indices / values: the top-k dataset images and the filter's maximum response in each;
    patches: (k, P, P, C) their receptive-field crops at that maximum; optimized: (H, W, C)
    the activation-maximization image; objective: its objective curve per step.
    """

    layer: str
    unit: int
    indices: np.ndarray
    values: np.ndarray
    patches: np.ndarray
    optimized: np.ndarray
    objective: np.ndarray


class _Request(NamedTuple):
    layer: str
    image_name: str
    image: np.ndarray
    norm: str
    unit: int | None


class ActivationExplorer(View):
    """The feature maps of a layer for one image; dead filters marked; click a map for its detail.

    Args:
      probe: a Probe or a zoo name ("digits-cnn").
      image: the starting image, (H, W[, C]) any size (fitted to the model); default the
        picker's first image (a test digit, or a bundled photo for RGB models).
      layer: the starting spatial layer (default a middle one).
      dataset: images for the dead-filter count and the top-k patches, (N, H, W, C) or a list
        or a ``data.Dataset``; default the 450 digits test images for grayscale models, the
        bundled photos for RGB ones.
      top_k: patches in the detail row.
      steps: optimizer steps of the detail row's activation-maximization image.
      autorun: compute the maps at once.
    """

    def __init__(
        self,
        probe,
        image=None,
        *,
        layer: str | None = None,
        dataset=None,
        top_k: int = 8,
        steps: int = 128,
        autorun: bool = True,
    ):
        super().__init__(name="cnnvis-activations")
        self.probe = probe = as_probe(probe)
        if layer is not None:
            _spatial_layer(probe, layer)  # a clear error now rather than a wrong view
        validation.positive_int(top_k, "top_k")
        validation.positive_int(steps, "steps", ascent.MAX_STEPS)
        if dataset is not None:
            n = len(dataset.images if isinstance(dataset, data.Dataset) else dataset)
            if n == 0:
                raise ValueError("The dataset is empty: give at least one image.")
        self.top_k, self.steps = int(top_k), int(steps)
        self._dataset_arg = dataset
        self._dataset: np.ndarray | None = None  # fitted lazily, on the worker
        self.dataset_description = ""
        self._stats: dict[str, Any] = {}  # layer → FilterStats over the dataset
        self._details: dict[tuple[str, int], Detail] = {}
        self._selection: tuple[str, int] | None = None  # (layer of the clicked grid, tile)
        self._shown_key = None
        # results, written only by a job that is still current
        self.layer: str | None = None  # the layer whose maps are shown
        self.maps: np.ndarray | None = None  # (H', W', C) raw activations shown
        self.tiles: np.ndarray | None = None  # (C, H', W', 1) as normalized for display
        self.dead: np.ndarray | None = None  # (C,) bool: silent over the dataset
        self.labels: list[str] = []
        self.image_name = ""
        self.detail: Detail | None = None
        self.maps_computed = 0  # feature-map computations that reached the grid

        self.layer_slider = LayerSlider(probe, layer)
        self.image_picker = ImagePicker(probe)
        if isinstance(image, str):  # a picker entry by name
            if image not in self.image_picker.names:
                raise ValueError(
                    f"Unknown image {image!r}; choose one of: {', '.join(self.image_picker.names)}."
                )
            self.image_picker.value = image
        elif image is not None:
            self.image_picker.add("your image", image)
        self.normalization = widgets.Dropdown(options=NORMALIZATIONS, value="map", description="scale")
        self.grid = ImageGrid(cmap="viridis", tile_px=56)
        self.patches_grid = ImageGrid(cmap="gray", tile_px=56)
        self.optimized_grid = ImageGrid(cmap="gray", tile_px=112)
        self.detail_caption = widgets.HTML()
        self.detail_box = widgets.VBox(
            [
                self.detail_caption,
                widgets.HBox(
                    [
                        widgets.VBox(
                            [widgets.HTML(f"<b>top {self.top_k} dataset patches</b>"), self.patches_grid]
                        ),
                        widgets.VBox([widgets.HTML("<b>optimized to excite it</b>"), self.optimized_grid]),
                    ]
                ),
            ],
            layout=widgets.Layout(display="none"),
        )
        enable_compilation_cache()
        self.children = [
            widgets.HBox([self.layer_slider, self.normalization]),
            self.image_picker,
            self.status,
            self.grid,
            self.detail_box,
        ]

        self.layer_slider.observe(self._layer_changed, "value")
        self.image_picker.observe(lambda _change: self.run(), "value")
        self.normalization.observe(lambda _change: self.run(), "value")
        self.grid.observe(self._selected, "selected")
        if autorun:
            self.run()

    # ------------------------------------------------------------ public API
    @property
    def image(self) -> np.ndarray:
        """The current image, fitted to the model: (H, W, C) in [0, 1]."""
        return self.image_picker.image

    def set_image(self, image, name: str | None = None) -> None:
        """Show the maps of ``image``: an array (any size; fitted) or the name of a picker entry.

        A dashboard shares its selected image this way. Errors show in the status line.
        """
        try:
            if isinstance(image, str):
                if image not in self.image_picker.names:
                    raise ValueError(
                        f"Unknown image {image!r}; choose one of: {', '.join(self.image_picker.names)}."
                    )
                self.image_picker.value = image
                return
            before = self.image_picker.value
            self.image_picker.add(name or SHARED_IMAGE, image)
            if self.image_picker.value == before:  # same entry replaced: no trait change to react to
                self.run()
        except (ValueError, TypeError) as err:
            self.runner.cancel()
            self.show_error(err)

    def set_layer(self, layer: str) -> None:
        """Show ``layer`` (a spatial layer's name); errors show in the status line."""
        try:
            name = _spatial_layer(self.probe, layer).name
        except ValueError as err:
            self.runner.cancel()
            self.show_error(err)
            return
        self.layer_slider.value = name

    def select(self, unit: int) -> None:
        """Show the detail row of filter ``unit`` (as a click on its map does)."""
        self.grid.selected = -1  # so selecting the same filter again still reacts
        self.grid.selected = int(unit)

    # --------------------------------------------------------------- running
    def run(self) -> int:
        """Submit a request built from the controls' current values; returns its generation."""
        try:
            layer = _spatial_layer(self.probe, self.layer_slider.value)
            image = self.image_picker.image
            unit = None
            if self._selection is not None and self._selection[0] == layer.name:
                unit = self._selection[1]
                if not 0 <= unit < layer.channels:
                    raise ValueError(
                        f"Filter {unit} is out of range for layer {layer.name!r} "
                        f"with {layer.channels} channels (valid: 0..{layer.channels - 1})."
                    )
        except (ValueError, TypeError, KeyError) as err:
            self.runner.cancel()
            self.show_error(err)
            return self.runner.generation
        request = _Request(layer.name, self.image_picker.value, image, self.normalization.value, unit)
        if self._shown_key is None or self._shown_key[0] != layer.name:
            self.show_status(f"computing {layer.name}…")
        return self.runner.submit(lambda cancelled: self._job(request, cancelled))

    def _layer_changed(self, _change):
        self._selection = None
        self.grid.selected = -1
        self.run()

    def _selected(self, change):
        index = change["new"]
        if index < 0:
            return
        # the tile indexes the grid shown (before the first maps arrive: the slider's layer)
        self._selection = (self.layer or self.layer_slider.value, int(index))
        self.run()

    def _job(self, request: _Request, cancelled):
        start = time.monotonic()
        self._ensure_dataset()
        layer = request.layer
        if layer not in self._stats:
            self._stats[layer] = filter_stats(self.probe, self._dataset, layer)
        stats = self._stats[layer]
        key = (layer, request.image_name, request.norm, request.image)
        shown = self._shown_key
        if shown is None or shown[:3] != key[:3] or shown[3] is not request.image:
            maps = feature_maps(self.probe, request.image, layer)
            tiles = px.feature_map_tiles(maps, request.norm)
            labels = [f"{u} ✗dead" if d else str(u) for u, d in enumerate(stats.dead)]
            if cancelled():
                return
            with self.hold_sync():
                self.grid.update(tiles, labels, force=True)
                self.layer, self.maps, self.tiles, self.dead, self.labels = (
                    layer,
                    maps,
                    tiles,
                    stats.dead,
                    labels,
                )
                self.image_name = request.image_name
                self._shown_key = key
                self.maps_computed += 1
                self.status.value = self._maps_status(maps, stats, request, time.monotonic() - start)
        if request.unit is None:
            if self.detail is not None and self.detail.layer != layer:
                self.detail = None
                self.detail_box.layout.display = "none"
            return
        self._detail_job(layer, request.unit, cancelled)

    def _maps_status(self, maps, stats, request, seconds) -> str:
        h, w, c = maps.shape
        dead = np.flatnonzero(stats.dead)
        where = f"over {self.dataset_description}"
        dead_text = (
            f"{len(dead)} dead {where} (never > 0): {', '.join(map(str, dead))}"
            if len(dead)
            else f"no dead filter {where}"
        )
        silent = int((maps.reshape(-1, c).max(axis=0) <= 0).sum())
        return html.escape(
            f"{request.layer}: {c} maps of {h}×{w} for {request.image_name!r} "
            f"({silent} silent on it) · {dead_text} · {seconds:.2f} s"
        )

    # ----------------------------------------------------------------- detail
    def _detail_job(self, layer: str, unit: int, cancelled) -> None:
        cached = self._details.get((layer, unit))
        if cached is not None:
            if self.detail is not cached:
                self._show_detail(cached, final=True)
            return
        k = min(self.top_k, len(self._dataset))
        top = top_images(self.probe, self._dataset, layer, unit, k)
        patches = receptive_patches(self.probe, self._dataset, layer, unit, k)
        if cancelled():
            return
        start = time.monotonic()
        partial = Detail(layer, unit, top.indices, top.values, patches, None, None)
        self._show_detail(partial, final=False, caption="optimizing…")

        def on_progress(p: ascent.Progress):
            if cancelled():
                return True
            self.optimized_grid.update(p.images, [f"step {p.step}"], force=p.step == p.total_steps)
            return None

        size = _ascent_size(self.probe)
        result = ascent.visualize_filters(
            self.probe,
            layer,
            [unit],
            steps=self.steps,
            size=size,
            snapshot_every=min(SNAPSHOT_EVERY, self.steps),
            callback=on_progress,
        )
        if cancelled() or result.stopped:
            return
        detail = partial._replace(optimized=result.images[0], objective=result.objective[0])
        self._details[(layer, unit)] = detail
        self._show_detail(detail, final=True, seconds=time.monotonic() - start)

    def _show_detail(self, detail: Detail, final: bool, caption: str = "", seconds: float | None = None):
        with self.hold_sync():
            labels = [f"{v:.2f}" for v in detail.values]
            self.patches_grid.update(detail.patches, labels, force=True)
            if detail.optimized is not None:
                self.optimized_grid.update(
                    detail.optimized[None],
                    [f"filter {detail.unit}, {len(detail.objective)} steps"],
                    force=True,
                )
            else:
                blank = np.full((1, *self.probe.input_shape[:2], self.probe.input_shape[-1]), 0.5, np.float32)
                self.optimized_grid.update(blank, ["…"], force=True)
            dead = self._stats[detail.layer].dead[detail.unit]
            note = " It is dead on the dataset: its top patches are arbitrary." if dead else ""
            timing = f" · optimized in {seconds:.1f} s" if seconds is not None else ""
            self.detail_caption.value = (
                f"<b>{html.escape(detail.layer)} filter {detail.unit}</b>: its {len(detail.values)} strongest "
                f"responses over {html.escape(self.dataset_description)} (patch = receptive field, "
                f"{detail.patches.shape[1]} px; label = activation){html.escape(note)}"
                f"{timing} {html.escape(caption)}"
            )
            if final:
                self.detail = detail
            self.detail_box.layout.display = None

    # ---------------------------------------------------------------- dataset
    def _ensure_dataset(self) -> None:
        """The reference dataset, fitted to the model (once, on the worker)."""
        if self._dataset is not None:
            return
        images, description = data.reference_dataset(self.probe, self._dataset_arg)
        self._dataset, self.dataset_description = images, description

    # ----------------------------------------------------------------- export
    def to_figure(self):
        """A matplotlib figure of the maps shown now and, when a filter is selected, its detail."""
        from cnnvis_widgets import export

        if self.tiles is None:
            raise RuntimeError("No maps shown yet: call run() and wait().")
        title = f"{self.probe.name} · {self.layer} · {self.image_name}"
        detail = self.detail if self.detail is not None and self.detail.layer == self.layer else None
        return export.feature_maps_figure(
            self.tiles, self.labels, title, detail, patches_of=self.dataset_description
        )


# -------------------------------------------------------------------- helpers
def _spatial_layer(probe, name):
    """The Layer ``name`` if it has feature maps (is spatial); else a ValueError naming those that do."""
    info = probe.layer(name)
    if not info.spatial:
        spatial = ", ".join(layer.name for layer in probe.layers if layer.spatial)
        raise ValueError(
            f"Layer {info.name!r} is a {info.kind} layer with shape {info.shape}: it has no feature maps. "
            f"Spatial layers of {probe.name}: {spatial}."
        )
    return info


def _ascent_size(probe):
    """Image size for the detail's optimization: 64 px for large models keeps it interactive."""
    if probe.fixed_size:
        return None
    return min(64 if max(probe.input_shape[:2]) > 128 else 128, ascent.default_size(probe)[0])
