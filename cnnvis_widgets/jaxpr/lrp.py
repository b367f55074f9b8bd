"""Layer-wise relevance propagation as gradient rules: ``lrp(fn, composite)`` is ``fn`` whose
gradient with respect to its image argument is LRP's relevance of its output, forward values unchanged.

Relevance is carried as a modified gradient (as Zennit does): the relevance of any value is the value
times its cotangent, so ReLUs, max-pools (winner takes all), mean-pools, reshapes and residual sums
pass it on by their own gradient, and only linear layers get a rule. A linear layer is a
``conv_general_dilated`` or ``dot_general`` whose first operand depends on the image and whose
second (the kernel) does not, with the ``add`` of an image-independent bias that may follow it; its
custom VJP turns the cotangent ``g`` at its output ``z = x W + b`` (relevance ``z g``) into the
rule's one for ``x``. The bias is part of ``z``, so it absorbs its share of relevance (the ε and γ
rules, as in Montavon et al. 2019; z⁺, flat and w² ignore it). The first linear layer reading the
image gives the relevance itself, and the element-wise preprocessing before it (``(x - mean) /
std``) passes it to the pixels unchanged. ``relu6`` passes relevance unchanged (``R_z = R_a``).
Anything else (a norm not folded into its conv, other activations) passes it by its plain gradient,
which conserves it only where the operation is linear: a batch norm then is a linear layer with its
shift as bias and ε = 0. The zoo's models fold theirs (``fold_batchnorm``).

References: Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
Layer-Wise Relevance Propagation"; Montavon et al. 2019, "Layer-Wise Relevance Propagation: An
Overview".
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from cnnvis_widgets.jaxpr import match, speed, walk
from cnnvis_widgets.jaxpr.evaluate import evaluate

LINEAR = ("conv_general_dilated", "dot_general")
# element-wise operations of the preprocessing before the first layer: relevance passes them unchanged
_ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "neg", "max", "min", "clamp", "convert_element_type"})


class Layer(NamedTuple):
    """A linear layer ``z = lin(x, w) + b`` as its rule sees it: ``positive`` when ``x`` is known to be
    non-negative (it comes from a ReLU, through pools and reshapes)."""

    lin: Callable
    x: Any
    w: Any
    b: Any
    z: Any
    positive: bool


class Rule(NamedTuple):
    """How a linear layer passes relevance from its output to its input.

    ``gradient(layer, g)``: the cotangent for ``x`` (its relevance is ``x`` times it) given ``g`` at
    ``z`` (relevance ``z g``); None for rules that only give relevance (flat, w²: the first layer's,
    since nothing below reads it). ``relevance(layer, g)``: the relevance of ``x``.
    """

    name: str
    gradient: Optional[Callable]
    relevance: Callable


def _rule(name: str, gradient: Callable) -> Rule:
    return Rule(name, gradient, lambda layer, g: layer.x * gradient(layer, g))


def _pull(layer: Layer, w, q):
    """``w^T q``: the gradient of ``lin(., w)`` at ``x`` applied to ``q``."""
    return jax.vjp(lambda x: layer.lin(x, w), layer.x)[1](q.astype(layer.x.dtype))[0]


def _split(layer: Layer, w_pos, w_neg):
    """``lin(x⁺, w_pos) + lin(x⁻, w_neg)`` (one term for non-negative ``x``)."""
    if layer.positive:
        return layer.lin(layer.x, w_pos)
    return layer.lin(jnp.maximum(layer.x, 0), w_pos) + layer.lin(jnp.minimum(layer.x, 0), w_neg)


def _split_pull(layer: Layer, w_pos, w_neg, q):
    """The cotangent of ``_split``: ``w_pos^T q`` where ``x > 0``, ``w_neg^T q`` elsewhere."""
    up = _pull(layer, w_pos, q)
    return up if layer.positive else jnp.where(layer.x > 0, up, _pull(layer, w_neg, q))


def _share(g, z, den):
    """``g z / den``, 0 where ``den`` is 0: the relevance ``z g`` of each output over its denominator."""
    return jnp.where(den == 0, 0, g * z / jnp.where(den == 0, 1, den))


def epsilon_rule(epsilon: float = 1e-6) -> Rule:
    """LRP-ε: ``R_i = sum_j x_i w_ij / (z_j + ε sign z_j) R_j`` (ε = 0: LRP-0, gradient x input).

    References: Bach et al. 2015; Montavon et al. 2019, eq. 4.
    """

    def gradient(layer, g):
        z = layer.z
        return _pull(layer, layer.w, _share(g, z, z + epsilon * jnp.where(z >= 0, 1, -1).astype(z.dtype)))

    return _rule(f"epsilon({epsilon:g})", gradient)


def gamma_rule(gamma: float = 0.25) -> Rule:
    """LRP-γ: contributions of the output's sign favoured by ``γ``: for ``z > 0``, ``x⁺ (w + γ w⁺) +
    x⁻ (w + γ w⁻)`` and bias ``b + γ b⁺``; for ``z < 0`` the same with ⁺ and ⁻ swapped (as Zennit).

    References: Montavon et al. 2019, eq. 3.
    """

    def gradient(layer, g):
        w, b, z = layer.w, layer.b, layer.z
        w_up, w_down = w + gamma * jnp.maximum(w, 0), w + gamma * jnp.minimum(w, 0)
        up = _share(g, z, _split(layer, w_up, w_down) + b + gamma * jnp.maximum(b, 0))
        down = _share(g, z, _split(layer, w_down, w_up) + b + gamma * jnp.minimum(b, 0))
        rising = z > 0
        q_up, q_down = jnp.where(rising, up, 0), jnp.where(rising, 0, down)
        if layer.positive:
            return _pull(layer, w_up, q_up) + _pull(layer, w_down, q_down)
        # x > 0 takes A = w_up q_up + w_down q_down, x < 0 B = w_down q_up + w_up q_down (transposed);
        # A + B = (2 + γ) w (q_up + q_down) and A - B = γ |w| (q_up - q_down): two pulls, not four
        both = _pull(layer, w, q_up + q_down) * (1 + gamma / 2)
        apart = _pull(layer, jnp.abs(w), q_up - q_down) * (gamma / 2)
        return jnp.where(layer.x > 0, both + apart, both - apart)

    return _rule(f"gamma({gamma:g})", gradient)


def zplus_rule() -> Rule:
    """LRP-z⁺: ``R_i = sum_j z⁺_ij / sum_i' z⁺_i'j R_j`` with ``z⁺_ij = x⁺_i w⁺_ij + x⁻_i w⁻_ij`` (the
    positive contributions), bias ignored: never negative where ``R`` is not.

    References: Montavon et al. 2019, section 10.2 (the z⁺ rule of deep Taylor decomposition).
    """

    def gradient(layer, g):
        w_pos, w_neg = jnp.maximum(layer.w, 0), jnp.minimum(layer.w, 0)
        return _split_pull(layer, w_pos, w_neg, _share(g, layer.z, _split(layer, w_pos, w_neg)))

    return _rule("zplus", gradient)


def _spread(weights: Callable, name: str) -> Rule:
    def relevance(layer, g):
        v = weights(layer.w)
        return _pull(layer, v, _share(g, layer.z, layer.lin(jnp.ones_like(layer.x), v)))

    return Rule(name, None, relevance)


def flat_rule() -> Rule:
    """Flat: each output's relevance spread evenly over the inputs it reads (padding excluded), whatever
    their values; the first layer's only.

    References: Lapuschkin et al. 2019, "Unmasking Clever Hans Predictors"; Montavon et al. 2019.
    """
    return _spread(jnp.ones_like, "flat")


def wsquare_rule() -> Rule:
    """w²: each output's relevance spread over its inputs in proportion to ``w²``; the first layer's only.

    References: Montavon et al. 2017, "Explaining Nonlinear Classification Decisions with Deep Taylor
    Decomposition".
    """
    return _spread(jnp.square, "wsquare")


# (linear equation, whether it is the first layer reading the image) -> its rule
Composite = Callable[[Any, bool], Rule]


def by_kind(conv: Rule, dense: Rule, first: Rule | None = None) -> Composite:
    """A composite: ``conv`` for convolutions, ``dense`` for ``dot_general``s, ``first`` (if given)
    for the first layer reading the image."""

    def pick(eqn, is_first: bool) -> Rule:
        if is_first and first is not None:
            return first
        return conv if eqn.primitive.name == "conv_general_dilated" else dense

    return pick


COMPOSITES: dict[str, Callable[[float, float], Composite]] = {
    "epsilon": lambda eps, gam: by_kind(epsilon_rule(eps), epsilon_rule(eps)),
    "epsilon-plus-flat": lambda eps, gam: by_kind(zplus_rule(), epsilon_rule(eps), flat_rule()),
    "epsilon-gamma-flat": lambda eps, gam: by_kind(gamma_rule(gam), epsilon_rule(eps), flat_rule()),
}


def composite(name: str, epsilon: float = 1e-6, gamma: float = 0.25) -> Composite:
    """The composite called ``name`` (``COMPOSITES``): "epsilon" (ε everywhere), "epsilon-plus-flat" (z⁺
    for convolutions, ε for dense layers, flat at the first layer) or "epsilon-gamma-flat" (γ for
    convolutions); ``epsilon`` and ``gamma`` are the ε and γ rules' parameters.

    References: Montavon et al. 2019, section 10.3; Kohlbrenner et al. 2020, "Towards Best Practice in
    Explaining Neural Network Predictions with LRP".
    """
    if name not in COMPOSITES:
        raise ValueError(f"Unknown LRP composite {name!r}; valid: {', '.join(COMPOSITES)}.")
    return COMPOSITES[name](epsilon, gamma)


# operations that keep a non-negative input non-negative (a mean-pool's division by a positive count too)
_KEEP_SIGN = frozenset({
    "reduce_window_max", "reduce_max", "reduce_sum", "reduce_window_sum", "reshape", "transpose",
    "squeeze", "expand_dims", "broadcast_in_dim", "slice", "concatenate", "convert_element_type", "copy",
})  # fmt: skip
_POSITIVE = "non-negative"  # the plan's state of an image-dependent value known to be >= 0 (else True)


class _Plan(NamedTuple):
    """What depends on the image, read from the jaxpr before it is evaluated (vars as keys)."""

    linear: list  # the outputs of the linear layers, the first layer's first
    positive: dict  # a linear output -> whether its input is known to be non-negative
    bias: dict  # an add's output -> (the linear output it adds a bias to, its position in the add)
    passing: dict  # an element-wise output before the first layer -> position of its image operand


def _sign(eqn, ins, inner) -> list:
    """The states of ``eqn``'s outputs: ``_POSITIVE`` after a ReLU and what keeps its sign, else True."""
    if match.activation(eqn):
        return [_POSITIVE]
    if inner is not None:
        return inner
    name, image = eqn.primitive.name, [s for s in ins if s is not None]
    scaled = name in ("mul", "div") and all(
        s is not None or (not walk.is_var(v) and v.val > 0) for v, s in zip(eqn.invars, ins)
    )
    kept = (name in _KEEP_SIGN or scaled) and all(s == _POSITIVE for s in image)
    return [_POSITIVE if kept else True] * len(eqn.outvars)


def _plan(jaxpr, image: set) -> _Plan:
    plan = _Plan([], {}, {}, {})

    def step(eqn, ins, inner):
        reads = [s is not None for s in ins]
        name, out = eqn.primitive.name, eqn.outvars[0]
        if name in LINEAR and reads == [True, False]:
            plan.linear.append(out)
            plan.positive[out] = plan.positive.get(out, True) and ins[0] == _POSITIVE
        elif name == "add" and sum(reads) == 1 and eqn.invars[reads.index(True)] in plan.linear:
            plan.bias[out] = (eqn.invars[reads.index(True)], reads.index(True))
        elif not plan.linear and name in _ELEMENTWISE and sum(reads) == 1:
            k = reads.index(True)
            if eqn.invars[k].aval.shape == out.aval.shape:
                plan.passing[out] = k
        return _sign(eqn, ins, inner)

    walk.propagate(jaxpr, [True if i in image else None for i in range(len(jaxpr.invars))], step)
    return plan


def _linear_fn(eqn) -> Callable:
    """``lin(x, w)``: the equation's linear map, in ``speed.FORWARD``'s fast form where one applies."""

    def lin(x, w):
        for rule in speed.FORWARD:
            outs = rule(eqn, [x, w])
            if outs is not None:
                return outs[0]
        return eqn.primitive.bind(x, w, **eqn.params)

    return lin


def _layer(lin: Callable, rule: Rule, first: bool, positive: bool) -> Callable:
    """``layer(x, w, b) = lin(x, w) + b`` whose VJP for ``x`` is the rule's (zero for ``w`` and ``b``)."""
    backward = rule.relevance if first else rule.gradient
    if backward is None:
        raise ValueError(
            f"The {rule.name} rule gives relevance, not a gradient: it is for the first layer only."
        )

    @jax.custom_vjp
    def layer(x, w, b):
        return lin(x, w) + b

    def fwd(x, w, b):
        z = lin(x, w) + b
        return z, (x, w, b, z)

    def bwd(res, g):
        x, w, b, z = res
        r = backward(Layer(lin, x, w, b, z, positive), g)
        return r.astype(x.dtype), jnp.zeros_like(w), jnp.zeros_like(b)

    layer.defvjp(fwd, bwd)
    return layer


@jax.custom_vjp
def _passing(x, y):
    """``y`` (computed from ``x`` element-wise) whose cotangent goes to ``x`` unchanged."""
    return y


_passing.defvjp(
    lambda x, y: (y, jnp.zeros((), x.dtype)), lambda x0, g: (g.astype(x0.dtype), jnp.zeros_like(g))
)


@jax.custom_vjp
def _relu6(z):
    return jax.nn.relu6(z)


def _relu6_fwd(z):
    a = jax.nn.relu6(z)
    return a, (z, a)


_relu6.defvjp(_relu6_fwd, lambda res, g: (_share(g, res[1], res[0]),))  # R_z = z (g a / z) = R_a


def _rules(plan: _Plan, pick: Composite) -> tuple:
    linear, biased = set(plan.linear), {var for var, _ in plan.bias.values()}
    pending = {}  # a linear output -> (x, w, lin, eqn, is first): the bias add after it computes the layer

    def rule(eqn, ins, producer=None):
        out = eqn.outvars[0]
        if out in linear:  # the first evaluated once only (a jitted block called twice has one jaxpr)
            lin, first = _linear_fn(eqn), out is plan.linear[0] and not pending
            pending[out] = (ins[0], ins[1], lin, eqn, first)
            if out in biased:  # the add computes the layer; a custom VJP here would still run, on zeros
                return [lin(*ins)]
            layer = _layer(lin, pick(eqn, first), first, plan.positive[out])
            return [layer(*ins, jnp.zeros((), ins[0].dtype))]
        if out in plan.bias:
            var, k = plan.bias[out]
            x, w, lin, made, first = pending[var]
            layer = _layer(lin, pick(made, first), first, plan.positive[var])
            return [layer(x, w, ins[1 - k]).astype(out.aval.dtype)]
        if out in plan.passing:
            k = plan.passing[out]
            return [_passing(ins[k], eqn.primitive.bind(*ins, **eqn.params))]
        if match.activation(eqn) == "relu6":
            return [_relu6(ins[0])]
        return None

    return (rule,)


def lrp(fn: Callable, pick: Composite | str = "epsilon-plus-flat", image_arg: int = 0) -> Callable:
    """``fn`` evaluated so that the gradient of its (scalar) output with respect to ``args[image_arg]``
    is that output's LRP relevance under the composite ``pick`` (a name of ``COMPOSITES`` or a
    function ``(equation, is_first) -> Rule``); forward values unchanged.

    References: Bach et al. 2015; Montavon et al. 2019.
    """
    pick = composite(pick) if isinstance(pick, str) else pick

    @functools.wraps(fn)
    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        start = len(jax.tree_util.tree_leaves(args[:image_arg]))
        image = set(range(start, start + len(jax.tree_util.tree_leaves(args[image_arg]))))
        leaves = jax.tree_util.tree_leaves(args)
        outs = evaluate(closed.jaxpr, closed.consts, leaves, rules(closed.jaxpr, image, pick))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped


def rules(jaxpr, image: set, pick: Composite | str = "epsilon-plus-flat") -> tuple:
    """The evaluator rules (``jaxpr.evaluate``) that give ``jaxpr`` LRP's gradient under ``pick``, where
    ``image`` holds the positions of the image's leaves among its inputs: for callers that evaluate the
    jaxpr themselves (with taps: concept relevance, ``engine.concepts``)."""
    pick = composite(pick) if isinstance(pick, str) else pick
    plan = _plan(jaxpr, image)
    if not plan.linear:
        raise ValueError(
            "LRP found no linear layer reading the image (a conv_general_dilated or dot_general whose "
            "kernel does not depend on the image), so it has no layer to apply its rules to."
        )
    return _rules(plan, pick)
