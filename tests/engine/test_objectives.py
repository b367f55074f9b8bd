import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnvis_widgets.engine import objectives as O

RNG = np.random.default_rng(0)
CONV = RNG.normal(size=(2, 3, 5, 4)).astype(np.float32)  # B=2, H=3, W=5, C=4
DENSE = RNG.normal(size=(2, 6)).astype(np.float32)
ACTS = {"conv": jnp.asarray(CONV), "fc": jnp.asarray(DENSE)}


def test_definitions_against_numpy():
    np.testing.assert_allclose(O.channel("conv")(ACTS, 2), CONV[..., 2].mean(), rtol=1e-5)
    np.testing.assert_allclose(O.channel("fc")(ACTS, 5), DENSE[:, 5].mean(), rtol=1e-5)
    np.testing.assert_allclose(O.neuron("conv")(ACTS, 1), CONV[:, 1, 2, 1].mean(), rtol=1e-5)
    np.testing.assert_allclose(O.neuron("conv", y=0, x=4)(ACTS, 3), CONV[:, 0, 4, 3].mean(), rtol=1e-5)
    np.testing.assert_allclose(O.class_logit("fc")(ACTS, 4), DENSE[:, 4].mean(), rtol=1e-5)
    v = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    np.testing.assert_allclose(O.direction("conv", v)(ACTS, 0), (CONV @ v).mean(), rtol=1e-5)


def _numpy_diversity(a):
    flat = a.reshape(a.shape[0], -1, a.shape[-1])
    grams = np.stack([f.T @ f for f in flat]).reshape(a.shape[0], -1)
    grams /= np.linalg.norm(grams, axis=1, keepdims=True)
    b = a.shape[0]
    return -np.mean([grams[i] @ grams[j] for i in range(b) for j in range(b) if i != j])


def test_diversity():
    same = jnp.stack([ACTS["conv"][0]] * 3)
    np.testing.assert_allclose(O.diversity("conv")({"conv": same}, 0), -1.0, rtol=1e-5)
    different = RNG.normal(size=(3, 3, 5, 4)).astype(np.float32)
    value = float(O.diversity("conv")({"conv": different}, 0))
    assert value > -1.0 + 1e-3
    np.testing.assert_allclose(value, _numpy_diversity(different), rtol=1e-5)
    with pytest.raises(ValueError, match=r"at least 2 images.*\(1, 3, 5, 4\)"):
        O.diversity("conv")({"conv": ACTS["conv"][:1]}, 0)


def test_arithmetic_and_repr():
    a, b = O.channel("conv"), O.diversity("conv")
    obj = a + 0.1 * b
    assert repr(obj) == "channel('conv') + 0.1 * diversity('conv')"
    assert obj.layers == ("conv",)
    np.testing.assert_allclose(obj(ACTS, 1), a(ACTS, 1) + 0.1 * b(ACTS, 1), rtol=1e-6)
    combo = 2.0 * (a - O.class_logit("fc")) * 3 - -a
    assert combo.layers == ("conv", "fc")
    np.testing.assert_allclose(
        combo(ACTS, 3), 6 * (CONV[..., 3].mean() - DENSE[:, 3].mean()) + CONV[..., 3].mean(), rtol=1e-5
    )
    assert repr(combo) == "3 * 2.0 * (channel('conv') - class_logit('fc')) - -channel('conv')"
    assert repr(a - (a + b)) == "channel('conv') - (channel('conv') + diversity('conv'))"
    assert repr(sum([a, b])) == "channel('conv') + diversity('conv')"
    with pytest.raises(TypeError, match="scalars only"):
        a * a


def test_jit_and_vmap_over_unit():
    obj = O.channel("conv") + O.neuron("conv") - 0.5 * O.channel("fc")
    values = jax.jit(jax.vmap(obj, in_axes=(None, 0)))(ACTS, jnp.arange(4, dtype=jnp.int32))
    expected = [CONV[..., u].mean() + CONV[:, 1, 2, u].mean() - 0.5 * DENSE[:, u].mean() for u in range(4)]
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    grad = jax.grad(lambda acts: obj(acts, jnp.int32(1)))(ACTS)
    np.testing.assert_allclose(grad["conv"][..., 0], 0.0)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"'fc' has activations of shape \(2, 6\); expected \(B, H, W, C\)"):
        O.neuron("fc")(ACTS, 0)
    with pytest.raises(
        ValueError, match=r"'conv' has activations of shape \(2, 3, 5, 4\); expected \(B, C\)"
    ):
        O.class_logit("conv")(ACTS, 0)
    with pytest.raises(ValueError, match="outside the layer"):
        O.neuron("conv", y=3, x=0)(ACTS, 0)
    with pytest.raises(ValueError, match="layer has 4 channels, the vector has 3"):
        O.direction("conv", [1.0, 2.0, 3.0])(ACTS, 0)
    with pytest.raises(KeyError, match=r"No activations for layer 'nope'; got layers \['conv', 'fc'\]"):
        O.channel("nope")(ACTS, 0)
