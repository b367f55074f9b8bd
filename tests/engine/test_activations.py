"""Activations: statistics, top images, patches and kernels against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets.engine import activations as act
from cnnvis_widgets.models import digits as digits_model


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


@pytest.fixture(scope="module")
def images():
    return cw.data.digits().images[:300]  # 300 = 2 batches of 128 + a padded one of 44


def direct(probe, images, layer, variables=None):
    return np.asarray(probe.activations(variables or probe.variables, images, layer))


# ------------------------------------------------------------ feature maps
def test_feature_maps_one_image(probe, images):
    expected = direct(probe, images[3:4], "conv3")[0]
    np.testing.assert_allclose(act.feature_maps(probe, images[3], "conv3"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act.feature_maps(probe, images[3:4], "conv3"), expected, rtol=1e-5, atol=1e-6)
    maps = act.feature_maps(probe, images[3], None)
    assert list(maps) == probe.layer_names
    assert maps["conv3"].shape == (16, 16, 48) and maps["fc1"].shape == (64,)
    with pytest.raises(
        ValueError, match=r"one image, \(H, W, C\) or \(1, H, W, C\); got shape \(2, 32, 32, 1\)"
    ):
        act.feature_maps(probe, images[:2], "conv1")


def test_most_activated_matches_argsort(probe, images):
    ranked = act.most_activated(probe, images[7], "conv4", n=5)
    means = direct(probe, images[7:8], "conv4")[0].mean(axis=(0, 1))
    np.testing.assert_array_equal(ranked.units, np.argsort(-means)[:5])
    np.testing.assert_allclose(ranked.values, np.sort(means)[::-1][:5], rtol=1e-5)
    with pytest.raises(
        ValueError, match=r"n=65 is out of range: there are 64 channels in layer 'conv4' \(valid: 1..64\)"
    ):
        act.most_activated(probe, images[7], "conv4", n=65)


# ------------------------------------------------------------- statistics
def test_filter_stats_match_numpy(probe, images):
    stats = act.filter_stats(probe, images, "conv2", batch_size=128)
    a = direct(probe, images, "conv2").reshape(-1, 32)
    assert stats.count == 300
    np.testing.assert_allclose(stats.mean, a.astype(np.float64).mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(stats.max, a.max(axis=0))
    np.testing.assert_allclose(stats.zero_fraction, (a <= 0).mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(stats.dead, a.max(axis=0) <= 0)
    dense = act.filter_stats(probe, images, "fc1", batch_size=1000)  # one batch, dense layer
    np.testing.assert_allclose(
        dense.mean, direct(probe, images, "fc1").astype(np.float64).mean(axis=0), rtol=1e-5
    )


def test_other_image_sizes(probe, images):
    """digits-cnn pools globally, so it takes 40x40 images: statistics and positions follow the larger grid."""
    big = cw.data.resize(images[:20], (40, 40))
    a = direct(probe, big, "conv3")  # (20, 20, 20, 48)
    stats = act.filter_stats(probe, big, "conv3", batch_size=8)
    np.testing.assert_allclose(stats.zero_fraction, (a <= 0).reshape(-1, 48).mean(axis=0), atol=1e-6)
    top = act.top_images(probe, big, "conv3", 9, k=3)
    for i, (y, x), v in zip(top.indices, top.positions, top.values):
        assert a[i, y, x, 9] == pytest.approx(v, rel=1e-5)


def test_zeroed_filters_are_exactly_the_dead_ones(probe):
    data = cw.data.digits().images
    assert not act.filter_stats(probe, data, "conv3").dead.any()  # the trained conv3 has no dead filter
    params = jax.tree_util.tree_map(np.array, probe.variables["params"])
    zeroed, silenced = [3, 10], [20]
    params["conv3_op"]["kernel"][..., zeroed] = 0.0
    params["conv3_op"]["bias"][zeroed] = 0.0
    params["conv3_op"]["bias"][silenced] = -1e4
    modified = {"params": params}
    broken = cw.Probe(
        digits_model.DigitsCNN(), modified, input_shape=(32, 32, 1), preprocess=digits_model.preprocess
    )
    stats = act.filter_stats(broken, data, "conv3")
    np.testing.assert_array_equal(np.flatnonzero(stats.dead), [3, 10, 20])
    np.testing.assert_array_equal(stats.zero_fraction[[3, 10, 20]], 1.0)
    same = act.filter_stats(probe, data, "conv3", variables=modified)  # variables= reads them too
    np.testing.assert_array_equal(same.dead, stats.dead)


def test_top_images_match_brute_force(probe, images):
    top = act.top_images(probe, images, "conv3", unit=5, k=9, batch_size=128)
    a = direct(probe, images, "conv3")[..., 5]  # (N, 16, 16)
    best = a.reshape(len(a), -1).max(axis=1)
    np.testing.assert_array_equal(top.indices, np.argsort(-best, kind="stable")[:9])
    np.testing.assert_allclose(top.values, best[top.indices], rtol=1e-5)
    for i, (y, x), v in zip(top.indices, top.positions, top.values):
        assert a[i, y, x] == pytest.approx(v, rel=1e-5)
    dense = act.top_images(probe, images, "fc1", unit=2, k=4)
    assert dense.positions is None
    np.testing.assert_array_equal(
        dense.indices, np.argsort(-direct(probe, images, "fc1")[:, 2], kind="stable")[:4]
    )


# --------------------------------------------------------- receptive fields
def gradient_support(probe, image, layer, unit, y, x):
    """Rows and columns of input pixels whose gradient on the unit at (y, x) is nonzero."""
    g = jax.grad(lambda im: probe.activations(probe.variables, im[None], layer)[0, y, x, unit])(
        jnp.asarray(image)
    )
    mask = np.abs(np.asarray(g)).sum(axis=-1) > 0
    return np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))


def test_patches_contain_the_pixels_that_influence_the_unit(probe, images):
    layer, unit = "conv3", 5
    top = act.top_images(probe, images, layer, unit, k=4)
    patches = act.receptive_patches(probe, images, layer, unit, k=4)
    assert patches.shape == (4, 10, 10, 1)  # conv3's receptive field: 10 pixels
    for patch, i, pos in zip(patches, top.indices, top.positions):
        y0, x0, size = act.receptive_box(probe, layer, pos)
        rows, cols = gradient_support(probe, images[i], layer, unit, *pos)
        assert rows.size and y0 <= rows.min() and rows.max() < y0 + size, (pos, rows, y0)
        assert x0 <= cols.min() and cols.max() < x0 + size, (pos, cols, x0)
        inside = images[i][max(y0, 0) : y0 + size, max(x0, 0) : x0 + size]
        np.testing.assert_array_equal(
            patch[max(-y0, 0) :, max(-x0, 0) :][: inside.shape[0], : inside.shape[1]], inside
        )


def test_receptive_box_is_exact_for_a_linear_model_with_tf_same_padding():
    """No ReLUs: the gradient support IS the receptive field. Stride-2 TF 'SAME' pads (0, 1) here:

    position p is centred on pixel 2p + 1 at the first layer, not 2p + 0.5 as (stride - 1) / 2 would say.
    """

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(2, (3, 3), strides=(2, 2), padding="SAME", name="a")(x)
            x = nn.Conv(2, (5, 5), strides=(2, 2), padding="SAME", name="b")(x)
            x = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME")
            x = nn.Conv(2, (3, 3), padding=((0, 2), (2, 0)), name="c")(x)
            return x.mean(axis=(1, 2))

    variables = Linear().init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    p = cw.Probe(Linear(), variables, input_shape=(32, 32, 1))
    image = np.full((32, 32, 1), 0.5, np.float32)
    for layer, pos in [("a", (5, 9)), ("b", (3, 4)), ("c", (2, 4))]:
        y0, x0, size = act.receptive_box(p, layer, pos)
        assert size == p.layer(layer).receptive_field
        rows, cols = gradient_support(p, image, layer, 0, *pos)
        assert (rows.min(), rows.max() + 1) == (y0, y0 + size), (layer, rows, y0, size)
        assert (cols.min(), cols.max() + 1) == (x0, x0 + size), (layer, cols, x0, size)
    assert act.receptive_box(p, "a", (5, 9))[:2] == (2 * 5 + 1 - 1, 2 * 9 + 1 - 1)


def test_patches_at_the_border_are_padded(probe, images):
    y0, x0, size = act.receptive_box(probe, "conv4", (0, 7))
    assert (y0, x0, size) == (-8, 20, 20)  # centre 4p + 1.5, 20 pixels: reaches past two borders
    crop = act._crop(images[0], y0, x0, size, pad_value=0.25)
    assert crop.shape == (20, 20, 1)
    np.testing.assert_array_equal(crop[:8], 0.25)
    np.testing.assert_array_equal(crop[:, 12:], 0.25)
    np.testing.assert_array_equal(crop[8:, :12], images[0][:12, 20:])


# ----------------------------------------------------------------- kernels
def test_kernels_as_images_grayscale(probe):
    tiles = act.kernels_as_images(probe, "conv1")
    w = np.moveaxis(np.asarray(probe.variables["params"]["conv1_op"]["kernel"]), -1, 0)  # (16, 3, 3, 1)
    assert tiles.shape == (16, 1, 3, 3, 1)
    np.testing.assert_allclose(tiles[:, 0], 0.5 + 0.5 * w / np.abs(w).max(), rtol=1e-6)
    assert tiles.min() >= 0 and tiles.max() <= 1 and np.isclose(np.abs(tiles - 0.5).max(), 0.5)
    assert act.kernels_as_images(probe, "conv3").shape == (48, 32, 3, 3, 1)
    assert act.kernels_as_images(probe, "conv3", "mean").shape == (48, 3, 3, 1)
    assert act.kernels_as_images(probe, "conv3", [0, 5]).shape == (48, 2, 3, 3, 1)
    per_filter = act.kernels_as_images(probe, "conv2", scale="filter")
    np.testing.assert_allclose(np.abs(per_filter - 0.5).reshape(32, -1).max(axis=1), 0.5, rtol=1e-6)


def test_kernels_as_images_rgb():
    class Rgb(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(5, (4, 4), name="first")(x).mean(axis=(1, 2))

    variables = Rgb().init(jax.random.key(2), jnp.zeros((1, 8, 8, 3)))
    p = cw.Probe(Rgb(), variables, input_shape=(8, 8, 3))
    tiles = act.kernels_as_images(p, "first")
    w = np.moveaxis(np.asarray(variables["params"]["first"]["kernel"]), -1, 0)
    assert tiles.shape == (5, 4, 4, 3)
    np.testing.assert_allclose(tiles, 0.5 + 0.5 * w / np.abs(w).max(), rtol=1e-6)
    assert act.kernels_as_images(p, "first", "all").shape == (5, 3, 4, 4, 1)


# ------------------------------------------------------------------ errors
def test_errors(probe, images):
    with pytest.raises(ValueError, match="Unknown layer 'conv7'.*Valid layers: conv1"):
        act.filter_stats(probe, images, "conv7")
    with pytest.raises(
        ValueError, match="'fc1' is a dense layer.*no receptive-field patch.*Spatial layers: conv1"
    ):
        act.receptive_patches(probe, images, "fc1", 0)
    with pytest.raises(
        ValueError, match=r"k=301 is out of range: there are 300 images given \(valid: 1..300\)"
    ):
        act.top_images(probe, images, "conv2", 0, k=301)
    with pytest.raises(
        ValueError, match=r"Filter 48 is out of range for layer 'conv3' with 48 channels \(valid: 0..47\)"
    ):
        act.top_images(probe, images, "conv3", 48)
    with pytest.raises(ValueError, match="Filter -1 is out of range"):
        act.receptive_patches(probe, images, "conv3", -1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        act.filter_stats(probe, images, "conv1", batch_size=0)
    with pytest.raises(
        ValueError, match=r"Position \(-1, 0\) of layer 'conv3' must be \(y, x\) with y, x >= 0"
    ):
        act.receptive_box(probe, "conv3", (-1, 0))
    with pytest.raises(
        ValueError, match="input_channels='rgb' needs a kernel over 3 input channels.*reads 32"
    ):
        act.kernels_as_images(probe, "conv3", "rgb")
    with pytest.raises(ValueError, match=r"input_channels must be indices in 0..15.*got \[16\]"):
        act.kernels_as_images(probe, "conv2", [16])
    with pytest.raises(ValueError, match="has no convolution kernel|not by a convolution"):
        act.kernels_as_images(probe, "pool1")
    with pytest.raises(ValueError, match="grayscale images with 1 channel"):
        act.filter_stats(probe, np.zeros((4, 32, 32, 3), np.float32), "conv1")


@pytest.mark.slow
def test_efficientnet_patches_follow_tf_same_padding():
    """Stride-2 TF 'SAME' layers shift centres: block3.depthwise's position p is centred on 8p + 7, not 8p + 3.5."""
    p = cw.load("efficientnet-lite0")
    photos = cw.data.fit_to([cw.data.photo(n) for n in ("chelsea", "coffee", "rocket")], p)
    assert act._centre_geometry(p, "block3.depthwise") == ((7.0, 8.0), (7.0, 8.0))
    top = act.top_images(p, photos, "block3.depthwise", 7, k=2)
    patches = act.receptive_patches(p, photos, "block3.depthwise", 7, k=2)
    assert patches.shape == (2, 35, 35, 3)
    for i, pos in zip(top.indices, top.positions):
        y0, x0, size = act.receptive_box(p, "block3.depthwise", pos)
        rows, cols = gradient_support(p, photos[i], "block3.depthwise", 7, *pos)
        assert y0 <= rows.min() and rows.max() < y0 + size and x0 <= cols.min() and cols.max() < x0 + size
        assert (
            rows.max() - rows.min() + 1 >= 0.8 * size
        )  # the support fills the box, not a shifted part of it
