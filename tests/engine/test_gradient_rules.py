"""Gradient rules: same values and gradients as plain JAX; the redirected ReLU moves silent units."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import cnnvis_widgets as cw
from cnnvis_widgets.engine.gradient_rules import count_swappable_convs, with_gradient_rules

CASES = [  # lhs, rhs, strides, padding, rhs_dilation, groups
    ((2, 9, 9, 4), (3, 3, 4, 6), (1, 1), "SAME", (1, 1), 1),
    ((2, 9, 9, 4), (3, 3, 4, 6), (2, 2), "SAME", (1, 1), 1),
    ((1, 10, 11, 4), (5, 5, 4, 4), (2, 2), "VALID", (1, 1), 1),
    ((1, 12, 12, 6), (3, 3, 1, 6), (2, 2), "SAME", (1, 1), 6),  # depthwise
    ((1, 12, 12, 6), (3, 3, 2, 6), (3, 2), ((2, 1), (0, 3)), (2, 2), 3),  # grouped, dilated, odd padding
]


@pytest.mark.parametrize("lhs, rhs, strides, padding, dilation, groups", CASES)
def test_fast_conv_gradients_equal_jax(lhs, rhs, strides, padding, dilation, groups):
    l = jax.random.normal(jax.random.key(0), lhs)
    r = jax.random.normal(jax.random.key(1), rhs)

    def f(l, r):
        y = lax.conv_general_dilated(
            l,
            r,
            strides,
            padding,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
        return jnp.sin(y).sum()

    fast = with_gradient_rules(f)
    # grouped (depthwise) convs are left to XLA's own gradient: faster there (gradient_rules._swappable)
    assert count_swappable_convs(f, l, r) == ((1, 1) if groups == 1 else (0, 1))
    np.testing.assert_allclose(fast(l, r), f(l, r), rtol=1e-6)
    for a, b in zip(jax.grad(f, (0, 1))(l, r), jax.jit(jax.grad(fast, (0, 1)))(l, r)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_model_gradients_unchanged_and_inside_scan():
    probe = cw.load("digits-cnn")
    x = jnp.asarray(cw.data.digits().images[:2])
    loss = lambda v, x: probe.forward(v, x)[1]["conv3"][..., 5].mean()
    fast = with_gradient_rules(loss)
    expected = jax.grad(loss, 1)(probe.variables, x)
    np.testing.assert_allclose(jax.jit(jax.grad(fast, 1))(probe.variables, x), expected, rtol=1e-4, atol=1e-6)

    def scanned(x):
        return lax.scan(
            lambda c, _: (c + 0.01 * jax.grad(fast, 1)(probe.variables, c), None), x, None, length=3
        )[0]

    assert np.isfinite(np.asarray(jax.jit(scanned)(x))).all()


def test_redirected_relu_passes_gradient_to_silent_units():
    f = lambda x: -jax.nn.relu(x).sum()  # a loss to minimize: wants x to rise
    x = -jnp.ones(4)
    assert np.all(jax.grad(f)(x) == 0)  # plain ReLU: silent units get nothing
    g = jax.grad(with_gradient_rules(f, relu="redirected"))(x)
    np.testing.assert_allclose(g, -np.ones(4))  # redirected: the push upward passes
    # once any unit is active, the exact ReLU gradient is used
    y = jnp.array([-1.0, 2.0, -3.0, 4.0])
    np.testing.assert_allclose(jax.grad(with_gradient_rules(f, relu="redirected"))(y), jax.grad(f)(y))
    with pytest.raises(ValueError, match="Unknown ReLU rule 'leaky'"):
        with_gradient_rules(f, relu="leaky")


@pytest.mark.parametrize("window", [(2, 2), (3, 3), (2, 1)])
def test_fast_max_pool_gradient_equals_xla_with_ties(window):
    from flax import linen as nn

    x = jnp.round(jax.random.uniform(jax.random.key(1), (2, 12, 12, 3)) * 3) / 3  # many ties
    g = jax.random.normal(jax.random.key(2), (2, 12 // window[0], 12 // window[1], 3))
    pool = lambda x: (nn.max_pool(x, window, window) * g).sum()
    expected = jax.grad(pool)(x)
    np.testing.assert_array_equal(jax.jit(jax.grad(with_gradient_rules(pool)))(x), expected)
    np.testing.assert_array_equal(with_gradient_rules(pool)(x), pool(x))


def test_overlapping_pools_keep_the_stock_gradient():
    from flax import linen as nn

    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
    pool = lambda x: nn.max_pool(x, (3, 3), (2, 2), padding="SAME").sum()
    np.testing.assert_allclose(jax.grad(with_gradient_rules(pool))(x), jax.grad(pool)(x))
