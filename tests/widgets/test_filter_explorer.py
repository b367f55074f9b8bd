"""FilterExplorer, headless: controls start runs whose frames change the grid; rapid moves,
stop, errors and export."""

import io
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image

import cnnvis_widgets as cw
from cnnvis_widgets.compile_cache import programs_lowered
from cnnvis_widgets.widgets import FilterExplorer
from cnnvis_widgets.widgets.controls import PANEL_REGULARIZERS


@pytest.fixture
def explorer():
    fe = FilterExplorer("digits-cnn", layer="conv2", filters="0:8", steps=24, snapshot_every=4)
    assert fe.wait(120)
    yield fe
    fe.close()


def test_layer_slider_starts_a_run_whose_frames_change_the_grid(explorer):
    before, frames = explorer.grid.pixels.copy(), explorer.grid.frames
    explorer.layer_slider.slider.value = explorer.layer_slider.names.index("conv4")
    assert explorer.wait(120)
    assert explorer.result.layer == "conv4"
    assert explorer.grid.frames > frames
    assert not np.array_equal(explorer.grid.pixels, before)
    assert "conv4" in explorer.layer_slider.label.value and "8×8×64" in explorer.layer_slider.label.value


def test_ten_quick_slider_moves_end_with_one_run_for_the_last_value(explorer):
    finished = explorer.runner.finished
    for value in [0, 1, 2, 3, 0, 1, 2, 3, 1, 0]:
        explorer.layer_slider.slider.value = value
    assert explorer.wait(120)
    assert explorer.runner.finished == finished + 1
    assert explorer.result.layer == explorer.layer_slider.names[0]
    assert sum(t.name == "cnnvis-filters" and t.is_alive() for t in threading.enumerate()) >= 1
    assert explorer.runner._thread is not None and explorer.runner._thread.is_alive()


def test_a_layer_change_fades_the_grid_at_once_and_skipped_layers_never_compile(explorer):
    shown, frames = explorer.grid.pixels.copy(), explorer.grid.frames
    started = explorer.runs_started
    explorer.grid.selected = 2  # a detail view of conv2's filter 2 is open
    assert explorer.detail.layout.display is None
    with explorer.runner._cond:  # hold the worker: nothing may draw before the marking is checked
        explorer.layer_slider.value = "conv1"
        assert explorer.detail.layout.display == "none"  # conv2's detail goes with its tiles
        # marked on the kernel thread, before any frame of the new layer: faded, captioned, no new frame
        assert explorer.grid.stale and explorer.grid.frames == frames
        assert "conv1" in explorer.grid.caption.value and "starting" in explorer.grid.caption.value
        assert (explorer.grid.pixels >= shown).all() and (explorer.grid.pixels > shown).mean() > 0.3
    assert explorer.wait(120) and not explorer.grid.stale and explorer.result.layer == "conv1"
    assert "conv1" in explorer.grid.caption.value and "starting" not in explorer.grid.caption.value
    # arrowing back over conv3 and conv4 to pool1 at key-repeat speed: only pool1 runs (debounced)
    lowered, finished = programs_lowered(), explorer.runner.finished
    for name in ["conv2", "pool1", "conv3", "pool2", "conv4", "pool2", "conv3", "pool1"]:
        explorer.layer_slider.value = name
        time.sleep(0.05)
    assert explorer.wait(120) and explorer.result.layer == "pool1"
    assert explorer.runner.finished == finished + 1 and explorer.runs_started == started + 9
    # conv2..conv4 share one program with pool1 (ascent.layer_group): nothing compiled
    assert programs_lowered() == lowered


def test_a_new_filter_selection_of_the_same_bucket_compiles_nothing(explorer):
    explorer.filter_picker.value = "3,5,9"  # 3 filters: the bucket of 4
    assert explorer.wait(120)
    lowered = programs_lowered()
    explorer.filter_picker.value = "20:24"
    assert explorer.wait(120)
    assert list(explorer.result.units) == [20, 21, 22, 23] and programs_lowered() == lowered
    explorer.learning_rate.value = 0.02  # a traced number too
    assert explorer.wait(120) and programs_lowered() == lowered


def test_a_first_visit_says_it_is_compiling_and_the_speed_leaves_the_compile_out(explorer):
    statuses = []
    explorer.status.observe(lambda c: statuses.append(c["new"]), "value")
    explorer.size.value = 20  # a new image size: a new program
    assert explorer.wait(120)
    assert any(s.startswith("compiling conv2 (first visit, ~") for s in statuses), statuses
    assert re.search(r"steps in [0-9.]+ s \(\+[0-9.]+ s compiling\)", statuses[-1]), statuses[-1]


def test_stop_ends_a_run_within_one_chunk(explorer):
    explorer.steps.value = 400
    time.sleep(0.3)
    explorer.stop()
    assert explorer.wait(30)
    assert explorer.progress.value < 400
    assert explorer.status.value == "stopped"


def test_an_error_shows_in_the_widget_and_a_later_run_works(explorer):
    explorer.filter_picker.value = "99"
    assert explorer.wait(30)
    assert "out of range" in explorer.status.value and "valid: 0..31" in explorer.status.value
    explorer.filter_picker.value = "0:4"
    assert explorer.wait(120)
    assert len(explorer.result.units) == 4 and "4 filters" in explorer.status.value


def test_regularizer_toggle_changes_the_picture_without_recompiling(explorer):
    from cnnvis_widgets.engine import ascent

    lowered = programs_lowered()
    before = explorer.result.images.copy()
    explorer.regularizer_panel.toggles[4].value = False  # total variation off
    assert explorer.wait(120)
    assert programs_lowered() == lowered
    assert not np.allclose(explorer.result.images, before)


def test_save_writes_a_png_whose_tiles_match_the_engine(explorer, tmp_path):
    path = explorer.save(tmp_path / "grid.png")
    assert Image.open(path).size[0] > 200
    again = cw.visualize_filters(
        explorer.probe,
        explorer.result.layer,
        explorer.result.units,
        steps=24,
        size=32,
        regularizers=PANEL_REGULARIZERS,
        weights=explorer.regularizer_panel.weights,
    )
    np.testing.assert_allclose(again.images, explorer.result.images, atol=1e-5)


def test_clicking_a_tile_selects_it(explorer):
    grid = explorer.grid
    h = grid.mark.y[1]
    # the message the browser's MouseInteraction sends: the second tile of the first row
    grid.mouse._handle_custom_msg({"event": "click", "domain": {"x": 33 + 5, "y": h - 5}}, [])
    assert grid.selected == 1


def test_top_n_filters_for_the_image_and_parameterization_switch(explorer):
    from cnnvis_widgets.engine.activations import most_activated

    explorer.filter_picker.value = "top5"
    assert explorer.wait(120)
    expected = most_activated(explorer.probe, explorer.image, explorer.result.layer, n=5).units
    np.testing.assert_array_equal(explorer.result.units, expected)
    fourier = explorer.result.images.copy()
    explorer.parameterization.value = "pixel"
    assert explorer.wait(120)
    assert not np.allclose(explorer.result.images, fourier)
    explorer.use_transforms.value = False
    assert explorer.wait(120) and explorer.result.finite.all()


def test_an_imagenet_style_model_is_drawn_in_a_draft_then_full_stage_with_its_recipe():
    """A 96 px RGB model gets the ImageNet recipe: no priors ticked, Fourier, its learning rate; a run
    shows draft tiles (half size, labelled "draft") before the full-size ones."""
    from tests.engine.test_recipes import TinyRGB

    import jax
    import jax.numpy as jnp

    from cnnvis_widgets.engine import recipes

    module = TinyRGB()
    probe = cw.Probe(module, jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 96, 96, 3))),
                     input_shape=(96, 96, 3), name="tiny-rgb")  # fmt: skip
    fe = FilterExplorer(probe, layer="conv2", filters="0:4", steps=12, snapshot_every=2, autorun=False)
    try:
        assert not any(t.value for t in fe.regularizer_panel.toggles)
        assert all(s.disabled for s in fe.regularizer_panel.sliders)
        assert fe.parameterization.value == "fourier" and fe.learning_rate.value == recipes.IMAGENET.learning_rate
        assert fe.size.value == 96
        shapes, labels = [], []
        fe.grid.labels.observe(lambda change: labels.append(list(change["new"])), "text")
        fe.grid.mark.observe(lambda change: shapes.append(fe.grid.tile_shape[1]), "image")
        fe.run()
        assert fe.wait(120)
        assert fe.result.images.shape == (4, 96, 96, 3) and fe.result.objective.shape == (4, 12)
        assert shapes[0] == 48 and shapes[-1] == 96
        assert labels[0] == ["0 · draft", "1 · draft", "2 · draft", "3 · draft"] and labels[-1] == ["0", "1", "2", "3"]
        assert "steps/s" not in fe.status.value and "12 steps" in fe.status.value
    finally:
        fe.close()


def test_the_detail_view_puts_the_curve_beside_the_full_size_image(explorer):
    from cnnvis_widgets import export

    r = explorer.result
    fig = export.filter_detail_figure(r.images[2], r.objective[2], "conv2 · filter 2", r.attribution[2])
    fig.draw_without_rendering()  # runs the layout (a plain Figure's canvas.draw does nothing)
    to_figure = fig.transFigure.inverted()
    # what is drawn: the two pictures (an image axes' box may be wider than its picture) and the
    # curve's axes with its labels and ticks
    boxes = [ax.get_images()[0].get_window_extent().transformed(to_figure) for ax in fig.axes[:2]]
    boxes.append(fig.axes[2].get_tightbbox().transformed(to_figure))
    assert len(boxes) == 3
    for box in boxes:  # each panel, labels included, inside the figure (to 2 % of its size)
        assert box.x0 >= -0.02 and box.x1 <= 1.02 and box.y0 >= -0.02 and box.y1 <= 1.02
    for a, b in zip(boxes, boxes[1:]):  # side by side, not over each other
        assert a.x1 <= b.x0 + 0.01
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape[:2] == r.images.shape[1:3]  # the image at its own resolution
    assert len(fig.axes[2].get_lines()[0].get_xdata()) == r.objective.shape[1]
    assert explorer.detail.layout.display == "none"
    explorer.grid.selected = 2
    shown = Image.open(io.BytesIO(explorer.detail.value))
    assert explorer.detail.layout.display is None and shown.size == (960, 320)


def test_warmup_compiles_what_a_first_visit_would():
    fe = FilterExplorer("digits-cnn", layer="conv1", filters="0:8", steps=40, size=24, snapshot_every=4,
                        autorun=False)  # fmt: skip
    done = fe.warmup(layers=["conv3"])  # conv3's group: conv2 .. conv4
    assert [layer for layer, _ in done] == ["conv3"]
    lowered = programs_lowered()
    fe.layer_slider.value = "conv4"
    assert fe.wait(120) and fe.result.layer == "conv4" and fe.result.steps_done == 40
    assert programs_lowered() == lowered
    fe.close()


def test_the_clicked_tile_is_framed_and_a_new_layer_clears_the_frame(explorer):
    from cnnvis_widgets.widgets.grid import SELECTED_RGB

    grid = explorer.grid
    plain = grid.pixels.copy()
    grid.selected = 5
    y0, x0, th, tw = grid.tile_box(5)
    cols = int(np.ceil(np.sqrt(grid.tile_shape[0])))
    assert (y0, x0) == (5 // cols * (th + 1 + grid._gap), 5 % cols * (tw + 1))
    framed = grid.pixels
    assert (framed[y0, x0 : x0 + tw] == SELECTED_RGB).all() and (framed[y0 : y0 + th, x0] == SELECTED_RGB).all()
    changed = np.any(framed != plain, axis=-1)
    assert not changed[: y0].any() and not changed[y0 + th :].any()  # only tile 5's edge changed
    assert not changed[:, : x0].any() and not changed[:, x0 + tw :].any()
    assert explorer.detail.layout.display is None
    explorer.layer_slider.value = "conv1"
    assert grid.selected == -1 and explorer.detail.layout.display == "none"
    assert explorer.wait(120)
    assert not (np.all(grid.pixels == SELECTED_RGB, axis=-1)).any()


def test_tiles_fit_the_width_and_the_tiles_control_resizes_them(explorer):
    from cnnvis_widgets.widgets.grid import FIT_WIDTH_PX

    width = lambda: int(explorer.grid.figure.layout.width.rstrip("px"))  # noqa: E731
    height = lambda: float(explorer.grid.figure.layout.height.rstrip("px"))  # noqa: E731
    assert explorer.tile_size.value == 0  # "fit width": 8 tiles, 3 columns, FIT_WIDTH_PX wide
    assert width() == 3 * (FIT_WIDTH_PX // 3)
    pixels, frames = explorer.grid.pixels.copy(), explorer.grid.frames
    explorer.tile_size.value = 64
    assert width() == 3 * 64 and explorer.grid.frames == frames + 1
    h, w = explorer.grid.pixels.shape[:2]
    assert abs(height() / width() - h / w) < 0.02  # the figure's aspect is the montage's
    assert explorer.grid.pixels.shape[0] > pixels.shape[0]  # a taller label band in tile pixels: text stays ~14 px


def test_every_setting_explains_itself_and_reset_restores_the_defaults(explorer):
    panel = explorer.regularizer_panel
    for control in (explorer.steps, explorer.size, explorer.learning_rate, explorer.seed,
                    explorer.parameterization, explorer.use_transforms, explorer.tile_size,
                    *panel.toggles, *panel.sliders):  # fmt: skip
        assert len(control.tooltip or "") > 15, control.description
    assert all(re.search(r"\(\D+ \d{4}|grey", t.tooltip) for t in panel.toggles)  # a paper, or plain words
    start = list(panel.weights)
    changes = []
    panel.observe(lambda c: changes.append(c["new"]), "weights")
    panel.toggles[2].value = True  # "grey out faint pixels" on
    panel.sliders[0].value = 0.05
    panel.toggles[4].value = not panel.toggles[4].value
    assert panel.weights != start
    assert all(s.disabled == (not t.value) for t, s in zip(panel.toggles, panel.sliders))
    changes.clear()
    panel.reset_button.click()
    assert panel.weights == start and len(changes) == 1  # one change: one run, not one per control
    assert all(s.disabled == (not t.value) for t, s in zip(panel.toggles, panel.sliders))


def test_an_explorer_that_waits_for_run_says_so_and_draws_no_empty_box():
    # notebook 02's explorer starts on Run: before it, no black empty figure, and a status saying what to do
    fe = FilterExplorer("digits-cnn", layer="conv1", filters="0:4", steps=4, autorun=False)
    try:
        assert fe.grid.figure.layout.display == "none" and fe.grid.frames == 0
        assert "press Run" in fe.status.value
        fe.run()
        assert fe.wait(120) and fe.grid.frames > 0
        assert fe.grid.figure.layout.display != "none" and fe.grid.figure.layout.width.endswith("px")
    finally:
        fe.close()
