"""Saliency: every method checked against an independent computation; targets; clear errors."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets.jaxpr.gradients import RELU_RULES
from cnnvis_widgets.engine.saliency import METHODS, SaliencyResult, method_options, saliency


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


@pytest.fixture(scope="module")
def digits():
    data = cw.data.digits()
    return data.images[:3], data.labels[:3]


@functools.lru_cache(maxsize=None)
def jitted(probe):
    """(logits, activations) of [0, 1] images: the Probe's own forward pass, jitted."""
    return jax.jit(lambda x: probe.forward(probe.variables, x))


def class_score(probe, images, classes):
    """The model's logit of each image's class, computed with the Probe only."""
    logits = np.asarray(jitted(probe)(jnp.asarray(images, jnp.float32))[0])
    return logits[np.arange(len(logits)), classes]


# ------------------------------------------------------------ tiny models
class SmoothNet(nn.Module):
    """Smooth activations, so central finite differences are accurate."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), name="conv_a")(x))
        x = nn.softplus(nn.Conv(6, (3, 3), strides=(2, 2), name="conv_b")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


class TwoLayerReLU(nn.Module):
    """x → relu(W1 x) → relu(W2 h1) → W3 h2, on flattened 4x4 images."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(12, name="hidden1")(x))
        x = nn.relu(nn.Dense(10, name="hidden2")(x))
        return nn.Dense(3, name="out")(x)


def tiny_probe(module, shape, seed=0):
    """A Probe over ``module`` with random weights drawn by NumPy (compiling a jitted init costs seconds)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, *shape)))
    draw = lambda leaf: rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1]) or 1), leaf.shape).astype(
        np.float32
    )
    return cw.Probe(module, jax.tree_util.tree_map(draw, shapes), input_shape=shape)


def uniform(shape, low=0.0, high=1.0, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# ------------------------------------------------------------ vanilla gradient, layer units
def test_vanilla_gradient_matches_central_finite_differences():
    probe = tiny_probe(SmoothNet(), (8, 8, 2))
    x = uniform((2, 8, 8, 2), 0.2, 0.8)
    targets = np.array([0, 2])
    result = saliency(probe, x, "vanilla", targets)
    assert (
        isinstance(result, SaliencyResult)
        and result.maps.shape == (2, 8, 8)
        and result.maps.dtype == np.float32
    )
    np.testing.assert_array_equal(result.targets, targets)
    np.testing.assert_allclose(result.scores, class_score(probe, x, targets), rtol=1e-5)
    np.testing.assert_allclose(result.maps, np.abs(result.attributions).max(-1), rtol=1e-6)

    eps, rng = 1e-2, np.random.default_rng(0)
    pixels = np.stack([rng.integers(0, k, 8) for k in (2, 8, 8, 2)], axis=1)  # (n, i, j, c) x 8
    shifted = np.repeat(x[pixels[:, 0]][None], 2, axis=0)  # (2, 8, H, W, C): up, down
    for k, (n, i, j, c) in enumerate(pixels):
        shifted[0, k, i, j, c] += eps
        shifted[1, k, i, j, c] -= eps
    scores = class_score(probe, shifted.reshape(16, 8, 8, 2), np.tile(targets[pixels[:, 0]], 2)).reshape(2, 8)
    fd = (scores[0] - scores[1]) / (2 * eps)
    np.testing.assert_allclose(result.attributions[tuple(pixels.T)], fd, rtol=2e-2, atol=2e-4)


def test_layer_unit_target_is_the_gradient_of_the_channel_mean(probe, digits):
    x, _ = digits
    result = saliency(probe, x, "vanilla", ("conv3", 5))
    channel_mean = lambda x: probe.forward(probe.variables, x)[1]["conv3"][..., 5].mean(axis=(1, 2))
    expected = jax.jit(jax.grad(lambda x: channel_mean(x).sum()))(jnp.asarray(x))  # images are independent
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        result.scores, jitted(probe)(x)[1]["conv3"][..., 5].mean(axis=(1, 2)), rtol=1e-5
    )
    np.testing.assert_array_equal(result.targets, [5, 5, 5])
    assert result.target_layer == "conv3"

    whole = saliency(probe, x, "vanilla", ("conv3", None))
    layer_mean = lambda x: probe.forward(probe.variables, x)[1]["conv3"].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        whole.attributions, jax.jit(jax.grad(lambda x: layer_mean(x).sum()))(x), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_array_equal(whole.targets, [-1, -1, -1])


def test_targets_default_to_the_prediction_and_batches_do_not_mix(probe, digits):
    x, _ = digits
    result = saliency(probe, x, "grad_x_input")
    predicted = np.asarray(jitted(probe)(x)[0]).argmax(-1)
    np.testing.assert_array_equal(result.targets, predicted)
    alone = saliency(probe, x[1:2], "grad_x_input", int(predicted[1]))
    np.testing.assert_allclose(alone.attributions[0], result.attributions[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.maps, result.attributions.sum(-1), rtol=1e-5, atol=1e-7)
    named = saliency(probe, x[:1], "vanilla", probe.class_names[4])
    assert named.targets.tolist() == [4]


# ------------------------------------------------------------ SmoothGrad, integrated gradients
def test_smoothgrad_without_noise_is_the_vanilla_gradient(probe, digits):
    x, labels = digits
    vanilla = saliency(probe, x, "vanilla", labels)
    smooth = saliency(probe, x, "smoothgrad", labels, n_samples=2, noise=0.0)
    np.testing.assert_allclose(smooth.attributions, vanilla.attributions, rtol=1e-4, atol=1e-6)
    squared = saliency(probe, x, "smoothgrad", labels, n_samples=2, noise=0.0, squared=True)
    np.testing.assert_allclose(squared.attributions, vanilla.attributions**2, rtol=1e-4, atol=1e-9)
    noisy = saliency(probe, x, "smoothgrad", labels, n_samples=2, noise=0.2, normalize=True)
    assert noisy.maps.min() == 0.0 and noisy.maps.max() == 1.0
    np.testing.assert_array_equal(noisy.targets, labels)  # resolved on the clean images


def test_smoothgrad_and_integrated_gradients_spread_over_three_devices(probe, tmp_path):
    """Samples / path points go one per device (5 and 7 over 3 devices: padded rounds that add
    nothing); the result is the plain average of input gradients, computed here by hand."""
    script = textwrap.dedent("""
        import sys, numpy as np, jax
        assert len(jax.devices()) == 3, jax.devices()
        import cnnvis_widgets as cw
        probe = cw.load("digits-cnn")
        x = cw.data.digits_split()[1].images[:2]
        sg = cw.saliency(probe, x, "smoothgrad", n_samples=5, noise=0.2, seed=3)
        ig = cw.saliency(probe, x, "integrated_gradients", steps=7)
        np.savez(sys.argv[1], sg=sg.attributions, sgt=sg.targets, ig=ig.attributions)
    """)
    out = tmp_path / "spread.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=3")
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, timeout=300)
    got = np.load(out)
    x = cw.data.digits_split()[1].images[:2]
    t = jnp.asarray(got["sgt"])

    def grad(images):
        return jax.grad(lambda v: probe.forward(probe.variables, v)[0][jnp.arange(2), t].sum())(images)

    sigma = 0.2 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
    keys = jax.random.split(jax.random.key(3), 5)
    smooth = sum(grad(x + sigma * jax.random.normal(k, x.shape)) for k in keys) / 5
    np.testing.assert_allclose(got["sg"], smooth, atol=1e-5)
    path = sum(grad(a * x) for a in (np.arange(7) + 0.5) / 7) / 7
    np.testing.assert_allclose(got["ig"], x * path, atol=1e-5)


def test_integrated_gradients_are_complete(probe, digits):
    x, labels = digits
    for baseline in (None, 0.5):
        result = saliency(probe, x, "integrated_gradients", labels, steps=256, baseline=baseline)
        base = np.zeros_like(x) if baseline is None else np.full_like(x, baseline)
        gap = class_score(probe, x, labels) - class_score(probe, base, labels)
        total = result.attributions.sum(axis=(1, 2, 3))
        np.testing.assert_allclose(total, gap, rtol=0.01)
        np.testing.assert_allclose(result.maps.sum(axis=(1, 2)), total, rtol=1e-4)


# ------------------------------------------------------------ guided backprop, deconvnet
def test_relu_rules_see_the_score_cotangent():
    x = jnp.array([-1.0, 2.0, 3.0, -4.0])
    w = jnp.array([1.0, -1.0, 2.0, 3.0])  # the score's gradient w.r.t. the ReLU outputs
    guided = jax.grad(lambda x: (w * RELU_RULES["guided"](x)).sum())(x)
    deconv = jax.grad(lambda x: (w * RELU_RULES["deconvnet"](x)).sum())(x)
    np.testing.assert_array_equal(guided, [0.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(deconv, [1.0, 0.0, 2.0, 3.0])
    np.testing.assert_array_equal(RELU_RULES["guided"](x), jax.nn.relu(x))


def test_guided_backprop_and_deconvnet_match_hand_written_masks():
    probe = tiny_probe(TwoLayerReLU(), (4, 4, 1), seed=3)
    x = uniform((5, 4, 4, 1))
    p = {
        k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in probe.variables["params"].items()
    }
    w1, b1, w2, b2, w3 = (
        p["hidden1"]["kernel"],
        p["hidden1"]["bias"],
        p["hidden2"]["kernel"],
        p["hidden2"]["bias"],
        p["out"]["kernel"],
    )
    guided = saliency(probe, x, "guided_backprop", 1)
    deconv = saliency(probe, x, "deconvnet", 1)
    vanilla = saliency(probe, x, "vanilla", 1)
    for n in range(len(x)):
        z1 = x[n].reshape(-1) @ w1 + b1
        z2 = np.maximum(z1, 0) @ w2 + b2
        g2 = w3[:, 1]  # d score / d relu(z2)
        gz2 = g2 * (z2 > 0) * (g2 > 0)
        g1 = w2 @ gz2
        expected_guided = w1 @ (g1 * (z1 > 0) * (g1 > 0))
        d1 = w2 @ np.maximum(g2, 0)
        expected_deconv = w1 @ np.maximum(d1, 0)
        expected_vanilla = w1 @ ((w2 @ (g2 * (z2 > 0))) * (z1 > 0))
        np.testing.assert_allclose(guided.attributions[n].reshape(-1), expected_guided, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(deconv.attributions[n].reshape(-1), expected_deconv, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            vanilla.attributions[n].reshape(-1), expected_vanilla, rtol=1e-4, atol=1e-6
        )
    assert not np.allclose(guided.attributions, vanilla.attributions)  # the masks really bite
    assert not np.allclose(deconv.attributions, vanilla.attributions)
    np.testing.assert_allclose(guided.scores, vanilla.scores)  # forward values unchanged


# ------------------------------------------------------------ class activation maps
def digits_head(probe):
    """conv4 activations (h, w, C) → logits, written out from digits-cnn's parameters."""
    p = probe.variables["params"]

    def head(a):
        h = jax.nn.relu(a.mean(axis=(0, 1)) @ p["fc1_op"]["kernel"] + p["fc1_op"]["bias"])
        return h @ p["logits_op"]["kernel"] + p["logits_op"]["bias"]

    return head


def test_gradcam_equals_einsum_over_layer_activations_and_gradients(probe, digits):
    x, _ = digits
    head = digits_head(probe)
    logits, acts = jitted(probe)(x)
    acts = acts["conv4"]
    np.testing.assert_allclose(jax.vmap(head)(acts), logits, rtol=1e-4, atol=1e-4)
    targets = np.array([3, 7, 2])
    grads = jax.jit(jax.vmap(jax.grad(lambda a, t: head(a)[t])))(acts, jnp.asarray(targets))
    a, g = np.asarray(acts, np.float64), np.asarray(grads, np.float64)

    cam = np.maximum(np.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2))), 0)
    expected = jax.image.resize(cam.astype(np.float32), (3, 32, 32), "bilinear")
    result = saliency(probe, x, "gradcam", targets)
    assert result.layer == "conv4" and result.maps.shape == (3, 32, 32)  # default: the last spatial layer
    np.testing.assert_allclose(result.maps, expected, rtol=1e-4, atol=1e-5 * expected.max())

    g2, g3 = g**2, g**3
    alpha = np.where(g != 0, g2 / (2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3), 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    cam_pp = np.maximum(np.einsum("nhwc,nc->nhw", a, weights), 0)
    expected_pp = jax.image.resize(cam_pp.astype(np.float32), (3, 32, 32), "bilinear")
    result_pp = saliency(probe, x, "gradcam_pp", targets)
    np.testing.assert_allclose(result_pp.maps, expected_pp, rtol=1e-3, atol=1e-5 * expected_pp.max())


def test_scorecam_equals_a_loop_over_masked_images(probe, digits):
    x, labels = digits
    result = saliency(probe, x, "scorecam", labels, layer="conv3", chunk=5)  # 48 channels: uneven chunks
    all_acts = np.asarray(jitted(probe)(x)[1]["conv3"])
    for n in range(len(x)):
        acts = all_acts[n]  # (16, 16, 48)
        up = np.asarray(jax.image.resize(acts, (32, 32, 48), "bilinear"))
        lo, hi = up.min(axis=(0, 1)), up.max(axis=(0, 1))
        masks = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1), 0)  # (32, 32, 48)
        masked = x[n][None] * np.moveaxis(masks, -1, 0)[..., None]  # (48, 32, 32, 1)
        scores = class_score(probe, masked, np.full(48, labels[n]))
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        cam = np.maximum(np.einsum("hwc,c->hw", acts, weights), 0)
        expected = np.asarray(jax.image.resize(cam, (32, 32), "bilinear"))
        np.testing.assert_allclose(result.maps[n], expected, rtol=1e-3, atol=1e-4 * expected.max())


def test_gradcam_looks_into_a_user_model_without_changes():
    class UserNet(nn.Module):  # nothing sown: the Probe captures convs and dense layers
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3), name="c1")(x))
            x = nn.relu(nn.Conv(5, (3, 3), strides=(2, 2), name="c2")(x))
            return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))

    probe = tiny_probe(UserNet(), (8, 8, 3))
    x = uniform((2, 8, 8, 3))
    result = saliency(probe, x, "gradcam", 0, layer="c2")
    p = probe.variables["params"]["head"]
    acts = jitted(probe)(x)[1]["c2"]  # pre-ReLU conv output, as captured
    grads = jax.vmap(jax.grad(lambda a: (jax.nn.relu(a).mean(axis=(0, 1)) @ p["kernel"] + p["bias"])[0]))(
        acts
    )
    cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", acts, grads.mean(axis=(1, 2))))
    np.testing.assert_allclose(
        result.maps, jax.image.resize(cam, (2, 8, 8), "bilinear"), rtol=1e-4, atol=1e-6
    )


# ------------------------------------------------------------ occlusion
def test_occluding_the_strokes_lowers_the_score_more_than_a_blank_corner(probe):
    images = cw.data.digits().images
    x = images[np.flatnonzero(images[:, :8, :8].max(axis=(1, 2, 3)) < 0.05)[:3]]  # blank top-left corners
    result = saliency(probe, x, "occlusion", patch=8, stride=8, fill=0.0)
    predicted = np.asarray(jitted(probe)(x)[0]).argmax(-1)
    np.testing.assert_array_equal(result.targets, predicted)
    centre, corner = result.maps[:, 12:20, 12:20].mean(axis=(1, 2)), result.maps[:, :8, :8].mean(axis=(1, 2))
    assert (centre > corner + 0.5).all(), (centre, corner)
    # non-overlapping patches: each pixel holds exactly the drop of the one patch covering it
    covered = x.copy()
    covered[:, 8:16, 16:24] = 0.0
    drop = class_score(probe, x, predicted) - class_score(probe, covered, predicted)
    np.testing.assert_allclose(
        result.maps[:, 8:16, 16:24], np.broadcast_to(drop[:, None, None], (3, 8, 8)), rtol=1e-4, atol=1e-5
    )
    overlapping = saliency(probe, x, "occlusion", patch=6, stride=4)  # the last patch meets the border
    assert np.isfinite(overlapping.maps).all() and overlapping.maps.shape == (3, 32, 32)


# ------------------------------------------------------------ every method, errors
def test_every_method_gives_finite_maps_at_input_resolution(probe, digits):
    x, labels = digits
    # the options of the other tests, so that this test reuses their compiled functions
    options = {
        "smoothgrad": {"n_samples": 2},
        "integrated_gradients": {"steps": 256},
        "scorecam": {"layer": "conv3", "chunk": 5},
        "occlusion": {"patch": 8, "stride": 8},
    }
    for method in METHODS:
        result = saliency(probe, x, method, labels, normalize=True, **options.get(method, {}))
        assert result.method == method and result.maps.shape == (3, 32, 32), method
        assert np.isfinite(result.maps).all() and result.maps.min() >= 0 and result.maps.max() <= 1, method
        np.testing.assert_array_equal(result.targets, labels)
    assert method_options("gradcam") == ["layer"]


def test_bad_inputs_give_clear_errors(probe, digits):
    x, _ = digits
    with pytest.raises(
        ValueError, match=r"Unknown saliency method 'gradcm'.*'gradcam'.*Valid methods: vanilla, "
    ):
        saliency(probe, x, "gradcm")
    with pytest.raises(
        ValueError, match=r"Class 10 is out of range for digits-cnn with 10 classes \(valid: 0\.\.9\)"
    ):
        saliency(probe, x, "vanilla", 10)
    with pytest.raises(ValueError, match=r"Class -1 is out of range"):
        saliency(probe, x, "vanilla", [1, -1, 2])
    with pytest.raises(ValueError, match=r"3 class targets expected, got 2"):
        saliency(probe, x, "vanilla", [1, 2])
    with pytest.raises(TypeError, match=r"class target must be an integer"):
        saliency(probe, x, "vanilla", 2.5)
    with pytest.raises(ValueError, match=r"Filter 48 is out of range for layer 'conv3' with 48 channels"):
        saliency(probe, x, "vanilla", ("conv3", 48))
    with pytest.raises(ValueError, match=r"Unknown layer 'conv9'.*Valid layers: conv1"):
        saliency(probe, x, "vanilla", ("conv9", 1))
    with pytest.raises(
        ValueError, match=r"Grad-CAM needs a layer with spatial dimensions.*'fc1' has shape \(64,\)"
    ):
        saliency(probe, x, "gradcam", layer="fc1")
    with pytest.raises(ValueError, match=r"target layer 'conv1' comes before it"):
        saliency(probe, x, "gradcam", ("conv1", 0), layer="conv3")
    with pytest.raises(ValueError, match=r"Occlusion patch 40x40 is larger than the 32x32 images"):
        saliency(probe, x, "occlusion", patch=40)
    bad = x.copy()
    bad[0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"Images contain 1 NaN or Inf value"):
        saliency(probe, bad, "smoothgrad")
    with pytest.raises(ValueError, match=r"must have shape \(N, H, W, C\) = \(N, 32, 32, 1\)"):
        saliency(probe, x[0], "vanilla")
    with pytest.raises(
        TypeError, match=r"Method 'vanilla' got unknown option\(s\) n_samples; its options: none"
    ):
        saliency(probe, x, "vanilla", n_samples=4)
    with pytest.raises(ValueError, match=r"n_samples must be a positive integer, got 0"):
        saliency(probe, x, "smoothgrad", n_samples=0)
    with pytest.raises(ValueError, match=r"baseline must be a value, one image \(32, 32, 1\)"):
        saliency(probe, x, "integrated_gradients", baseline=np.zeros((5, 5, 1)))
    with pytest.raises(ValueError, match=r"Unknown class name 'seven'"):
        saliency(probe, x, "vanilla", "seven")


# ------------------------------------------------------------ ImageNet model
@pytest.mark.slow
def test_imagenet_gradcam_and_guided_backprop_on_a_cat():
    probe = cw.load("efficientnet-lite0")
    x = cw.data.fit_to(cw.data.photo("chelsea")[None], probe)
    cam = saliency(probe, x, "gradcam", normalize=True)
    assert cam.layer == "head" and cam.maps.shape == (1, 224, 224)
    assert "cat" in probe.class_names[int(cam.targets[0])].lower()
    guided = saliency(probe, x, "guided_backprop", cam.targets)  # ReLU6 gets the guided rule too
    vanilla = saliency(probe, x, "vanilla", cam.targets)
    assert np.isfinite(guided.maps).all() and not np.allclose(guided.attributions, vanilla.attributions)
    np.testing.assert_allclose(guided.scores, vanilla.scores, rtol=1e-5)
    # the cat's face (upper middle of chelsea) draws more Grad-CAM than the border
    assert cam.maps[0, 40:160, 60:180].mean() > cam.maps[0, -24:].mean()
