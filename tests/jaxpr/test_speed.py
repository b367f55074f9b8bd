"""Speed rewrites: each applies exactly where its equation occurs, with the same values and
gradients as XLA's own (the model-level checks: tests/models/test_fast_convs.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnvis_widgets.jaxpr import speed
from cnnvis_widgets.jaxpr.evaluate import answered, rewrite

NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(strides, padding, dilation=(1, 1), groups=1):
    return lambda x, k: lax.conv_general_dilated(  # noqa: E731
        x, k, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC, feature_group_count=groups
    )


def _same_values_and_vjp(fn, fast, *args, atol=2e-5):
    y = fn(*args)
    cot = jax.random.normal(jax.random.key(9), y.shape)
    np.testing.assert_allclose(jax.jit(fast)(*args), y, atol=atol)
    want = jax.vjp(fn, *args)[1](cot)
    got = jax.jit(lambda *a: jax.vjp(fast, *a)[1](cot))(*args)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=atol)


FORWARD_CASES = [
    # (h, w, kernel, stride, dilation, padding, groups, rule that applies or None)
    (8, 8, 3, 1, 1, "SAME", 6, "depthwise"),
    (9, 7, 3, 2, 1, "SAME", 6, "depthwise"),  # odd sizes, stride 2 (TF-style asymmetric padding)
    (11, 12, 3, 2, 2, ((1, 2), (0, 1)), 6, "depthwise"),  # dilated, uneven explicit padding
    (7, 7, 3, 2, 1, "VALID", 6, "depthwise"),
    (8, 8, 1, 1, 1, "VALID", 1, "pointwise"),
    (8, 8, 1, 2, 1, "VALID", 1, None),  # strided 1x1: left to XLA
    (8, 8, 3, 1, 1, "SAME", 1, None),  # dense 3x3: left to XLA
    (8, 8, 3, 1, 1, "SAME", 2, None),  # grouped, not depthwise
]
RULES = {"depthwise": speed.depthwise_conv_as_shifts, "pointwise": speed.pointwise_conv_as_matmul}


@pytest.mark.parametrize("h,w,k,s,d,pad,groups,which", FORWARD_CASES)
def test_forward_conv_rules(h, w, k, s, d, pad, groups, which):
    rng = np.random.default_rng(k * 100 + s * 10 + d)
    x = jnp.asarray(rng.normal(size=(2, h, w, 6)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 6 // groups, 6)), jnp.float32)
    ref = lambda x, kernel: jnp.tanh(_conv((s, s), pad, (d, d), groups)(x, kernel))  # noqa: E731
    for name, rule in RULES.items():
        assert answered(rule, ref, x, kernel) == (name == which)
    # alone, and re-traced again by the gradient rules, as a scanned loop's forward is
    for fast in (rewrite(ref, *speed.FORWARD), rewrite(rewrite(ref, *speed.FORWARD), *speed.GRADIENTS)):
        _same_values_and_vjp(ref, fast, x, kernel)


def test_only_float32_convolutions_take_the_forward_forms():
    depthwise = _conv((1, 1), "SAME", groups=6)
    x, k = jnp.ones((1, 8, 8, 6), jnp.bfloat16), jnp.ones((3, 3, 1, 6), jnp.bfloat16)
    assert answered(speed.depthwise_conv_as_shifts, depthwise, x, k) == 0
    x, k = x.astype(jnp.float32), k.astype(jnp.float32)
    assert answered(speed.depthwise_conv_as_shifts, depthwise, x, k) == 1


GRADIENT_CASES = [  # lhs, rhs, strides, padding, rhs_dilation, groups
    ((2, 9, 9, 4), (3, 3, 4, 6), (1, 1), "SAME", (1, 1), 1),
    ((2, 9, 9, 4), (3, 3, 4, 6), (2, 2), "SAME", (1, 1), 1),
    ((1, 10, 11, 4), (5, 5, 4, 4), (2, 2), "VALID", (1, 1), 1),
    ((1, 12, 12, 6), (3, 3, 1, 6), (2, 2), "SAME", (1, 1), 6),  # depthwise
    ((1, 12, 12, 6), (3, 3, 2, 6), (3, 2), ((2, 1), (0, 3)), (2, 2), 3),  # grouped, dilated, odd padding
]


@pytest.mark.parametrize("lhs, rhs, strides, padding, dilation, groups", GRADIENT_CASES)
def test_conv_with_fast_input_gradient(lhs, rhs, strides, padding, dilation, groups):
    l = jax.random.normal(jax.random.key(0), lhs)
    r = jax.random.normal(jax.random.key(1), rhs)
    f = lambda l, r: jnp.sin(_conv(strides, padding, dilation, groups)(l, r)).sum()  # noqa: E731
    # grouped (depthwise) convs are left to XLA's own gradient: faster there
    assert answered(speed.conv_with_fast_input_gradient, f, l, r) == (groups == 1)
    fast = rewrite(f, speed.conv_with_fast_input_gradient)
    np.testing.assert_allclose(fast(l, r), f(l, r), rtol=1e-6)
    for a, b in zip(jax.grad(f, (0, 1))(l, r), jax.jit(jax.grad(fast, (0, 1)))(l, r)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_fast_input_gradient_inside_scan():
    l, r = jnp.ones((1, 6, 6, 2)), jax.random.normal(jax.random.key(1), (3, 3, 2, 2))
    f = lambda l: (_conv((1, 1), "SAME")(l, r) ** 2).sum()  # noqa: E731

    def descend(f):
        return lambda l: lax.scan(lambda c, _: (c - 0.01 * jax.grad(f)(c), None), l, None, length=3)[0]

    fast = rewrite(f, speed.conv_with_fast_input_gradient)
    np.testing.assert_allclose(jax.jit(descend(fast))(l), jax.jit(descend(f))(l), rtol=1e-5)


@pytest.mark.parametrize("window", [(2, 2), (3, 3), (2, 1)])
def test_max_pool_with_elementwise_gradient_equals_xla_with_ties(window):
    x = jnp.round(jax.random.uniform(jax.random.key(1), (2, 12, 12, 3)) * 3) / 3  # many ties
    g = jax.random.normal(jax.random.key(2), (2, 12 // window[0], 12 // window[1], 3))
    dims = (1, *window, 1)
    pool = lambda x: (lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID") * g).sum()  # noqa: E731
    fast = rewrite(pool, speed.max_pool_with_elementwise_gradient)
    assert answered(speed.max_pool_with_elementwise_gradient, pool, x) == 1
    np.testing.assert_array_equal(jax.jit(jax.grad(fast))(x), jax.grad(pool)(x))
    np.testing.assert_array_equal(fast(x), pool(x))


def test_overlapping_pools_keep_the_stock_gradient():
    from flax import linen as nn

    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
    pool = lambda x: nn.max_pool(x, (3, 3), (2, 2), padding="SAME").sum()  # noqa: E731
    assert answered(speed.max_pool_with_elementwise_gradient, pool, x) == 0
    np.testing.assert_allclose(jax.grad(rewrite(pool, *speed.GRADIENTS))(x), jax.grad(pool)(x))
