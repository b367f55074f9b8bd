"""The JAX internals the jaxpr toolkit (and the walkers that use it) relies on, pinned in one place:
after a JAX upgrade, a failure here names what changed and which module reads it."""

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

X = jnp.ones((1, 6, 6, 4))


def _eqn(fn, *args, index=0):
    return jax.make_jaxpr(fn)(*args).jaxpr.eqns[index]


def _has(params, names, what):
    missing = [n for n in names if n not in params]
    assert not missing, f"{what} lost params {missing} (has {sorted(params)}): see jaxpr/match.py, speed.py"


def test_convolution_equation():
    dn = ("NHWC", "HWIO", "NHWC")
    conv = lambda x, k: lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=dn)  # noqa: E731
    eqn = _eqn(conv, X, jnp.ones((3, 3, 4, 2)))
    assert eqn.primitive.name == "conv_general_dilated", f"conv renamed to {eqn.primitive.name!r}"
    names = ["dimension_numbers", "window_strides", "padding", "lhs_dilation", "rhs_dilation",
             "feature_group_count", "batch_group_count", "precision", "preferred_element_type"]  # fmt: skip
    _has(eqn.params, names, "conv_general_dilated")
    dn = eqn.params["dimension_numbers"]
    specs = (tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec))
    assert specs == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)), f"NHWC/HWIO specs now {specs}: match.NHWC"
    assert tuple(eqn.params["window_strides"]) == (2, 2)
    assert tuple(map(tuple, eqn.params["padding"])) == ((0, 1), (0, 1)), "padding no longer ((lo, hi), ...)"


def test_pool_pad_slice_and_reduction_equations():
    w = (1, 2, 2, 1)
    pool = _eqn(lambda x: lax.reduce_window(x, -jnp.inf, lax.max, w, w, "VALID"), X)
    assert pool.primitive.name == "reduce_window_max", f"max-pool renamed to {pool.primitive.name!r}"
    names = ["window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation"]
    _has(pool.params, names, "reduce_window_max")
    pad = _eqn(lambda x: lax.pad(x, 0.0, ((0, 0, 0), (1, 2, 1), (0, 0, 0), (0, 0, 0))), X)
    assert pad.primitive.name == "pad" and "padding_config" in pad.params, "pad lost padding_config"
    sl = _eqn(lambda x: lax.slice(x, (0, 1, 0, 0), (1, 5, 6, 4), (1, 2, 1, 1)), X)
    assert sl.primitive.name == "slice", "slice renamed (engine/activations.py)"
    _has(sl.params, ["start_indices", "strides"], "slice")
    red = _eqn(lambda x: x.sum(axis=(1, 2)), X)
    assert red.primitive.name == "reduce_sum" and tuple(red.params["axes"]) == (1, 2), "reduce_sum changed"
    cast = _eqn(lambda x: x.astype(jnp.bfloat16), X)
    assert cast.primitive.name == "convert_element_type", "casts renamed (saliency._uncast, receptive_field)"


def test_jit_equation_carries_its_name_and_body():
    eqn = _eqn(jax.jit(jnp.sin), X)
    assert eqn.primitive.name in ("pjit", "jit"), f"jit is now {eqn.primitive.name!r}: evaluate._INLINED"
    assert eqn.params["name"] == "sin", "a jit's params no longer hold the function's name: match.activation"
    assert isinstance(eqn.params["jaxpr"], jcore.ClosedJaxpr), "a jit's body is no longer params['jaxpr']"


def test_relu_is_a_custom_jvp_around_a_jit_named_relu():
    for fn, name in ((jax.nn.relu, "relu"), (jax.nn.relu6, "relu6")):
        eqn = _eqn(fn, X)
        body = eqn.params.get("call_jaxpr") if eqn.primitive.name == "custom_jvp_call" else None
        assert isinstance(body, jcore.ClosedJaxpr), f"jax.nn.{name} is not custom_jvp_call[call_jaxpr]"
        (inner,) = body.jaxpr.eqns
        assert inner.primitive.name in ("pjit", "jit") and inner.params["name"] == name, (
            f"jax.nn.{name}'s custom_jvp no longer wraps a jit named {name!r}: match.activation fails"
        )


def test_equation_evaluation_api():
    eqn = _eqn(lambda x: jnp.maximum(x, 0.0), X)
    assert isinstance(eqn.invars[1], jcore.Literal) and eqn.invars[1].val == 0, "literals: jcore.Literal.val"
    assert isinstance(eqn.invars[0], jcore.Var) and eqn.invars[0].aval.shape == X.shape, "Var.aval.shape"
    params = eqn.primitive.get_bind_params(eqn.params)
    assert isinstance(params, dict), "get_bind_params no longer returns a params dict (evaluate, kernels)"
    with eqn.ctx.manager:  # evaluate binds each equation inside its own context
        out = eqn.primitive.bind(jnp.full(X.shape, -1.0), 0.0, **params)
    assert not eqn.primitive.multiple_results and float(out.max()) == 0.0
    closed, shape = jax.make_jaxpr(lambda x: {"y": x}, return_shape=True)(X)
    assert shape["y"].shape == X.shape and isinstance(closed.jaxpr, jcore.Jaxpr)
    wide = closed.jaxpr.replace(outvars=[*closed.jaxpr.outvars, closed.jaxpr.invars[0]])
    assert len(wide.outvars) == 2, "Jaxpr.replace(outvars=...) changed (models/post_activation.py)"
