"""Speed rewrites: equations computed in forms XLA:CPU runs faster, same values and gradients.

Each is a rule for ``evaluate.rewrite``, found by ``benchmarks/profile_ascent.py`` (XLA's own
per-op trace) and ``benchmarks/bench_ascent.py``; the figures are in benchmarks/results/why.md.

- ``FORWARD`` (every Probe's forward): ``depthwise_conv_as_shifts`` (depthwise convolutions ran
  far below their element-wise form) and ``pointwise_conv_as_matmul`` (1x1 convolutions ran
  slower in the library fusion than as the matrix product they are).
- ``GRADIENTS`` (where a loop differentiates): ``conv_with_fast_input_gradient`` (inside a loop,
  XLA:CPU compiles a stock conv's input-gradient, kernel dims ``01oi``, to a slow generic kernel,
  jax-ml/jax#12868) and ``max_pool_with_elementwise_gradient`` (select-and-scatter expands into
  full-size index arrays and a scatter).

Analyses that read a model's convolutions from its jaxpr use ``Probe.reference_forward``, which
has none of these.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from cnnvis_widgets.jaxpr import match
from cnnvis_widgets.jaxpr.walk import frozen


def _float32(eqn) -> bool:
    # a bfloat16 shift-add would also accumulate its taps in bfloat16
    return all(v.aval.dtype == jnp.float32 for v in eqn.invars)


def pointwise_conv_as_matmul(eqn, ins, producer=None):
    """A float32 1x1 convolution as the matrix product over channels it is."""
    if not (match.pointwise_conv(eqn) and _float32(eqn)):
        return None
    lhs, rhs = ins
    return [lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())))]


def depthwise_conv_as_shifts(eqn, ins, producer=None):
    """A float32 depthwise convolution as kh x kw shifted, strided slices times their kernel tap,
    summed; its input-gradient the same on the stride-dilated cotangent with the kernel flipped.
    Each direction fuses into one memory-bound loop (autodiff's gradient of the slices was one pad
    per tap instead, slower)."""
    if not (match.depthwise_conv(eqn) and _float32(eqn)):
        return None
    return [_shifted_depthwise(frozen(eqn.params))(*ins)]


@functools.lru_cache(maxsize=None)
def _shifted_depthwise(frozen_params):
    params = dict(frozen_params)
    (sh, sw), (dh, dw) = params["window_strides"], params["rhs_dilation"]
    (top, bottom), (left, right) = params["padding"]

    def shift_add(x, taps, strides, out_hw, origin=(0, 0)):
        """sum over taps (i, j) of x[origin + (i dh, j dw) + strides * (y, x)] * kernel[i, j]."""
        n, c = x.shape[0], x.shape[-1]
        out = None
        for (i, j), weight in taps:
            y0, x0 = origin[0] + i * dh, origin[1] + j * dw
            stop = (n, y0 + strides[0] * (out_hw[0] - 1) + 1, x0 + strides[1] * (out_hw[1] - 1) + 1, c)
            term = lax.slice(x, (0, y0, x0, 0), stop, (1, *strides, 1)) * weight
            out = term if out is None else out + term
        return out

    def conv(lhs, rhs):
        kh, kw = rhs.shape[:2]
        x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
        ho = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
        taps = [((i, j), rhs[i, j, 0]) for i in range(kh) for j in range(kw)]
        return shift_add(x, taps, (sh, sw), (ho, wo))

    def input_grad(lhs, rhs, g):
        h, w = lhs.shape[1:3]
        kh, kw = rhs.shape[:2]
        ho, wo = g.shape[1:3]
        hp, wp = h + top + bottom, w + left + right
        # g dilated by the stride and padded so every tap of the flipped kernel finds its terms
        spread = (
            (0, 0, 0),
            (dh * (kh - 1), hp - sh * (ho - 1) - 1, sh - 1),
            (dw * (kw - 1), wp - sw * (wo - 1) - 1, sw - 1),
            (0, 0, 0),
        )
        gp = lax.pad(g, jnp.zeros((), g.dtype), spread)
        taps = [((i, j), rhs[kh - 1 - i, kw - 1 - j, 0]) for i in range(kh) for j in range(kw)]
        return shift_add(gp, taps, (1, 1), (h, w), origin=(top, left))

    return with_input_gradient(conv, input_grad)


def with_input_gradient(conv: Callable, input_grad: Callable) -> Callable:
    """``conv(lhs, rhs)`` whose gradient w.r.t. ``lhs`` is ``input_grad(lhs, rhs, g)``; the kernel's
    is autodiff's (XLA drops it when unused, as in activation maximization and saliency)."""

    @jax.custom_vjp
    def f(lhs, rhs):
        return conv(lhs, rhs)

    def fwd(lhs, rhs):
        return conv(lhs, rhs), (lhs, rhs)

    def bwd(res, g):
        lhs, rhs = res
        d_rhs = jax.vjp(lambda r: conv(lhs, r), rhs)[1](g)[0]
        return input_grad(lhs, rhs, g).astype(lhs.dtype), d_rhs

    f.defvjp(fwd, bwd)
    return f


def conv_with_fast_input_gradient(eqn, ins, producer=None):
    """An ungrouped NHWC/HWIO convolution whose input-gradient is an ordinary HWIO convolution with
    the kernel flipped and its in/out channels swapped, which XLA:CPU runs fast in and out of loops.
    Grouped convolutions keep XLA's own gradient (swapped, EfficientNet-Lite0's scanned step ran
    slower; its depthwise ones arrive here already as ``depthwise_conv_as_shifts``)."""
    if not (match.nhwc_hwio(eqn) and eqn.params["feature_group_count"] == 1):
        return None
    return [_fast_input_gradient_conv(frozen(eqn.params))(*ins)]


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
def _fast_input_gradient_conv(frozen_params):
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


def max_pool_with_elementwise_gradient(eqn, ins, producer=None):
    """A max-pool whose windows tile its input, with an element-wise backward: the cotangent goes
    to the first maximum of each window, which is exactly XLA's gradient, ties included."""
    if not match.tiling_max_pool(eqn):
        return None
    return [_elementwise_gradient_pool(frozen(eqn.params))(*ins)]


@functools.lru_cache(maxsize=None)
def _elementwise_gradient_pool(frozen_params):
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


FORWARD = (depthwise_conv_as_shifts, pointwise_conv_as_matmul)
GRADIENTS = (conv_with_fast_input_gradient, max_pool_with_elementwise_gradient)
