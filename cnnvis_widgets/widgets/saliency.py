"""SaliencyExplorer: which pixels make the network's score what it is, live.

Controls (image picker, method, target, mode, batch size, sanity check, faithfulness) change
traits; any change submits one job to the view's worker, which calls the engine (``saliency``,
whose compiled functions are cached per method, so switching back and forth compiles nothing new)
and, with the sanity check on, ``randomization_cascade``; with faithfulness on, ``faithfulness``
ranks every method by deletion and insertion on the picker's image. The overlay opacity only
re-blends the kept maps on the kernel: no job. Three modes: "single" (the image and its overlay),
"batch" (one method over many images) and "compare" (every method on one image).
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as widgets
import numpy as np

from cnnvis_widgets import pixels as px
from cnnvis_widgets.compile_cache import enable_compilation_cache
from cnnvis_widgets.engine.faithfulness import applicable_methods, faithfulness
from cnnvis_widgets.engine.saliency import (
    CAM_METHODS,
    METHODS,
    SIGNED_METHODS,
    check_method,
    check_options_by_method,
    target_label,
    target_to_text,
    parse_target,
    saliency,
)
from cnnvis_widgets.engine.sanity import randomization_cascade
from cnnvis_widgets.widgets.controls import ImagePicker, colorbar_html, target_box
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View, as_probe

MODES = ("single", "batch", "compare")
SIGNED_ENDS = ("− lowers the score", "+ raises it")  # what a signed colour bar's ends mean
CASCADE_COLUMNS = 6  # the sanity row's tiles per row: 6 x 88 px, and labels like "block15 ρ=0.52" fit
LABELS = {
    "vanilla": "vanilla gradient",
    "grad_x_input": "gradient × input",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "integrated gradients",
    "guided_backprop": "guided backprop",
    "deconvnet": "deconvnet",
    "lrp": "LRP",
    "gradcam": "Grad-CAM",
    "gradcam_pp": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "occlusion": "occlusion",
}


class SaliencyExplorer(View):
    """Saliency maps of an image (or many) for a class or a layer unit, live in the notebook.

    Args:
      probe: a Probe or a zoo name ("digits-cnn", "efficientnet-lite0").
      images: the picker's images (dict name → image, a list or an (N, H, W, C) array); default
        the bundled photos (RGB models) or 16 test digits (grayscale models).
      method: one of the engine's ``METHODS``.
      target: None (each image's predicted class), a class index or name, or a layer unit
        ``("conv3", 5)`` / ``"conv3:5"`` (``"conv3:*"``: the whole layer).
      mode: "single", "batch" or "compare".
      batch_size: images in batch mode (the picker's first N; 0: all).
      opacity: weight of the heat map over the image, in [0, 1].
      sanity: show the cascading-randomization row (Adebayo et al. 2018) under the maps.
      faithfulness: show the faithfulness row: every method ranked by its deletion and insertion areas
        on the picker's image (Petsiuk et al. 2018).
      cascade_steps: parameter modules the sanity row randomizes, top down (None: all; the default 12
        covers digits-cnn's 6, while efficientnet-lite0 has 99, each re-running the method).
      options: per-method engine options, e.g. ``{"smoothgrad": {"n_samples": 16}}``.
      cmap, signed_cmap: colormaps of unsigned maps (sequential) and of signed attributions
        (diverging, centred on 0); a colour bar under the maps shows each one in use.
      autorun: compute at once.
    """

    def __init__(
        self,
        probe,
        images=None,
        *,
        method: str = "vanilla",
        target=None,
        mode: str = "single",
        batch_size: int = 0,
        opacity: float = 0.5,
        sanity: bool = False,
        faithfulness: bool = False,
        cascade_steps: int | None = 12,
        options: dict | None = None,
        cmap: str = "inferno",
        signed_cmap: str = "RdBu_r",
        autorun: bool = True,
    ):
        super().__init__(name="cnnvis-saliency")
        self.probe = probe = as_probe(probe)
        check_method(method)
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; valid modes: {', '.join(MODES)}.")
        self.options = check_options_by_method(options or {})
        if not isinstance(opacity, (int, float, np.number)) or not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be a number in [0, 1], got {opacity!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
            raise ValueError(f"batch_size must be an integer >= 0 (0: all images), got {batch_size!r}.")
        if cascade_steps is not None and (
            isinstance(cascade_steps, bool)
            or not isinstance(cascade_steps, (int, np.integer))
            or cascade_steps < 1
        ):
            raise ValueError(
                f"cascade_steps must be a positive integer or None (all), got {cascade_steps!r}."
            )
        px.check_colormap(cmap, "cmap")
        px.check_colormap(signed_cmap, "signed_cmap")
        self.cascade_steps = cascade_steps
        self.cmap, self.signed_cmap = cmap, signed_cmap
        self.n_classes = probe.require_classes("The SaliencyExplorer (it explains the model's classes)")
        target_text = target_to_text(probe, target)
        parse_target(probe, target_text, self.n_classes)  # a bad target fails here, not in the status line

        # what the last finished job computed (for tests, export and dashboards)
        self.result = None  # SaliencyResult of the method shown (in compare mode: the dropdown's)
        self.results: dict = {}  # method → SaliencyResult
        self.maps: np.ndarray | None = None  # (N, H, W) in [0, 1]: the maps blended over the images
        self.cascade = None  # CascadeResult of the sanity row, or None
        self.faithfulness_result = None  # FaithfulnessResult of the faithfulness row, or None
        self.top5: list[tuple[str, float]] = []  # (class name, probability) of the picker's image
        self.request: dict | None = None  # the request of the last finished job
        self._display = None  # (base (N,H,W,3), heat (N,H,W,3), has_map (N,), labels) of the main grid
        self._cascade_display = None
        self._draw_lock = threading.Lock()
        enable_compilation_cache()  # the next session compiles nothing it compiled before

        self.image_picker = ImagePicker(probe, images)
        self.method = widgets.Dropdown(
            options=[(LABELS.get(m, m), m) for m in METHODS], value=method, description="method"
        )
        self.target = target_box(probe, target_text)
        self.mode = widgets.ToggleButtons(  # no description: a label on its own row above the buttons
            options=list(MODES),
            value=mode,
            tooltips=["the image and its map", "the picker's first N images, one map each",
                      "every method on the image, side by side"],
        )  # fmt: skip
        self.mode.style.button_width = "80px"
        self.batch_size = widgets.BoundedIntText(
            batch_size, min=0, max=100000, description="images (0 = all)",
            tooltip="batch mode shows the picker's first N images, one map each (0: every image)",
            style={"description_width": "initial"}, layout=widgets.Layout(width="170px"),
        )  # fmt: skip
        self.opacity = widgets.FloatSlider(
            opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=True
        )
        self.sanity = widgets.Checkbox(sanity, description="sanity check (randomize layers)", indent=False)
        self.faithfulness = widgets.Checkbox(
            faithfulness, description="faithfulness (deletion / insertion)", indent=False,
            tooltip="rank every method by how fast deleting (inserting) its most relevant pixels lowers "
            "(raises) the class's probability, on the picker's image",
        )  # fmt: skip
        self.grid = ImageGrid(tile_px=0)  # fits the width: two large tiles in single mode, 4 columns in the others
        self.colorbar = widgets.HTML(layout=widgets.Layout(margin="0 0 0 4px"))  # what the colours mean
        # the model's top-5 for the picker's image: each a button that makes its class the target
        self.top5_title = widgets.HTML()
        self.top5_buttons = [
            widgets.Button(layout=widgets.Layout(width="210px", height="26px"), style={"button_color": "#f4f6fa"})
            for _ in range(5)
        ]
        for button in self.top5_buttons:
            button.on_click(self._class_clicked)
        self.top5_note = widgets.HTML()
        self.top5_box = widgets.VBox(
            [self.top5_title, *self.top5_buttons, self.top5_note],
            layout=widgets.Layout(min_width="220px", margin="0 0 0 12px"),
        )
        self.cascade_title = widgets.HTML()
        self.cascade_grid = ImageGrid(tile_px=88)
        # shown only with the sanity check on: a bqplot figure laid out hidden (0×0) errs in the browser
        self.cascade_box = widgets.VBox([self.cascade_title, self.cascade_grid] if sanity else [])
        self.faithfulness_table = widgets.HTML()  # the methods ranked, best first
        self.faithfulness_box = widgets.VBox([self.faithfulness_table] if faithfulness else [])

        self.children = [
            widgets.HBox([self.image_picker, self.method, self.target], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox(
                [self.mode, self.batch_size, self.opacity, self.sanity, self.faithfulness],
                layout=widgets.Layout(flex_flow="row wrap"),
            ),
            self.status,
            widgets.HBox(  # the top-5 goes under the maps where the notebook is narrow
                [widgets.VBox([self.grid, self.colorbar]), self.top5_box], layout=widgets.Layout(flex_flow="row wrap")
            ),
            self.cascade_box,
            self.faithfulness_box,
        ]
        self._sync_batch_control()

        for control in (self.image_picker, self.method, self.target):
            control.observe(lambda _change: self.run(), "value")
        self.mode.observe(self._mode_changed, "value")
        self.batch_size.observe(lambda _change: self.mode.value == "batch" and self.run(), "value")
        self.sanity.observe(self._sanity_changed, "value")
        self.faithfulness.observe(self._faithfulness_changed, "value")
        self.opacity.observe(lambda _change: self.redraw(), "value")
        self.grid.observe(self._tile_clicked, "selected")
        if autorun:
            self.run()

    # --------------------------------------------------------------- the image
    @property
    def image(self) -> np.ndarray:
        """The picker's current image, fitted to the model: (H, W, C) in [0, 1]."""
        return self.image_picker.image

    def set_image(self, image, name: str | None = None) -> str:
        """Show another image: a name of the picker, or an array (added to the picker as ``name``).

        Returns the picker's name of the image (a dashboard shares images this way).
        """
        if isinstance(image, str):
            if image not in self.image_picker.names:
                raise ValueError(
                    f"Unknown image {image!r}; choose one of: {', '.join(self.image_picker.names)}."
                )
            self.image_picker.value = image
            return image
        name = name or f"image {len(self.image_picker.names)}"
        self.image_picker.add(name, image)
        return name

    # --------------------------------------------------------------- running
    def run(self) -> int:
        """Recompute with the controls' current values; returns the job's generation."""
        try:
            target = parse_target(self.probe, self.target.value, self.n_classes)
        except (ValueError, TypeError) as err:
            self.runner.cancel()
            self.show_error(err)
            return self.runner.generation
        mode = self.mode.value
        picker = self.image_picker
        if mode == "batch":
            names = picker.names[: self.batch_size.value or None]
            # ImagePicker keeps fitted images by name but has no public accessor for them
            images = np.stack([picker.images[n] for n in names])
        else:
            names, images = [picker.value], picker.image[None]
        request = {
            "mode": mode,
            "method": self.method.value,
            "methods": list(METHODS) if mode == "compare" else [self.method.value],
            "target": target,
            "target_text": self.target.value,
            "names": names,
            "images": images,
            "image": picker.image,
            "image_name": picker.value,
            "sanity": bool(self.sanity.value),
            "faithfulness": bool(self.faithfulness.value),
        }
        what = "every method" if mode == "compare" else LABELS.get(request["method"], request["method"])
        self.show_status(f"computing {what} on {len(names)} image(s)…")
        if self._display is None:  # nothing shown yet: the image(s) at once, not a blank box
            with self._draw_lock:
                self.grid.update(px.to_rgb(images), [f"{n} · computing…" for n in names], force=True)
        return self.runner.submit(lambda cancelled: self._job(request, cancelled))

    def options_for(self, method: str, target) -> dict:
        """The engine options of ``method`` for ``target``: the user's, and a CAM at a unit target's layer."""
        opts = dict(self.options.get(method, {}))
        if method in CAM_METHODS and isinstance(target, tuple) and "layer" not in opts:
            info = self.probe.layer(target[0])
            spatial = [layer.name for layer in self.probe.layers if layer.spatial]
            order = self.probe.layer_names
            if info.spatial and order.index(info.name) < order.index(spatial[-1]):
                opts["layer"] = info.name  # a CAM must sit at or before the layer it explains
        return opts

    def _job(self, request, cancelled):
        start = time.monotonic()
        probe, target, images = self.probe, request["target"], request["images"]
        base = px.to_rgb(images)
        results = {}
        for k, method in enumerate(request["methods"]):
            if cancelled():
                return
            if request["mode"] == "compare":
                self.show_status(f"computing {LABELS.get(method, method)} ({k + 1}/{len(request['methods'])})…")
            results[method] = saliency(probe, images, method, target, **self.options_for(method, target))
            if request["mode"] == "compare" and len(results) < len(request["methods"]):
                self._show_main(*self._compare_tiles(base[0], results, request["methods"]), force=False)
        if cancelled():
            return
        probs = np.asarray(probe.probabilities(probe.variables, request["image"][None]))[0]
        top = np.argsort(-probs)[:5]
        top5 = [(probe.class_name(int(i)), float(probs[i])) for i in top]
        cascade = None
        if request["sanity"]:
            method = request["method"]
            cascade = randomization_cascade(
                probe,
                request["image"][None],
                (method,),
                target,
                max_steps=self.cascade_steps,
                **self.options_for(method, target),
            )
        faith = self._faithfulness(request, cancelled) if request["faithfulness"] else None
        if cancelled():
            return

        result = results[request["method"]]
        if request["mode"] == "compare":
            tiles = self._compare_tiles(base[0], results, request["methods"])
        elif request["mode"] == "batch":
            maps = self._display_maps(result, shared=True)  # one scale: equal colours, equal values
            labels = [f"{_short(name, i)} → {self.target_label(result, i)}" for i, name in enumerate(request["names"])]
            tiles = (base, self._heat(maps, result.method), np.ones(len(maps), bool), labels, maps)
        else:
            maps = self._display_maps(result)
            labels = ["image", f"{LABELS.get(result.method, result.method)} → {self.target_label(result, 0)}"]
            heat = self._heat(maps, result.method)
            tiles = (
                np.concatenate([base, base]),
                np.concatenate([np.zeros_like(heat), heat]),
                np.array([False, True]),
                labels,
                maps,
            )
        self.results, self.result, self.request, self.top5, self.cascade, self.faithfulness_result = (
            results,
            result,
            request,
            top5,
            cascade,
            faith,
        )
        self._show_main(*tiles, force=True)
        self._show_cascade(request, cascade)
        self.faithfulness_table.value = self._faithfulness_html(request, faith)
        self._show_top5(top5, result, request)
        self.colorbar.value = self._colorbar_html(request)
        what = "every method" if request["mode"] == "compare" else LABELS.get(result.method, result.method)
        self.show_status(
            f"{what} · target {self.target_label(result, self._picked(request))}"
            + (f" ({request['image_name']}; {len(images)} images)" if len(images) > 1 else "")
            + f" · {time.monotonic() - start:.2f} s"
        )

    def _faithfulness(self, request, cancelled):
        """``faithfulness`` of every method the probe allows on the picker's image (None for a layer
        unit target: it has no probability), reporting each method done in the status line."""
        target = request["target"]
        if isinstance(target, tuple):
            return None
        methods = applicable_methods(self.probe)

        def progress(done, total, method):
            self.show_status(f"faithfulness: {LABELS.get(method, method)} done ({done}/{total})…")
            return cancelled()

        self.show_status(f"faithfulness: ranking {len(methods)} methods by deletion and insertion…")
        options = {m: self.options_for(m, target) for m in methods}
        return faithfulness(
            self.probe, request["image"][None], methods, target,
            options={m: o for m, o in options.items() if o}, callback=progress,
        )  # fmt: skip

    # --------------------------------------------------------------- display
    def redraw(self) -> None:
        """Re-blend the kept maps with the current opacity (no recomputation, no job)."""
        with self._draw_lock:
            for grid, display in ((self.grid, self._display), (self.cascade_grid, self._cascade_display)):
                if display is not None:
                    grid.update(self._blend(display), display[3], force=True)

    def _blend(self, display) -> np.ndarray:
        base, heat, has_map, _labels = display
        a = float(self.opacity.value)
        return np.where(has_map[:, None, None, None], px.overlay(base, heat, a), base)

    def _show_main(self, base, heat, has_map, labels, maps, force=True) -> None:
        with self._draw_lock:
            display = (base, heat, has_map, labels)
            if force:
                self._display, self.maps = display, maps
            self.grid.update(self._blend(display), labels, force=force)

    def _show_cascade(self, request, cascade) -> None:
        with self._draw_lock:
            if cascade is None:
                self._cascade_display = None
                self.cascade_title.value = ""
                return
            maps = cascade.maps[:, 0, 0]  # (steps, H, W), each min-max scaled by the engine
            rho = cascade.spearman[:, 0, 0]
            labels = [f"{step} ρ={r:.2f}" for step, r in zip(cascade.steps, rho)]
            base = np.repeat(px.to_rgb(request["image"][None]), len(maps), axis=0)
            self._cascade_display = (base, px.colorize(maps, self.cmap), np.ones(len(maps), bool), labels)
            self.cascade_grid.ncols = min(len(maps), CASCADE_COLUMNS)  # rows of 6 fit a narrow notebook
            self.cascade_grid.update(self._blend(self._cascade_display), labels, force=True)
            method = LABELS.get(cascade.methods[0], cascade.methods[0])
            self.cascade_title.value = (
                f"<b>Sanity check</b>: {html.escape(method)} with the model's parameters randomized from the "
                "top layer down; ρ = Spearman rank correlation with the trained model's map "
                "(a method that explains the model should drop well below 1)."
            )

    def faithfulness_rows(self) -> list[tuple[str, float, float]]:
        """The faithfulness row's methods, best first: (label, deletion AUC, insertion AUC) on the
        picker's image ([] when the row is off or the target is a layer unit)."""
        return _ranked_rows(self.faithfulness_result)

    def _faithfulness_html(self, request, faith) -> str:
        if not request["faithfulness"]:
            return ""
        title = (
            f"<b>Faithfulness</b> on {html.escape(request['image_name'])} (Petsiuk et al. 2018): the class's "
            "probability as the map's most relevant pixels are deleted (set to 0; area: lower is better) or "
            "inserted into a blurred copy (area: higher is better); best first by insertion − deletion."
        )
        if faith is None:
            return title + "<br><i>Needs a class target: a layer unit has no probability.</i>"
        shown = LABELS.get(request["method"], request["method"])
        cells = "".join(
            f"<tr style='{'font-weight:bold' if label == shown else ''}'><td>{k + 1}</td>"
            f"<td style='text-align:left'>{html.escape(label)}</td>"
            f"<td>{d:.3f}</td><td>{i:.3f}</td><td>{i - d:+.3f}</td></tr>"
            for k, (label, d, i) in enumerate(_ranked_rows(faith))
        )
        columns = ("#", "method", "deletion ↓", "insertion ↑", "ins − del")
        head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
        style = "border-collapse:collapse;font-size:12px;text-align:right"
        return f"{title}<table style='{style}' cellpadding='3'>{head}{cells}</table>"

    def _compare_tiles(self, image_rgb, results: dict, methods: list[str]):
        """One tile per method; methods not computed yet show the bare image."""
        h, w = image_rgb.shape[:2]
        maps = np.zeros((len(methods), h, w), np.float32)
        heat = np.zeros((len(methods), h, w, 3), np.float32)
        done = np.zeros(len(methods), bool)
        for i, method in enumerate(methods):
            if method in results:
                maps[i] = self._display_maps(results[method])[0]
                heat[i] = self._heat(maps[i : i + 1], method)[0]
                done[i] = True
        labels = [LABELS.get(m, m) + ("" if d else " …") for m, d in zip(methods, done)]
        return np.repeat(image_rgb[None], len(methods), axis=0), heat, done, labels, maps

    def _display_maps(self, result, shared: bool = False) -> np.ndarray:
        """Maps in [0, 1] for colouring: signed attributions centred at 0.5, others min-max scaled
        (``shared``: one scale for all of them)."""
        return px.display_maps(result.maps, signed=result.method in SIGNED_METHODS, shared=shared)

    def _heat(self, maps, method: str) -> np.ndarray:
        return px.colorize(maps, self.signed_cmap if method in SIGNED_METHODS else self.cmap)

    def _show_top5(self, top5, result, request) -> None:
        """The top-5 of the picker's image as buttons (a click makes the class the target) and
        the target's score for that same image."""
        self.top5_title.value = f"<b>top-5</b> <small>({html.escape(request['image_name'])})</small>"
        for button, (name, p) in zip(self.top5_buttons, top5):
            button.description = f"{name} · {p:.3f}"
            button.tooltip = f"make {name!r} the target"
        i = self._picked(request)
        unit = result.target_layer is not None
        if request["image_name"] in request["names"]:
            target = f"{self.target_label(result, i)}: {'mean activation' if unit else 'logit'} {result.scores[i]:.3g}"
        else:  # a batch that leaves the picker's image out: no map, no score of it
            target = f"{request['target_text']} (this image is not in the batch)"
        self.top5_note.value = f"<small>target {html.escape(target)}<br>click a class to explain it</small>"

    def _picked(self, request) -> int:
        """Which of the request's images is the picker's (the one the top-5 is about)."""
        names = request["names"]
        return names.index(request["image_name"]) if request["image_name"] in names else 0

    def _class_clicked(self, button) -> None:
        k = self.top5_buttons.index(button)
        if k < len(self.top5):
            self.target.value = self.top5[k][0]  # the target box's observer starts the run

    def _colorbar_html(self, request) -> str:
        """A colour bar per kind of map shown: sequential for magnitudes, diverging around 0."""
        kinds = {m in SIGNED_METHODS for m in request["methods"]}
        scale = (
            f"one scale for all {len(request['names'])} images"
            if request["mode"] == "batch"
            else "each map scaled to its own 99.5th percentile"
        )
        bars = [
            colorbar_html(self.signed_cmap, "signed", SIGNED_ENDS)
            if signed
            else colorbar_html(self.cmap, "magnitude", ("0", "high"))
            for signed in sorted(kinds)
        ]
        return "".join(bars) + f"<small style='color:#666'>{scale}</small>"

    # --------------------------------------------------------------- naming
    def target_label(self, result, i: int) -> str:
        """The resolved target of image ``i`` of ``result``, readable (``saliency.target_label``)."""
        return target_label(self.probe, result, i)

    # --------------------------------------------------------------- control reactions
    def _sync_batch_control(self) -> None:
        self.batch_size.disabled = self.mode.value != "batch"
        self.method.disabled = self.mode.value == "compare"  # compare shows every method

    def _mode_changed(self, _change) -> None:
        self._sync_batch_control()
        self.run()

    def _sanity_changed(self, change) -> None:
        self.cascade_box.children = [self.cascade_title, self.cascade_grid] if change["new"] else []
        if change["new"]:
            self.run()

    def _faithfulness_changed(self, change) -> None:
        self.faithfulness_box.children = [self.faithfulness_table] if change["new"] else []
        if change["new"]:
            self.run()

    def _tile_clicked(self, change) -> None:
        i = change["new"]
        if i < 0 or self.request is None:
            return
        request = self.request
        if request["mode"] == "batch" and i < len(request["names"]):
            self.image_picker.value = request["names"][i]
        elif request["mode"] == "compare" and i < len(request["methods"]):
            self.method.value = request["methods"][i]
        self.grid.selected = -1  # so a second click on the same tile reports again

    # --------------------------------------------------------------- export
    def to_figure(self):
        """A matplotlib figure of what the view shows: the tiles, the top-5, the sanity and faithfulness
        rows."""
        from cnnvis_widgets import export

        if self._display is None:
            raise RuntimeError("Nothing computed yet: call run() and wait().")
        cascade = self._cascade_display if self.sanity.value else None
        method = "every method" if self.request["mode"] == "compare" else self.result.method
        return export.saliency_figure(
            self._blend(self._display),
            self._display[3],
            self.top5,
            title=f"{self.probe.name} · {method} · {self.request['mode']}",
            cascade=None if cascade is None else (self._blend(cascade), cascade[3]),
            faithfulness=(self.faithfulness_rows() or None) if self.faithfulness.value else None,
        )


# ------------------------------------------------------------------ targets
# ------------------------------------------------------------------ helpers
def _ranked_rows(faith) -> list[tuple[str, float, float]]:
    """(label, deletion AUC, insertion AUC) of each method of a one-image ``FaithfulnessResult``, best
    first ([] for None)."""
    if faith is None:
        return []
    index = {m: i for i, m in enumerate(faith.methods)}
    areas = lambda m: (float(faith.deletion_auc[index[m], 0]), float(faith.insertion_auc[index[m], 0]))
    return [(LABELS.get(m, m), *areas(m)) for m in faith.ranking]


def _short(name: str, index: int, most: int = 12) -> str:
    """A tile label for image ``index`` called ``name``: the name if it fits under a tile, else #index."""
    return name if len(name) <= most else f"#{index}"


