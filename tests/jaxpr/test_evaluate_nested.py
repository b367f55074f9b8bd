"""jaxpr.evaluate and jaxpr.walk on a small CNN with nested calls and control flow: evaluating a
traced function gives the function's own values and gradients, a rule replaces exactly the
equations it answers, and the nested jaxprs are found (the JAX internals: test_jax_internals.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax
from jax.extend import core as jcore

from cnnvis_widgets.jaxpr.evaluate import evaluate, rewrite
from cnnvis_widgets.jaxpr.walk import frozen, sub_jaxprs

RNG = np.random.default_rng(0)
KEEP = lambda eqn, ins, producer: None  # noqa: E731 - the rule that replaces nothing
NHWC_HWIO = ("NHWC", "HWIO", "NHWC")
SCALE = jnp.asarray([0.5, -1.0, 2.0])  # closed over by a jitted function: a const of its jaxpr


def _model(params, x):
    """A small CNN with a conv, relu (a custom_jvp), nested jits (one with a const), a dot, a cond
    and a scan; a dict of arrays in, a (array, dict) out."""
    y = lax.conv_general_dilated(x, params["conv"], (1, 1), "SAME", dimension_numbers=NHWC_HWIO)
    y = jax.nn.relu(y + params["bias"])
    y = jax.jit(lambda t: jax.jit(lambda u: u * SCALE)(t) + 1.0)(y)
    pooled = nn.max_pool(y, (2, 2), (2, 2))
    logits = pooled.reshape(len(x), -1) @ params["dense"]
    logits = lax.cond(logits.sum() > 0, jnp.tanh, jnp.sin, logits)
    logits = lax.scan(lambda c, _: (c * 0.9 + 0.1, None), logits, None, length=3)[0]
    return logits.sum(), {"logits": logits, "pooled": pooled}


def _inputs():
    params = {
        "conv": jnp.asarray(RNG.normal(size=(3, 3, 2, 3)), jnp.float32),
        "bias": jnp.asarray(RNG.normal(size=3), jnp.float32),
        "dense": jnp.asarray(RNG.normal(size=(2 * 2 * 3, 4)) * 0.3, jnp.float32),
    }
    return params, jnp.asarray(RNG.normal(size=(2, 4, 4, 2)), jnp.float32)


def _eqn(fn, *args, name):
    """The first top-level equation of ``fn``'s jaxpr whose primitive is ``name``."""
    eqns = [e for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns if e.primitive.name == name]
    assert eqns, f"no {name!r} equation in the jaxpr of {fn}"
    return eqns[0]


# ------------------------------------------------------------------ the interpreter
def test_evaluating_a_small_cnn_gives_its_own_values_and_gradients():
    """rewrite(fn, keep everything) is fn: same pytree out, same values, same parameter gradients."""
    params, x = _inputs()
    run = lambda fn: jax.jit(jax.value_and_grad(fn, has_aux=True))(params, x)  # noqa: E731
    ((loss, aux), grad), ((want_loss, want_aux), want) = run(rewrite(_model, KEEP)), run(_model)
    assert jax.tree_util.tree_structure(aux) == jax.tree_util.tree_structure(want_aux)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for key in want_aux:
        np.testing.assert_allclose(aux[key], want_aux[key], rtol=1e-5, atol=1e-6)
    for key in want:
        assert np.abs(want[key]).max() > 0, key  # every parameter really reaches the loss
        np.testing.assert_allclose(grad[key], want[key], rtol=1e-4, atol=1e-6)


def test_a_rule_replaces_every_occurrence_inside_nested_jits_and_nothing_else():
    """A rule for ``sin`` (here: sin -> identity) is called once per sin, top level and in nested
    jits; the values are those of the function written without the sins (numpy)."""
    def fn(x):
        a = jnp.sin(x) * 2.0
        b = jax.jit(lambda t: jnp.cos(t) + jax.jit(jnp.sin)(t))(x)
        return jnp.sin(a) + b

    seen = []

    def sin_to_identity(eqn, ins, producer):
        seen.append(eqn.primitive.name)
        return list(ins) if eqn.primitive.name == "sin" else None

    x = np.asarray([0.3, -1.2, 2.0], np.float32)
    got = rewrite(fn, sin_to_identity)(x)
    np.testing.assert_allclose(got, x * 2.0 + np.cos(x) + x, rtol=1e-6)
    assert seen.count("sin") == 3 and seen.count("cos") == 1
    assert sum(name in ("jit", "pjit") for name in seen) >= 2  # each jit is offered before it is inlined


def test_a_rule_can_replace_a_whole_jit_and_then_its_equations_are_not_visited():
    """Answering a jit equation replaces the call: its inner equations are never offered."""
    seen = []

    def replace(eqn, ins, producer):
        seen.append(eqn.primitive.name)
        return [ins[0] * 10.0] if eqn.primitive.name in ("jit", "pjit") else None

    got = rewrite(lambda x: jax.jit(jnp.sin)(x) + 1.0, replace)(np.float32(2.0))
    assert got == pytest.approx(21.0) and "sin" not in seen


def test_producer_names_the_equation_that_computed_an_input():
    """producer(var) is the equation of the same jaxpr that made var, the original one even when it
    was replaced; None for the function's inputs and for literals."""
    found = {}

    def replace(eqn, ins, producer):
        if eqn.primitive.name == "sin":
            return [ins[0]]
        if eqn.primitive.name == "mul":
            found["mul"] = [None if producer(v) is None else producer(v).primitive.name for v in eqn.invars]
        if eqn.primitive.name == "add":
            found["add"] = [producer(v) for v in eqn.invars]
        return None

    rewrite(lambda x: jnp.sin(x) * x + 1.0, replace)(np.float32(0.5))
    assert found["mul"] == ["sin", None]
    assert found["add"][0].primitive.name == "mul" and found["add"][1] is None  # 1.0 is a Literal


@jax.custom_jvp
def _custom_sin(x):
    return jnp.sin(x)


_custom_sin.defjvp(lambda primals, tangents: (jnp.sin(primals[0]), jnp.cos(primals[0]) * tangents[0]))


def test_control_flow_bodies_run_unchanged_and_a_rule_does_not_reach_into_them():
    """cond branches, scan and while bodies, custom_jvp functions and checkpoints are bound as they
    are: right values, but a rule sees only the enclosing equation (jaxpr.gradients evaluates
    custom_jvp_call itself). If JAX or this module starts reaching inside, this changes."""
    bodies = {
        "cond": lambda x: lax.cond(x > 0, jnp.sin, jnp.cos, x),
        "scan": lambda x: lax.scan(lambda c, _: (jnp.sin(c), None), x, None, length=2)[0],
        "while": lambda x: lax.while_loop(lambda c: c < 3.0, lambda c: c + jnp.sin(c) + 1.0, x),
        "custom_jvp_call": _custom_sin,
        "checkpoint": lambda x: jax.checkpoint(jnp.sin)(x),
    }
    for name, fn in bodies.items():
        seen = []
        got = rewrite(fn, lambda eqn, ins, producer: seen.append(eqn.primitive.name))(np.float32(0.7))
        np.testing.assert_allclose(got, fn(np.float32(0.7)), rtol=1e-6, err_msg=name)
        assert seen and "sin" not in seen, f"{name}: a rule now reaches inside ({seen}): update the docs"


def test_a_closed_call_is_inlined_like_a_jit():
    """A closed_call (JAX emits one when it drops a custom_vjp's unused residuals) is inlined."""
    from jax._src import core

    inner = jax.make_jaxpr(jnp.sin)(1.0)
    bind = core.closed_call_p.get_bind_params({"call_jaxpr": inner})
    seen = []
    call = lambda x: core.closed_call_p.bind(x, **bind)[0]  # noqa: E731
    rewrite(call, lambda eqn, ins, producer: seen.append(eqn.primitive.name))(1.0)
    assert "sin" in seen


def test_evaluate_takes_consts_and_args_of_an_open_jaxpr():
    """evaluate on a ClosedJaxpr's parts: consts bind its constvars, args its invars."""
    closed = jax.make_jaxpr(jax.jit(lambda x: x * SCALE))(jnp.ones(3))
    sub = closed.jaxpr.eqns[0].params["jaxpr"]
    assert len(sub.consts) == 1, "the jitted function's closed-over array is no longer a const"
    (got,) = evaluate(sub.jaxpr, sub.consts, [jnp.asarray([2.0, 2.0, 2.0])], (KEEP,))
    np.testing.assert_allclose(got, [1.0, -2.0, 4.0])


def test_sub_jaxprs_finds_the_bodies_of_jit_custom_jvp_scan_and_while():
    """One body for a jit, a custom_jvp and a scan; two (cond and body) for a while; none for sin."""
    cases = {
        "jit": (lambda x: jax.jit(jnp.sin)(x), 1),
        "custom_jvp_call": (jax.nn.relu, 1),
        "scan": (lambda x: lax.scan(lambda c, _: (c * 2, None), x, None, length=2)[0], 1),
        "while": (lambda x: lax.while_loop(lambda c: c < 3.0, lambda c: c + 1.0, x), 2),
        "sin": (jnp.sin, 0),
    }
    for name, (fn, count) in cases.items():
        eqn = _eqn(fn, 1.0, name=name)
        subs = list(sub_jaxprs(eqn))
        assert len(subs) == count and all(isinstance(s, jcore.Jaxpr) for s in subs), (name, subs)


def test_sub_jaxprs_finds_both_branches_of_a_cond():
    """A cond's two branches are jaxprs inside it, as a loop's body is."""
    eqn = _eqn(lambda x: lax.cond(x > 0, jnp.sin, jnp.cos, x), 1.0, name="cond")
    assert len(list(sub_jaxprs(eqn))) == 2


def test_frozen_params_are_a_hashable_key_that_gives_the_params_back():
    """frozen(conv params) hashes (the lru_caches of jaxpr.speed key on it), equal
    params give equal keys, and dict() of the key is the params."""

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (2, 1), "SAME", dimension_numbers=NHWC_HWIO)

    a = _eqn(conv, jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4)), name="conv_general_dilated")
    b = _eqn(conv, jnp.zeros((2, 5, 5, 2)), jnp.ones((3, 3, 2, 4)), name="conv_general_dilated")
    assert hash(frozen(a.params)) == hash(frozen(b.params)) and frozen(a.params) == frozen(b.params)
    assert dict(frozen(a.params)) == dict(a.params)
    assert [k for k, _ in frozen({"b": 1, "a": 2})] == ["a", "b"]


# ------------------------------------------------------------------ JAX internals relied on
