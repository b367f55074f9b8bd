"""``match.activation`` recognises jax.nn's ReLUs (as flax's ``nn.relu`` / ``nnx.relu`` are) by the
call that made them, and no clamp written by hand or inside a normalization."""

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

from cnnvis_widgets.jaxpr import match, walk

X = jnp.ones((1, 4, 4, 4))


def _activations(fn, *args):
    """The activations ``match`` finds in ``fn``'s jaxpr, nested calls included."""
    return [a for eqn in walk.eqns(jax.make_jaxpr(fn)(*args).jaxpr) if (a := match.activation(eqn))]


def test_relus_are_recognised_by_the_call_that_made_them():
    assert _activations(jax.nn.relu, X) == ["relu"]
    assert _activations(nn.relu, X) == ["relu"]
    assert _activations(nnx.relu, X) == ["relu"]
    assert _activations(jax.nn.relu6, X) == ["relu6"]
    assert _activations(jax.jit(lambda x: jax.nn.relu(x) + 1), X) == ["relu"]  # inside a jit


def test_clamps_are_not_relus():
    def relu(x):  # a user's own function named relu: a jit called "relu", but no jax.nn.relu
        return jnp.maximum(x, 0.0)

    assert _activations(lambda x: jnp.maximum(x, 0.0), X) == []
    assert _activations(lambda x: jnp.clip(x, 0.0), X) == []
    assert _activations(jax.jit(relu), X) == []
    assert _activations(jax.nn.gelu, X) == []
    for norm in (nn.GroupNorm(num_groups=2), nn.LayerNorm(), nn.BatchNorm(use_running_average=False)):
        variables = norm.init(jax.random.key(0), X)
        assert _activations(lambda x: norm.apply(variables, x, mutable=True)[0], X) == []


def test_linen_and_nnx_models():
    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x)))
            return jax.nn.relu6(nn.Dense(3)(nn.GroupNorm(2)(x).reshape(1, -1)))

    class Nnx(nnx.Module):
        def __init__(self, rngs):
            self.conv, self.norm = nnx.Conv(4, 4, (3, 3), rngs=rngs), nnx.LayerNorm(4, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.norm(nnx.relu(self.conv(x))))

    linen = Linen()
    variables = linen.init(jax.random.key(0), X)
    assert _activations(lambda v, x: linen.apply(v, x), variables, X) == ["relu", "relu6"]
    assert _activations(Nnx(nnx.Rngs(0)), X) == ["relu", "relu"]
