"""Sanity checks (Adebayo et al. 2018) on digits-cnn, and the regularizer ablation."""

import jax
import numpy as np
import pytest
from flax import nnx

import cnnvis_widgets as cw
from cnnvis_widgets.compile_cache import programs_lowered
from cnnvis_widgets.engine import ascent, regularizers, sanity


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


def test_parameter_groups_in_forward_order(probe):
    labels = [label for label, _ in sanity.parameter_groups(probe)]
    assert labels == ["conv1_op", "conv2_op", "conv3_op", "conv4_op", "fc1_op", "logits_op"]


def test_parameter_groups_of_an_nnx_model_skip_batch_statistics():
    from tests.models.test_probe import NnxNet

    model = NnxNet(nnx.Rngs(0))
    model.eval()
    p = cw.Probe(model, input_shape=(16, 16, 3))
    groups = dict(sanity.parameter_groups(p))
    assert list(groups) == ["conv_a", "bn", "conv_b", "head"]
    assert len(groups["bn"]) == 2  # scale and bias, not the running mean and variance


def test_randomize_redraws_only_the_chosen_leaves(probe):
    groups = dict(sanity.parameter_groups(probe))
    new = sanity.randomize(probe.variables, groups["conv4_op"], jax.random.key(0))
    old_k, new_k = probe.variables["params"]["conv4_op"]["kernel"], new["params"]["conv4_op"]["kernel"]
    assert not np.allclose(old_k, new_k)
    assert abs(float(new_k.std()) - float(old_k.std())) < 0.1 * float(old_k.std())
    np.testing.assert_array_equal(
        new["params"]["conv3_op"]["kernel"], probe.variables["params"]["conv3_op"]["kernel"]
    )


@pytest.mark.slow
def test_cascade_vanilla_and_gradcam_depend_on_the_weights(probe):
    images = cw.data.digits_split()[1].images[:16]
    result = sanity.randomization_cascade(probe, images, ("vanilla", "guided_backprop", "gradcam"))
    assert result.steps[0] == "trained" and result.steps[1] == "logits_op" and len(result.steps) == 7
    rho = result.spearman.mean(axis=2)  # (steps, methods)
    np.testing.assert_allclose(rho[0], 1.0, atol=1e-5)
    figures = {m: [round(float(v), 3) for v in rho[:, i]] for i, m in enumerate(result.methods)}
    print("Spearman vs trained, per cascade step:", figures)
    print("SSIM after all layers:", dict(zip(result.methods, np.round(result.ssim.mean(axis=2)[-1], 3))))
    vanilla, guided, gradcam = rho[-1]
    assert vanilla < 0.5 and gradcam < 0.5
    # Guided backprop: reported, not asserted either way (the paper found it barely changes
    # for the top layers; here it stays high while only the dense layers are randomized).
    print(f"guided backprop: {rho[1, 1]:.3f} after the logits layer, {guided:.3f} after all layers")


def test_regularizer_ablation_compiles_once_and_each_regularizer_matters(probe):
    regs = (regularizers.l2_decay(0.01), regularizers.total_variation(20.0))
    ascent.visualize_filters(probe, "conv2", [1, 2], steps=16, regularizers=regs)  # compile
    lowered = programs_lowered()
    out = sanity.regularizer_ablation(probe, "conv2", [1, 2], regularizers_=regs, steps=16)
    assert list(out) == ["all", "no l2_decay", "no total_variation"]
    assert programs_lowered() == lowered
    tv = lambda r: float(np.abs(np.diff(r.images, axis=1)).mean() + np.abs(np.diff(r.images, axis=2)).mean())
    assert tv(out["no total_variation"]) > tv(out["all"])
