"""Gradient rules swapped into any model's traced computation, without editing the model.

``with_gradient_rules(fn, fast_conv=True, relu=None)`` re-traces ``fn`` (a linen
or nnx model, ours or a user's) to a jaxpr and evaluates it with some primitives
replaced by ``jax.custom_vjp`` versions (through ``models.rewrite``). Forward values never change.

Fast convolution input-gradients. Inside a loop, XLA:CPU compiles the input-gradient of a plain HWIO convolution
(JAX's transpose rule emits it with kernel dims ``01oi``) to a slow generic
kernel, several times slower than the same step in a Python loop (jax-ml/jax#12868;
the figures: benchmarks/results/why.md). Each NHWC/HWIO ``conv_general_dilated`` is swapped for
one whose input-gradient is an ordinary HWIO convolution with the kernel
flipped and its in/out channels swapped, which XLA:CPU runs fast in and out of
loops. Gradients are unchanged.
(Depthwise and 1x1 convolutions arrive already in their fast forms, with their own
input-gradients: ``models.fast_convs``, applied by every Probe's forward.)

Fast max-pool gradients. XLA:CPU computes the gradient of a max-pool with
select-and-scatter, expanded into full-size int32 index arrays and a scatter, a
large part of a whole-layer ascent's time (benchmarks/bench_ascent.py).
Non-overlapping pools (window == stride, no padding) get an element-wise
backward instead: the cotangent goes to the first maximum of each window, which
is exactly XLA's gradient, ties included.

ReLU rules (``relu=``), applied to every ``max(x, 0)`` (so ``jax.nn.relu`` and
``relu6`` too): "redirected" (Lucid's redirected ReLU gradient: when no
gradient passes a ReLU for a whole image, let through the part that would
raise negative inputs, so a grey start on a silent unit still moves); "guided" (guided
backprop, Springenberg et al. 2015: the gradient passes only where the input was positive
AND the incoming gradient is positive); "deconvnet" (Zeiler & Fergus 2014: the positive part
of the incoming gradient passes, whatever the input). Sign convention: a rule sees the
cotangent of whatever is differentiated. "guided" and "deconvnet" assume that is the score
being explained (larger = more evidence); "redirected" assumes a loss being minimized.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from cnnvis_widgets.models.fast_convs import nhwc_hwio, with_input_gradient
from cnnvis_widgets.models.rewrite import evaluate, frozen, rewrite


def _swappable(params) -> bool:
    # Grouped convs keep XLA's own gradient: swapped, EfficientNet-Lite0's scanned step ran slower
    # (its depthwise convs now reach here already in fast_convs' element-wise form).
    return nhwc_hwio(params) and params["feature_group_count"] == 1


def _transposed_kernel(rhs: jax.Array, groups: int) -> jax.Array:
    """(kh, kw, I/G, O) → spatially flipped (kh, kw, O/G, I), grouped channels kept aligned."""
    kh, kw, ig, o = rhs.shape
    og = o // groups
    r = rhs.reshape(kh, kw, ig, groups, og).transpose(0, 1, 4, 3, 2).reshape(kh, kw, og, groups * ig)
    return r[::-1, ::-1]


def _input_grad_padding(params, in_hw, k_hw, out_hw):
    """Padding of the transposed conv so its output has the input's spatial size."""
    pads = []
    for (lo, _hi), n, k, s, d, m in zip(
        params["padding"], in_hw, k_hw, params["window_strides"], params["rhs_dilation"], out_hw
    ):
        k_eff = d * (k - 1) + 1
        before = k_eff - 1 - lo
        dilated = (m - 1) * s + 1
        after = n + k_eff - 1 - dilated - before
        pads.append((before, after))
    return tuple(pads)


@functools.lru_cache(maxsize=None)
def _fast_conv(frozen_params):
    params = dict(frozen_params)

    def input_grad(lhs, rhs, g):
        padding = _input_grad_padding(params, lhs.shape[1:3], rhs.shape[:2], g.shape[1:3])
        return lax.conv_general_dilated(
            g,
            _transposed_kernel(rhs, params["feature_group_count"]),
            (1, 1),
            padding,
            lhs_dilation=params["window_strides"],
            rhs_dilation=params["rhs_dilation"],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=params["feature_group_count"],
            precision=params["precision"],
        )

    return with_input_gradient(functools.partial(lax.conv_general_dilated_p.bind, **params), input_grad)


def _poolable(eqn) -> bool:
    p = eqn.params
    dims, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    shape = eqn.invars[0].aval.shape
    return (
        len(shape) == 4
        and dims == strides
        and dims[0] == dims[3] == 1
        and all(lo == hi == 0 for lo, hi in p["padding"])
        and all(d == 1 for d in p["base_dilation"])
        and all(d == 1 for d in p["window_dilation"])
        and shape[1] % dims[1] == 0
        and shape[2] % dims[2] == 0
    )


@functools.lru_cache(maxsize=None)
def _fast_max_pool(frozen_params):
    params = dict(frozen_params)
    kh, kw = params["window_dimensions"][1:3]
    pool = functools.partial(lax.reduce_window_max_p.bind, **params)

    @jax.custom_vjp
    def f(x):
        return pool(x)

    def fwd(x):
        y = pool(x)
        return y, (x, y)

    def bwd(res, g):
        x, y = res
        n, h, w, c = x.shape
        hit = x.reshape(n, h // kh, kh, w // kw, kw, c) == y[:, :, None, :, None, :]
        hit = hit.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // kh, w // kw, c, kh * kw)
        first = hit & (jnp.cumsum(hit, axis=-1) == 1)  # ties: the first maximum, as XLA does
        first = first.reshape(n, h // kh, w // kw, c, kh, kw).transpose(0, 1, 4, 2, 5, 3)
        return ((first * g[:, :, None, :, None, :]).reshape(x.shape).astype(x.dtype),)

    f.defvjp(fwd, bwd)
    return f


@jax.custom_vjp
def _redirected_relu(x):
    return jnp.maximum(x, 0.0)


def _redirected_fwd(x):
    return jnp.maximum(x, 0.0), x


def _redirected_bwd(x, g):
    """Lucid's redirected_relu_grad (g: cotangent of a loss being minimized)."""
    # The ReLU's own gradient where(x < 0, 0, g) if any of it is non-zero; otherwise the
    # redirected one where((x < 0) & (g > 0), 0, g), which passes only what pushes negative
    # inputs up. Written as one select after one reduction, so XLA fuses it into two passes.
    negative = x < 0
    passes = jnp.any(~negative & (g != 0))
    return (jnp.where(negative & (passes | (g > 0)), jnp.zeros_like(g), g),)


_redirected_relu.defvjp(_redirected_fwd, _redirected_bwd)


def _relu_fwd(x):
    return jnp.maximum(x, 0.0), x


@jax.custom_vjp
def _guided_relu(x):
    return jnp.maximum(x, 0.0)


def _guided_bwd(x, g):
    """Guided backprop (Springenberg et al. 2015): pass g only where x > 0 AND g > 0.

    g is the cotangent of the quantity being differentiated, which must be the score being
    explained (larger = more evidence). Differentiating a loss (e.g. -score) flips g's sign and
    would keep the negative evidence instead: differentiate the score itself.
    """
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


_guided_relu.defvjp(_relu_fwd, _guided_bwd)


@jax.custom_vjp
def _deconvnet_relu(x):
    return jnp.maximum(x, 0.0)


def _deconvnet_bwd(x, g):
    """Deconvnet (Zeiler & Fergus 2014): relu(g) whatever x was (same sign convention as guided)."""
    del x
    return (jnp.maximum(g, 0.0),)


_deconvnet_relu.defvjp(_relu_fwd, _deconvnet_bwd)
RELU_RULES = {"redirected": _redirected_relu, "guided": _guided_relu, "deconvnet": _deconvnet_relu}


def _is_relu(eqn, producer) -> bool:
    """``max(x, 0)`` with a literal scalar zero, unless it is a normalization's variance clamp:
    Flax's BatchNorm, LayerNorm and GroupNorm (linen and nnx) compute ``max(0, E[x²] - E[x]²)``,
    whose gradient a ReLU rule must not touch (guided backprop through a GroupNorm went wrong)."""
    if eqn.primitive.name != "max" or len(eqn.invars) != 2:
        return False
    zero = [isinstance(v, jcore.Literal) and jnp.ndim(v.val) == 0 and v.val == 0 for v in eqn.invars]
    if not any(zero):
        return False
    return not _is_variance(eqn.invars[1] if zero[0] else eqn.invars[0], producer)


def _is_variance(var, producer) -> bool:
    """``var`` is ``a - b²`` (b² as ``square``, ``integer_pow`` 2 or ``b * b``): a variance."""
    diff = producer(var)
    if diff is None or diff.primitive.name != "sub":
        return False
    sq = producer(diff.invars[1])
    if sq is None:
        return False
    name = sq.primitive.name
    return (
        name == "square"
        or (name == "integer_pow" and sq.params.get("y") == 2)
        or (name == "mul" and sq.invars[0] is sq.invars[1])
    )


def _replacement(rules) -> Callable:
    """The ``rewrite.Replace`` that applies ``rules`` to a traced model."""

    def replace(eqn, ins, producer):
        name = eqn.primitive.name
        if name == "conv_general_dilated" and rules.fast_conv and _swappable(eqn.params):
            return [_fast_conv(frozen(eqn.params))(*ins)]
        if name == "reduce_window_max" and rules.fast_pool and _poolable(eqn):
            return [_fast_max_pool(frozen(eqn.params))(*ins)]
        if rules.relu is not None and _is_relu(eqn, producer):
            x = ins[1] if isinstance(eqn.invars[0], jcore.Literal) else ins[0]
            return [RELU_RULES[rules.relu](x)]
        if name == "custom_jvp_call" and rules.relu is not None:  # relu's own rule is replaced
            sub = eqn.params["call_jaxpr"]
            return evaluate(sub.jaxpr, sub.consts, ins, replace)
        return None

    return replace


class _Rules(NamedTuple):
    fast_conv: bool
    fast_pool: bool
    relu: str | None


def with_gradient_rules(
    fn: Callable, fast_conv: bool = True, relu: str | None = None, fast_pool: bool = True
) -> Callable:
    """``fn`` with fast convolution input-gradients and, optionally, a ReLU gradient rule.

    Args:
      fn: any function of arrays / pytrees (e.g. ``lambda v, x: probe.forward(v, x)``).
      fast_conv: swap NHWC/HWIO convolutions for the loop-friendly input-gradient.
      fast_pool: swap non-overlapping max-pools for the element-wise gradient.
      relu: None (exact gradients) or one of ``RELU_RULES``.
    """
    if relu is not None and relu not in RELU_RULES:
        raise ValueError(f"Unknown ReLU rule {relu!r}; valid: {sorted(RELU_RULES)} or None.")
    return rewrite(fn, _replacement(_Rules(fast_conv, fast_pool, relu)))


def count_swappable_convs(fn: Callable, *args) -> tuple[int, int]:
    """(convolutions that will be swapped, all convolutions) in ``fn(*args)``: a diagnostic."""
    counts = [0, 0]

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                counts[1] += 1
                counts[0] += _swappable(eqn.params)
            for p in eqn.params.values():
                if isinstance(p, jcore.ClosedJaxpr):
                    walk(p.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts[0], counts[1]


__all__ = ["RELU_RULES", "count_swappable_convs", "with_gradient_rules"]
