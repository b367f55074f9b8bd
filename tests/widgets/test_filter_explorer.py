"""FilterExplorer, headless: controls start runs whose frames change the grid; rapid moves,
stop, errors and export."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

import cnnvis_widgets as cw
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

    misses = ascent._compiled.cache_info().misses
    before = explorer.result.images.copy()
    explorer.regularizer_panel.toggles[4].value = False  # total variation off
    assert explorer.wait(120)
    assert ascent._compiled.cache_info().misses == misses
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
