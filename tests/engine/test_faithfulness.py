"""Faithfulness (deletion / insertion, Petsiuk et al. 2018): the definitions by hand on a linear model whose
ideal pixel order is known, the ideal order beating others, digits-cnn end to end, clear errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from scipy.ndimage import gaussian_filter

import cnnvis_widgets as cw
from cnnvis_widgets.engine import faithfulness as fa


class Linear(nn.Module):
    """Two class logits, each a weighted sum of the pixels (plus a bias)."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="out")(x.reshape((x.shape[0], -1)))


SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def linear():
    """A probe whose class-0 logit is w . x + 0.3 and class-1 logit is 0: p(0) = sigmoid(w . x + 0.3)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1.0, 16).astype(np.float32)
    kernel = np.stack([w, np.zeros(16, np.float32)], axis=1)
    variables = {"params": {"out": {"kernel": kernel, "bias": np.array([0.3, 0.0], np.float32)}}}
    return cw.Probe(Linear(), variables, input_shape=SHAPE), w


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0.0, 1.0, (3, *SHAPE)).astype(np.float32)


def probability_of_class0(w, images):
    """p(class 0) of the linear probe, in NumPy."""
    logit = images.reshape(len(images), -1) @ w + 0.3
    return 1 / (1 + np.exp(-logit))


def hand_curve(w, image, m, substrate, steps, inserting):
    """A curve by hand: pixels in the order of -m (stable), k*16//steps of them taken from ``substrate``
    (deletion) or put back into ``substrate`` from the image (insertion)."""
    order = np.argsort(-m.ravel(), kind="stable")
    out = []
    for k in range(steps + 1):
        chosen = np.zeros(16, bool)
        chosen[order[: k * 16 // steps]] = True
        chosen = chosen.reshape(SHAPE)
        out.append(np.where(chosen, image, substrate) if inserting else np.where(chosen, substrate, image))
    return probability_of_class0(w, np.stack(out))


# ------------------------------------------------------------ definitions
def test_pixel_order_is_most_relevant_first_with_ties_in_raster_order():
    m = np.array([[[-0.0, 2.0], [0.0, 2.0]]], np.float32)  # ties: 2.0 twice, -0.0 and 0.0
    np.testing.assert_array_equal(fa.pixel_order(m), [[1, 3, 0, 2]])
    np.testing.assert_array_equal(fa.pixel_ranks(m), [[[2, 0], [3, 1]]])
    np.testing.assert_array_equal(fa.step_counts(16, 4), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(fa.step_counts(10, 4), [0, 2, 5, 7, 10])


def test_area_under_curve_is_the_trapezoid_rule():
    fractions = np.array([0.0, 0.25, 0.5, 1.0])
    curve = np.array([1.0, 0.5, 0.5, 0.0])
    # 0.25 * (1 + 0.5) / 2 + 0.25 * (0.5 + 0.5) / 2 + 0.5 * (0.5 + 0) / 2
    assert fa.area_under_curve(curve, fractions) == pytest.approx(0.1875 + 0.125 + 0.125)
    assert fa.area_under_curve(np.ones(5), np.linspace(0, 1, 5)) == pytest.approx(1.0)


def test_curves_reproduce_a_hand_computation(linear, images):
    probe, w = linear
    m = np.random.default_rng(2).normal(size=(3, 4, 4)).astype(np.float32)
    curves = cw.curves_of_maps(
        probe, images, m, 0, steps=4, deletion_baseline=0.2, insertion_baseline=0.7, chunk=3
    )
    np.testing.assert_allclose(curves.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    for i in range(3):
        deleted = hand_curve(w, images[i], m[i], 0.2, 4, inserting=False)
        inserted = hand_curve(w, images[i], m[i], 0.7, 4, inserting=True)
        np.testing.assert_allclose(curves.deletion[i], deleted, rtol=1e-5)
        np.testing.assert_allclose(curves.insertion[i], inserted, rtol=1e-5)
        assert curves.deletion_auc[i] == pytest.approx(np.trapezoid(deleted, curves.fractions), rel=1e-5)
        assert curves.insertion_auc[i] == pytest.approx(np.trapezoid(inserted, curves.fractions), rel=1e-5)
    # the curves' ends are the image and the baseline, whatever the order
    np.testing.assert_allclose(curves.deletion[:, 0], probability_of_class0(w, images), rtol=1e-5)
    at_baseline = probability_of_class0(w, np.full((3, *SHAPE), 0.2))
    np.testing.assert_allclose(curves.deletion[:, -1], at_baseline, rtol=1e-5)
    # the sequences of images themselves
    seq = np.asarray(fa.deletion_images(jnp.asarray(images), m, 0.2, fa.step_counts(16, 4)))
    assert seq.shape == (5, 3, *SHAPE)
    np.testing.assert_array_equal(seq[0], images)
    np.testing.assert_allclose(seq[-1], 0.2)
    assert [(s[1] == np.float32(0.2)).sum() for s in seq] == [0, 4, 8, 12, 16]


def test_insertion_starts_from_the_blurred_image(linear, images):
    probe, w = linear
    m = np.random.default_rng(3).normal(size=(3, 4, 4)).astype(np.float32)
    curves = cw.curves_of_maps(probe, images, m, 0, steps=4, blur_sigma=1.0)
    # scipy's Gaussian (truncated at 3 sigma, half-sample symmetric borders): independent of regularizers.blur
    blurred = np.stack([gaussian_filter(im, sigma=(1, 1, 0), mode="reflect", truncate=3.0) for im in images])
    for i in range(3):
        inserted = hand_curve(w, images[i], m[i], blurred[i], 4, inserting=True)
        np.testing.assert_allclose(curves.insertion[i], inserted, rtol=1e-4)
    black = probability_of_class0(w, np.zeros((3, *SHAPE)))
    np.testing.assert_allclose(curves.deletion[:, -1], black, rtol=1e-5)


def test_the_ideal_order_beats_a_random_order_and_its_reverse(linear, images):
    """Deleting (inserting) pixels by w * x, largest first, lowers (raises) the class-0 logit the most
    at every step, so its curve is the lowest (highest) and so is its area."""
    probe, w = linear
    ideal = images[..., 0] * w.reshape(4, 4)
    rng = np.random.default_rng(4)
    randoms = [rng.normal(size=ideal.shape).astype(np.float32) for _ in range(5)]
    run = lambda m: cw.curves_of_maps(probe, images, m, 0, steps=16, insertion_baseline=0.0)
    best = run(ideal)
    for other in [-ideal, *randoms]:
        curves = run(other)
        assert np.all(best.deletion <= curves.deletion + 1e-6)
        assert np.all(best.insertion >= curves.insertion - 1e-6)
        assert np.all(best.deletion_auc < curves.deletion_auc)
        assert np.all(best.insertion_auc > curves.insertion_auc)
    # gradient x input of a linear model is w * x: faithfulness ranks it first, with the ideal areas
    result = cw.faithfulness(probe, images, ["vanilla", "grad_x_input"], 0, steps=16, insertion_baseline=0.0)
    assert result.ranking == ("grad_x_input", "vanilla")
    np.testing.assert_allclose(result.deletion_auc[1], best.deletion_auc, rtol=1e-5)
    np.testing.assert_allclose(result.insertion_auc[1], best.insertion_auc, rtol=1e-5)
    np.testing.assert_array_equal(result.targets, [0, 0, 0])


def test_a_callback_sees_each_method_and_can_stop(linear, images):
    probe, _ = linear
    seen = []
    result = cw.faithfulness(
        probe, images, ["vanilla", "grad_x_input", "smoothgrad"], 0, steps=4,
        callback=lambda done, total, method: seen.append((done, total, method)) or done == 2,
    )  # fmt: skip
    assert seen == [(1, 3, "vanilla"), (2, 3, "grad_x_input")]
    assert result.methods == ("vanilla", "grad_x_input") and result.deletion_auc.shape == (2, 3)
    assert sorted(result.ranking) == ["grad_x_input", "vanilla"]


def test_methods_default_to_those_the_model_allows(linear):
    probe, _ = linear
    assert not set(fa.applicable_methods(probe)) & {"gradcam", "gradcam_pp", "scorecam"}
    assert fa.applicable_methods(cw.load("digits-cnn")) == tuple(cw.SALIENCY_METHODS)


# ------------------------------------------------------------ digits-cnn
def test_digits_cnn_ranks_the_methods_and_gradient_x_input_beats_a_random_map():
    probe = cw.load("digits-cnn")
    data = cw.data.digits()
    x = data.images[:3]
    methods = ["vanilla", "grad_x_input", "integrated_gradients", "gradcam", "occlusion"]
    result = cw.faithfulness(probe, x, methods, steps=16)
    assert isinstance(result, cw.FaithfulnessResult) and result.methods == tuple(methods)
    assert result.deletion.shape == result.insertion.shape == (5, 3, 17)
    assert result.deletion_auc.shape == result.insertion_auc.shape == (5, 3)
    assert np.all((0 <= result.deletion_auc) & (result.deletion_auc <= 1))
    assert np.all((0 <= result.insertion_auc) & (result.insertion_auc <= 1))
    assert sorted(result.ranking) == sorted(methods)
    mean_score = result.score.mean(axis=1)
    assert [methods.index(m) for m in result.ranking] == list(np.argsort(-mean_score, kind="stable"))
    predicted = np.asarray(probe.logits(probe.variables, x)).argmax(1)
    np.testing.assert_array_equal(result.targets, predicted)
    probs = np.asarray(probe.probabilities(probe.variables, x))[np.arange(3), predicted]
    clean = np.broadcast_to(probs, (5, 3))
    np.testing.assert_allclose(result.deletion[:, :, 0], clean, rtol=1e-5)  # nothing deleted yet
    np.testing.assert_allclose(result.insertion[:, :, -1], clean, rtol=1e-5)  # every pixel back

    rng = np.random.default_rng(0)
    random_auc = np.mean(
        [
            cw.curves_of_maps(probe, x, rng.uniform(size=(3, 32, 32)), predicted, steps=16).deletion_auc
            for _ in range(3)
        ],
        axis=0,
    )
    for method in ("grad_x_input", "integrated_gradients"):
        assert np.all(result.deletion_auc[methods.index(method)] < random_auc), (method, random_auc)


# ------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"steps": 17}, ValueError, r"steps must be at most 16 \(fractions of the 4x4"),
        ({"deletion_baseline": 1.5}, ValueError, r"deletion_baseline must be a value in \[0, 1\]"),
        ({"insertion_baseline": "blurred"}, ValueError, "Did you mean 'blur'"),
        ({"blur_sigma": -1.0}, ValueError, "blur_sigma must be a positive"),
        ({"methods": ["vanila"]}, ValueError, "Did you mean 'vanilla'.*Valid methods"),
        ({"methods": []}, ValueError, "methods is empty"),
        ({"methods": ["vanilla", "vanilla"]}, ValueError, "twice"),
        ({"methods": ["gradcam"]}, ValueError, "spatial"),
        ({"target": 2}, ValueError, r"Class 2 is out of range .*valid: 0..1"),
        ({"target": ("out", 0)}, ValueError, "layer unit"),
        ({"options": {"smoothgrad": {"samples": 3}}}, TypeError, "n_samples"),
    ],
)
def test_bad_arguments_say_what_is_valid(linear, images, kwargs, error, match):
    probe, _ = linear
    kwargs = {"methods": ["vanilla"], **kwargs}
    with pytest.raises(error, match=match):
        cw.faithfulness(probe, images, **kwargs)


def test_bad_maps_or_classes_say_what_is_valid(linear, images):
    probe, _ = linear
    default = cw.curves_of_maps(probe, images, np.zeros((3, 4, 4)))
    assert len(default.fractions) == 17  # the default 32 steps, cut to the 16 pixels
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\); got shape \(3, 4\)"):
        cw.curves_of_maps(probe, images, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        cw.curves_of_maps(probe, images, np.full((3, 4, 4), np.nan))
    with pytest.raises(ValueError, match=r"each in 0..1"):
        cw.curves_of_maps(probe, images, np.zeros((3, 4, 4)), 5)
    with pytest.raises(TypeError, match="class indices"):
        cw.curves_of_maps(probe, images, np.zeros((3, 4, 4)), 0.5)


def test_a_batch_too_large_for_memory_is_refused_before_any_curve():
    probe = cw.load("digits-cnn")
    per_image = 2 * 4 * sum(int(np.prod(layer.shape)) for layer in probe.layers) * (512 * 512) // (32 * 32)
    n = cw.engine.saliency.BATCH_BUDGET // per_image + 1  # one more than saliency takes at once
    with pytest.raises(ValueError, match=rf"{n} images of 512x512 .* pass at most {n - 1} at a time"):
        cw.curves_of_maps(probe, np.zeros((n, 512, 512, 1), np.uint8), np.zeros((n, 512, 512), np.float32))
