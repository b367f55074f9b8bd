"""Concept relevance (CRP): channel relevances against a hand-written float64 LRP of digits-cnn, the
conditional heatmaps of all channels against the unconditioned map, one heatmap against plain
autodiff, decomposition's conservation, and relevance maximization against per-image results
(Achtibat et al. 2023)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnvis_widgets as cw
from tests.jaxpr.test_lrp import _hand_lrp


@pytest.fixture(scope="module")
def digits():
    data = cw.data.digits()
    return cw.load("digits-cnn"), data.images[:24], data.labels[:24]


@pytest.mark.parametrize(
    "composite, conv_rule, first_rule, eps",
    [("epsilon", "epsilon", "epsilon", 0.01), ("epsilon-plus-flat", "zplus", "flat", 1e-6)],
)
def test_channel_relevances_equal_a_hand_written_lrp_at_the_layer(
    digits, composite, conv_rule, first_rule, eps
):
    probe, images, labels = digits
    params = jax.tree_util.tree_map(np.asarray, probe.variables["params"])
    at = {}
    _, logit = _hand_lrp(params, images[0], labels[0], conv_rule, first_rule, eps, at)
    for layer in ("conv3", "conv4"):
        result = cw.concepts(probe, images[0], labels[0], layer, composite=composite, epsilon=eps, top_k=3)
        expected = at[layer].sum(axis=(0, 1))  # (C,)
        assert result.score == pytest.approx(logit, rel=1e-5) and result.target == labels[0]
        np.testing.assert_allclose(result.relevance, expected, atol=1e-5 * np.abs(expected).max())
        assert result.total == pytest.approx(expected.sum(), rel=1e-4)
        # the top channels are the most relevant ones, most relevant first
        np.testing.assert_array_equal(result.channels, np.argsort(-expected, kind="stable")[:3])
        np.testing.assert_allclose(
            result.layer_maps,
            np.moveaxis(at[layer][..., result.channels], -1, 0),
            atol=1e-5 * np.abs(at[layer]).max(),
        )


@pytest.mark.parametrize(
    "method, saliency_method, options",
    [("lrp", "lrp", {"composite": "epsilon-gamma-flat"}), ("lrp", "lrp", {"composite": "epsilon-plus-flat"}),
     ("grad_x_act", "grad_x_input", {})],
)  # fmt: skip
def test_conditional_heatmaps_of_all_channels_sum_to_the_unconditioned_map(
    digits, method, saliency_method, options
):
    # digits-cnn is a chain: all of the target's relevance passes through conv3
    probe, images, labels = digits
    result = cw.concepts(probe, images[1], labels[1], "conv3", top_k=48, method=method, **options)
    assert sorted(result.channels.tolist()) == list(range(48)) and result.heatmaps.shape == (48, 32, 32)
    whole = cw.saliency(probe, images[1:2], saliency_method, labels[1], **options).maps[0]
    np.testing.assert_allclose(result.heatmaps.sum(0), whole, atol=1e-5 * np.abs(whole).max())
    assert np.abs(result.heatmaps).max(axis=(1, 2)).min() >= 0  # maps of channels, not all zero
    assert np.count_nonzero(np.abs(result.heatmaps).max(axis=(1, 2))) > 10


def test_a_grad_x_act_heatmap_is_the_gradient_of_the_channels_share_by_plain_autodiff(digits):
    probe, images, labels = digits
    result = cw.concepts(probe, images[2], labels[2], "conv4", channels=[5, 17], method="grad_x_act")
    x = jnp.asarray(images[2:3])
    acts = probe.forward(probe.variables, x)[1]["conv4"]

    def head(a):  # digits-cnn after conv4 (models/digits.py): global mean pool, fc1, ReLU, logits
        p = probe.variables["params"]
        h = jax.nn.relu(a.mean(axis=(1, 2)) @ p["fc1_op"]["kernel"] + p["fc1_op"]["bias"])
        return (h @ p["logits_op"]["kernel"] + p["logits_op"]["bias"])[0, labels[2]]

    assert float(head(acts)) == pytest.approx(result.score, rel=1e-5)
    cot = jax.grad(head)(acts)  # the cotangent at conv4, by plain autodiff of the cut-off head
    for i, c in enumerate((5, 17)):
        share = lambda x: (probe.forward(probe.variables, x)[1]["conv4"][..., c] * cot[..., c]).sum()
        expected = (jax.grad(share)(x) * x)[0].sum(-1)
        np.testing.assert_allclose(result.heatmaps[i], expected, atol=1e-5 * np.abs(expected).max())
        assert result.relevance[c] == pytest.approx(float((acts * cot)[..., c].sum()), rel=1e-4, abs=1e-6)


def test_decompose_splits_a_channels_relevance_into_the_layer_below(digits):
    probe, images, labels = digits
    zplus = {"composite": "epsilon-plus-flat"}
    top = cw.concepts(probe, images[3], labels[3], "conv3", top_k=1, **zplus)
    channel = int(top.channels[0])
    parts = cw.decompose(probe, images[3], "conv3", channel, target=labels[3], top_k=4, **zplus)
    assert parts.layer == "conv2" and parts.within == ("conv3", channel)  # pool1 between: skipped
    # z⁺ ignores biases and max-pool passes relevance whole: the parts sum to the channel's relevance
    assert parts.total == pytest.approx(float(top.relevance[channel]), rel=1e-4)
    assert parts.score == pytest.approx(top.score) and np.all(parts.relevance >= -1e-7)
    # and its heatmaps are the channel's own conditional heatmap, split
    own = cw.concepts(probe, images[3], labels[3], "conv3", channels=[channel], **zplus).heatmaps[0]
    every = cw.decompose(probe, images[3], "conv3", channel, target=labels[3], top_k=32, **zplus)
    np.testing.assert_allclose(every.heatmaps.sum(0), own, atol=1e-5 * np.abs(own).max())
    assert cw.engine.concepts.lower_layer(probe, "conv4") == "conv3"


@pytest.mark.parametrize("by", ["relevance", "activation"])
def test_concept_examples_rank_images_by_the_channels_peak(digits, by):
    probe, images, labels = digits
    ex = cw.concept_examples(probe, images, "conv3", 7, labels, k=4, by=by, batch_size=10)
    if by == "relevance":
        peaks = [
            cw.concepts(probe, img, int(t), "conv3", channels=[7]).layer_maps[0]
            for img, t in zip(images, labels)
        ]
    else:
        peaks = [cw.feature_maps(probe, img, "conv3")[..., 7] for img in images]
    best = np.array([p.max() for p in peaks])
    np.testing.assert_array_equal(ex.indices, np.argsort(-best, kind="stable")[:4])
    np.testing.assert_allclose(ex.values, best[ex.indices], rtol=1e-4, atol=1e-7)
    for i, pos in zip(ex.indices, ex.positions):
        assert peaks[i][tuple(pos)] == pytest.approx(best[i], rel=1e-4, abs=1e-7)
    size = probe.layer("conv3").receptive_field
    assert ex.patches.shape == (4, size, size, 1)
    both = cw.concept_examples(probe, images, "conv3", [7, 3], labels, k=4, by=by, batch_size=10)
    assert [e.channel for e in both] == [7, 3]  # one pass for several channels: the same for each
    np.testing.assert_array_equal(both[0].indices, ex.indices)
    np.testing.assert_array_equal(
        both[1].indices, cw.concept_examples(probe, images, "conv3", 3, labels, k=4, by=by).indices
    )
    y0, x0, _ = cw.engine.activations.receptive_box(probe, "conv3", ex.positions[0])
    img = images[ex.indices[0]]
    inside = ex.patches[0][
        max(-y0, 0) : size - max(y0 + size - 32, 0), max(-x0, 0) : size - max(x0 + size - 32, 0)
    ]
    np.testing.assert_allclose(
        inside, img[max(y0, 0) : y0 + size, max(x0, 0) : x0 + size] / (255 if img.max() > 1 else 1)
    )


def test_bad_input_gets_clear_errors(digits):
    probe, images, _ = digits
    with pytest.raises(ValueError, match="Unknown concept relevance method 'lpr'.*Did you mean 'lrp'"):
        cw.concepts(probe, images[0], method="lpr")
    with pytest.raises(ValueError, match="one image.*shape \\(2, 32, 32, 1\\)"):
        cw.concepts(probe, images[:2])
    with pytest.raises(ValueError, match="must name a layer above 'conv4'"):
        cw.concepts(probe, images[0], layer="conv4", within=("conv3", 1))
    with pytest.raises(ValueError, match="within is \\(higher_layer, channel\\)"):
        cw.concepts(probe, images[0], layer="conv2", within="conv3")
    with pytest.raises(ValueError, match="first layer"):
        cw.decompose(probe, images[0], "conv1", 0)
    with pytest.raises(ValueError, match="top_k"):
        cw.concepts(probe, images[0], top_k=0)
    with pytest.raises(ValueError, match="Unknown LRP composite"):
        cw.concepts(probe, images[0], composite="plus")
    with pytest.raises(ValueError, match="k=30 is out of range"):
        cw.concept_examples(probe, images, "conv3", 0, k=30)
    with pytest.raises(ValueError, match="Unknown by"):
        cw.concept_examples(probe, images, "conv3", 0, by="gradient")
    with pytest.raises(ValueError, match="conv3"):
        cw.concepts(probe, images[0], layer="conv3", channels=[48])
