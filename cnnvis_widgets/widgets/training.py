"""TrainingMonitor: train the digits CNN from scratch and watch it learn, live.

Start trains ``DigitsCNN`` with optax (``models.digits.train_digits_cnn``) on the view's
worker thread. Every ``every`` steps one jitted forward pass over the 450 test digits
(plus a fixed slice of training digits) gives the accuracies, each conv layer's dead
filters (never active on any test digit: ReLU output <= 0 everywhere) and one digit's
conv1/conv2 feature maps; the curves, the first-layer kernels and the maps update in
place. A large learning rate without warm-up kills filters for good; the counts show it.
After a run (finished or stopped) ``monitor.variables`` and ``monitor.probe`` hold the
trained model for the other views.

References: Yosinski et al. 2015 (watching a network's activations live); Lu et al. 2019,
"Dying ReLU and Initialization" (filters that never fire again).
"""

from __future__ import annotations

import functools
import html
import math
import time

import bqplot
import ipywidgets as widgets
import jax
import jax.numpy as jnp
import numpy as np

from cnnvis_widgets import data
from cnnvis_widgets import validation
from cnnvis_widgets.compile_cache import enable_compilation_cache
from cnnvis_widgets.engine.activations import kernels_as_images
from cnnvis_widgets.models import digits, zoo
from cnnvis_widgets.models.probe import Probe, owned_by_probe
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View

MAP_LAYERS = ("conv1", "conv2")  # the feature maps shown for one test digit
N_TRAIN_EVAL = 128  # training digits whose accuracy is tracked (unaugmented, fixed)
# the accuracy curves: label → (colour, key of ``history``)
ACCURACY_CURVES = {
    "test (450 digits)": ("#d62728", "test_accuracy"),
    f"train ({N_TRAIN_EVAL} digits)": ("#2ca02c", "train_accuracy"),
}


class TrainingMonitor(View):
    """Trains digits-cnn from scratch with live loss / accuracy curves, filters and dead filters.

    Args:
      epochs, learning_rate, batch_size, seed, warmup: the training (``train_digits_cnn``);
        the controls start with these values. ``learning_rate=0.3, warmup=False`` provokes
        dead filters.
      every: steps between display updates (each costs one forward pass over ~580 digits).
      image_index: the test digit whose feature maps are shown.
      autorun: start training at once; otherwise the untrained model is shown until Start.
    """

    def __init__(
        self,
        *,
        epochs: int = 15,
        learning_rate: float = 3e-3,
        batch_size: int = 64,
        seed: int = 0,
        every: int = 10,
        warmup: bool = True,
        image_index: int = 0,
        autorun: bool = False,
    ):
        super().__init__(name="cnnvis-training")
        train, test = data.digits_split()
        validation.positive_int(every, "every", what="steps between updates")
        digits.check_settings(epochs, batch_size, learning_rate)
        if (
            isinstance(image_index, bool)
            or not isinstance(image_index, (int, np.integer))
            or not 0 <= image_index < len(test.labels)
        ):
            raise ValueError(
                f"image_index must be in 0..{len(test.labels) - 1} (a test digit), got {image_index}."
            )
        self.every, self.image_index = int(every), int(image_index)
        self._test_set, self._train_set = test, train
        self._template = zoo.load("digits-cnn")  # module, layers, preprocessing; its variables are swapped
        self.conv_layers = tuple(layer.name for layer in self._template.layers if layer.kind == "conv")
        self.variables: dict | None = None  # the latest trained variables
        self.probe: Probe | None = None  # a Probe over them, for the other views
        self.result: digits.TrainResult | None = None  # the last run that returned
        self.steps_done = 0
        self.runs_started = 0
        self.dead_counts: dict[str, int] = {}  # dead filters per conv layer, as shown
        self.kernel_tiles: np.ndarray | None = None  # conv1 kernels as shown, (16, 3, 3, 1) in [0, 1]
        self.history: dict[str, list] = {}
        self._closed = False
        self._stopping = False  # Stop was pressed (not a newer run replacing this one)
        self._stale = False  # the grids skipped the last frame (frame-rate limit)
        self._reset_history()

        self.learning_rate = widgets.FloatText(
            learning_rate, description="learning rate", step=1e-3, style={"description_width": "initial"}
        )  # the label whole, not "learning r…"
        self.epochs = widgets.BoundedIntText(epochs, min=1, max=500, description="epochs")
        self.batch_size = widgets.BoundedIntText(
            batch_size, min=1, max=len(train.labels), description="batch"
        )
        self.seed = widgets.IntText(seed, description="seed")
        self.warmup = widgets.Checkbox(
            warmup, description="warm-up (the first steps ramp the rate up)", indent=False
        )
        self.start_button = widgets.Button(description="Start", icon="play", button_style="success")
        self.stop_button = widgets.Button(description="Stop", icon="stop")
        self.progress = widgets.IntProgress(0, 0, 1, description="")

        self.loss_lines, loss_panel = _curve_panel("training loss", ["loss"], ["#1f77b4"])
        self.accuracy_lines, accuracy_panel = _curve_panel(
            "accuracy", list(ACCURACY_CURVES), [color for color, _ in ACCURACY_CURVES.values()], (0, 1)
        )
        # the curves' figures leave the page while the view is hidden: a hidden bqplot figure with
        # axes is laid out again at each resize, at width 0 (see View.shown)
        self._curve_panels = [loss_panel, accuracy_panel]  # each a VBox: the figure, and its key
        self.curves = widgets.HBox(self._curve_panels, layout=widgets.Layout(flex_flow="row wrap"))
        self.observe(self._show_curves, "shown")
        self.kernel_grid = ImageGrid(cmap="gray", ncols=8, tile_px=40, enlarge_tiny=True)
        self.digit_grid = ImageGrid(cmap="gray", tile_px=96)
        self.map_grid = ImageGrid(cmap="viridis", ncols=16, tile_px=44)
        self.dead_html = widgets.HTML()
        enable_compilation_cache()

        settings = widgets.HBox(
            [
                widgets.VBox([self.learning_rate, self.epochs]),
                widgets.VBox([self.batch_size, self.seed]),
                self.warmup,
            ]
        )
        bar = widgets.HBox([self.start_button, self.stop_button, self.progress, self.status])
        title = lambda text: widgets.HTML(f"<b>{html.escape(text)}</b>")
        digit = int(test.labels[self.image_index])
        self.children = [
            settings,
            bar,
            self.curves,
            widgets.HBox(
                [
                    widgets.VBox([title("conv1 kernels (grey = 0)"), self.kernel_grid]),
                    widgets.VBox([title("dead filters"), self.dead_html]),
                ]
            ),
            title(
                f"feature maps of test image #{self.image_index} — label {digit}: conv1 (first row), "
                "conv2; a × marks a dead filter"
            ),
            widgets.HBox([self.digit_grid, self.map_grid]),
        ]
        self.start_button.on_click(lambda _b: self.start())
        self.stop_button.on_click(lambda _b: self.stop())
        if autorun:
            self.start()
        else:
            self.show_status("computing the untrained model…")
            self.runner.submit(lambda cancelled: self._preview(int(self.seed.value), cancelled))

    # --------------------------------------------------------------- running
    def start(self) -> int:
        """Train from scratch with the controls' current values; returns the job's generation."""
        settings = {
            "epochs": self.epochs.value,
            "learning_rate": self.learning_rate.value,
            "batch_size": self.batch_size.value,
            "seed": int(self.seed.value),
            "warmup": bool(self.warmup.value),
        }
        try:
            digits.check_settings(settings["epochs"], settings["batch_size"], settings["learning_rate"])
        except ValueError as err:
            self.show_error(err)
            return self.runner.generation
        self.runs_started += 1
        self._stopping = False
        self.progress.max = settings["epochs"] * (len(self._train_set.labels) // settings["batch_size"])
        self.progress.value = 0
        self.show_status("compiling the training step…")
        return self.runner.submit(lambda cancelled: self._train(settings, cancelled))

    def stop(self) -> None:
        """End the run after its current step; the variables trained so far are kept."""
        self._stopping = True
        was_busy = self.runner.busy
        self.runner.cancel()
        if was_busy and not self.runner.busy:  # the job had not begun: nothing else will report
            self.show_status("stopped before training began")

    def close(self):
        self._closed = True
        super().close()

    @property
    def planned_steps(self) -> int:
        return int(self.epochs.value) * (len(self._train_set.labels) // max(int(self.batch_size.value), 1))

    def _preview(self, seed: int, cancelled) -> None:
        variables = digits.init_variables(seed)
        if not cancelled():
            self._show(0, variables)
            self.show_status(f"untrained model (seed {seed}): press Start")

    def _train(self, settings: dict, cancelled) -> None:
        total = settings["epochs"] * (len(self._train_set.labels) // settings["batch_size"])
        self._reset_history()
        self._show(0, digits.init_variables(settings["seed"]))
        clock = {"first": None}
        last = {"step": 0, "variables": None}
        diverged = []

        def on_step(step, variables, loss):
            last.update(step=step, variables=variables)
            self.history["loss_step"].append(step)
            self.history["loss"].append(loss)
            now = time.monotonic()
            clock["first"] = clock["first"] or now
            if cancelled():
                return True
            if not math.isfinite(loss):
                diverged.append(step)
                return True
            if step % self.every == 0 or step == total:
                rate = (step - 1) / max(now - clock["first"], 1e-6)
                self._show(step, variables, force=step == total)
                self.show_status(
                    f"step {step}/{total} · loss {loss:.3f} · test accuracy "
                    f"{self.history['test_accuracy'][-1]:.2f} · {rate:.1f} steps/s"
                )
                self.progress.value = step  # last: a watcher of the bar sees the rest done
            return None

        start = time.monotonic()
        result = digits.train_digits_cnn(callback=on_step, progress=False, **settings)
        self.result, self.variables = result, result.variables
        self.steps_done = len(result.losses)
        self.probe = self._template.with_variables(result.variables, f"{self._template.name} (trained here)")
        if self._closed or (cancelled() and not self._stopping):
            return  # closed, or replaced by a newer run (which reports)
        if (self.history["eval_step"][-1] != last["step"] or self._stale) and last["variables"] is not None:
            self._show(last["step"], last["variables"])  # the final state, shown
        self.progress.value = self.steps_done
        summary = (
            f"{self.steps_done} steps in {time.monotonic() - start:.1f} s · test accuracy "
            f"{result.test_accuracy:.3f} · train accuracy {result.train_accuracy:.3f} · "
            f"dead filters {sum(self.dead_counts.values())}"
        )
        if diverged:
            self.show_error(
                FloatingPointError(f"the loss diverged (NaN/Inf) at step {diverged[0]}; {summary}")
            )
        elif self.steps_done < total:
            self.show_status(f"stopped at step {self.steps_done}/{total}: {summary}")
        else:
            self.show_status(f"done: {summary}")

    # --------------------------------------------------------------- display
    def _reset_history(self) -> None:
        self.history = {
            "loss_step": [],
            "loss": [],
            "eval_step": [],
            "test_accuracy": [],
            "train_accuracy": [],
            "dead": [],
        }

    def _show_curves(self, _change=None) -> None:
        """Curve figures on the page only while the view is shown; drawn from ``history`` then."""
        self.curves.children = self._curve_panels if self.shown else []
        self._draw_curves()

    def _draw_curves(self, _change=None) -> None:
        """The loss and accuracy curves from ``history``; held while the view is hidden (``shown``)."""
        if not self.shown:
            return
        h = self.history
        with self.loss_lines.hold_sync(), self.accuracy_lines.hold_sync():
            self.loss_lines.x, self.loss_lines.y = (
                np.asarray(h["loss_step"], float),
                np.asarray(h["loss"], float),
            )
            self.accuracy_lines.x = np.asarray(h["eval_step"], float)
            self.accuracy_lines.y = np.asarray([h["test_accuracy"], h["train_accuracy"]], float)

    def _show(self, step: int, variables, force: bool = True) -> None:
        """Evaluate ``variables`` once (jitted) and update every display; record the numbers.

        Unless ``force``, image frames beyond the grids' frame rate are skipped (``_stale``).
        """
        test_acc, train_acc, peaks, maps = _evaluate(self._template, self.conv_layers, self.image_index)(
            variables, *_eval_data()
        )
        dead = {name: np.asarray(peaks[name]) <= 0 for name in self.conv_layers}
        self.dead_counts = {name: int(mask.sum()) for name, mask in dead.items()}
        h = self.history
        if h["eval_step"] and h["eval_step"][-1] == step:  # shown again (forced): one point per step
            for key in ("eval_step", "test_accuracy", "train_accuracy", "dead"):
                h[key].pop()
        h["eval_step"].append(step)
        h["test_accuracy"].append(float(test_acc))
        h["train_accuracy"].append(float(train_acc))
        h["dead"].append(dict(self.dead_counts))

        tiles = kernels_as_images(self._template, "conv1", "mean", variables=variables)
        self.kernel_tiles = np.nan_to_num(tiles, nan=0.5)  # a diverged run shows grey, not an error
        mark = lambda name, i: f"{i}×" if dead[name][i] else str(i)
        map_tiles, map_labels = [], []
        for name in MAP_LAYERS:
            m = np.nan_to_num(np.moveaxis(np.asarray(maps[name]), -1, 0)[..., None], nan=0.0)  # (C, H, W, 1)
            map_tiles.append(m / max(float(m.max()), 1e-8))  # per layer: weak filters look dark
            map_labels += [mark(name, i) for i in range(len(m))]
        self._draw_curves()
        kernels = self.kernel_tiles  # 3x3: the grid enlarges them (ImageGrid.zoom)
        sent = self.kernel_grid.update(kernels, [mark("conv1", i) for i in range(len(kernels))], force=force)
        sent &= self.map_grid.update(np.concatenate(map_tiles), map_labels, force=force)
        self._stale = not sent
        if self.digit_grid.frames == 0:
            self.digit_grid.update(
                self._test_set.images[self.image_index][None],
                [f"digit {self._test_set.labels[self.image_index]}"],
            )
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            f"<td style='text-align:right'><b>{n}</b> / {len(dead[name])}</td></tr>"
            for name, n in self.dead_counts.items()
        )
        self.dead_html.value = (
            f"<table>{rows}</table><small>never active on the 450 test digits (step {step})</small>"
        )

    # ----------------------------------------------------------------- export
    def to_figure(self):
        """A matplotlib figure: loss and accuracy curves, the conv1 kernels, dead-filter counts."""
        from cnnvis_widgets import export

        h = self.history
        if not h["eval_step"]:
            raise RuntimeError("Nothing to show yet: wait for the untrained model or a run (monitor.wait()).")
        return export.training_figure(h, ACCURACY_CURVES, self.kernel_tiles, self.dead_counts)


# ------------------------------------------------------------------ helpers
def _curve_panel(title: str, labels: list[str], colors: list[str], y_range=None):
    """A curve plot: its Lines, and a VBox of the figure with, for several curves, a key under it."""
    x, y = (
        bqplot.LinearScale(),
        bqplot.LinearScale(**({"min": y_range[0], "max": y_range[1]} if y_range else {})),
    )
    lines = bqplot.Lines(
        x=np.zeros(0),
        y=np.zeros((len(labels), 0)) if len(labels) > 1 else np.zeros(0),
        scales={"x": x, "y": y},
        labels=labels,
        colors=colors,
    )
    figure = bqplot.Figure(
        marks=[lines],
        axes=[
            bqplot.Axis(scale=x, label="step"),
            bqplot.Axis(scale=y, side="left", tick_format=".2f"),
        ],
        title=title,
        layout=widgets.Layout(width="420px", height="260px"),
        fig_margin={"top": 40, "bottom": 40, "left": 50, "right": 10},
    )
    if len(labels) < 2:
        return lines, widgets.VBox([figure])
    # the key under the plot, not bqplot's legend: that box sits on the curves and showed one of
    # two entries while the lines were empty
    key = widgets.HTML(
        " &nbsp; ".join(
            f'<span style="color:{c}">&#9644;</span> {html.escape(label)}' for label, c in zip(labels, colors)
        ),
        layout=widgets.Layout(margin="-6px 0 0 60px"),
    )
    return lines, widgets.VBox([figure, key])


@functools.lru_cache(maxsize=1)
def _eval_data():
    """The 450 test digits and labels, then N_TRAIN_EVAL training ones, on the device."""
    train, test = data.digits_split()
    return (
        jnp.asarray(np.concatenate([test.images, train.images[:N_TRAIN_EVAL]])),
        jnp.asarray(np.concatenate([test.labels, train.labels[:N_TRAIN_EVAL]])),
    )


@owned_by_probe
def _evaluate(probe: Probe, conv_layers: tuple[str, ...], image_index: int):
    """Jitted: (test accuracy, train accuracy, {conv: peak over test digits}, {layer: maps of one digit})."""
    n_test = len(data.digits_split()[1].labels)

    def evaluate(variables, x, y):
        logits, acts = probe.forward(variables, x)
        right = logits.argmax(-1) == y
        peaks = {name: acts[name][:n_test].max(axis=(0, 1, 2)) for name in conv_layers}
        maps = {name: acts[name][image_index] for name in MAP_LAYERS}
        return right[:n_test].mean(), right[n_test:].mean(), peaks, maps

    return jax.jit(evaluate)
