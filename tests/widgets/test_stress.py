"""Stress (issue #10): 1,000 random control events over the explorers, headless.

Events are what a user does, fired as fast as Python can: sliders, dropdowns, text boxes,
toggles, buttons, clicks, including invalid values. Afterwards: one worker thread per widget,
each grid shows the result of the last request (recomputed independently with the engine), no
exception escaped (observers, worker threads, error handlers), and memory growth is bounded.

Then: an error inside a widget's callback never kills its worker; the next request works.
"""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import psutil
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets import data
from cnnvis_widgets import pixels as px
from cnnvis_widgets.engine import embedding as emb
from cnnvis_widgets.engine import saliency as sal
from cnnvis_widgets.widgets import (
    ActivationExplorer,
    EmbeddingExplorer,
    FilterExplorer,
    SaliencyExplorer,
    TrainingMonitor,
    WeightsView,
)
from cnnvis_widgets.validation import parse_filters
from cnnvis_widgets.widgets.controls import PANEL_REGULARIZERS
from cnnvis_widgets.widgets.grid import ImageGrid

EVENTS = 1000
WARMUP = (
    1000,
    1000,
    1000,
)  # rounds of events before measuring: compilations, caches, allocator arenas settle
RSS_LIMIT_MB = 64  # growth allowed over 1,000 events after the warm-up (measured here: +1 to +20 MB)
RUNNERS = ("cnnvis-filters", "cnnvis-saliency", "cnnvis-activations", "cnnvis-weights", "cnnvis-embedding")


# ---------------------------------------------------------------- the views and what can happen to them
class Harness:
    """Five views over digits-cnn, the random events that drive them, and a record of errors."""

    def __init__(self, threads_before: set[int]):
        probe = cw.load("digits-cnn")
        self.probe = probe
        dataset = data.digits_split()[1]
        self.fe = FilterExplorer(
            probe, layer="conv1", filters="0:4", steps=4, snapshot_every=2, autorun=False
        )
        self.se = SaliencyExplorer(probe, autorun=False)
        self.ae = ActivationExplorer(
            probe, layer="conv1", dataset=dataset.images[:64], steps=4, autorun=False
        )
        self.wv = WeightsView(probe, autorun=False)
        self.ee = EmbeddingExplorer(probe, dataset, method="pca", limit=60, autorun=False)
        self.views = [self.fe, self.se, self.ae, self.wv, self.ee]
        self.errors: list[tuple] = []  # (view, user error?, text, trace) of what status lines showed
        for view in self.views:
            self._record_errors(view)
        self.threads_before = threads_before
        fe_layers = [self.fe.layer_slider.names.index(n) for n in ("conv1", "conv2")]
        ae_layers = [self.ae.layer_slider.names.index(n) for n in ("conv1", "conv2")]
        ee_layers = [self.ee.layer_slider.names.index(n) for n in ("fc1", "conv4")]
        se_images, ae_images = self.se.image_picker.names, self.ae.image_picker.names
        # (view index, kind, action(rng), valid): False for bad values, None for display-only events
        self.events = [
            (0, "layer", lambda r: _set(self.fe.layer_slider.slider, r.choice(fe_layers)), True),
            (
                0,
                "filters",
                lambda r: _set(self.fe.filter_picker, str(r.choice(["0:4", "4:8", "2,3,5,7", "top4"]))),
                True,
            ),
            (
                0,
                "bad filters",
                lambda r: _set(self.fe.filter_picker, str(r.choice(["99", "abc", "5:5", "-3"]))),
                False,
            ),
            (0, "steps", lambda r: _set(self.fe.steps, int(r.choice([2, 4, 6]))), True),
            (0, "seed", lambda r: _set(self.fe.seed, int(r.integers(0, 10**6))), True),
            (0, "toggle", lambda r: _flip(self.fe.regularizer_panel.toggles[r.integers(8)]), True),
            (0, "weight", lambda r: _slide(self.fe.regularizer_panel.sliders[r.integers(8)], r), True),
            (0, "run", lambda r: self.fe.run_button.click(), True),
            (0, "stop", lambda r: self.fe.stop_button.click(), False),
            (
                0,
                "tile click",
                lambda r: self.fe.grid.click(float(r.uniform(0, 60)), float(r.uniform(0, 40))),
                None,
            ),
            (1, "image", lambda r: _set(self.se.image_picker, str(r.choice(se_images))), True),
            (1, "method", lambda r: _set(self.se.method, str(r.choice(["vanilla", "gradcam"]))), True),
            (
                1,
                "target",
                lambda r: _set(self.se.target, str(r.choice(["predicted class", "3", "7", "conv4:5"]))),
                True,
            ),
            (
                1,
                "bad target",
                lambda r: _set(self.se.target, str(r.choice(["zebra", "conv4:99", "42", "conv9:1"]))),
                False,
            ),
            (1, "mode", lambda r: _set(self.se.mode, str(r.choice(["single", "batch"]))), True),
            (1, "opacity", lambda r: _set(self.se.opacity, float(r.uniform(0, 1))), None),
            (2, "layer", lambda r: _set(self.ae.layer_slider.slider, r.choice(ae_layers)), True),
            (2, "image", lambda r: _set(self.ae.image_picker, str(r.choice(ae_images))), True),
            (2, "scale", lambda r: _set(self.ae.normalization, str(r.choice(["map", "layer"]))), True),
            (2, "select", lambda r: self.ae.select(int(r.integers(0, 16))), True),
            (2, "bad layer", lambda r: self.ae.set_layer(str(r.choice(["fc1", "conv9"]))), False),
            (2, "bad image", lambda r: self.ae.set_image(np.full((32, 32), np.nan)), False),
            (3, "layer", lambda r: _set(self.wv.layer_select, str(r.choice(self.wv.conv_layers))), True),
            (
                3,
                "mode",
                lambda r: _set(self.wv.mode, str(r.choice(["auto", "all", "mean", "channel"]))),
                True,
            ),
            (3, "scale", lambda r: _set(self.wv.scale, str(r.choice(["layer", "filter"]))), True),
            (3, "channel", lambda r: _set(self.wv.channel, int(r.integers(0, 48))), True),
            (3, "bad layer", lambda r: self.wv.set_layer(str(r.choice(["pool1", "fc1", "nope"]))), False),
            (4, "layer", lambda r: _set(self.ee.layer_slider.slider, r.choice(ee_layers)), True),
            (4, "pool", lambda r: _set(self.ee.pool, str(r.choice(["flatten", "mean"]))), True),
            (4, "seed", lambda r: _set(self.ee.seed, int(r.integers(0, 5))), True),
            (4, "k", lambda r: _set(self.ee.k, int(r.integers(1, 12))), None),
            (4, "cells", lambda r: _set(self.ee.cells, int(r.integers(2, 12))), None),
            (4, "fill", lambda r: _flip(self.ee.fill), None),
            (4, "view", lambda r: _set(self.ee.view, str(r.choice(["scatter", "mosaic"]))), None),
            (4, "select", lambda r: setattr(self.ee, "selected", int(r.integers(-1, 60))), None),
            (4, "hover", lambda r: setattr(self.ee, "hovered", int(r.integers(-1, 60))), None),
        ]

    def _record_errors(self, view):
        shown = view.show_error

        def record(err, trace=""):
            user = isinstance(err, (ValueError, TypeError))  # keep text only: a traceback holds arrays alive
            self.errors.append(
                (type(view).__name__, user, f"{type(err).__name__}: {err}", "" if user else trace)
            )
            shown(err, trace)

        view.show_error = record
        view.runner.on_error = record

    def fire(self, rng, n: int) -> None:
        """``n`` random events, then one random valid request per view (the one the grids must show)."""
        for _ in range(n):
            self.events[rng.integers(len(self.events))][2](rng)
        _set(
            self.fe.filter_picker, _other(rng, ["0:4", "4:8", "2,3,5,7", "top4"], self.fe.filter_picker.value)
        )
        _set(self.se.target, _other(rng, ["predicted class", "3", "7", "conv4:5"], self.se.target.value))
        _flip_choice(self.ae.normalization, ["map", "layer"])
        _flip_choice(self.wv.scale, ["layer", "filter"])
        _set(self.ee.seed, _other(rng, [0, 1, 2, 3, 4], self.ee.seed.value))

    def wait(self, timeout=300.0) -> None:
        end = time.monotonic() + timeout
        for view in self.views:
            assert view.wait(max(1.0, end - time.monotonic())), f"{type(view).__name__} still busy"

    def worker_threads(self) -> dict[str, int]:
        new = [t for t in threading.enumerate() if t.ident not in self.threads_before and t.is_alive()]
        return {name: sum(t.name == name for t in new) for name in RUNNERS}

    def close(self):
        for view in self.views:
            view.close()


def _set(control, value):
    control.value = value


def _other(rng, choices, current):
    """A random choice that differs from the current value (so the control fires)."""
    rest = [c for c in choices if c != current]
    return rest[rng.integers(len(rest))]


def _flip_choice(control, pair):
    control.value = pair[1] if control.value == pair[0] else pair[0]


def _flip(control):
    control.value = not control.value


def _slide(slider, rng):
    slider.value = float(rng.uniform(slider.min, slider.max))


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


# ---------------------------------------------------------------- checks: the grids show the last request
def _check_filters(h: Harness):
    fe, probe = h.fe, h.probe
    layer = probe.layer(fe.layer_slider.value)
    text = fe.filter_picker.value.strip().lower()
    units = (
        cw.most_activated(probe, fe.image, layer.name, n=int(text[3:])).units
        if text.startswith("top")
        else parse_filters(fe.filter_picker.value, layer.channels)
    )
    result = fe.result
    assert result.layer == layer.name and result.steps_done == fe.steps.value
    np.testing.assert_array_equal(result.units, units)
    again = cw.visualize_filters(
        probe,
        layer.name,
        units,
        steps=fe.steps.value,
        size=fe.size.value,
        seed=fe.seed.value,
        regularizers=PANEL_REGULARIZERS,
        weights=fe.regularizer_panel.weights,
        optimizer=cw.engine.ascent.default_optimizer(float(fe.learning_rate.value)),
        snapshot_every=2,
        chunk=len(units),
    )
    np.testing.assert_allclose(result.images, again.images, atol=1e-5)
    expected = ImageGrid(cmap="gray", tile_px=fe.grid.tile_px)
    expected.selected = fe.grid.selected  # a clicked tile is framed
    expected.update(again.images, [str(u) for u in units])
    np.testing.assert_array_equal(fe.grid.pixels, expected.pixels)
    assert list(fe.grid.labels.text) == [str(u) for u in units]


def _check_saliency(h: Harness):
    se, probe = h.se, h.probe
    request = se.request
    target = sal.parse_target(probe, se.target.value)
    assert request["method"] == se.method.value and request["mode"] == se.mode.value
    assert request["target_text"] == se.target.value and request["image_name"] == se.image_picker.value
    images = np.stack(list(se.image_picker.images.values())) if se.mode.value == "batch" else se.image[None]
    again = sal.saliency(probe, images, se.method.value, target, **se.options_for(se.method.value, target))
    np.testing.assert_allclose(se.result.maps, again.maps, rtol=1e-4, atol=1e-6)
    blended = se._blend(se._display)
    expected = ImageGrid(tile_px=se.grid.tile_px)
    expected.update(blended, se._display[3])
    np.testing.assert_array_equal(se.grid.pixels, expected.pixels)


def _check_activations(h: Harness):
    ae, probe = h.ae, h.probe
    assert ae.layer == ae.layer_slider.value and ae.image_name == ae.image_picker.value
    maps = cw.feature_maps(probe, ae.image_picker.image, ae.layer)
    np.testing.assert_allclose(ae.maps, maps, atol=1e-5)
    expected = ImageGrid(cmap="viridis", tile_px=56)
    expected.update(px.feature_map_tiles(maps, ae.normalization.value), ae.labels)
    np.testing.assert_array_equal(ae.grid.pixels, expected.pixels)


def _check_weights(h: Harness):
    wv, probe = h.wv, h.probe
    assert wv.layer == wv.layer_select.value
    mode, scale = wv.mode.value, wv.scale.value
    if mode == "channel":
        channel = min(int(wv.channel.value), wv.channel.max)
        tiles = cw.kernels_as_images(probe, wv.layer, input_channels=[channel], scale=scale)[:, 0]
    else:
        tiles = cw.kernels_as_images(probe, wv.layer, input_channels=mode, scale=scale)
        if tiles.ndim == 5:
            n_in = tiles.shape[1]
            keep = max(1, min(len(tiles), 1024 // n_in))
            tiles = tiles[:keep].reshape(keep * n_in, *tiles.shape[2:])
    np.testing.assert_allclose(wv.tiles, tiles, atol=1e-6)


def _check_embedding(h: Harness):
    ee, probe = h.ee, h.probe
    result = ee.result
    assert (result.layer, result.method, result.pool, result.seed) == (
        ee.layer_slider.value,
        ee.method.value,
        ee.pool.value,
        ee.seed.value,
    )
    feats = emb.features(probe, ee.points.images, result.layer, pool=result.pool)
    np.testing.assert_allclose(result.features, feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.coords, emb.embed(feats, "pca", seed=result.seed), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(ee.scatter.x), result.coords[:, 0])


# ---------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def harness():
    before = {t.ident for t in threading.enumerate()}
    h = Harness(before)
    yield h
    h.close()


def test_a_thousand_random_events(harness, capsys):
    h = harness
    escaped = []
    hook = threading.excepthook
    threading.excepthook = lambda args: escaped.append(args)
    try:
        rng = np.random.default_rng(10)
        for n in WARMUP:  # compiles what the events can ask for, fills the views' caches
            h.fire(rng, n)
            h.wait()
        gc.collect()
        rss_before = _rss_mb()
        start = time.monotonic()
        h.fire(rng, EVENTS)
        fired = time.monotonic() - start
        h.wait()
        settled = time.monotonic() - start
        gc.collect()
        growth = _rss_mb() - rss_before
    finally:
        threading.excepthook = hook
    with capsys.disabled():
        print(
            f"\nstress: {EVENTS} events fired in {fired:.2f} s, all views idle after {settled:.1f} s; "
            f"RSS {rss_before:.0f} MB -> {rss_before + growth:.0f} MB (growth {growth:+.1f} MB); "
            f"worker threads {h.worker_threads()}; {len(h.errors)} user errors shown"
        )
    assert not escaped, [f"{a.thread.name}: {a.exc_type.__name__}: {a.exc_value}" for a in escaped]
    assert fired < 15, f"dispatching {EVENTS} events took {fired:.1f} s"
    assert h.worker_threads() == {name: 1 for name in RUNNERS}
    assert all(view.runner._thread.is_alive() for view in h.views)
    # every error shown was a readable user error (bad values among the events), none a crash
    unexpected = [(v, text, trace) for v, user, text, trace in h.errors if not user]
    assert not unexpected, unexpected
    for view in h.views:
        assert "⚠" not in view.status.value, (type(view).__name__, view.status.value)
    _check_filters(h)
    _check_saliency(h)
    _check_activations(h)
    _check_weights(h)
    _check_embedding(h)
    assert growth < RSS_LIMIT_MB, f"RSS grew by {growth:.0f} MB over {EVENTS} events"


# ---------------------------------------------------------------- errors inside callbacks
class Boom(RuntimeError):
    pass


def _explode_once(monkeypatch, owner, name):
    """Make ``owner.name`` raise once (a bug in a callback), then behave again."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise Boom(f"{name} exploded")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, exploding)
    return calls


def _survives(view, first, second, done, monkeypatch, owner, name):
    calls = _explode_once(monkeypatch, owner, name)
    first()
    assert view.wait(120)
    assert calls["n"] >= 1 and f"Boom: {name} exploded" in view.status.value, view.status.value
    assert view.runner._thread.is_alive()
    second()
    assert view.wait(120)
    assert "⚠" not in view.status.value, view.status.value
    assert done(), view.status.value
    assert view.runner._thread.is_alive()


def test_an_error_in_each_explorers_callback_leaves_a_working_worker(monkeypatch):
    import cnnvis_widgets.widgets.activations as act_mod
    import cnnvis_widgets.widgets.saliency as sal_mod
    import cnnvis_widgets.widgets.weights as w_mod

    probe = cw.load("digits-cnn")
    fe = FilterExplorer(probe, layer="conv1", filters="0:4", steps=4, snapshot_every=2, autorun=False)
    se = SaliencyExplorer(probe, autorun=False)
    ae = ActivationExplorer(probe, layer="conv1", dataset=data.digits_split()[1].images[:32], autorun=False)
    wv = WeightsView(probe, autorun=False)
    ee = EmbeddingExplorer(probe, method="pca", limit=30, autorun=False)
    try:
        # the engine's progress callback draws the grid: the first frame raises inside the engine's loop
        _survives(
            fe, fe.run, lambda: _set(fe.seed, 7), lambda: fe.result is not None and fe.result.steps_done == 4,
            monkeypatch, fe.grid, "update",
        )  # fmt: skip
        _survives(
            se, se.run, lambda: _set(se.method, "gradcam"), lambda: se.result.method == "gradcam",
            monkeypatch, sal_mod, "saliency",
        )  # fmt: skip
        _survives(
            ae, ae.run, lambda: _set(ae.normalization, "layer"), lambda: ae.maps is not None and ae.layer == "conv1",
            monkeypatch, act_mod, "feature_maps",
        )  # fmt: skip
        _survives(
            wv, wv.run, lambda: _set(wv.scale, "filter"), lambda: wv.tiles is not None and wv.layer == "conv1",
            monkeypatch, w_mod, "_kernel_tiles",
        )  # fmt: skip
        _survives(
            ee, ee.run, lambda: _set(ee.seed, 3), lambda: ee.result is not None and ee.result.seed == 3,
            monkeypatch, emb, "embed",
        )  # fmt: skip
    finally:
        for view in (fe, se, ae, wv, ee):
            view.close()


def test_an_error_in_the_training_monitor_leaves_a_working_worker(monkeypatch):
    from cnnvis_widgets.models import digits

    monitor = TrainingMonitor(epochs=1, batch_size=1347, every=1)
    try:
        assert monitor.wait(120)
        _survives(
            monitor, monitor.start, monitor.start, lambda: monitor.steps_done == 1 and "done" in monitor.status.value,
            monkeypatch, digits, "train_digits_cnn",
        )  # fmt: skip
    finally:
        monitor.close()


def test_status_lines_show_errors_as_text_not_markup():
    """An error message with markup in it is shown escaped (it comes from user input)."""
    fe = FilterExplorer("digits-cnn", layer="conv1", filters="0:4", steps=2, snapshot_every=2, autorun=False)
    try:
        fe.filter_picker.value = "<b>x</b>"
        assert "Filters" in fe.status.value and "&lt;b&gt;x&lt;/b&gt;" in fe.status.value, fe.status.value
        assert "<b>x" not in fe.status.value
        assert fe.runner._thread is None or fe.runner._thread.is_alive()
    finally:
        fe.close()
