"""Tests for the EfficientNet-Lite0 port: real-photo predictions, layer names, conversion."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import lax
from skimage import data, transform

from cnnvis_widgets.models import efficientnet_lite as eff
from cnnvis_widgets.models.torch_reader import read_state_dict


def square_224(image: np.ndarray) -> np.ndarray:
    """Center-crop to a square, resize to 224x224, float32 in [0, 1]."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = image[y : y + s, x : x + s]
    return transform.resize(crop, (224, 224), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([square_224(data.chelsea()), square_224(data.coffee())])


@pytest.fixture(scope="module")
def state_dict():
    return read_state_dict(eff.weights_path())


@pytest.fixture(scope="module")
def probabilities(photos):
    logits = eff.predict_logits(eff.EfficientNetLite0(), eff.load_variables(), eff.PREPROCESS(photos))
    return np.asarray(jax.nn.softmax(logits))


def top(probs: np.ndarray, k: int) -> list[str]:
    names = eff.class_names()
    return [names[i] for i in np.argsort(-probs)[:k]]


@pytest.mark.slow
def test_chelsea_is_a_cat(probabilities):
    assert set(top(probabilities[0], 3)) == {"Egyptian cat", "tiger cat", "tabby"}


@pytest.mark.slow
def test_coffee_is_espresso(probabilities):
    assert top(probabilities[1], 1) == ["espresso"]
    assert 0.85 < probabilities[1].max() < 0.99


def sown_in_order(module, variables, shape) -> dict:
    """Sown intermediates' shapes, in sow order.

    Recorded while tracing: dicts leaving a JAX transform come back with sorted keys.
    """
    order = []

    def forward(v, x):
        _, state = module.apply(v, x, mutable=["intermediates"])
        order.extend(state["intermediates"])
        return state["intermediates"]

    inter = jax.eval_shape(forward, variables, jax.ShapeDtypeStruct(shape, np.float32))
    return {k: inter[k] for k in order}


def test_sown_layers_in_forward_order():
    inter = sown_in_order(eff.EfficientNetLite0(), eff.load_variables(), (2, *eff.INPUT_SHAPE))
    expected = ["stem"]
    for i, spec in enumerate(eff.EFFICIENTNET_LITE0_BLOCKS):
        expected += [f"block{i}.expand"] * (spec.expand != 1)
        expected += [f"block{i}.depthwise", f"block{i}.project", f"block{i}"]
    expected += ["head", "pool", "logits"]
    assert list(inter) == expected
    assert len(eff.EFFICIENTNET_LITE0_BLOCKS) == 16
    assert all(len(v) == 1 for v in inter.values())
    assert inter["stem"][0].shape == (2, 112, 112, 32)
    assert inter["block15"][0].shape == (2, 7, 7, 320)
    assert inter["head"][0].shape == (2, 7, 7, 1280)
    assert inter["pool"][0].shape == (2, 1280)
    assert inter["logits"][0].shape == (2, 1000)


def test_stem_uses_tf_same_padding_and_bn_eps_1e_3(state_dict):
    """The stem matches an independent OIHW conv with TF 'SAME' padding (0 before, 1 after).

    Photo top-k barely moves with symmetric padding, so this pins the convention.
    """
    x = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    module = eff.EfficientNetLite0()
    stem = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"])[1]["intermediates"]["stem"][0])
    got = np.asarray(stem(eff.load_variables(), x))  # jit prunes everything after the stem
    y = lax.conv_general_dilated(
        x,
        state_dict["_conv_stem.weight"],
        (2, 2),
        ((0, 1), (0, 1)),
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
    )
    bn = {k: state_dict[f"_bn0.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    y = (y - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-3) * bn["weight"] + bn["bias"]
    np.testing.assert_allclose(got, np.clip(y, 0, 6), rtol=1e-4, atol=1e-4)


def test_conversion_maps_every_key(state_dict):
    variables = eff.convert_state_dict(state_dict)
    n_params = sum(v.size for v in jax.tree_util.tree_leaves(variables))
    assert n_params == 4_694_024  # every float tensor in the file; only BN counters dropped
    np.testing.assert_array_equal(
        variables["params"]["blocks_1"]["depthwise_conv"]["conv"]["kernel"][:, :, 0, 5],
        state_dict["_blocks.1._depthwise_conv.weight"][5, 0],
    )
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state_dict["_fc.weight"].T)
    np.testing.assert_array_equal(
        variables["batch_stats"]["conv_head"]["bn"]["var"], state_dict["_bn1.running_var"]
    )


def test_conversion_reports_missing_key(state_dict):
    broken = {k: v for k, v in state_dict.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(
        eff.WeightsConversionError, match=r"missing keys: \['_blocks\.3\._bn1\.running_var'\]"
    ):
        eff.convert_state_dict(broken)


def test_conversion_reports_wrong_shape(state_dict):
    broken = dict(state_dict)
    broken["_conv_head.weight"] = np.zeros((1280, 321, 1, 1), np.float32)
    with pytest.raises(
        eff.WeightsConversionError,
        match=r"_conv_head\.weight \(1280, 321, 1, 1\).*expected \(1, 1, 320, 1280\)",
    ):
        eff.convert_state_dict(broken)


def test_conversion_reports_unexpected_key(state_dict):
    broken = dict(state_dict, **{"_extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(eff.WeightsConversionError, match=r"unexpected keys: \['_extra\.weight'\]"):
        eff.convert_state_dict(broken)


def test_class_names_are_readable_and_unique():
    names = eff.class_names()
    assert len(names) == len(set(names)) == 1000
    assert (names[281], names[282], names[285], names[967]) == (
        "tabby",
        "tiger cat",
        "Egyptian cat",
        "espresso",
    )


def test_preprocess_maps_unit_range_to_about_plus_minus_one():
    np.testing.assert_allclose(eff.PREPROCESS(np.array([0.0, 1.0])), [-127 / 128, 1.0])


def test_folded_batchnorm_is_the_same_network(photos):
    """The zoo's variant (batch norm folded into the convs) against the torch-converted one."""
    variables = eff.load_variables()
    want = eff.predict_logits(eff.EfficientNetLite0(), variables, eff.PREPROCESS(photos))
    module = eff.EfficientNetLite0(folded_bn=True)
    folded = eff.fold_batchnorm(variables, module.bn_eps)
    assert "batch_stats" not in folded and "bias" in folded["params"]["conv_stem"]["conv"]
    got = eff.predict_logits(module, folded, eff.PREPROCESS(photos))
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()))
    # by hand for the stem: kernel * gamma / sqrt(var + eps), bias beta - mean * that scale
    bn, stats = variables["params"]["conv_stem"]["bn"], variables["batch_stats"]["conv_stem"]["bn"]
    scale = np.asarray(bn["scale"]) / np.sqrt(np.asarray(stats["var"]) + 1e-3)
    np.testing.assert_allclose(
        folded["params"]["conv_stem"]["conv"]["kernel"],
        np.asarray(variables["params"]["conv_stem"]["conv"]["kernel"]) * scale,
        rtol=1e-6,
    )
