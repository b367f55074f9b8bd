"""Receptive field, stride and forward order of a model's layers, read off its jaxpr.

Walks the traced computation once, carrying for every value the receptive
field size ``rf`` and the ``jump`` (distance in input pixels between adjacent
positions) along the first spatial axis (NHWC): convolutions and pooling
windows grow them, element-wise ops take the largest of their inputs, and a
value that loses its spatial layout (rank < 3, e.g. flatten → dense) sees the
whole image. No weights or data are involved, so dead ReLUs cannot shrink it.

A reduction over the spatial axes (a normalization's mean and variance, a global
pool) makes a *statistic*: combined with a spatial value (x - mean, x * gate) it
does not widen that value's field, as Araujo et al. count fields (through
convolutions and pools); GroupNorm and LayerNorm no longer make every later
layer see the whole image. A layer that is a statistic itself (a global pool, the
dense head after it) sees the whole image.

References: Araujo et al. 2019, "Computing Receptive Fields of Convolutional
Neural Networks" (Distill).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from cnnvis_widgets.jaxpr import match, walk

_GLOBAL = (float("inf"), 1)
_STATISTIC = "statistic"  # the geometry of a value computed from spatial reductions alone
_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin")


def _spatial_reduction(eqn) -> bool:
    """A reduction over a spatial axis (1 or 2) of an (N, H, W, ...) value."""
    if eqn.primitive.name not in _REDUCTIONS:
        return False
    axes = eqn.params.get("axes", ())
    return len(getattr(eqn.invars[0].aval, "shape", ())) >= 4 and bool({1, 2} & set(axes))


def _geometry(seen: dict):
    """The ``walk.propagate`` step carrying (rf, jump); records each value's first-seen order."""

    def step(eqn, ins, inner):
        spatial = [g for g in ins if g not in (None, _STATISTIC)]
        if inner is not None:
            outs = inner
        elif not spatial or _spatial_reduction(eqn):
            outs = [_STATISTIC] * len(eqn.outvars)
        else:
            rf, jump = max(g[0] for g in spatial), max(g[1] for g in spatial)
            win = (match.windows(eqn) or {}).get(1)  # along the first spatial axis (NHWC)
            if win is not None:
                rf, jump = rf + (win.dilation * (win.size - 1)) * jump, jump * win.stride
            outs = [(rf, jump)] * len(eqn.outvars)
        # a cast (a bfloat16 model's activations reported in float32) keeps its input's place
        first = eqn.invars[0]
        cast = eqn.primitive.name == "convert_element_type" and walk.is_var(first) and first in seen
        geometry = []
        for var, g in zip(eqn.outvars, outs):
            if g not in (None, _STATISTIC) and len(getattr(var.aval, "shape", ())) < 3:
                g = _GLOBAL
            geometry.append(g)
            seen.setdefault(var, seen[first] if cast else len(seen))
        return geometry

    return step


def analyze(fn: Callable[[jax.Array], dict], example: jax.Array) -> dict[str, tuple[int, float, int]]:
    """{name: (forward order, receptive field, stride)} for the dict ``fn(example)`` returns."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(example)
    seen: dict[Any, int] = {}
    outs = walk.propagate(closed.jaxpr, [(1, 1)], _geometry(seen))
    leaves, treedef = jax.tree_util.tree_flatten(out_shape)
    names = jax.tree_util.tree_unflatten(treedef, list(range(len(leaves))))
    result = {}
    for name, idx in names.items():
        var = closed.jaxpr.outvars[idx]
        rf, jump = _GLOBAL if outs[idx] == _STATISTIC else outs[idx] or (1, 1)
        order = seen.get(var, -1)
        size = max(example.shape[1:3])
        result[name] = (order, int(min(rf, 10**9)) if rf != float("inf") else size, int(jump))
    return result
