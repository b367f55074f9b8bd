"""Bounded work and finite answers (issue 19, items 8 and 9): image sizes a model cannot use are
refused before anything is allocated, and inputs or weights that give no numbers say so."""

import jax
import numpy as np
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.engine import saliency as sal
from cnnvis_widgets.models.probe import MAX_SIDE


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


def test_sizes_above_the_models_cap_are_refused_before_any_work(probe):
    assert probe.max_side == MAX_SIDE == 512  # 4x its 32 px input is less than 512
    # 4000x4000 took > 6 GB; visualize_filters(size=4096) too; (8, 10**7) gave RESOURCE_EXHAUSTED
    with pytest.raises(ValueError, match=r"4000x4000: larger than digits-cnn takes, at most 512 px"):
        cw.saliency(probe, np.zeros((1, 4000, 4000, 1), np.float32), "vanilla")
    for size in (4096, (8, 10**7)):
        with pytest.raises(ValueError, match="at most 512 px a side"):
            cw.visualize_filters(probe, "conv1", [0], size=size, steps=2)


def test_images_too_small_for_the_model_are_refused_naming_the_smallest_that_works(probe):
    # two 2x2 poolings: a 2x2 or 3x3 digit becomes nothing, and the logits were NaN
    for side in (1, 2, 3):
        with pytest.raises(ValueError, match=r"too small for digits-cnn.*at least 4x4"):
            probe.logits(None, np.zeros((1, side, side, 1), np.float32))
    with pytest.raises(ValueError, match="too small"):  # was an all-zero map "for class 0"
        cw.saliency(probe, np.zeros((1, 1, 1, 1), np.float32), "vanilla")
    # the smallest size named really works: finite logits, computed by the model called directly
    x = np.random.default_rng(0).random((1, 4, 4, 1), np.float32)
    logits = np.asarray(probe.logits(None, x))
    direct = probe.module.apply(probe.variables, probe.preprocess(x))
    assert np.isfinite(logits).all() and np.allclose(logits, np.asarray(direct), atol=1e-5)


def test_nan_weights_are_reported_not_mapped_for_class_zero(probe):
    broken = jax.tree_util.tree_map(lambda a: a * np.nan, probe.variables)
    for method in ("vanilla", "gradcam"):
        with pytest.raises(ValueError, match=r"score is NaN or Inf on image\(s\) \[0, 1\].*weights"):
            cw.saliency(probe, np.zeros((2, 32, 32, 1), np.float32), method, variables=broken)


def test_a_batch_too_large_for_memory_is_refused_before_allocation_with_how_many_fit(probe):
    per_image = 2 * 4 * sum(int(np.prod(layer.shape)) for layer in probe.layers) * (512 * 512) // (32 * 32)
    fit = sal.BATCH_BUDGET // per_image  # activations and gradients of every layer, scaled by area
    images = np.zeros((fit + 1, 512, 512, 1), np.uint8)  # the float32 copy alone would be large
    with pytest.raises(ValueError, match=rf"{fit + 1} images of 512x512 .* pass at most {fit} at a time"):
        cw.saliency(probe, images, "vanilla")


def test_load_folder_refuses_a_limit_that_keeps_nothing(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="limit must be None .* or a positive integer, got 0"):
        cw.data.load_folder(tmp_path, limit=0)  # said "No image files" in a folder that has one
    images, names = cw.data.load_folder(tmp_path, limit=1)
    assert names == ["a.png"] and images[0].shape == (8, 8, 3)
