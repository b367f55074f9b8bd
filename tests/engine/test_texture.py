"""Texture synthesis and style transfer (Gatys et al. 2015/2016) on digits-cnn, and their objectives."""

import jax
import numpy as np
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.engine import objectives as O
from cnnvis_widgets.engine import texture

RNG = np.random.default_rng(0)


def _numpy_gram_loss(a, target):
    """-mean_b ||F_b^T F_b / P - T||^2 / ||T||^2 and its gradient, by hand, in float64."""
    a, target = a.astype(np.float64), target.astype(np.float64)
    b, h, w, c = a.shape
    p, norm = h * w, np.sum(target**2)
    flat = a.reshape(b, p, c)
    diff = np.einsum("bpi,bpj->bij", flat, flat) / p - target
    value = -np.mean(np.sum(diff**2, axis=(1, 2))) / norm
    # d||G - T||^2 / dF = 4 F (G - T) / P (G - T is symmetric); the mean over b divides by b
    grad = -(4.0 / (p * norm * b)) * np.einsum("bpi,bij->bpj", flat, diff)
    return value, grad.reshape(a.shape)


def test_gram_objective_value_and_gradient_against_numpy():
    acts = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    target = np.cov(RNG.normal(size=(5, 40))).astype(np.float32)  # symmetric, like a Gram matrix
    objective = O.gram("conv", target)
    expected, expected_grad = _numpy_gram_loss(acts, target)
    np.testing.assert_allclose(objective({"conv": acts}, 0), expected, rtol=1e-5)
    grad = jax.grad(lambda x: objective({"conv": x}, 0))(acts)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-7)
    flat = acts[0].reshape(12, 5).astype(np.float64)
    np.testing.assert_allclose(O.gram_matrix(acts)[0], flat.T @ flat / 12, rtol=1e-5)
    np.testing.assert_allclose(O.gram("conv", O.gram_matrix(acts[1]))({"conv": acts[1:]}, 0), 0.0, atol=1e-6)


def test_style_and_content_compose_with_the_other_objectives():
    acts = {"a": RNG.normal(size=(1, 4, 4, 3)).astype(np.float32),
            "b": RNG.normal(size=(1, 2, 2, 6)).astype(np.float32)}  # fmt: skip
    ref = {"a": RNG.normal(size=(1, 4, 4, 3)), "b": RNG.normal(size=(1, 2, 2, 6))}
    style, content = O.style(ref), O.content("b", ref["b"])
    grams = [O.gram(n, O.gram_matrix(ref[n][0]))(acts, 0) for n in ("a", "b")]
    np.testing.assert_allclose(style(acts, 0), np.mean(grams), rtol=1e-5)
    np.testing.assert_allclose(content(acts, 0), O.feature_match("b", ref["b"][0])(acts, 0), rtol=1e-6)
    mixed = content + 0.5 * style - O.channel("a")
    assert mixed.layers == ("b", "a") and repr(mixed).startswith("content('b') + 0.5 * style(['a', 'b'])")
    np.testing.assert_allclose(
        mixed(acts, 1), content(acts, 1) + 0.5 * style(acts, 1) - acts["a"][..., 1].mean(), rtol=1e-5
    )


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


@pytest.fixture(scope="module")
def photos(probe):
    """The coffee photo as digits-cnn sees it (the source), and the cat (another photo)."""
    return [cw.data.fit_to(cw.data.photo(name), probe)[0] for name in ("coffee", "chelsea")]


@pytest.fixture(scope="module")
def textures(probe, photos):
    return texture.synthesize_texture(probe, photos[0], seeds=3, steps=96)


def test_a_texture_is_far_closer_to_its_source_than_noise_or_another_photo(probe, photos, textures):
    source, other = photos
    layers = texture.default_style_layers(probe)
    noise = RNG.uniform(size=(3, 32, 32, 1)).astype(np.float32)
    distance = lambda images: texture.gram_distances(probe, images, source, layers).mean()
    made, random, photo = distance(textures.images), distance(noise), distance(other[None])
    # measured: 0.017 for the textures, 4.3 for noise (250x), 0.49 for the cat (29x)
    assert random > 50 * made, f"noise is only {random / made:.0f}x farther from the source"
    assert photo > 10 * made, f"another photo is only {photo / made:.1f}x farther from the source"


def test_seeds_are_different_images_made_in_one_call(probe, photos, textures):
    images = textures.images
    assert images.shape == (3, 32, 32, 1) and textures.objective.shape == (3, 96) and textures.finite.all()
    gaps = [np.abs(images[i] - images[j]).mean() for i, j in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 0.05, gaps  # each seed drew its own noise
    groups = []
    texture.synthesize_texture(probe, photos[0], seeds=3, steps=2, callback=lambda p: groups.append(p.groups))
    assert set(groups) == {1}  # one vmapped group, not one run per seed


def test_style_transfer_keeps_the_content_and_takes_the_style(probe, photos):
    content, style = cw.data.digits().images[0], photos[0]
    result = texture.style_transfer(probe, content, style, steps=64, style_weight=10)
    layers, layer = texture.default_style_layers(probe), texture.default_content_layer(probe)
    both = np.stack([content, result.images[0]])
    before, after = texture.gram_distances(probe, both, style, layers).mean(axis=1)
    assert after < 0.2 * before  # measured: 0.76 -> 0.025
    feats = lambda x: np.asarray(probe.activations(probe.variables, x[None], layer))
    kept = np.sum((feats(result.images[0]) - feats(content)) ** 2)
    # nearer the digit than the photo is: measured 16400 against 59700
    assert kept < 0.5 * np.sum((feats(style) - feats(content)) ** 2)


def test_bad_input_names_what_was_given_and_what_is_valid(probe, photos):
    source = photos[0]
    with pytest.raises(ValueError, match=r"Unknown layer 'conv9'.*Did you mean.*Valid layers: conv1"):
        texture.synthesize_texture(probe, source, ["conv1", "conv9"])
    with pytest.raises(ValueError, match=r"'fc1' has no feature maps.*spatial layers: conv1"):
        texture.style_transfer(probe, source, source, content_layer="fc1")
    with pytest.raises(ValueError, match=r"Give one image.*batch of 2"):
        texture.synthesize_texture(probe, np.stack([source, source]))
    with pytest.raises(ValueError, match=r"Give one image.*shape \(5,\)"):
        texture.style_transfer(probe, source, np.zeros(5))
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        texture.synthesize_texture(probe, source, steps=0)
    with pytest.raises(ValueError, match="seeds must be a positive integer, got -1"):
        texture.synthesize_texture(probe, source, seeds=-1)
    with pytest.raises(ValueError, match="seeds must be at most 64, got 65"):
        texture.synthesize_texture(probe, source, seeds=65)
    with pytest.raises(ValueError, match="style_weight must be a finite number >= 0, got -1"):
        texture.style_transfer(probe, source, source, style_weight=-1)
    with pytest.raises(ValueError, match=r"square \(C, C\).*\(3, 4\)"):
        O.gram("conv1", np.zeros((3, 4)))
    with pytest.raises(ValueError, match="the layer has 16 channels, the target Gram matrix is 3x3"):
        O.gram("conv1", np.eye(3))({"conv1": np.zeros((1, 4, 4, 16))}, 0)
    with pytest.raises(ValueError, match=r"style layer 'x': give one image's activations \(H, W, C\)"):
        O.style({"x": np.zeros((2, 4, 4, 3))})
