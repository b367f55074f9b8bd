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


def test_windows_read_a_convolution_and_a_pooling_per_axis():
    """The window of each spatial axis, as written in the call: size, stride, dilation, the
    padding before the first position and the input's dilation; None for other equations."""
    x, k = jnp.ones((1, 9, 11, 2)), jnp.ones((3, 5, 2, 4))
    conv = lambda x: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (2, 1), ((1, 2), (0, 0)), lhs_dilation=(1, 2), rhs_dilation=(1, 3),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    (eqn,) = [e for e in jax.make_jaxpr(conv)(x).jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert match.windows(eqn) == {1: match.Window(3, 2, 1, 1, 1), 2: match.Window(5, 1, 3, 0, 2)}
    pool = lambda x: nn.max_pool(x, (3, 2), strides=(2, 2), padding=((1, 1), (0, 0)))  # noqa: E731
    (eqn,) = [e for e in jax.make_jaxpr(pool)(x).jaxpr.eqns if e.primitive.name == "reduce_window_max"]
    windows = match.windows(eqn)
    assert windows[1] == match.Window(3, 2, 1, 1, 1) and windows[2] == match.Window(2, 2, 1, 0, 1)
    assert windows[0].size == windows[3].size == 1
    (eqn,) = jax.make_jaxpr(jnp.sin)(x).jaxpr.eqns
    assert match.windows(eqn) is None
