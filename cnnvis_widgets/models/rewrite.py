"""Re-tracing a function and evaluating its jaxpr with some equations replaced.

The one interpreter behind the Probe's fast convolutions (``models.fast_convs``) and the
engine's gradient rules (``engine.gradient_rules``): the model is never edited, its traced
computation is evaluated again with chosen primitives swapped for equivalent ones.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
from jax.extend import core as jcore

# replace(eqn, inputs, producer) -> the equation's outputs computed another way, or None to keep
# it; producer(var) is the equation of the same jaxpr that computed var (None for its inputs)
Replace = Callable[[Any, list, Callable[[Any], Any]], Optional[Sequence[Any]]]


def evaluate(jaxpr, consts, args, replace: Replace) -> list:
    """``jaxpr`` on ``args`` with every equation that ``replace`` answers replaced; nested
    ``jit`` calls are evaluated inline so their equations are reached too."""
    env, made = {}, {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def producer(v):
        return None if isinstance(v, jcore.Literal) else made.get(v)

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        outs = replace(eqn, ins, producer)
        if outs is None and eqn.primitive.name in ("pjit", "jit", "closed_call") and "jaxpr" in eqn.params:
            sub = eqn.params["jaxpr"]
            outs = evaluate(sub.jaxpr, sub.consts, ins, replace)
        if outs is None:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
            made[v] = eqn
    return [read(v) for v in jaxpr.outvars]


def rewrite(fn: Callable, replace: Replace) -> Callable:
    """``fn`` (any function of arrays / pytrees) traced and evaluated with ``replace``."""

    @functools.wraps(fn)
    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = evaluate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), replace)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped


def sub_jaxprs(eqn):
    """The jaxprs inside ``eqn`` (a jit's, a custom_jvp's, a loop's body)."""
    for value in eqn.params.values():
        if isinstance(value, jcore.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, jcore.Jaxpr):
            yield value


def frozen(params: dict) -> tuple:
    """An equation's parameters as a hashable key (for caching the replacement built from them)."""
    return tuple(sorted(params.items()))
