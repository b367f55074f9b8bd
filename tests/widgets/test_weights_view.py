"""WeightsView, headless: the tiles are the Flax kernels, layers switch, errors show, PNG export."""

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets.widgets.weights import WeightsView


@pytest.fixture
def view():
    v = WeightsView("digits-cnn")
    assert v.wait(60)
    yield v
    v.close()


def flax_kernel(view, layer):
    """(kh, kw, in, out), read from the Flax params directly."""
    return np.asarray(view.probe.variables["params"][f"{layer}_op"]["kernel"])


def test_conv1_shows_its_16_kernels_as_in_the_flax_params(view):
    k = flax_kernel(view, "conv1")  # (3, 3, 1, 16)
    expected = 0.5 + 0.5 * k / np.abs(k).max()
    expected = np.moveaxis(expected, -1, 0)  # (16, 3, 3, 1)
    assert view.layer == "conv1" and view.grid.tile_shape == (16, 3, 3)
    np.testing.assert_allclose(view.tiles, expected, atol=1e-6)
    for i in range(16):  # what the browser gets: grey levels of those values
        want = np.rint(expected[i, ..., 0] * 255)
        got = view.grid.tile_pixels(i).astype(int)
        assert np.abs(got - want[..., None]).max() <= 1, i
    assert list(view.grid.labels.text) == [str(i) for i in range(16)]
    assert "conv1: 16 kernels of 3×3, grayscale" in view.status.value


def test_switching_layer_changes_the_kernels(view):
    before = view.grid.pixels.copy()
    view.layer_select.value = "conv2"
    assert view.wait(60)
    k = flax_kernel(view, "conv2")  # (3, 3, 16, 32)
    expected = 0.5 + 0.5 * k / np.abs(k).max()
    expected = np.transpose(expected, (3, 2, 0, 1))[..., None].reshape(32 * 16, 3, 3, 1)  # a row per filter
    np.testing.assert_allclose(view.tiles, expected, atol=1e-6)
    assert view.grid.tile_shape == (512, 3, 3) and view.grid.ncols == 16
    assert view.grid.pixels.shape != before.shape
    view.scale.value = "filter"
    view.mode.value = "mean"
    assert view.wait(60)
    mean = k.mean(axis=2)  # (3, 3, 32)
    expected = 0.5 + 0.5 * mean / np.abs(mean).max(axis=(0, 1))
    np.testing.assert_allclose(view.tiles, np.moveaxis(expected, -1, 0)[..., None], atol=1e-6)
    view.mode.value = "channel"
    view.channel.value = 5
    assert view.wait(60)
    one = k[:, :, 5, :]
    expected = 0.5 + 0.5 * one / np.abs(one).max(axis=(0, 1))
    np.testing.assert_allclose(view.tiles, np.moveaxis(expected, -1, 0)[..., None], atol=1e-6)


def test_errors_show_in_the_status_and_the_next_request_works(view):
    view.set_layer("pool1")
    assert "has no convolution kernel" in view.status.value
    assert "Conv layers of digits-cnn: conv1, conv2, conv3, conv4" in view.status.value
    view.set_layer("fc9")
    assert "Unknown layer" in view.status.value
    view.layer_select.value = "conv2"
    view.mode.value = "rgb"  # conv2 reads 16 channels, not 3
    assert view.wait(30)
    assert "needs a kernel over 3 input channels" in view.status.value
    view.mode.value = "auto"
    view.set_layer("conv3")
    assert view.wait(60)
    assert "⚠" not in view.status.value and view.layer == "conv3"
    # conv3: 48 x 32 tiles do not fit: the first filters, every input channel
    assert view.tiles.shape == (32 * 32, 3, 3, 1) and "showing 32 of 48 filters" in view.status.value
    with pytest.raises(ValueError, match="no convolution kernel"):
        WeightsView(view.probe, layer="fc1", autorun=False)


def test_save_writes_a_png(view, tmp_path):
    path = view.save(tmp_path / "kernels.png")
    assert Image.open(path).size[0] > 200
