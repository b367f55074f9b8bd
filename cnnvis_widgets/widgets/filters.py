"""FilterExplorer: every filter of a layer being dreamed up, live.

Controls (layer slider, filter picker, regularizer panel, steps, learning rate, size,
seed) change traits; any change restarts the run on the widget's single worker thread;
the engine streams images every few steps into the ImageGrid. Clicking a tile shows it
large with its objective curve.
"""

from __future__ import annotations

import functools
import html
import re
import time

import ipywidgets as widgets
import jax
import numpy as np

from cnnvis_widgets import data
from cnnvis_widgets import validation
from cnnvis_widgets.compile_cache import enable_compilation_cache
from cnnvis_widgets.engine import ascent, recipes, transforms
from cnnvis_widgets.engine.activations import most_activated
from cnnvis_widgets.widgets.controls import (
    PANEL_REGULARIZERS,
    FilterPicker,
    LayerSlider,
    RegularizerPanel,
)
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View, as_probe


class FilterExplorer(View):
    """Activation maximization of a layer's filters, live in the notebook.

    Args:
      probe: a Probe or a zoo name ("digits-cnn", "efficientnet-lite0").
      layer: the starting layer (default a middle spatial layer).
      filters: "0:16", "3,5,9" or "all".
      steps, size, learning_rate, seed: the optimization (size default ``ascent.default_size``).
        Models drawn with an upsampling recipe (ImageNet ones) run in two stages: a draft at half
        the size seen at that size (a first picture within a second), then the full picture
        (``ascent.progressive_filters``); tile labels say "draft" until the second stage.
      snapshot_every: steps between frames (2: ~15 frames/s for 64 digits filters).
      image: the image for the "top16" filter choice (the filters it activates most); default a
        test digit for grayscale models, the chelsea photo for RGB ones.
      autorun: start a run at once.
    """

    def __init__(
        self,
        probe,
        layer: str | None = None,
        filters: str = "0:16",
        *,
        steps: int = 96,
        size: int | None = None,
        learning_rate: float | None = None,
        seed: int = 0,
        snapshot_every: int = 2,
        image=None,
        autorun: bool = True,
    ):
        super().__init__(name="cnnvis-filters")
        self.probe = probe = as_probe(probe)
        self.recipe = recipes.for_probe(probe)  # how this model is drawn best (engine/recipes.py)
        learning_rate = self.recipe.learning_rate if learning_rate is None else learning_rate
        _check_settings(steps, size, learning_rate, seed, snapshot_every)
        self.result: ascent.AscentResult | None = None
        self._shown: tuple[str, np.ndarray] | None = None  # (layer, units) of the tiles on screen
        self._stage_starts: list[int] = []
        self.runs_started = 0
        default = ascent.default_size(probe)[0]
        self.layer_slider = LayerSlider(probe, layer)
        if not isinstance(filters, str):
            raise TypeError(f"filters must be text like '0:16', '3,5,9', 'top16' or 'all', got {filters!r}.")
        if not re.fullmatch(r"top\s*\d+", filters.strip().lower()):
            info = probe.layer(self.layer_slider.value)
            probe.check_units(info.name, validation.parse_filters(filters, info.channels))
        self.filter_picker = FilterPicker(filters)
        self.regularizer_panel = RegularizerPanel(self.recipe)
        self.steps = widgets.BoundedIntText(
            steps, min=1, max=10000, description="steps", tooltip="optimizer steps per filter: more, sharper pictures"
        )
        if probe.fixed_size and size not in (None, default):
            h, w = probe.input_shape[:2]
            raise ValueError(f"{probe.name} takes only {h}x{w} images: leave size out (got size={size}).")
        self.size = widgets.BoundedIntText(
            size or default, min=8, max=max(512, default), description="size",
            tooltip="the pictures' side in pixels (ImageNet models draw a half-size draft first)",
            disabled=probe.fixed_size,
        )  # fmt: skip
        if probe.fixed_size:
            self.size.tooltip = f"{probe.name} takes only {default}-pixel images (a dense layer fixes it)"
        self.learning_rate = widgets.BoundedFloatText(
            learning_rate, min=1e-5, max=10.0, step=0.01, description="step size",
            tooltip="the optimizer's learning rate (Adam): larger moves faster, too large diverges (✗NaN)",
        )  # fmt: skip
        self.seed = widgets.IntText(seed, description="seed", tooltip="the random start: another seed, another picture")
        self.parameterization = widgets.Dropdown(
            options=[("Fourier (decorrelated)", "fourier"), ("MACO (natural spectrum)", "maco"), ("pixels", "pixel")],
            value=self.recipe.param,
            description="image as",
            tooltip="what the optimizer changes: Fourier coefficients with decorrelated colours (Olah et al. "
            "2017), phases under a natural-image spectrum (MACO, Fel et al. 2023) or raw pixels",
        )
        self.use_transforms = widgets.Checkbox(
            True, description="jitter / scale / rotate", indent=False,
            tooltip="move the picture randomly every step so that only features robust to it grow (Olah et al. 2017)",
        )  # fmt: skip
        self.tile_size = widgets.Dropdown(
            options=[("fit width", 0), ("64 px", 64), ("96 px", 96), ("128 px", 128), ("192 px", 192), ("256 px", 256)],
            value=0,
            description="tiles",
            tooltip="the size of each picture on screen",
            layout=widgets.Layout(width="200px"),
        )
        for control in (self.steps, self.size, self.learning_rate, self.seed, self.parameterization):
            control.style.description_width = "70px"
        self._image = None if image is None else data.fit_image(image, probe)
        self.snapshot_every = snapshot_every
        self.run_button = widgets.Button(description="Run", icon="play", button_style="success")
        self.stop_button = widgets.Button(description="Stop", icon="stop")
        self.progress = widgets.IntProgress(0, 0, steps, description="")
        self.grid = ImageGrid(cmap="gray", tile_px=0)  # tiles fit the width; the "tiles" control resizes them
        widgets.link((self.tile_size, "value"), (self.grid, "tile_px"))
        # the clicked tile at full resolution with its curve (a PNG: no Output capture from threads)
        self.detail = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="100%"))
        enable_compilation_cache()  # the next session compiles nothing it compiled before

        settings = widgets.VBox(
            [self.steps, self.size, self.learning_rate, self.seed, self.parameterization, self.use_transforms]
        )
        tabs = widgets.Accordion([widgets.HBox([settings, self.regularizer_panel])], titles=("settings",))
        tabs.selected_index = None
        bar = widgets.HBox(
            [self.run_button, self.stop_button, self.progress, self.status], layout=widgets.Layout(flex_flow="row wrap")
        )
        self.children = [
            widgets.HBox([self.layer_slider, self.filter_picker, self.tile_size], layout=widgets.Layout(flex_flow="row wrap")),
            tabs,
            bar,
            self.grid,
            self.detail,
        ]

        for control, trait in [
            (self.layer_slider, "value"),
            (self.filter_picker, "value"),
            (self.regularizer_panel, "weights"),
            (self.steps, "value"),
            (self.size, "value"),
            (self.learning_rate, "value"),
            (self.seed, "value"),
            (self.parameterization, "value"),
            (self.use_transforms, "value"),
        ]:
            # debounced: a slider arrowed over ten layers starts (and compiles) only the last one
            control.observe(lambda _change: self.run(delay=DEBOUNCE_S), trait)
        self.run_button.on_click(lambda _b: self.run())
        self.stop_button.on_click(lambda _b: self.stop())
        self.grid.observe(self._show_detail, "selected")
        if autorun:
            self.run()
        else:
            self.status.value = "press Run (or change a control) to optimize the filters"

    @property
    def image(self) -> np.ndarray:
        """The image behind the "top16" choice; the default is loaded on first use (loading the
        digits imports scikit-learn: ~1 s a fresh process would spend before its first frame)."""
        if self._image is None:
            self._image = _default_image(self.probe)
        return self._image

    # --------------------------------------------------------------- running
    def run(self, delay: float = 0.0) -> int:
        """(Re)start the optimization with the controls' current values; returns its generation.
        With a ``delay`` (seconds; the controls use ``DEBOUNCE_S``) it starts only if no newer
        request comes meanwhile."""
        try:
            layer = self.probe.layer(self.layer_slider.value)
            units = self.probe.check_units(layer.name, self._units(layer))
        except (ValueError, TypeError) as err:
            self.runner.cancel()
            self.show_error(err)
            return self.runner.generation
        request = self._request(layer.name, units)
        self.runs_started += 1
        shown = self._shown
        if shown is None or shown[0] != layer.name or not np.array_equal(shown[1], units):
            # the tiles belong to another layer or selection: say so at once, not at the first frame
            self.grid.mark_stale(f"<b>{html.escape(layer.name)}</b> · {len(units)} filters · starting…")
            self.detail.layout.display = "none"  # the clicked tile's detail belongs to them too
        self.show_status(f"starting {layer.name} ({len(units)} filters)…")
        return self.runner.submit(lambda cancelled: self._job(request, cancelled), delay=delay)

    def _request(self, layer: str, units, steps: int | None = None) -> dict:
        """The engine's arguments for ``units`` of ``layer`` with the controls' current values."""
        return dict(
            layer=layer,
            filters=units,
            steps=int(self.steps.value) if steps is None else steps,
            size=ascent.default_size(self.probe) if self.probe.fixed_size else int(self.size.value),
            seed=int(self.seed.value),
            weights=list(self.regularizer_panel.weights),
            learning_rate=float(self.learning_rate.value),  # traced: a new value compiles nothing
            param=recipes.build_param(self.parameterization.value, self.probe.input_shape[-1]),
            transforms=None if self.use_transforms.value else _no_transforms(),
        )

    def warmup(self, layers=None, report=None) -> list[tuple[str, float]]:
        """Compile, now, what a first visit of each layer group would (``ascent.layer_groups``;
        default every group the layer slider reaches) with the current settings: a run of a few
        steps per group. With JAX's persistent cache on (the explorer turns it on) a later
        process loads them instead of compiling (``cnnvis warmup``). Returns (layer, seconds)
        per group; ``report(layer, seconds)`` is called after each."""
        names = self.layer_slider.names if layers is None else [self.probe.layer(n).name for n in layers]
        firsts = []
        for group in ascent.layer_groups(self.probe):
            members = [n for n in group if n in names]
            if members:
                firsts.append(members[0])
        done = []
        for layer in firsts:
            info = self.probe.layer(layer)
            units = self.probe.check_units(layer, self._units(info))
            start = time.monotonic()
            # a short run compiles the same programs as the full one: steps per call is
            # snapshot_every (capped by each stage's steps), and with at least 3 x snapshot_every
            # steps each stage has as many (ascent.progressive_stages)
            steps = min(int(self.steps.value), max(6, 3 * self.snapshot_every))
            self._optimize(self._request(layer, units, steps=steps), None)
            done.append((layer, time.monotonic() - start))
            if report is not None:
                report(*done[-1])
        return done

    def _units(self, layer):
        """The picker's text as indices; "top16" = the 16 filters the explorer's image excites most."""
        text = self.filter_picker.value.strip().lower()
        match = re.fullmatch(r"top\s*(\d+)", text)
        if match:
            return most_activated(self.probe, self.image, layer.name, n=int(match.group(1))).units
        return validation.parse_filters(self.filter_picker.value, layer.channels)

    def stop(self) -> None:
        """Stop the current run after its current compiled call (``snapshot_every`` steps)."""
        self.runner.cancel()
        self.status.value = "stopped"

    def _job(self, request, cancelled):
        start = time.monotonic()
        layer = request["layer"]
        labels = [str(u) for u in request["filters"]]
        sizes, stage_steps = ascent.progressive_stages(self.probe, request["size"], request["steps"])
        self.progress.max, self.progress.value = request["steps"], 0
        # XLA's waits, kept out of the speed readout: from the report before a first visit's notice
        # (its init compiled meanwhile) to the report after it
        compiling = {"since": None, "seconds": 0.0, "last": start}

        def on_progress(p: ascent.Progress):
            if cancelled():
                return True
            now = time.monotonic()
            draft = p.stage < p.stages - 1
            stage = f"{'draft' if draft else 'full'} {sizes[p.stage]} px ({p.stage + 1}/{p.stages})"
            caption = f"<b>{html.escape(layer)}</b> · {len(labels)} filters" + (f" · {stage}" if p.stages > 1 else "")
            tiles = _marked([f"{u} · draft" if draft else u for u in labels], p.finite)
            if p.compiling:  # a first visit: show the start images and say XLA is at work
                compiling["since"] = compiling["last"]
                about = f", ~{p.compile_estimate:.0f} s" if p.compile_estimate else ""
                with self.hold_sync():
                    self.grid.update(p.images, tiles, force=True, caption=f"{caption} · compiling…")
                    self._shown = (layer, request["filters"])
                    self.show_status(f"compiling {layer} (first visit{about})…")
                return None
            if compiling["since"] is not None:
                compiling["seconds"] += now - compiling["since"]
                compiling["since"] = None
            compiling["last"] = now
            before = sum(stage_steps[: p.stage])  # steps of the finished stages
            done = before + stage_steps[p.stage] * p.done_steps // max(p.all_steps, 1)
            with self.hold_sync():
                self.grid.update(p.images, tiles, force=p.step == p.total_steps, caption=caption)
                self._shown = (layer, request["filters"])
                self.progress.max, self.progress.value = request["steps"], done
                rate = done / max(now - start - compiling["seconds"], 1e-6)
                group = f" (filter group {p.group + 1}/{p.groups})" if p.groups > 1 else ""
                self.show_status(
                    f"{layer}: step {done}/{request['steps']}{group}"
                    + (f" · {stage}" if p.stages > 1 else "")
                    + f" · {rate:.{1 if rate < 10 else 0}f} steps/s"
                )
            return None

        result = self._optimize(request, on_progress)
        if cancelled():
            return
        self.result = result
        self._stage_starts = list(np.cumsum(stage_steps[:-1]))  # where the detail curve jumps
        caption = f"<b>{html.escape(layer)}</b> · {len(labels)} filters"
        self.grid.update(result.images, _marked(labels, result.finite), force=True, caption=caption)
        self._shown = (layer, request["filters"])
        bad = result.units[~result.finite]
        diverged = (
            f" · {len(bad)} diverged (NaN/Inf, shown grey): filter(s) {', '.join(map(str, bad[:16]))}"
            + (" …" if len(bad) > 16 else "")
            + " — try a smaller learning rate"
            if len(bad)
            else ""
        )
        waited = f" (+{compiling['seconds']:.1f} s compiling)" if compiling["seconds"] >= 0.05 else ""
        self.show_status(
            f"{layer}: {len(labels)} filters, {sum(stage_steps[:-1]) + result.steps_done} steps in "
            f"{time.monotonic() - start - compiling['seconds']:.1f} s{waited}" + diverged
        )

    def _optimize(self, request, callback) -> ascent.AscentResult:
        """The engine's run for ``request`` (``_request``): a draft, then the full picture."""
        sizes, stage_steps = ascent.progressive_stages(self.probe, request["size"], request["steps"])
        return ascent.progressive_filters(
            self.probe,
            request["layer"],
            request["filters"],
            sizes=sizes,
            steps=stage_steps,
            seed=request["seed"],
            recipe=self.recipe,
            regularizers=PANEL_REGULARIZERS,
            weights=request["weights"],
            learning_rate=request["learning_rate"],
            param=request["param"],
            transforms=request["transforms"],
            snapshot_every=min(self.snapshot_every, request["steps"]),
            per_device=64 // len(jax.devices()),  # the whole grid in one call (every tile moves at once)
            share_layers=True,  # one program per group of layers: a neighbour's first visit is warm
            callback=callback,
        )

    # ----------------------------------------------------------------- detail
    def _show_detail(self, change):
        i = change["new"]
        if self.result is None or not 0 <= i < len(self.result.units):
            self.detail.layout.display = "none"  # no tile selected (or its tiles are gone): no detail
            return
        from cnnvis_widgets import export

        r = self.result
        fig = export.filter_detail_figure(
            r.images[i],
            r.objective[i],
            f"{r.layer} · filter {r.units[i]}",
            attribution=None if r.attribution is None else r.attribution[i],
            stage_starts=self._stage_starts,
        )
        self.detail.value = export.figure_png(fig)
        self.detail.layout.display = None

    # ----------------------------------------------------------------- export
    def to_figure(self):
        """A matplotlib figure of the last finished run."""
        from cnnvis_widgets import export

        if self.result is None:
            raise RuntimeError("No finished run yet: call run() and wait().")
        return export.grid_figure(
            self.result.images,
            [str(u) for u in self.result.units],
            title=f"{self.probe.name} · {self.result.layer}",
        )


DIVERGED = "✗NaN"  # a tile label's mark for a filter whose optimization diverged
# Seconds a control change waits for a newer one before its run starts (and compiles): arrow
# presses come ~0.1-0.2 s apart, so ten of them start one run (benchmarks/bench_widgets.py).
DEBOUNCE_S = 0.25


def _marked(labels: list[str], finite) -> list[str]:
    """Tile labels with diverged filters marked."""
    if finite is None:
        return labels
    return [label if ok else f"{label} {DIVERGED}" for label, ok in zip(labels, finite)]


def _check_settings(steps, size, learning_rate, seed, snapshot_every) -> None:
    """The constructor's numbers, checked against what the controls can hold (they would clamp silently)."""

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(steps) or not 1 <= steps <= 10000:
        raise ValueError(f"steps must be an integer in 1..10000, got {steps!r}.")
    if size is not None and (not is_int(size) or not 8 <= size <= 512):
        raise ValueError(f"size must be an integer in 8..512 (pixels) or None, got {size!r}.")
    if not isinstance(learning_rate, (int, float, np.number)) or not 1e-5 <= learning_rate <= 10.0:
        raise ValueError(f"learning_rate must be a number in [1e-05, 10], got {learning_rate!r}.")
    if not is_int(seed):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    validation.positive_int(snapshot_every, "snapshot_every", what="steps per frame")


@functools.lru_cache(maxsize=1)
def _no_transforms():
    return transforms.identity()


def _default_image(probe):
    if probe.input_shape[-1] == 1:
        return data.fit_image(data.digits_split()[1].images[0], probe)
    return data.fit_image(data.photo("chelsea"), probe)
