"""Convolutions in the forms XLA:CPU runs fast, swapped into every Probe's forward pass.

Measured with ``benchmarks/profile_ascent.py`` (XLA's own per-op trace) on EfficientNet-Lite0
(the figures: benchmarks/results/why.md):

- depthwise convolutions (one filter per channel) ran far below their element-wise form, with
  or without XLA:CPU's YNNPACK fusion; here they are kh x kw shifted, strided slices times their
  kernel tap, summed, and their input-gradient the same on the stride-dilated cotangent with the
  kernel flipped;
- 1x1 convolutions ran slower in the library fusion than as the matrix product they are.

Values
are the same function's, to float rounding; analyses that read a model's convolutions from its
jaxpr (kernels, receptive fields, memory) use ``Probe.reference_forward``, which keeps them.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from cnnvis_widgets.models.rewrite import frozen, rewrite

NHWC = (0, 3, 1, 2)  # ConvDimensionNumbers specs: batch/out-feature, feature/in-feature, spatial...
HWIO = (3, 2, 0, 1)


def nhwc_hwio(params) -> bool:
    """A convolution with NHWC inputs/outputs and an HWIO kernel, not transposed (no lhs dilation)."""
    dn = params["dimension_numbers"]
    return (
        tuple(dn.lhs_spec) == NHWC
        and tuple(dn.rhs_spec) == HWIO
        and tuple(dn.out_spec) == NHWC
        and params["batch_group_count"] == 1
        and all(d == 1 for d in params["lhs_dilation"])
        and params.get("preferred_element_type") is None
    )


def _pointwise(params, rhs_shape) -> bool:
    """An NHWC/HWIO 1x1 convolution with stride 1 and no padding: a matrix product per pixel."""
    return (
        nhwc_hwio(params)
        and tuple(rhs_shape[:2]) == (1, 1)
        and params["feature_group_count"] == 1
        and all(s == 1 for s in params["window_strides"])
        and all(lo == hi == 0 for lo, hi in params["padding"])
    )


def _pointwise_conv(lhs, rhs):
    """A 1x1 convolution as the matrix product over channels it is."""
    return lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())))


def _depthwise(params, lhs_shape, rhs_shape) -> bool:
    """An NHWC/HWIO depthwise convolution (one filter per input channel) with plain padding."""
    channels = lhs_shape[-1] if len(lhs_shape) == 4 else 0
    return (
        nhwc_hwio(params)
        and channels > 1
        and params["feature_group_count"] == channels
        and tuple(rhs_shape[2:]) == (1, channels)
        and all(lo >= 0 and hi >= 0 for lo, hi in params["padding"])
    )


@functools.lru_cache(maxsize=None)
def _shifted_depthwise(frozen_params):
    """A depthwise conv as kh x kw shifted, strided slices times their kernel tap, summed; its
    input-gradient the same on the (stride-dilated) cotangent with the kernel flipped. Each
    direction fuses into one memory-bound loop (autodiff's gradient of the slices was one pad
    per tap instead, slower).
    """
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


def _replace(eqn, ins, _producer=None):
    # float32 only: a bfloat16 shift-add would also accumulate its taps in bfloat16
    if eqn.primitive.name != "conv_general_dilated" or any(v.aval.dtype != jnp.float32 for v in eqn.invars):
        return None
    lhs_shape, rhs_shape = (v.aval.shape for v in eqn.invars)
    if _pointwise(eqn.params, rhs_shape):
        return [_pointwise_conv(*ins)]
    if _depthwise(eqn.params, lhs_shape, rhs_shape):
        return [_shifted_depthwise(frozen(eqn.params))(*ins)]
    return None


def fast_convolutions(fn: Callable) -> Callable:
    """``fn`` with its depthwise and 1x1 convolutions computed in XLA:CPU's fast forms."""
    return rewrite(fn, _replace)


def count_fast_convolutions(fn: Callable, *args) -> tuple[int, int]:
    """(convolutions ``fast_convolutions`` swaps, all convolutions) in ``fn(*args)``: a diagnostic."""
    counts = [0, 0]

    def replace(eqn, ins, _producer):
        if eqn.primitive.name == "conv_general_dilated":
            counts[0] += _replace(eqn, ins) is not None
            counts[1] += 1
        return None

    jax.eval_shape(rewrite(fn, replace), *args)
    return counts[0], counts[1]
