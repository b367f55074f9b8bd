"""Small controls that hold state in traits: a layer slider, a filter picker, a regularizer panel."""

from __future__ import annotations

import html
import itertools

import ipywidgets as widgets
import numpy as np
import traitlets

from cnnvis_widgets import data
from cnnvis_widgets.engine import regularizers as reg_lib


class LayerSlider(widgets.VBox):
    """Picks one of a probe's layers; shows its name, kind and shape. ``value`` is the name."""

    value = traitlets.Unicode()

    def __init__(self, probe, value: str | None = None, spatial_only: bool = True, **kwargs):
        self.names = [layer.name for layer in probe.layers if layer.spatial or not spatial_only]
        if not self.names:
            raise ValueError(
                f"{probe.name} has no {'spatial ' if spatial_only else ''}layers to choose from."
            )
        self._probe = probe
        if value and probe.layer(value).name not in self.names:
            info = probe.layer(value)
            raise ValueError(
                f"Layer {info.name!r} ({info.kind}, shape {info.shape}) cannot be chosen here: "
                f"choose one of {', '.join(self.names)}."
            )
        first = probe.layer(value).name if value else probe.default_layer
        start = self.names.index(first) if first in self.names else len(self.names) // 2
        self.slider = widgets.IntSlider(
            start, 0, len(self.names) - 1, description="layer", continuous_update=False, readout=False
        )
        self.label = widgets.HTML()
        super().__init__([widgets.HBox([self.slider, self.label])], **kwargs)
        self.slider.observe(self._sync, "value")
        self._sync()

    def _sync(self, _change=None):
        layer = self._probe.layer(self.names[self.slider.value])
        dims = "×".join(str(d) for d in layer.shape)
        self.label.value = (  # names come from the user's model: text, not markup
            f"<b>{html.escape(layer.name)}</b> "
            f"<small>{html.escape(layer.kind)}, {dims}, rf {layer.receptive_field}px</small>"
        )
        self.value = layer.name

    @traitlets.validate("value")
    def _valid_layer(self, proposal):
        name = proposal["value"]
        if name not in self.names:
            raise traitlets.TraitError(
                f"Layer {name!r} cannot be chosen here: choose one of {', '.join(self.names)}."
            )
        return name

    @traitlets.observe("value")
    def _value_changed(self, change):
        if change["new"] in self.names and self.names[self.slider.value] != change["new"]:
            self.slider.value = self.names.index(change["new"])


class FilterPicker(widgets.HBox):
    """Which filters of the layer to show: a range or list as text. ``value`` is that text."""

    value = traitlets.Unicode("0:16")

    def __init__(self, value: str = "0:16", **kwargs):
        self.text = widgets.Text(
            value,
            description="filters",
            continuous_update=False,
            placeholder="0:16, 3,5,9, top16 or all",
            layout=widgets.Layout(width="220px"),
        )
        super().__init__([self.text], **kwargs)
        widgets.link((self.text, "value"), (self, "value"))


# Every regularizer of the engine, in one tuple: toggling one changes only its (traced)
# weight, so the compiled optimization is reused. Each row: the toggle's label, the regularizer,
# on by default (without a recipe), the weight slider's range, and what it does in plain words
# (shown as the row's tooltip and help line) with the paper it comes from.
PANEL = (
    ("L2 decay", reg_lib.l2_decay(0.01), True, (0.0, 0.1),
     "pulls every pixel a little toward grey each step, so only what the filter needs stays "
     "(Yosinski et al. 2015)"),
    ("blur every 4 steps", reg_lib.gaussian_blur(0.5, every=4), True, (0.0, 1.0),
     "blurs the image every 4 steps: removes the fine noise a filter also responds to "
     "(Yosinski et al. 2015)"),
    ("grey out faint pixels", reg_lib.clip_norm(10.0), False, (0.0, 0.5),
     "sets to grey this fraction of the pixels, those closest to grey: keeps the strong parts "
     "(Yosinski et al. 2015, 'clipping pixels with small norm')"),
    ("grey out useless pixels", reg_lib.clip_contribution(10.0), False, (0.0, 0.5),
     "sets to grey this fraction of the pixels, those the filter's response depends on least "
     "(Yosinski et al. 2015, 'clipping pixels with small contribution')"),
    ("total variation", reg_lib.total_variation(1.0), True, (0.0, 10.0),
     "penalizes differences between neighbouring pixels: smoother, less noisy pictures "
     "(Mahendran & Vedaldi 2016)"),
    ("no extreme colours", reg_lib.alpha_norm(1.0), False, (0.0, 10.0),
     "penalizes pixels near pure black, white or saturated (an α-norm with α = 6) "
     "(Mahendran & Vedaldi 2016)"),
    ("keep colours near grey", reg_lib.bounded_range(1.0), False, (0.0, 10.0),
     "penalizes pixels whose colour strays far from grey (a soft bounded range) "
     "(Mahendran & Vedaldi 2016)"),
    ("sparse (L1)", reg_lib.lp(0.1, p=1.0), False, (0.0, 1.0),
     "penalizes every departure from grey equally: most pixels stay grey"),
)  # fmt: skip
PANEL_REGULARIZERS = tuple(row[1] for row in PANEL)


class RegularizerPanel(widgets.VBox):
    """A toggle and a weight for each regularizer; ``weights`` is what the engine gets.

    With a ``recipe`` (``engine.recipes``) the toggles start as the recipe's priors (none for
    ImageNet models, whose pictures they fade); without one, as the first wave's defaults.
    Each row explains itself (tooltip and a help line); ``reset()`` (the "reset" button) puts
    every toggle and weight back to where it started.
    """

    weights = traitlets.List(traitlets.Float())

    def __init__(self, recipe=None, **kwargs):
        self.toggles, self.sliders = [], []
        self._defaults: list[tuple[bool, float]] = []
        self._syncing = False  # reset() in progress: one weights change at its end
        rows = []
        chosen = None if recipe is None else dict(recipe.priors)
        for label, reg, on, (lo, hi), help_text in PANEL:
            if chosen is not None:
                on = reg.name in chosen
            weight = chosen.get(reg.name, reg.weight) if chosen else reg.weight
            toggle = widgets.Checkbox(
                on, description=label, indent=False, tooltip=help_text, layout=widgets.Layout(width="200px")
            )
            slider = widgets.FloatSlider(
                weight,
                min=min(lo, weight),
                max=max(hi, weight),  # a recipe's weight beyond the usual range is kept, not clamped
                step=(hi - lo) / 100,
                continuous_update=False,
                readout_format=".3g",
                tooltip=f"weight: {help_text}",
                layout=widgets.Layout(width="260px"),
            )
            toggle.observe(self._sync, "value")
            slider.observe(self._sync, "value")
            self.toggles.append(toggle)
            self.sliders.append(slider)
            self._defaults.append((on, weight))
            rows.append(widgets.HBox([toggle, slider], layout=widgets.Layout(flex_flow="row wrap")))
            rows.append(widgets.HTML(f"<small style='color:#666'>{html.escape(help_text)}</small>",
                                     layout=widgets.Layout(margin="-6px 0 4px 4px", max_width="460px")))
        self.reset_button = widgets.Button(
            description="reset to defaults", icon="undo", tooltip="every prior back to this model's default"
        )
        self.reset_button.on_click(lambda _b: self.reset())
        super().__init__([*rows, self.reset_button], **kwargs)
        self._sync()

    def reset(self) -> None:
        """Every toggle and weight back to its starting value: one change of ``weights``."""
        with self.hold_trait_notifications():
            self._syncing = True
            try:
                for toggle, slider, (on, weight) in zip(self.toggles, self.sliders, self._defaults):
                    toggle.value, slider.value = on, weight
            finally:
                self._syncing = False
            self._sync()

    def _sync(self, _change=None):
        if self._syncing:
            return
        for toggle, slider in zip(self.toggles, self.sliders):
            slider.disabled = not toggle.value  # a weight that does nothing is not offered
        weights = [s.value if t.value else 0.0 for t, s in zip(self.toggles, self.sliders)]
        if weights != self.weights:
            self.weights = weights


def target_box(probe, value: str) -> widgets.Combobox:
    """The target as text (``saliency.parse_target`` reads it): the predicted class, a class name
    or index, or a layer's unit ("conv3:5"); offered as choices, any other text allowed."""
    from cnnvis_widgets.engine.saliency import PREDICTED

    names = [str(n) for n in (probe.class_names or [])]
    layers = [f"{layer.name}:0" for layer in probe.layers]
    return widgets.Combobox(
        value=value,
        options=[PREDICTED, *names, *layers],
        ensure_option=False,
        continuous_update=False,
        description="target",
        placeholder="predicted class, a class name or index, conv3:5",
        layout=widgets.Layout(width="320px"),
    )


def colorbar_html(cmap: str, name: str, ends: tuple[str, str]) -> str:
    """One colour bar as HTML: ``name``, what the low end means, the colormap, what the high end means."""
    from cnnvis_widgets import pixels as px

    low, high = (html.escape(end) for end in ends)
    return (
        "<div style='display:flex;align-items:center;gap:6px;font-size:11px;margin:2px 0'>"
        f"<span style='min-width:60px'>{html.escape(name)}</span><span>{low}</span>"
        f"<span style='display:inline-block;width:160px;height:10px;background:{px.colormap_css(cmap)};"
        f"border:1px solid #999'></span><span>{high}</span></div>"
    )


class ImagePicker(widgets.VBox):
    """Which input image: bundled ones, the caller's own, or an uploaded file.

    ``value`` is the chosen name; ``image`` is that image fitted to the model, (H, W, C) in
    [0, 1]. Defaults: the bundled photos for RGB models, 16 test digits for grayscale ones.
    ``images`` may be a dict name → image, a list or an (N, H, W, C) array of any size.
    """

    value = traitlets.Unicode()

    def __init__(self, probe, images=None, value: str | None = None, upload: bool = True, **kwargs):
        self._probe = probe
        self._images: dict[str, np.ndarray] = {}
        for name, image in _named_images(probe, images).items():
            self._images[name] = data.fit_image(image, probe, name)
        names = list(self._images)
        if not names:
            raise ValueError(
                "No images given: pass a dict name -> image, a list or an (N, H, W, C) array of at least one."
            )
        if value is not None and value not in self._images:
            raise ValueError(f"Unknown image {value!r}; choose one of: {', '.join(names)}.")
        self.dropdown = widgets.Dropdown(options=names, value=value or names[0], description="image")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="your image")
        self.message = widgets.HTML()
        row = [self.dropdown] + ([self.upload] if upload else [])
        super().__init__([widgets.HBox(row), self.message], **kwargs)
        widgets.link((self.dropdown, "value"), (self, "value"))
        self.upload.observe(self._uploaded, "value")

    @property
    def names(self) -> list[str]:
        return list(self._images)

    @property
    def image(self) -> np.ndarray:
        return self._images[self.value]

    @property
    def images(self) -> dict[str, np.ndarray]:
        """Every image by name, fitted to the model."""
        return dict(self._images)

    def add(self, name: str, image, select: bool = True) -> None:
        """Add (or replace) a named image, fitted to the model, and optionally select it."""
        self._images[name] = data.fit_image(image, self._probe, name)
        self.dropdown.options = list(self._images)
        if select:
            self.value = name

    def _uploaded(self, change):
        """Add each uploaded file under a name of its own (never replacing an image) and select it;
        an unreadable or too large file is reported in ``message``, as text."""
        for item in change["new"] or ():
            name = self._upload_name(item["name"])
            try:
                self.add(name, data.decode_image(item["content"], name=name))
                self.message.value = ""
            except Exception as err:  # noqa: BLE001 - any unreadable upload is reported, not raised
                self.message.value = f"<span style='color:#b00'>⚠ {html.escape(str(err))}</span>"

    def _upload_name(self, name) -> str:
        """``name`` if no image has it, else ``name (upload)``, ``name (upload 2)``, …; an unnamed
        upload is ``upload 1``, ``upload 2``, …"""
        name = " ".join(str(name or "").split())
        if not name:
            tries = (f"upload {i}" for i in itertools.count(1))
        else:
            more = (f"{name} (upload {i})" for i in itertools.count(2))
            tries = itertools.chain([name, f"{name} (upload)"], more)
        return next(n for n in tries if n not in self._images)


def _named_images(probe, images) -> dict:
    from cnnvis_widgets import data

    if images is None:
        if probe.input_shape[-1] == 1:
            test = data.digits_split()[1]
            return {f"test image #{i} — label {test.labels[i]}": test.images[i] for i in range(16)}
        return {name: data.photo(name) for name in data.PHOTOS}
    if isinstance(images, dict):
        return dict(images)
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.shape[-1] in (1, 3, 4):
        images = [images]  # one image
    return {f"image {i}": image for i, image in enumerate(images)}
