"""Quality figures: colourfulness and contrast by hand, filter scores against a separate forward pass."""

import jax
import numpy as np
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.engine import quality


def test_colourfulness_by_hand():
    grey = np.full((1, 4, 4, 3), 0.5)
    red = np.zeros((1, 4, 4, 3))
    red[..., 0] = 1.0
    # half red, half green: rg is +255 or -255 (std 255, mean 0); yb = 127.5 everywhere (std 0)
    split = np.zeros((1, 4, 4, 3))
    split[:, :, :2, 0] = 1.0
    split[:, :, 2:, 1] = 1.0
    got = quality.colourfulness(np.concatenate([grey, red, split]))
    np.testing.assert_allclose(got, [0.0, 0.3 * np.hypot(255.0, 127.5), 255.0 + 0.3 * 127.5])
    np.testing.assert_array_equal(quality.colourfulness(np.ones((2, 3, 3, 1))), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"\(N, H, W, 1 or 3\)"):
        quality.colourfulness(np.ones((3, 3, 3)))


def test_contrast_is_the_pixel_standard_deviation():
    x = np.zeros((2, 2, 2, 1))
    x[1, 0, 0, 0] = 1.0  # one white pixel of four: std sqrt(3)/4
    np.testing.assert_allclose(quality.contrast(x), [0.0, np.sqrt(3) / 4])


def test_filter_scores_resize_to_the_native_size_and_take_channel_means():
    probe = cw.load("digits-cnn")
    small = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype(np.float32)
    scores = quality.filter_scores(probe, small, "conv2", [0, 5, 7])
    native = np.asarray(jax.image.resize(small, (3, 32, 32, 1), "linear", antialias=True))
    acts = np.asarray(probe.activations(probe.variables, native, "conv2")).mean(axis=(1, 2))
    np.testing.assert_allclose(scores, acts[:, [0, 5, 7]], rtol=1e-5, atol=1e-6)
    wins = quality.own_filter_wins(np.array([[3.0, 0.0], [1.0, 2.0]]))
    np.testing.assert_array_equal(wins, [True, True])
    np.testing.assert_array_equal(quality.own_filter_wins(np.array([[1.0, 3.0], [2.0, 2.0]])), [False, False])
