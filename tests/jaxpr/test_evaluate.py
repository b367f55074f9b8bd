"""The evaluator computes what the traced function computes (values and gradients), rules answer
in order, taps add where a value is made (inside nested calls too), and ``walk`` reads jaxprs."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from cnnvis_widgets.jaxpr import walk
from cnnvis_widgets.jaxpr.evaluate import evaluate, rewrite

X = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))


@jax.custom_jvp
def _softclip(x):
    return jnp.tanh(x)


_softclip.defjvp(lambda primals, tangents: (jnp.tanh(primals[0]), 2.0 * tangents[0]))  # a rule of its own


class Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x)))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = jax.jit(lambda y: _softclip(y) * 2.0)(x)  # a nested jit holding a custom_jvp
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class Nnx(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), strides=2, rngs=rngs)
        self.norm = nnx.GroupNorm(4, num_groups=2, rngs=rngs)
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.dense(nnx.relu(self.norm(self.conv(x))).mean(axis=(1, 2)))


def _models():
    linen = Linen()
    variables = linen.init(jax.random.key(1), X)
    nnx_model = Nnx(nnx.Rngs(2))
    graph, state = nnx.split(nnx_model)
    return [
        (lambda v, x: linen.apply(v, x), variables),
        (lambda s, x: nnx.merge(graph, s)(x), state),
    ]


def test_evaluator_equals_the_function_in_values_and_gradients():
    for fn, variables in _models():
        again = rewrite(fn)
        np.testing.assert_allclose(again(variables, X), fn(variables, X), rtol=1e-6)
        loss = lambda f: lambda v, x: (f(v, x) ** 2).sum()  # noqa: E731
        want = jax.jit(jax.grad(loss(fn), (0, 1)))(variables, X)
        got = jax.jit(jax.grad(loss(again), (0, 1)))(variables, X)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_first_rule_that_answers_wins_and_reaches_into_jits():
    seen = []

    def negate_sin(eqn, ins, producer):
        return [-jnp.sin(ins[0])] if eqn.primitive.name == "sin" else None

    def record(eqn, ins, producer):
        seen.append(eqn.primitive.name)
        return None

    f = lambda x: jax.jit(jnp.sin)(x) + 1.0  # noqa: E731
    np.testing.assert_allclose(rewrite(f, negate_sin, record)(1.0), 1.0 - np.sin(1.0), rtol=1e-6)
    assert "sin" not in seen and "add" in seen


def test_producer_is_the_equation_that_made_a_value():
    found = {}

    def rule(eqn, ins, producer):
        if eqn.primitive.name == "mul":
            found["made_by"] = producer(eqn.invars[0]).primitive.name
        return None

    rewrite(lambda x: jnp.exp(x) * 2.0, rule)(1.0)
    assert found == {"made_by": "exp"}


def _traced_with_inner(x):
    def inner(y):
        s = jnp.sin(y)
        return s, s * 3.0  # the tapped value is used inside the jit too

    a, b = jax.jit(inner)(x)
    return a + b, a


def test_a_tap_adds_where_the_value_is_made_even_inside_a_jit():
    closed = jax.make_jaxpr(_traced_with_inner)(0.5)
    tap = closed.jaxpr.eqns[0].outvars[0]  # ``a``, the first output of the nested jit
    assert walk.read_later(closed.jaxpr, tap)

    def tapped(delta):
        return evaluate(closed.jaxpr, closed.consts, [0.5], taps={tap: delta})[0]

    # the whole model sees sin + delta: out = (s + d) + 3 (s + d); d out / d delta = 4
    np.testing.assert_allclose(tapped(1.0), 4 * (np.sin(0.5) + 1.0), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(tapped)(0.0), 4.0)


def test_read_later_ignores_the_jaxprs_own_outputs():
    def f(x):
        s = jnp.sin(x)
        return s, jnp.cos(s)

    closed = jax.make_jaxpr(f)(0.5)
    sin_out = closed.jaxpr.eqns[0].outvars[0]
    cos_out = closed.jaxpr.eqns[-1].outvars[0]
    assert walk.read_later(closed.jaxpr, sin_out) and not walk.read_later(closed.jaxpr, cos_out)


def test_propagate_enters_calls_and_skips_untracked_values():
    def f(x, y):
        return jax.jit(lambda a: jnp.sin(a) + 1.0)(x) * y, y + 1.0

    jaxpr = jax.make_jaxpr(f)(0.5, 0.5).jaxpr
    def count(eqn, ins, inner):
        return inner or [max(g for g in ins if g is not None) + 1] * len(eqn.outvars)

    # x's depth: sin, add (inside the jit, entered), mul; y's path is not tracked
    assert walk.propagate(jaxpr, [0, None], count) == [3, None]
    names = [eqn.primitive.name for eqn in walk.eqns(jaxpr)]
    assert names[:3] == ["jit", "sin", "add"] and walk.call_body(jaxpr.eqns[0]) is not None
