"""Recipes: which parts each model is drawn with, the upsampling inside the loss, progressive runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets.engine import ascent, recipes


class TinyRGB(nn.Module):
    """A small fully-convolutional RGB model with a 96 px native input (so it is drawn upsampled)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="conv2")(x))
        return nn.Dense(4, name="head")(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def rgb_probe():
    module = TinyRGB()
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))
    return cw.Probe(module, variables, input_shape=(96, 96, 3), name="tiny-rgb")


def test_each_model_gets_its_recipe(rgb_probe):
    assert recipes.for_probe(cw.load("digits-cnn")) is recipes.SMALL
    assert recipes.for_probe(rgb_probe) is recipes.IMAGENET
    assert recipes.IMAGENET.upsample and not recipes.IMAGENET.priors and recipes.IMAGENET.param == "fourier"
    # the first wave's priors stay for small grayscale models
    assert [name for name, _ in recipes.SMALL.priors] == ["l2_decay", "total_variation", "gaussian_blur"]
    rgb_probe.recipe = "maco"  # a user's choice wins
    try:
        assert recipes.for_probe(rgb_probe) is recipes.MACO
    finally:
        del rgb_probe.recipe


def test_recipe_errors_name_the_valid_values():
    with pytest.raises(ValueError, match="param must be one of"):
        recipes.Recipe("x", param="wavelet")
    with pytest.raises(ValueError, match="Unknown prior"):
        recipes.Recipe("x", priors=(("blurr", 1.0),))
    with pytest.raises(ValueError, match="Unknown recipe 'lucent'"):
        recipes.named("lucent")
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        recipes.Recipe("x", learning_rate=0.0)


def test_equal_recipes_share_their_parts():
    again = recipes.Recipe("imagenet", learning_rate=recipes.IMAGENET.learning_rate)
    assert again == recipes.IMAGENET and hash(again) == hash(recipes.IMAGENET)
    size = (64, 64)
    assert recipes.build_transforms(again, size) is recipes.build_transforms(recipes.IMAGENET, size)
    assert recipes.build_param("fourier", 3) is recipes.build_param("fourier", 3)


def test_the_network_sees_the_image_at_its_native_size(rgb_probe):
    """An ImageNet-recipe image of 48 px reaches the model upsampled to 96; SMALL/PLAIN keep 48."""
    info = rgb_probe.layer("conv2")
    for recipe, seen in [(recipes.IMAGENET, 96), (recipes.PLAIN, 48), (recipes.SMALL, 48)]:
        setup = ascent._setup(rgb_probe, info, "channel", (48, 48), None, None, None, None, None, recipe)
        out = setup.transform(jax.random.key(0), jnp.full((1, 48, 48, 3), 0.5))
        assert out.shape == (1, seen, seen, 3), recipe.name
        assert ascent.seen_size(rgb_probe, (48, 48), recipe) == (seen, seen)
    # given transforms still end with the recipe's upsampling
    setup = ascent._setup(
        rgb_probe, info, "channel", (48, 48), None, cw.transforms.jitter(2), None, None, None, recipes.IMAGENET
    )
    assert setup.transform(jax.random.key(0), jnp.zeros((2, 48, 48, 3))).shape == (2, 96, 96, 3)


def test_recipes_run_and_excite_their_filters(rgb_probe):
    for recipe in ("imagenet", "maco", "classic"):
        result = cw.visualize_filters(rgb_probe, "conv2", range(4), steps=24, size=48, recipe=recipe)
        assert result.images.shape == (4, 48, 48, 3) and result.finite.all(), recipe
        assert (result.objective[:, -1] > result.objective[:, 0]).all(), recipe
        assert result.attribution.shape == (4, 48, 48)
        assert np.isclose(result.attribution.max(axis=(1, 2)), 1.0).all()


def test_progressive_run_drafts_small_then_refines(rgb_probe):
    sizes, steps = ascent.progressive_stages(rgb_probe, 64, 30)
    assert sizes == (32, 64) and steps == (10, 20)
    assert ascent.progressive_stages(cw.load("digits-cnn"), 32, 96) == ((32,), (96,))
    seen = []

    def callback(p):
        if not p.compiling:  # first visits are announced before their compile (test_ascent)
            seen.append((p.stage, p.stages, p.images.shape[1], p.step))

    result = ascent.progressive_filters(
        rgb_probe, "conv2", [0, 3], sizes=sizes, steps=steps, snapshot_every=5, callback=callback
    )
    assert result.images.shape == (2, 64, 64, 3) and result.objective.shape == (2, 30)
    assert [s[:3] for s in seen] == [(0, 2, 32)] * 2 + [(1, 2, 64)] * 4
    # the draft is the refined run's start: its images, resized, begin stage 1
    draft = ascent.visualize_filters(
        rgb_probe, "conv2", [0, 3], size=32, steps=10, snapshot_every=5, recipe=recipes.IMAGENET.replace(upsample=False)
    )
    np.testing.assert_allclose(result.objective[:, :10], draft.objective, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one value per stage"):
        ascent.progressive_filters(rgb_probe, "conv2", [0], sizes=(32, 64), steps=(5,))


def test_class_scores_are_taken_as_the_optimization_saw_the_images(rgb_probe):
    """48 px class pictures of a 96 px model are scored at 96 px (upsampled, as in the loss)."""
    result = cw.visualize_classes(rgb_probe, [1, 2], steps=8, size=48)
    seen = jax.image.resize(jnp.asarray(result.images), (2, 96, 96, 3), "linear")
    probs = np.asarray(jax.nn.softmax(rgb_probe.logits(rgb_probe.variables, seen), axis=-1))
    np.testing.assert_allclose(result.scores, probs[[0, 1], [1, 2]], rtol=1e-5)
    at_48 = np.asarray(jax.nn.softmax(rgb_probe.logits(rgb_probe.variables, result.images), axis=-1))
    assert not np.allclose(result.scores, at_48[[0, 1], [1, 2]], rtol=1e-3)
