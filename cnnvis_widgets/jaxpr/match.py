"""Predicates that recognise things in a jaxpr: activations by what produced them, convolutions
and pools by their parameters."""

from __future__ import annotations

from typing import NamedTuple, Optional

# the activations whose gradient rules exist (``gradients.relu_rule``): jax.nn's functions of that
# name, which flax's ``nn.relu`` / ``nnx.relu`` are
ACTIVATIONS = ("relu", "relu6")
NHWC = (0, 3, 1, 2)  # ConvDimensionNumbers specs: batch/out-feature, feature/in-feature, spatial...
HWIO = (3, 2, 0, 1)
_JIT = ("pjit", "jit")


def _only(jaxpr, names):
    """The single equation of ``jaxpr`` if it is one of ``names`` and returns what it computes."""
    if len(jaxpr.eqns) != 1 or jaxpr.eqns[0].primitive.name not in names:
        return None
    eqn = jaxpr.eqns[0]
    return eqn if list(eqn.outvars) == list(jaxpr.outvars) else None


def activation(eqn) -> Optional[str]:
    """``"relu"`` or ``"relu6"`` when ``eqn`` is a call of ``jax.nn.relu`` / ``jax.nn.relu6``, else None.

    Recognised by what produced the value, not by its arithmetic: jax.nn's activations are a
    ``jax.custom_jvp`` around a ``jax.jit`` named after the function (either nesting is accepted),
    so a hand-written ``jnp.maximum(x, 0)`` or a normalization's variance clamp is no activation.
    """
    name = eqn.primitive.name
    if name == "custom_jvp_call":
        inner = _only(eqn.params["call_jaxpr"].jaxpr, _JIT)
        found = inner is not None and inner.params.get("name")
    elif name in _JIT:
        found = _only(eqn.params["jaxpr"].jaxpr, ("custom_jvp_call",)) is not None and eqn.params.get("name")
    else:
        return None
    return found if found in ACTIVATIONS and len(eqn.invars) == 1 else None


def nhwc_hwio(eqn) -> bool:
    """A convolution with NHWC inputs/outputs and an HWIO kernel, not transposed (no lhs dilation)."""
    if eqn.primitive.name != "conv_general_dilated":
        return False
    p, dn = eqn.params, eqn.params["dimension_numbers"]
    return (
        tuple(dn.lhs_spec) == NHWC
        and tuple(dn.rhs_spec) == HWIO
        and tuple(dn.out_spec) == NHWC
        and p["batch_group_count"] == 1
        and all(d == 1 for d in p["lhs_dilation"])
        and p.get("preferred_element_type") is None
    )


def pointwise_conv(eqn) -> bool:
    """An NHWC/HWIO 1x1 convolution with stride 1 and no padding: a matrix product per pixel."""
    p = eqn.params
    return (
        nhwc_hwio(eqn)
        and tuple(eqn.invars[1].aval.shape[:2]) == (1, 1)
        and p["feature_group_count"] == 1
        and all(s == 1 for s in p["window_strides"])
        and all(lo == hi == 0 for lo, hi in p["padding"])
    )


def depthwise_conv(eqn) -> bool:
    """An NHWC/HWIO depthwise convolution (one filter per input channel) with plain padding."""
    if not nhwc_hwio(eqn):
        return False
    lhs_shape, rhs_shape = (v.aval.shape for v in eqn.invars)
    channels = lhs_shape[-1] if len(lhs_shape) == 4 else 0
    return (
        channels > 1
        and eqn.params["feature_group_count"] == channels
        and tuple(rhs_shape[2:]) == (1, channels)
        and all(lo >= 0 and hi >= 0 for lo, hi in eqn.params["padding"])
    )


def tiling_max_pool(eqn) -> bool:
    """An NHWC max-pool whose windows tile the input: window == stride, no padding or dilation."""
    if eqn.primitive.name != "reduce_window_max":
        return False
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


class Window(NamedTuple):
    """A sliding window along one axis: its size, stride and dilation, the padding before the
    first position, and the input's dilation (a transposed convolution's)."""

    size: int
    stride: int
    dilation: int
    pad_lo: int
    input_dilation: int


def windows(eqn) -> Optional[dict[int, Window]]:
    """The sliding windows of a convolution or a pooling (``reduce_window_*``), ``{input axis:
    Window}`` (a convolution's spatial axes; every axis of a pooling), or None for any other
    equation: the geometry the receptive-field walkers read (Araujo et al. 2019)."""
    name, p = eqn.primitive.name, eqn.params
    if name == "conv_general_dilated":
        dn, kernel = p["dimension_numbers"], eqn.invars[1].aval.shape
        return {
            axis: Window(kernel[dn.rhs_spec[2 + i]], p["window_strides"][i], p["rhs_dilation"][i],
                         p["padding"][i][0], p["lhs_dilation"][i])
            for i, axis in enumerate(dn.lhs_spec[2:])
        }
    if name.startswith("reduce_window"):
        n = len(p["window_dimensions"])
        window_dilation = p.get("window_dilation") or (1,) * n
        base_dilation = p.get("base_dilation") or (1,) * n
        return {
            axis: Window(p["window_dimensions"][axis], p["window_strides"][axis], window_dilation[axis],
                         p["padding"][axis][0], base_dilation[axis])
            for axis in range(n)
        }
    return None
