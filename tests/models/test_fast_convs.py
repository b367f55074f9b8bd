"""The Probe's fast convolution forms compute the same function and gradients as XLA's convolutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import cnnvis_widgets as cw
from cnnvis_widgets.engine.gradient_rules import with_gradient_rules
from cnnvis_widgets.models.fast_convs import count_fast_convolutions, fast_convolutions

CASES = [
    # (h, w, kernel, stride, dilation, padding, groups, swapped)
    (8, 8, 3, 1, 1, "SAME", 6, True),  # depthwise
    (9, 7, 3, 2, 1, "SAME", 6, True),  # odd sizes, stride 2 (TF-style asymmetric padding)
    (16, 16, 5, 2, 1, "SAME", 6, True),
    (11, 12, 3, 2, 2, ((1, 2), (0, 1)), 6, True),  # dilated, uneven explicit padding
    (7, 7, 3, 2, 1, "VALID", 6, True),
    (8, 8, 1, 1, 1, "VALID", 1, True),  # pointwise
    (8, 8, 1, 2, 1, "VALID", 1, False),  # strided 1x1: left to XLA
    (8, 8, 3, 1, 1, "SAME", 1, False),  # dense 3x3: left to XLA
    (8, 8, 3, 1, 1, "SAME", 2, False),  # grouped, not depthwise
]


@pytest.mark.parametrize("h,w,k,s,d,pad,groups,swapped", CASES)
def test_same_values_and_gradients_as_lax_conv(h, w, k, s, d, pad, groups, swapped):
    rng = np.random.default_rng(k * 100 + s * 10 + d)
    x = jnp.asarray(rng.normal(size=(2, h, w, 6)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 6 // groups, 6)), jnp.float32)

    def ref(x, kernel):
        y = lax.conv_general_dilated(
            x, kernel, (s, s), pad, rhs_dilation=(d, d), dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )  # fmt: skip
        return jnp.tanh(y)

    assert count_fast_convolutions(ref, x, kernel) == (int(swapped), 1)
    y = ref(x, kernel)
    cot = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    want = jax.vjp(ref, x, kernel)[1](cot)
    # alone, and inside the engine's gradient rules (which re-trace the fast form)
    for fast in (fast_convolutions(ref), with_gradient_rules(fast_convolutions(ref))):
        np.testing.assert_allclose(jax.jit(fast)(x, kernel), y, atol=1e-5)
        got = jax.jit(lambda x, kernel, cot: jax.vjp(fast, x, kernel)[1](cot))(x, kernel, cot)
        np.testing.assert_allclose(got[0], want[0], atol=2e-5)
        np.testing.assert_allclose(got[1], want[1], atol=2e-5)


def test_only_float32_convolutions_are_swapped():
    x = jnp.ones((1, 8, 8, 6), jnp.bfloat16)
    depthwise = lambda x, k: lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6
    )
    assert count_fast_convolutions(depthwise, x, jnp.ones((3, 3, 1, 6), jnp.bfloat16)) == (0, 1)
    assert count_fast_convolutions(depthwise, x.astype(jnp.float32), jnp.ones((3, 3, 1, 6))) == (1, 1)


def test_efficientnet_forward_matches_its_reference_and_keeps_analyses():
    probe = cw.load("efficientnet-lite0")
    x = jax.random.uniform(jax.random.key(0), (2, 96, 96, 3))
    fast_out, fast_acts = jax.jit(probe.forward)(probe.variables, x)
    ref_out, ref_acts = jax.jit(probe.reference_forward)(probe.variables, x)
    np.testing.assert_allclose(fast_out, ref_out, atol=1e-4)
    for name in ("block3.depthwise", "block5.expand", "head"):
        np.testing.assert_allclose(fast_acts[name], ref_acts[name], atol=1e-4)
    n_fast, n_all = count_fast_convolutions(probe.reference_forward, probe.variables, x)
    assert n_fast > 40 and n_all > n_fast  # depthwise + 1x1 swapped; the 3x3 stem is left
    # analyses read the reference convolutions: a depthwise layer still has its receptive field
    assert probe.layer("block1.depthwise").receptive_field > probe.layer("block1.expand").receptive_field


def test_a_users_nnx_model_with_depthwise_and_pointwise_convs():
    from flax import nnx

    class Mobile(nnx.Module):
        def __init__(self, rngs):
            self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.depthwise = nnx.Conv(8, 8, (3, 3), strides=2, feature_group_count=8, rngs=rngs)
            self.pointwise = nnx.Conv(8, 16, (1, 1), rngs=rngs)

        def __call__(self, x):
            x = jax.nn.relu6(self.stem(x))
            x = jax.nn.relu6(self.depthwise(x))
            return self.pointwise(x).mean(axis=(1, 2))

    probe = cw.Probe(Mobile(nnx.Rngs(0)), input_shape=(16, 16, 3))
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    assert count_fast_convolutions(probe.reference_forward, probe.variables, x) == (2, 3)
    np.testing.assert_allclose(
        probe.logits(None, x), probe.reference_forward(probe.variables, x)[0], atol=1e-5
    )
    grad = lambda f: jax.grad(lambda x: f(probe.variables, x)[0].sum())(x)  # noqa: E731
    np.testing.assert_allclose(grad(probe.forward), grad(probe.reference_forward), atol=1e-5)
