"""ReLU gradient rules: applied to exactly the jax.nn ReLUs, forward values unchanged, backward
passes equal to hand-written ones (Springenberg et al. 2015; Zeiler & Fergus 2014; Lucid)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from cnnvis_widgets.jaxpr import gradients
from cnnvis_widgets.jaxpr.evaluate import answered, rewrite

RNG = np.random.default_rng(0)
W1, W2 = RNG.normal(size=(5, 6)).astype(np.float32), RNG.normal(size=(6, 3)).astype(np.float32)
X = RNG.normal(size=(5,)).astype(np.float32)


def _net(x):
    """score = sum(relu(relu(x W1) W2) * c), a tiny two-ReLU net."""
    return (jax.nn.relu(nnx.relu(x @ W1) @ W2) * jnp.array([1.0, -2.0, 0.5])).sum()


def _backward(mask):
    """The net's backward pass in numpy with ``mask(z, g)`` in place of each ReLU's derivative."""
    z1 = X @ W1
    z2 = np.maximum(z1, 0) @ W2
    g2 = mask(z2, np.array([1.0, -2.0, 0.5], np.float32))
    g1 = mask(z1, W2 @ g2)
    return W1 @ g1


@pytest.mark.parametrize(
    "kind, mask",
    [
        ("guided", lambda z, g: g * (z > 0) * (g > 0)),
        ("deconvnet", lambda z, g: np.maximum(g, 0)),
    ],
)
def test_guided_and_deconvnet_equal_their_hand_written_backward(kind, mask):
    ruled = rewrite(_net, gradients.relu_rule(kind))
    assert answered(gradients.relu_rule(kind), _net, X) == 2
    np.testing.assert_allclose(ruled(X), _net(X), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(ruled)(X), _backward(mask), rtol=1e-5, atol=1e-6)


def test_redirected_relu_passes_gradient_to_silent_units():
    f = lambda x: -jax.nn.relu(x).sum()  # noqa: E731 - a loss to minimize: wants x to rise
    redirected = rewrite(f, *gradients.relu_rules("redirected"))
    x = -jnp.ones(4)
    assert np.all(jax.grad(f)(x) == 0)  # plain ReLU: silent units get nothing
    np.testing.assert_allclose(jax.grad(redirected)(x), -np.ones(4))  # redirected: the push upward passes
    y = jnp.array([-1.0, 2.0, -3.0, 4.0])  # once any unit is active, the exact ReLU gradient
    np.testing.assert_allclose(jax.grad(redirected)(y), jax.grad(f)(y))
    with pytest.raises(ValueError, match="Unknown ReLU rule 'leaky'"):
        gradients.relu_rule("leaky")
    assert gradients.relu_rules(None) == ()


def test_relu6_keeps_its_cap_and_gets_the_rule():
    x = jnp.array([-1.0, 3.0, 7.0])
    f = lambda x: (jax.nn.relu6(x) * jnp.array([1.0, -1.0, 1.0])).sum()  # noqa: E731
    guided = rewrite(f, gradients.relu_rule("guided"))
    np.testing.assert_array_equal(guided(x), f(x))
    np.testing.assert_array_equal(jax.grad(guided)(x), [0.0, 0.0, 0.0])  # negative g at 3 blocked
    np.testing.assert_array_equal(jax.grad(f)(x), [0.0, -1.0, 0.0])


def test_clamps_keep_their_exact_gradient_under_a_relu_rule():
    """A hand-written ``jnp.maximum(x, 0)`` is not a ReLU for the rules, nor is a GroupNorm's
    variance clamp: the rules change nothing there."""

    class Clamped(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.GroupNorm(num_groups=2)(nn.Conv(4, (3, 3))(x))
            return jnp.maximum(x, 0.0).sum() - jnp.maximum(0.0, -x).sum()

    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 2))
    model = Clamped()
    variables = model.init(jax.random.key(1), x)
    f = lambda x: model.apply(variables, x)  # noqa: E731
    for kind in gradients.RELU_RULES:
        assert answered(gradients.relu_rule(kind), f, x) == 0
    guided = jax.jit(jax.grad(rewrite(f, gradients.relu_rule("guided"))))
    np.testing.assert_allclose(guided(x), jax.jit(jax.grad(f))(x), rtol=1e-6)
