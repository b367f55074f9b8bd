"""The Probe's forward with ``jaxpr.speed``'s rewrites computes the same function and gradients as the
model as written (each rule's own tests: tests/jaxpr/test_speed.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import cnnvis_widgets as cw
from cnnvis_widgets.jaxpr import speed, walk
from cnnvis_widgets.jaxpr.evaluate import answered, rewrite

def _counts(fn, *args) -> tuple[int, int]:
    """(convolutions the Probe's forward computes in a fast form, all convolutions) in ``fn(*args)``."""
    fast = sum(answered(rule, fn, *args) for rule in speed.FORWARD)
    convs = walk.eqns(jax.make_jaxpr(fn)(*args).jaxpr)
    return fast, sum(eqn.primitive.name == "conv_general_dilated" for eqn in convs)


def test_model_gradients_unchanged_and_inside_scan():
    probe = cw.load("digits-cnn")
    x = jnp.asarray(cw.data.digits().images[:2])
    loss = lambda v, x: probe.forward(v, x)[1]["conv3"][..., 5].mean()  # noqa: E731
    fast = rewrite(loss, *speed.GRADIENTS)
    expected = jax.grad(loss, 1)(probe.variables, x)
    np.testing.assert_allclose(jax.jit(jax.grad(fast, 1))(probe.variables, x), expected, rtol=1e-4, atol=1e-6)

    def scanned(x):
        return lax.scan(
            lambda c, _: (c + 0.01 * jax.grad(fast, 1)(probe.variables, c), None), x, None, length=3
        )[0]

    assert np.isfinite(np.asarray(jax.jit(scanned)(x))).all()


def test_efficientnet_forward_matches_its_reference_and_keeps_analyses():
    probe = cw.load("efficientnet-lite0")
    x = jax.random.uniform(jax.random.key(0), (2, 96, 96, 3))
    fast_out, fast_acts = jax.jit(probe.forward)(probe.variables, x)
    ref_out, ref_acts = jax.jit(probe.reference_forward)(probe.variables, x)
    np.testing.assert_allclose(fast_out, ref_out, atol=1e-4)
    for name in ("block3.depthwise", "block5.expand", "head"):
        np.testing.assert_allclose(fast_acts[name], ref_acts[name], atol=1e-4)
    n_fast, n_all = _counts(probe.reference_forward, probe.variables, x)
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
    assert _counts(probe.reference_forward, probe.variables, x) == (2, 3)
    np.testing.assert_allclose(
        probe.logits(None, x), probe.reference_forward(probe.variables, x)[0], atol=1e-5
    )
    grad = lambda f: jax.grad(lambda x: f(probe.variables, x)[0].sum())(x)  # noqa: E731
    np.testing.assert_allclose(grad(probe.forward), grad(probe.reference_forward), atol=1e-5)
