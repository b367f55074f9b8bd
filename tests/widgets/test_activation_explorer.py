"""ActivationExplorer, headless: maps equal the model's activations, dead filters marked,
a click fills the detail row, errors show and are survived, the kernel stays free."""

import time

import jax
import numpy as np
import pytest
import traitlets
from matplotlib import colormaps
from PIL import Image

from cnnvis_widgets import data
from cnnvis_widgets.engine.activations import feature_maps
from cnnvis_widgets.models import digits
from cnnvis_widgets.models.zoo import load
from cnnvis_widgets.widgets.activations import ActivationExplorer


@pytest.fixture
def explorer():
    ex = ActivationExplorer("digits-cnn", layer="conv4", top_k=5, steps=64)
    assert ex.wait(120)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def test_images():
    return data.digits_split()[1].images


def flax_intermediates(probe, images, layer):
    """The layer's activations straight from Flax (not through the Probe): (N, H, W, C)."""
    _, state = _apply(probe.variables, digits.preprocess(np.asarray(images, np.float32)))
    return np.asarray(state["intermediates"][layer][0])


@jax.jit
def _apply(variables, x):
    return digits.DigitsCNN().apply(variables, x, mutable=["intermediates"])


@pytest.fixture(scope="module")
def conv4_test_acts(test_images):
    return flax_intermediates(load("digits-cnn"), test_images, "conv4")


def click_tile(grid, i):
    top, left, th, tw = grid.tile_box(i)
    x, y = left + tw / 2, grid.mark.y[1] - (top + th / 2)
    grid.mouse._handle_custom_msg({"event": "click", "domain": {"x": x, "y": y}}, [])  # as the browser sends


def expected_viridis(tile):
    """(H, W, 1) in [0, 1] → uint8 RGB through matplotlib's own colormap."""
    rgba = colormaps["viridis"](np.rint(tile[..., 0] * 255).astype(int))
    return np.rint(rgba[..., :3] * 255).astype(np.uint8)


def test_layer_slider_changes_the_grid_and_shows_every_filter(explorer):
    before = explorer.grid.pixels.copy()
    assert len(explorer.tiles) == 64 and explorer.grid.tile_shape == (64, 8, 8)
    explorer.layer_slider.slider.value = explorer.layer_slider.names.index("conv2")
    assert explorer.wait(60)
    assert explorer.layer == "conv2"
    assert explorer.grid.tile_shape == (explorer.probe.layer("conv2").channels, 32, 32) == (32, 32, 32)
    assert len(explorer.grid.labels.text) == 32
    assert explorer.grid.pixels.shape != before.shape or not np.array_equal(explorer.grid.pixels, before)
    assert "conv2: 32 maps of 32×32" in explorer.status.value


@pytest.mark.parametrize("norm", ["map", "layer"])
def test_displayed_maps_equal_the_models_activations(explorer, norm):
    explorer.normalization.value = norm
    assert explorer.wait(60)
    acts = flax_intermediates(explorer.probe, explorer.image[None], "conv4")[0]  # (8, 8, 64)
    np.testing.assert_allclose(explorer.maps, acts, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        explorer.maps, feature_maps(explorer.probe, explorer.image, "conv4"), atol=1e-5
    )
    tiles = np.moveaxis(acts, -1, 0)[..., None]
    if norm == "map":
        lo, hi = tiles.min(axis=(1, 2, 3), keepdims=True), tiles.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo, hi = tiles.min(), tiles.max()
    expected = (tiles - lo) / np.maximum(hi - lo, 1e-8)
    np.testing.assert_allclose(explorer.tiles, expected, atol=1e-4)
    for i in (0, 5, 63):  # what the browser gets: the viridis colours of those values
        live = tiles[i].max() > 0
        diff = np.abs(explorer.grid.tile_pixels(i).astype(int) - expected_viridis(expected[i]).astype(int))
        assert diff.max() <= 3, (i, live, diff.max())


def test_changing_the_image_changes_the_maps(explorer, test_images):
    before = explorer.maps.copy()
    pixels = explorer.grid.pixels.copy()
    explorer.set_image(test_images[100])
    assert explorer.wait(60)
    assert not np.allclose(explorer.maps, before)
    assert not np.array_equal(explorer.grid.pixels, pixels)
    acts = flax_intermediates(explorer.probe, test_images[100:101], "conv4")[0]
    np.testing.assert_allclose(explorer.maps, acts, rtol=1e-4, atol=1e-4)
    explorer.image_picker.value = explorer.image_picker.names[3]  # the dropdown also works
    assert explorer.wait(60)
    np.testing.assert_allclose(
        explorer.maps, feature_maps(explorer.probe, explorer.image_picker.image, "conv4"), atol=1e-5
    )


def test_dead_markers_match_an_independent_count(explorer, conv4_test_acts):
    acts = conv4_test_acts
    dead = np.flatnonzero(acts.max(axis=(0, 1, 2)) <= 0)
    np.testing.assert_array_equal(dead, [7, 11])
    marked = [i for i, label in enumerate(explorer.labels) if "✗dead" in label]
    assert marked == dead.tolist()
    assert explorer.grid.labels.text[7] == "7 ✗dead" and explorer.grid.labels.text[8] == "8"
    assert "2 dead over the 450 digits test images" in explorer.status.value


def test_dead_markers_follow_the_given_dataset():
    blank = np.zeros((3, 32, 32, 1), np.float32)  # blank images leave more conv4 filters silent
    ex = ActivationExplorer("digits-cnn", layer="conv4", dataset=blank)
    try:
        assert ex.wait(60)
        dead = np.flatnonzero(flax_intermediates(ex.probe, blank, "conv4").max(axis=(0, 1, 2)) <= 0)
        assert len(dead) > 2
        assert [i for i, label in enumerate(ex.labels) if "✗dead" in label] == dead.tolist()
        assert f"{len(dead)} dead over the 3 given images" in ex.status.value
    finally:
        ex.close()


def test_clicking_a_map_fills_the_detail_row(explorer, test_images, conv4_test_acts):
    unit = 20
    click_tile(explorer.grid, unit)
    assert explorer.grid.selected == unit
    assert explorer.wait(120)
    d = explorer.detail
    assert (d.layer, d.unit) == ("conv4", unit)
    assert explorer.detail_box.layout.display is None
    assert explorer.patches_grid.tile_shape == (5, 20, 20)  # top_k patches of conv4's 20 px receptive field
    assert explorer.optimized_grid.tile_shape == (1, 32, 32)
    # the top-k values are the k largest per-image maxima, counted in numpy
    acts = conv4_test_acts[..., unit].max(axis=(1, 2))
    np.testing.assert_allclose(d.values, np.sort(acts)[::-1][:5], rtol=1e-4)
    # each patch is a crop of its own image (zero-padded past the borders)
    for patch, index in zip(d.patches, d.indices):
        padded = np.pad(test_images[index, ..., 0], 20)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (20, 20))
        assert np.abs(windows - patch[..., 0]).max(axis=(2, 3)).min() < 1e-5
    # the optimized image excites the filter more than any dataset image does, on average over positions
    own = feature_maps(explorer.probe, d.optimized, "conv4")[..., unit].mean()
    dataset_best = conv4_test_acts[..., unit].mean(axis=(1, 2)).max()
    assert own > dataset_best
    # changing the image keeps the (image-independent) detail; changing the layer hides it
    explorer.set_image(test_images[1])
    assert explorer.wait(60) and explorer.detail is d
    explorer.set_layer("conv3")
    assert explorer.wait(60)
    assert explorer.detail is None and explorer.detail_box.layout.display == "none"


def test_errors_show_in_the_status_and_the_next_request_works(explorer, test_images):
    explorer.set_layer("fc1")
    assert "no feature maps" in explorer.status.value and "conv1, conv2, pool1" in explorer.status.value
    # the slider's trait itself refuses a layer it does not list (it used to keep the name while
    # the slider and its label stayed on the old layer), naming the ones it lists
    with pytest.raises(traitlets.TraitError, match="'logits' cannot be chosen here: choose one of conv1"):
        explorer.layer_slider.value = "logits"
    explorer.set_image(np.full((32, 32, 1), 2.0))
    assert "must be in [0, 1]" in explorer.status.value
    explorer.set_image(np.zeros((5, 32, 32, 3)))
    assert "⚠" in explorer.status.value
    explorer.layer_slider.value = "conv3"
    explorer.set_image(test_images[9])
    assert explorer.wait(60)
    assert "⚠" not in explorer.status.value and explorer.layer == "conv3"
    np.testing.assert_allclose(
        explorer.maps, flax_intermediates(explorer.probe, test_images[9:10], "conv3")[0], atol=1e-4
    )
    with pytest.raises(ValueError, match="no feature maps"):
        ActivationExplorer(explorer.probe, layer="pool3", autorun=False)


def test_the_kernel_stays_responsive_while_a_job_runs(explorer):
    explorer.steps = 20000  # an optimization far longer than this test
    frames = explorer.optimized_grid.frames
    explorer.select(33)
    deadline = time.monotonic() + 90
    while explorer.optimized_grid.frames <= frames + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert explorer.runner.busy, "the optimization should still be running"
    start = time.monotonic()
    figure = explorer.to_figure()  # real main-thread work while the worker computes
    assert time.monotonic() - start < 10 and figure is not None
    assert explorer.runner.busy
    explorer.runner.cancel()
    assert explorer.wait(30)
    assert explorer.detail is None  # the cancelled job wrote no result


def test_save_writes_pngs_of_the_maps_and_the_detail(explorer, tmp_path):
    maps_only = explorer.save(tmp_path / "maps.png")
    explorer.select(3)
    assert explorer.wait(120) and explorer.detail.unit == 3
    with_detail = explorer.save(tmp_path / "detail.png")
    a, b = Image.open(maps_only), Image.open(with_detail)
    assert a.size[0] > 300 and b.size[1] > a.size[1]  # the detail row adds height
