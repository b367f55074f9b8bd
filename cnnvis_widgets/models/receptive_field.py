"""Receptive field, stride and forward order of a model's layers, read off its jaxpr.

Walks the traced computation once, carrying for every value the receptive
field size ``rf`` and the ``jump`` (distance in input pixels between adjacent
positions) along the first spatial axis (NHWC): convolutions and pooling
windows grow them, element-wise ops take the largest of their inputs, and a
value that loses its spatial layout (rank != 4, e.g. flatten → dense) sees the
whole image. No weights or data are involved, so dead ReLUs cannot shrink it.

References: Araujo et al. 2019, "Computing Receptive Fields of Convolutional
Neural Networks" (Distill).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.extend import core as jcore

_GLOBAL = (float("inf"), 1)


def _window(eqn) -> tuple[int, int, int] | None:
    """(kernel size, stride, dilation) along the first spatial axis, or None."""
    name, p = eqn.primitive.name, eqn.params
    if name == "conv_general_dilated":
        rhs_spec = p["dimension_numbers"].rhs_spec
        k = eqn.invars[1].aval.shape[rhs_spec[2]]
        return k, p["window_strides"][0], p["rhs_dilation"][0]
    if name.startswith("reduce_window"):
        dims, strides = p["window_dimensions"], p["window_strides"]
        dil = p.get("window_dilation", (1,) * len(dims))
        return dims[1], strides[1], dil[1]
    return None


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        if isinstance(value, jcore.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, jcore.Jaxpr):
            yield value


def _propagate(jaxpr, env_in: list, order: int, seen: dict) -> list:
    """Geometry of jaxpr's outputs given its inputs'; records first-seen order."""
    env: dict[Any, Any] = {}

    def read(v):
        return None if isinstance(v, jcore.Literal) else env.get(v)

    for var, g in zip(jaxpr.invars, env_in):
        env[var] = g
    for eqn in jaxpr.eqns:
        ins = [g for g in map(read, eqn.invars) if g is not None]
        if not ins:
            continue
        rf = max(g[0] for g in ins)
        jump = max(g[1] for g in ins)
        subs = list(_sub_jaxprs(eqn))
        if subs and len(subs[0].invars) == len(eqn.invars):
            outs = _propagate(subs[0], [read(v) for v in eqn.invars], order, seen)
        else:
            win = _window(eqn)
            if win is not None:
                k, s, d = win
                rf, jump = rf + (d * (k - 1)) * jump, jump * s
            outs = [(rf, jump)] * len(eqn.outvars)
        for var, g in zip(eqn.outvars, outs):
            if g is not None and len(getattr(var.aval, "shape", ())) != 4:
                g = _GLOBAL
            env[var] = g
            seen.setdefault(var, len(seen))
    return [read(v) for v in jaxpr.outvars]


def analyze(fn: Callable[[jax.Array], dict], example: jax.Array) -> dict[str, tuple[int, float, int]]:
    """{name: (forward order, receptive field, stride)} for the dict ``fn(example)`` returns."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(example)
    seen: dict[Any, int] = {}
    outs = _propagate(closed.jaxpr, [(1, 1)], 0, seen)
    leaves, treedef = jax.tree_util.tree_flatten(out_shape)
    names = jax.tree_util.tree_unflatten(treedef, list(range(len(leaves))))
    result = {}
    for name, idx in names.items():
        var = closed.jaxpr.outvars[idx]
        rf, jump = outs[idx] or (1, 1)
        order = seen.get(var, -1)
        size = max(example.shape[1:3])
        result[name] = (order, int(min(rf, 10**9)) if rf != float("inf") else size, int(jump))
    return result
