"""The one evaluator of traced models: a function's jaxpr evaluated again, with rules and taps.

A model is never edited: its computation is traced to a jaxpr and evaluated equation by
equation. A *rule* ``rule(eqn, ins, producer) -> outputs | None`` may compute an equation
another way (a faster form, a custom gradient); the first rule that answers wins, and
``producer(var)`` is the equation of the same jaxpr that computed ``var`` (None for inputs and
literals). A *tap* adds a value to a variable where it is computed, so everything after sees it
(``jax.grad`` with respect to that value at zero is the gradient at the variable). Nested
``jit`` / ``closed_call`` equations are evaluated inline, so rules and taps reach inside them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from cnnvis_widgets.jaxpr.walk import is_var

Rule = Callable[[Any, list, Callable[[Any], Any]], Optional[Sequence[Any]]]
_INLINED = ("pjit", "jit", "closed_call")


def evaluate(jaxpr, consts, args, rules: Sequence[Rule] = (), taps: Mapping[Any, Any] | None = None) -> list:
    """The outputs of ``jaxpr`` on ``args``, each equation computed by the first of ``rules`` that
    answers it (else as traced), and ``taps[var]`` added to each tapped ``var`` where it is made."""
    taps = taps or {}
    env, made = {}, {}

    def read(v):
        return env[v] if is_var(v) else v.val

    def producer(v):
        return made.get(v) if is_var(v) else None

    def write(v, x):
        env[v] = x + jnp.asarray(taps[v]).astype(x.dtype) if v in taps else x

    for v, x in zip(jaxpr.constvars, consts):
        write(v, x)
    for v, x in zip(jaxpr.invars, args):
        write(v, x)
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        outs, tapped_inside = _by_rules(rules, eqn, ins, producer), set()
        body = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))  # a jit's, a closed_call's
        if outs is None and eqn.primitive.name in _INLINED and isinstance(body, jcore.ClosedJaxpr):
            sub = body
            inner = {}  # a tap on the call's output goes inside, where the body itself uses the value
            for v, w in zip(eqn.outvars, sub.jaxpr.outvars):
                if v in taps and is_var(w) and w not in inner:
                    inner[w] = taps[v]
                    tapped_inside.add(v)
            outs = evaluate(sub.jaxpr, sub.consts, ins, rules, inner)
        if outs is None:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, x in zip(eqn.outvars, outs):
            if v in tapped_inside:
                env[v] = x
            else:
                write(v, x)
            made[v] = eqn
    return [read(v) for v in jaxpr.outvars]


def _by_rules(rules, eqn, ins, producer):
    for rule in rules:
        outs = rule(eqn, ins, producer)
        if outs is not None:
            return outs
    return None


def rewrite(fn: Callable, *rules: Rule) -> Callable:
    """``fn`` (any function of arrays / pytrees) traced and evaluated with ``rules``."""

    @functools.wraps(fn)
    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = evaluate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), rules)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped


def answered(rule: Rule, fn: Callable, *args) -> int:
    """How many equations ``rule`` computes when ``fn(*args)`` is rewritten with it: a diagnostic,
    traced abstractly (nothing runs)."""
    count = [0]

    def counting(eqn, ins, producer):
        outs = rule(eqn, ins, producer)
        count[0] += outs is not None
        return outs

    jax.eval_shape(rewrite(fn, counting), *args)
    return count[0]
