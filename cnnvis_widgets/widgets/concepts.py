"""ConceptExplorer: which channels of a layer made the prediction, where each one sits in the image,
and what each one is (Concept Relevance Propagation, live).

Controls (image picker, target, layer slider, method, LRP composite) change traits; a change
submits one debounced job to the view's worker. The job calls the engine (``concepts``, or
``decompose`` below a chosen channel) and shows a card per concept, ranked by relevance: its
conditional heatmap on the image at once, then its top reference patches (``concept_examples``,
relevance maximization over the reference dataset), then its feature visualization
(``ascent.progressive_filters``, kept per channel), each as it arrives. Clicking a card overlays
its heatmap on the image (no job); "decompose" splits the selected concept into the channels of
the layer below it; "back up" returns. The cards' pixels come from ``export.concept_cards``, as
``cnnvis concepts``'s figure does.

References: Achtibat et al. 2023, "From attribution maps to human-understandable explanations
through Concept Relevance Propagation"; Olah et al. 2018, "The Building Blocks of Interpretability".
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import traitlets

from cnnvis_widgets import data, export
from cnnvis_widgets import pixels as px
from cnnvis_widgets import validation
from cnnvis_widgets.compile_cache import enable_compilation_cache
from cnnvis_widgets.engine import ascent
from cnnvis_widgets.engine.concepts import (
    DEFAULT_COMPOSITE,
    METHODS,
    concept_examples,
    concepts,
    decompose,
    lower_layer,
)
from cnnvis_widgets.engine.saliency import parse_target, target_to_text
from cnnvis_widgets.jaxpr.lrp import COMPOSITES
from cnnvis_widgets.widgets.controls import ImagePicker, LayerSlider, colorbar_html, target_box
from cnnvis_widgets.widgets.filters import DEBOUNCE_S
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View, as_probe

METHOD_LABELS = export.CONCEPT_METHODS
SIGNED_ENDS = ("− lowers the score", "+ raises it")
SNAPSHOT_EVERY = 16  # feature-visualization steps per compiled call (a frame of the cards each)


class _Request(NamedTuple):
    """What one job computes: the controls' values when it was submitted."""

    image_name: str
    image: np.ndarray
    target: Any  # as ``parse_target`` returns it
    layer: str
    within: tuple[str, int] | None  # the (higher layer, channel) decomposed, or None
    method: str
    composite: str


class ConceptExplorer(View):
    """The channels (concepts) of a layer behind a prediction, ranked by relevance, as cards.

    Args:
      probe: a Probe or a zoo name ("digits-cnn", "efficientnet-lite0").
      images: the picker's images (as ``SaliencyExplorer``'s); default the bundled photos (RGB
        models) or 16 test digits (grayscale models).
      layer: the starting spatial layer (default ``probe.default_layer``).
      target: None (the predicted class), a class index or name, or a layer unit ``("conv4", 5)``.
      top_k: concepts shown (the most relevant channels).
      method: "lrp" (with ``composite``) or "grad_x_act" (``engine.concepts.METHODS``).
      dataset: the images searched for each concept's top patches (``concept_examples``); default
        the 450 digits test images (grayscale models) or the bundled photos (RGB ones).
      patches: top patches per card.
      steps: feature-visualization steps per concept (0: no feature visualizations).
      opacity: weight of the heatmaps over the image, in [0, 1].
      cmap: a diverging colormap for the signed heatmaps (0 at its centre).
      autorun: compute at once.
    """

    selected = traitlets.Int(0)  # the selected card: its rank among the concepts shown (0: the first)

    def __init__(
        self,
        probe,
        images=None,
        *,
        layer: str | None = None,
        target=None,
        top_k: int = 6,
        method: str = "lrp",
        composite: str = DEFAULT_COMPOSITE,
        dataset=None,
        patches: int = 3,
        steps: int = 96,
        opacity: float = 0.5,
        cmap: str = "RdBu_r",
        autorun: bool = True,
    ):
        super().__init__(name="cnnvis-concepts")
        self.probe = probe = as_probe(probe)
        self.n_classes = probe.require_classes("The ConceptExplorer (it explains the model's classes)")
        target_text = _check_arguments(probe, method, composite, opacity, target)
        self.top_k = validation.positive_int(top_k, "top_k")
        self.patches = validation.positive_int(patches, "patches")
        self.steps = 0 if steps == 0 else validation.positive_int(steps, "steps", ascent.MAX_STEPS)
        self.cmap = px.check_colormap(cmap, "cmap")

        # what the last finished job computed (for tests, export and dashboards)
        self.result = None  # the engine's ConceptResult shown
        self.request: _Request | None = None  # the request it answers
        self.examples: list = []  # per card: its ConceptExamples (None until found)
        self.features: list = []  # per card: its feature visualization (None until drawn)
        self.path: list[tuple[str, int]] = []  # the (layer, channel)s decomposed, top first
        self._dataset_arg = dataset
        self._dataset: np.ndarray | None = None  # fitted on the worker, once
        self.dataset_description = ""
        self._found: dict[tuple, Any] = {}  # ``_examples_key`` → ConceptExamples
        self._drawn: dict[tuple[str, int], np.ndarray] = {}  # (layer, channel) → feature visualization
        self._reselect: int | None = None  # the channel to select when the next result arrives
        self._navigating = False  # the layer slider is moved by decompose / back up, not by the user
        self._draw_lock = threading.RLock()
        enable_compilation_cache()

        self._build(images, target_text, layer, method, composite, opacity)
        self._wire()
        if autorun:
            self.run()

    def _build(self, images, target_text: str, layer, method: str, composite: str, opacity: float) -> None:
        """The controls and displays, laid out."""
        probe = self.probe
        self.image_picker = ImagePicker(probe, images)
        self.target = target_box(probe, target_text)
        self.layer_slider = LayerSlider(probe, layer)
        self.method = widgets.ToggleButtons(
            options=[(METHOD_LABELS[m], m) for m in METHODS],
            value=method,
            tooltips=["layer-wise relevance propagation (Bach 2015)", "the gradient × the activation"],
        )
        self.method.style.button_width = "175px"  # "gradient × activation" whole
        self.composite = widgets.Dropdown(
            options=list(COMPOSITES), value=composite, description="composite",
            tooltip="the LRP rules per kind of layer (jaxpr/lrp.py)", layout=widgets.Layout(width="230px"),
        )  # fmt: skip
        self.opacity = widgets.FloatSlider(opacity, min=0.0, max=1.0, step=0.05, description="opacity")
        self.breadcrumb = widgets.HTML()
        self.decompose_button = widgets.Button(
            description="decompose ↓", layout=widgets.Layout(width="125px")
        )  # its tooltip says where to: ``_sync_controls``
        self.back_button = widgets.Button(
            description="back up ↑", tooltip="to the concept this one was decomposed from",
            layout=widgets.Layout(width="110px"),
        )  # fmt: skip
        self.main = ImageGrid(tile_px=160)  # the image and the selected concept's heatmap over it
        self.colorbar = widgets.HTML(colorbar_html(self.cmap, "relevance", SIGNED_ENDS))
        self.about = widgets.HTML(layout=widgets.Layout(width="220px", margin="0 0 0 8px"))
        self.cards = ImageGrid(ncols=self.top_k, tile_px=0)  # a column per concept, its caption above
        self.cards.caption.layout.max_width = "560px"
        row = lambda *children: widgets.HBox(list(children), layout=widgets.Layout(flex_flow="row wrap"))
        self.children = [
            row(self.image_picker, self.target),
            row(self.layer_slider, self.method, self.composite),
            row(self.breadcrumb, self.decompose_button, self.back_button, self.opacity),
            self.status,
            row(self.main, self.about),  # 2 x 160 px + 220 px: side by side in a 1024-px Lab
            self.colorbar,
            self.cards,
        ]
        self._sync_controls()

    def _wire(self) -> None:
        """Controls → one debounced job each; the selection and the opacity → a redraw, no job."""
        for control in (self.image_picker, self.target, self.method, self.composite):
            control.observe(lambda _change: self.run(delay=DEBOUNCE_S), "value")
        self.method.observe(lambda _change: self._sync_controls(), "value")
        self.layer_slider.observe(self._layer_changed, "value")
        self.opacity.observe(lambda _change: self.redraw(), "value")
        self.observe(self._selection_changed, "selected")
        self.cards.observe(self._card_clicked, "selected")
        self.decompose_button.on_click(lambda _b: self.decompose())
        self.back_button.on_click(lambda _b: self.back_up())

    # --------------------------------------------------------------- the image
    @property
    def image(self) -> np.ndarray:
        """The picker's current image, fitted to the model: (H, W, C) in [0, 1]."""
        return self.image_picker.image

    @property
    def channel(self) -> int | None:
        """The selected concept's channel (None before the first result)."""
        if self.result is None or not 0 <= self.selected < len(self.result.channels):
            return None
        return int(self.result.channels[self.selected])

    # --------------------------------------------------------------- running
    def run(self, delay: float = 0.0) -> int:
        """Recompute with the controls' current values; returns the job's generation. With a
        ``delay`` (the controls use ``DEBOUNCE_S``) it starts only if no newer request comes."""
        try:
            request = self._request()
        except (ValueError, TypeError) as err:
            self.runner.cancel()
            self.show_error(err)
            return self.runner.generation
        self._sync_controls()
        what = f"{request.layer} inside {_unit(*request.within)}" if request.within else request.layer
        self.show_status(f"computing the concepts of {what} ({METHOD_LABELS[request.method]})…")
        self.cards.mark_stale(f"<b>{html.escape(what)}</b> · computing…")
        return self.runner.submit(lambda cancelled: self._job(request, cancelled), delay=delay)

    def _request(self) -> _Request:
        """The controls' values as a request; a bad target raises (shown, not computed)."""
        target = parse_target(self.probe, self.target.value, self.n_classes)
        within = self.path[-1] if self.path else None
        return _Request(
            self.image_picker.value,
            self.image_picker.image,
            target,
            self.layer_slider.value,
            within,
            self.method.value,
            self.composite.value,
        )

    def _job(self, request: _Request, cancelled) -> None:
        start = time.monotonic()
        result = self._concepts(request)
        if cancelled():
            return
        channels = [int(c) for c in result.channels]
        keep = self._reselect
        with self._draw_lock:
            self.result, self.request = result, request
            self.examples = [self._found.get(_examples_key(result, request, c)) for c in channels]
            self.features = [self._drawn.get((result.layer, c)) for c in channels]
            self._reselect = None
            self.selected = channels.index(keep) if keep in channels else 0
            self.redraw()
        self._sync_controls()
        self._find_examples(result, request, cancelled)
        if self.steps and not cancelled():
            self._draw_features(result, cancelled)
        if cancelled():
            return
        self.show_status(f"{self._headline(result)} · {time.monotonic() - start:.2f} s")

    def _concepts(self, request: _Request):
        """The engine's concepts for ``request``: of its layer, or inside the decomposed channel."""
        options = dict(target=request.target, top_k=self.top_k, method=request.method)
        options["composite"] = request.composite
        if request.within is None:
            return concepts(self.probe, request.image, layer=request.layer, **options)
        upper, channel = request.within
        return decompose(self.probe, request.image, upper, channel, into=request.layer, **options)

    def _find_examples(self, result, request: _Request, cancelled) -> None:
        """Each card's top patches over the reference dataset, relevance to the same target."""
        if self._dataset is None:
            self.show_status(f"{self._headline(result)} · loading the reference images…")
            self._dataset, self.dataset_description = data.reference_dataset(self.probe, self._dataset_arg)
        k = min(self.patches, len(self._dataset))
        channels = [int(c) for c in result.channels]
        missing = [c for c in channels if _examples_key(result, request, c) not in self._found]
        if missing:
            self.show_status(f"{self._headline(result)} · top patches of {len(missing)} concepts…")
            found = concept_examples(
                self.probe, self._dataset, result.layer, missing, result.resolved_target, k=k,
                method=request.method, composite=request.composite,
            )  # fmt: skip
            for channel, examples in zip(missing, found):
                self._found[_examples_key(result, request, channel)] = examples
        if cancelled():
            return
        with self._draw_lock:
            self.examples = [self._found[_examples_key(result, request, c)] for c in channels]
            self._draw_cards()

    def _draw_features(self, result, cancelled) -> None:
        """The feature visualizations the cards lack, streamed into them; kept per channel."""
        layer, channels = result.layer, [int(c) for c in result.channels]
        missing = [c for c in channels if (layer, c) not in self._drawn]
        if not missing:
            return
        size = ascent.default_size(self.probe)
        size = size if self.probe.fixed_size else size[0]
        sizes, steps = ascent.progressive_stages(self.probe, size, self.steps)
        headline = self._headline(result)

        def on_progress(p: ascent.Progress):
            if cancelled():
                return True
            if p.compiling:
                about = f", ~{p.compile_estimate:.0f} s" if p.compile_estimate else ""
                self.show_status(f"{headline} · compiling the feature visualizations of {layer}{about}…")
                return None
            with self._draw_lock:
                for unit, image in zip(p.units, p.images):
                    self.features[channels.index(int(unit))] = image
                self._draw_cards(force=p.step == p.total_steps)
            done = sum(steps[: p.stage]) + steps[p.stage] * p.done_steps // max(p.all_steps, 1)
            self.show_status(f"{headline} · feature visualizations: step {done}/{sum(steps)}…")
            return None

        drawn = ascent.progressive_filters(
            self.probe, layer, missing, sizes=sizes, steps=steps, share_layers=True,
            snapshot_every=min(SNAPSHOT_EVERY, self.steps), callback=on_progress,
        )  # fmt: skip
        if cancelled() or drawn.stopped:
            return
        with self._draw_lock:
            for unit, image in zip(drawn.units, drawn.images):
                self._drawn[(layer, int(unit))] = image
                self.features[channels.index(int(unit))] = image
            self._draw_cards()

    # --------------------------------------------------------------- decompose
    def decompose(self) -> None:
        """Split the selected concept into the channels of the layer below (``engine.decompose``)."""
        try:
            layer, channel = self.layer_slider.value, self.channel
            if channel is None:
                raise ValueError("No concept selected yet: wait for the cards, then click one.")
            lower = self._lower(layer)
            if lower is None:
                raise ValueError(f"{layer} is the slider's first layer: none below to decompose into.")
        except ValueError as err:
            self.show_error(err)
            return
        self.path.append((layer, channel))
        self._move_slider(lower)
        self.run()

    def back_up(self) -> None:
        """Return to the concept the shown ones were decomposed from (selected again)."""
        if not self.path:
            self.show_error(ValueError("Nothing to go back up to: no concept was decomposed."))
            return
        layer, channel = self.path.pop()
        self._reselect = channel
        self._move_slider(layer)
        self.run()

    def _lower(self, layer: str) -> str | None:
        """The layer ``decompose`` splits ``layer``'s channels into, if the slider offers it."""
        try:
            lower = lower_layer(self.probe, layer)
        except ValueError:
            return None
        return lower if lower in self.layer_slider.names else None

    def _move_slider(self, layer: str) -> None:
        self._navigating = True
        try:
            self.layer_slider.value = layer
        finally:
            self._navigating = False

    def _layer_changed(self, _change) -> None:
        if not self._navigating:  # the user picked a layer: a fresh start there
            self.path.clear()
            self.run(delay=DEBOUNCE_S)

    # --------------------------------------------------------------- display
    def redraw(self) -> None:
        """Draw the kept result with the current selection and opacity (no recomputation, no job)."""
        with self._draw_lock:
            if self.result is None:
                return
            self._draw_main()
            self._draw_cards()

    def _main_tiles(self) -> tuple[np.ndarray, list[str]]:
        """The image, and the selected concept's heatmap over it; their labels."""
        image, opacity = self.request.image, self.opacity.value
        return export.concept_main(self.probe, image, self.result, self.selected, opacity, self.cmap)

    def _card_tiles(self) -> tuple[np.ndarray, list[str]]:
        features = self.features if self.steps else None
        image, opacity = self.request.image, self.opacity.value
        return export.concept_cards(
            image, self.result, self.examples, features, self.patches, opacity, self.cmap
        )

    def _draw_main(self) -> None:
        tiles, labels = self._main_tiles()
        self.main.update(tiles, labels, force=True)
        self.about.value = self._about_html()

    def _draw_cards(self, force: bool = True) -> None:
        tiles, labels = self._card_tiles()
        self.cards.ncols = len(self.result.channels)
        if self.cards.update(tiles, labels, force=force, caption=self._cards_caption()):
            self.cards.selected = self.selected

    def _selection_changed(self, _change) -> None:
        with self._draw_lock:
            if self.result is not None:
                self._draw_main()
                self.cards.selected = self.selected
        self._sync_controls()

    def _card_clicked(self, change) -> None:
        i = change["new"]
        if i < 0 or self.result is None or self.cards.stale:
            return
        rank = i % len(self.result.channels)
        if rank != self.selected:
            self.selected = rank
        elif i != rank:
            self.cards.selected = rank  # the frame goes on the card's top tile

    def select(self, channel: int) -> None:
        """Select the card of ``channel`` (as a click on it does)."""
        shown = [] if self.result is None else [int(c) for c in self.result.channels]
        if channel not in shown:
            raise ValueError(f"Channel {channel} has no card; the cards show channels {shown}.")
        self.selected = shown.index(channel)

    def _sync_controls(self) -> None:
        """Enable what can act now; say where decompose would go and what the path is."""
        self.composite.disabled = self.method.value != "lrp"
        layer = self.layer_slider.value
        lower = self._lower(layer)
        self.decompose_button.disabled = lower is None or self.channel is None
        self.decompose_button.tooltip = (
            f"split {_unit(layer, self.channel)}'s relevance into the channels of {lower}"
            if lower and self.channel is not None
            else "select a concept of a layer with a layer below it"
        )
        self.back_button.disabled = not self.path
        steps = [html.escape(_unit(*step)) for step in self.path] + [f"<b>{html.escape(layer)}</b>"]
        self.breadcrumb.value = "<small>path</small> " + " → ".join(steps)

    # --------------------------------------------------------------- text
    def _target_label(self, result) -> str:
        return export.concept_target(self.probe, result)

    def _headline(self, result) -> str:
        return export.concept_title(self.probe, result)

    def _cards_caption(self) -> str:
        r = self.result
        what = f"the channels of <b>{r.layer}</b>" + (
            f" that make up <b>{_unit(*r.within)}</b>" if r.within else ""
        )
        rows = ", ".join(name for name in export.concept_rows(bool(self.steps), self.patches) if name)
        over = html.escape(self.dataset_description or "the reference images")
        return _paragraph(
            f"{what}, ranked by relevance to <b>{html.escape(self._target_label(r))}</b> "
            f"(label: channel · its share of the relevance). A column a concept: {rows} "
            f"(where it is most relevant over {over}; grey: no other image where it is relevant). "
            "Click a concept to see its heatmap large."
        )

    def _about_html(self) -> str:
        r, i = self.result, self.selected
        unit = html.escape(_unit(r.layer, int(r.channels[i])))
        whole = f"{_unit(*r.within)}'s relevance" if r.within else f"the relevance of {r.layer}'s channels"
        return _paragraph(
            f"<b>{unit}</b>: {r.shares[i]:+.1%} of {html.escape(whole)} for "
            f"{html.escape(self._target_label(r))} (score {r.score:.3g}).<br><small>The heatmap is this "
            "channel's conditional relevance at the input: where in the image it drew its relevance from "
            "(Concept Relevance Propagation).</small>"
        )

    # --------------------------------------------------------------- export
    def to_figure(self):
        """A matplotlib figure of what the view shows: the image and overlay, and the cards."""
        with self._draw_lock:
            if self.result is None:
                raise RuntimeError("Nothing computed yet: call run() and wait().")
            main, main_labels = self._main_tiles()
            cards, labels = self._card_tiles()
            rows = export.concept_rows(bool(self.steps), self.patches)
            path = " → ".join([_unit(*step) for step in self.path] + [self.result.layer])
            caption = export.concept_caption(path, self.request.image_name, self.dataset_description)
            title = self._headline(self.result)
            return export.concepts_figure(main, main_labels, cards, labels, rows, title, caption)


# ------------------------------------------------------------------ helpers
def _check_arguments(probe, method: str, composite: str, opacity, target) -> str:
    """The constructor's choices checked (errors name the valid ones); the target as text."""
    validation.one_of(method, METHODS, "concept relevance method")
    validation.one_of(composite, COMPOSITES, "LRP composite")
    if not isinstance(opacity, (int, float, np.number)) or not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be a number in [0, 1], got {opacity!r}.")
    text = target_to_text(probe, target)
    parse_target(probe, text)  # a bad target fails here, not in the status line
    return text


def _paragraph(text: str) -> str:
    """HTML text set as prose: an HTML widget's lines are otherwise a control's height apart."""
    return f"<div style='line-height:1.35;margin:2px 0'>{text}</div>"


def _unit(layer: str, channel) -> str:
    return f"{layer}:{channel}"


def _examples_key(result, request: _Request, channel: int) -> tuple:
    """What a channel's top patches depend on besides the (fixed) reference dataset."""
    return result.layer, channel, result.target_layer, result.target, request.method, request.composite
