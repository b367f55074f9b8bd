"""A conv's output after the normalization and activation that follow it: the layer a reader means.

Flax captures a module's own output, so a captured ``Conv`` is its value *before* the BatchNorm
and ReLU written after it; "dead" filters and feature maps of that value mean something other
than what a user expects (half of it is negative). This module finds, in the model's traced
computation, the value the conv becomes once everything that follows it directly has been
applied, and offers it as a layer of its own, ``<conv>+act``.

"Follows it directly" is read off the jaxpr: starting from the conv's output, equations are taken
in order while they combine the region's values only with values that do not depend on the
image (a norm's scale, shift and running statistics) and mix nothing across channels or space (no
convolution, matrix product or pooling window; a norm's own mean and variance are reductions of
the region and stay in it). Each time the region narrows to one value that everything later
reads, of the conv's size, that value is a candidate; the last candidate after a non-linearity
applied to the whole value (ReLU, GELU, SiLU, ...) is the conv's post-activation output. A
residual add, a pool or the next conv ends the region, so a conv whose norm feeds a residual sum
gets no ``+act`` layer (the block's output is that value).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
from jax.extend import core as jcore

from cnnvis_widgets.jaxpr import walk
from cnnvis_widgets.jaxpr.evaluate import evaluate

SUFFIX = "+act"
# primitives that mix channels or positions: a region never takes them in
_MIXING = ("conv_general_dilated", "dot_general", "reduce_window", "select_and_gather_add", "cumsum")
# element-wise non-linearities (relu is max, gelu tanh or erf, silu and sigmoid logistic, ...)
_NONLINEAR = ("max", "min", "clamp", "logistic", "tanh", "erf", "select_n", "abs", "exp", "expm1")


def _primitives(eqn):
    """The names of ``eqn``'s primitive and of every primitive inside it (a jit, a custom_jvp)."""
    yield eqn.primitive.name
    for sub in walk.sub_jaxprs(eqn):
        yield from (inner.primitive.name for inner in walk.eqns(sub))


def _mixes(eqn) -> bool:
    return any(name.startswith(_MIXING) for name in _primitives(eqn))


def _nonlinear_on(eqn, size: int) -> bool:
    """A non-linearity applied to a value of ``size`` elements (not to a norm's statistics)."""
    outs = [v for v in eqn.outvars if math.prod(getattr(v.aval, "shape", ())) == size]
    return bool(outs) and any(name in _NONLINEAR for name in _primitives(eqn))


def _image_dependent(jaxpr, image_vars: set) -> set:
    """The values of ``jaxpr`` computed from ``image_vars``."""
    dependent = set(image_vars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jcore.Literal) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    return dependent


def find(jaxpr, image_vars: set, sources: Mapping[str, Any], ignored_outputs: set) -> dict[str, Any]:
    """{name: the value ``sources[name]`` becomes after the norm and activation that follow it}
    for the sources that have one. ``ignored_outputs``: outputs of ``jaxpr`` that are not reads
    (the captured layers themselves)."""
    eqns = jaxpr.eqns
    made_at = {v: i for i, eqn in enumerate(eqns) for v in eqn.outvars}
    last_read: dict[Any, float] = {}
    for i, eqn in enumerate(eqns):
        for v in eqn.invars:
            if not isinstance(v, jcore.Literal):
                last_read[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, jcore.Literal) and v not in ignored_outputs:
            last_read[v] = math.inf
    dependent = _image_dependent(jaxpr, image_vars)
    found = {}
    for name, source in sources.items():
        if source not in made_at:
            continue
        size = math.prod(source.aval.shape)
        region, nonlinear, best = {source}, False, None
        for i in range(made_at[source] + 1, len(eqns)):
            eqn = eqns[i]
            ins = [v for v in eqn.invars if not isinstance(v, jcore.Literal)]
            if not any(v in region for v in ins):
                continue
            if _mixes(eqn) or any(v not in region and v in dependent for v in ins):
                break
            region.update(eqn.outvars)
            nonlinear = nonlinear or _nonlinear_on(eqn, size)
            live = [v for v in region if last_read.get(v, -1) > i]
            if nonlinear and len(live) == 1 and live[0].aval.shape == source.aval.shape:
                best = live[0]
        if best is not None:
            found[name] = best
    return found


def with_post_activations(
    forward: Callable, example: Sequence[Any], names: Sequence[str]
) -> tuple[Callable, dict[str, str]]:
    """``forward(variables, x) -> (output, {layer: activation})`` that also returns, for each of
    ``names`` that has one, its post-activation value as ``<name>+act``; and {new name: name}.
    Found on ``example`` (variables, x) once to name the layers, and again on each trace."""

    def traced(variables, x):
        closed, shape = jax.make_jaxpr(forward, return_shape=True)(variables, x)
        jaxpr = closed.jaxpr
        leaves, treedef = jax.tree_util.tree_flatten(shape)
        positions = jax.tree_util.tree_unflatten(treedef, list(range(len(leaves))))[1]
        captured = {n: jaxpr.outvars[i] for n, i in positions.items()}
        image_vars = set(jaxpr.invars[len(jax.tree_util.tree_leaves(variables)) :])
        sources = {n: captured[n] for n in names if n in captured and n + SUFFIX not in captured}
        posts = find(jaxpr, image_vars, sources, set(captured.values()))
        # a post-activation value that is a captured layer already (a block's output) is that layer
        posts = {n: v for n, v in posts.items() if v not in set(captured.values())}
        return closed, treedef, posts

    posts = traced(*example)[2]
    added = {n + SUFFIX: n for n in posts}
    if not added:
        return forward, {}

    def forward_with_posts(variables, x):
        closed, treedef, posts = traced(variables, x)
        jaxpr = closed.jaxpr
        present = [n for n in added.values() if n in posts]  # found on this trace too
        wide = jaxpr.replace(outvars=[*jaxpr.outvars, *(posts[n] for n in present)])
        leaves = jax.tree_util.tree_leaves((variables, x))
        outs = evaluate(wide, closed.consts, leaves)
        out, acts = jax.tree_util.tree_unflatten(treedef, outs[: len(jaxpr.outvars)])
        acts = dict(acts)
        acts.update(zip((n + SUFFIX for n in present), outs[len(jaxpr.outvars) :]))
        return out, acts

    return forward_with_posts, added
