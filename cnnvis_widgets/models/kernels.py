"""The convolution kernel that produces a conv layer's output, found by tracing the model.

Works for any model a Probe wraps (linen or nnx, ours or a user's) without knowing
how its parameters are named: the layer's output is traced to a jaxpr with the
variables as inputs, and the walk goes back from the output through element-wise
work (bias, batch-norm arithmetic, activations, reshapes) to the nearest
``conv_general_dilated``. Its kernel input is then evaluated concretely: usually
it is a variables leaf itself, but a kernel computed from parameters (weight
standardization, weight norm) is evaluated too.

What is refused, with the reason: layers that are not spatial (dense), layers
produced by another operation (pooling, a dense head), and layers where two
image-dependent paths meet (a residual add, a concatenation): no single kernel
produces those; their conv parts have kernels of their own. Inputs broadcast over
the spatial axes (a bias, a squeeze-excite gate) are per-channel modulations and
do not count as a second path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from cnnvis_widgets.jaxpr import walk

# Element-wise (or layout-preserving) primitives the walk passes through.
_PASS = {
    "add", "add_any", "sub", "mul", "div", "max", "min", "neg", "abs", "sign", "pow", "integer_pow",
    "square", "sqrt", "rsqrt", "cbrt", "exp", "exp2", "expm1", "log", "log1p", "tanh", "logistic",
    "erf", "erfc", "erf_inv", "sin", "cos", "clamp", "select_n", "ge", "gt", "le", "lt", "eq", "ne",
    "and", "or", "not", "convert_element_type", "reduce_precision", "copy", "copy_p", "reshape",
    "squeeze", "expand_dims", "broadcast_in_dim", "stop_gradient", "optimization_barrier",
}  # fmt: skip


class ConvInfo(NamedTuple):
    """The convolution producing a layer.

    kernel: (kh, kw, in_per_group, out) float32; for a depthwise conv ``in_per_group`` is 1;
    groups: ``feature_group_count`` (in_channels = in_per_group * groups);
    strides, padding, dilation: as the traced ``conv_general_dilated`` applied them.
    """

    layer: str
    kernel: np.ndarray
    groups: int
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]


def layer_kernel(probe, layer: str, variables: Any = None) -> np.ndarray:
    """The kernel (kh, kw, in, out) of the convolution that produces ``layer``.

    For grouped / depthwise convs ``in`` is the number of input channels per group
    (1 for depthwise); see :func:`layer_conv` for the group count.
    """
    return layer_conv(probe, layer, variables).kernel


def layer_conv(probe, layer: str, variables: Any = None) -> ConvInfo:
    """The convolution that produces ``layer``: its kernel (kh, kw, in, out) and geometry.

    Args:
      probe: a Probe.
      layer: a spatial layer's name.
      variables: the model variables (default ``probe.variables``), e.g. during training.

    Raises:
      ValueError: for unknown or non-spatial layers, and for layers no single
        convolution produces (pooling, residual adds).
    """
    info = probe.layer(layer)
    if info.after is not None:  # a conv after its norm and activation: the conv's kernel
        return layer_conv(probe, info.after, variables)._replace(layer=info.name)
    variables = probe.variables if variables is None else variables
    hint = _conv_hint(probe)
    if not info.spatial:
        raise ValueError(
            f"Layer {info.name!r} is a {info.kind} layer with output shape {info.shape}: it has no "
            f"convolution kernel.{hint}"
        )
    dummy = jnp.zeros((1, *probe.input_shape), jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: probe.reference_forward(v, x)[1][info.name])(variables, dummy)
    leaves = jax.tree_util.tree_leaves((variables, dummy))
    if len(leaves) != len(closed.jaxpr.invars):
        raise RuntimeError(
            f"Traced {len(closed.jaxpr.invars)} inputs for {len(leaves)} variable leaves + image."
        )
    walker = _Walker(closed, leaves)
    found = walker.search(walker.top, closed.jaxpr.outvars[0])
    convs = {(id(s), id(e)): (s, e) for kind, s, e in found if kind == "conv"}
    others = sorted({e for kind, _, e in found if kind != "conv"})
    ops = [o for o in others if o != "image"]
    if ops:
        raise ValueError(
            f"Layer {info.name!r} ({info.kind}) is produced by {', '.join(repr(o) for o in ops)}, "
            f"not by a convolution followed by element-wise operations.{hint}"
        )
    if len(convs) + len(others) != 1 or not convs:
        parts = [
            n for n in probe.layer_names if n.startswith(info.name + ".") and probe.layer(n).kind == "conv"
        ]
        reason = (
            "comes from the model input without a convolution"
            if not convs
            else f"adds the outputs of {len(convs) + len(others)} image paths (a residual connection)"
        )
        hint = f" Its conv parts: {', '.join(parts)}." if parts else hint
        raise ValueError(f"Layer {info.name!r} {reason}: no single kernel produces it.{hint}")
    scope, eqn = next(iter(convs.values()))
    if scope.is_tainted(eqn.invars[1]):
        raise ValueError(f"Layer {info.name!r} is a convolution whose kernel depends on the image.")
    rhs = np.asarray(walker.value(scope, eqn.invars[1]), np.float32)
    p = eqn.params
    rhs_spec = p["dimension_numbers"].rhs_spec
    if len(rhs_spec) != 4:
        raise ValueError(f"Layer {info.name!r} comes from a {len(rhs_spec) - 2}-D convolution; expected 2-D.")
    kernel = np.transpose(rhs, (rhs_spec[2], rhs_spec[3], rhs_spec[1], rhs_spec[0]))
    return ConvInfo(
        info.name,
        np.ascontiguousarray(kernel),
        int(p["feature_group_count"]),
        tuple(int(s) for s in p["window_strides"]),
        tuple((int(lo), int(hi)) for lo, hi in p["padding"]),
        tuple(int(d) for d in p["rhs_dilation"]),
    )


def _conv_hint(probe, limit: int = 12) -> str:
    names = [lyr.name for lyr in probe.layers if lyr.kind == "conv" and lyr.spatial]
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f" Conv layers of {probe.name}: {shown or 'none'}."


# -------------------------------------------------------------------- the walk
class _Scope:
    """One jaxpr being walked: which of its values depend on the image, and where it was called."""

    def __init__(self, jaxpr, consts, in_tainted, parent):
        self.jaxpr = jaxpr
        self.consts = dict(zip(jaxpr.constvars, consts))
        self.parent = parent  # (scope, eqn) or None at the top
        self.invar_index = {v: i for i, v in enumerate(jaxpr.invars)}
        self.producer = {}
        self.tainted = {v for v, t in zip(jaxpr.invars, in_tainted) if t}
        for eqn in jaxpr.eqns:
            for out in eqn.outvars:
                self.producer[out] = eqn
            if any(self.is_tainted(v) for v in eqn.invars):
                self.tainted.update(eqn.outvars)  # conservative: all outputs of a call

    def is_tainted(self, var) -> bool:
        return not isinstance(var, jcore.Literal) and var in self.tainted


class _Walker:
    def __init__(self, closed, leaves):
        self.leaves = leaves
        in_tainted = [False] * (len(leaves) - 1) + [True]
        self.top = _Scope(closed.jaxpr, closed.consts, in_tainted, None)
        self._subs: dict = {}
        self._found: dict = {}
        self._values: dict = {}

    def _sub(self, scope, eqn):
        key = (id(scope), id(eqn))
        if key not in self._subs:
            body, consts = walk.call_body(eqn)
            self._subs[key] = _Scope(body, consts, [scope.is_tainted(v) for v in eqn.invars], (scope, eqn))
        return self._subs[key]

    def search(self, scope, var) -> list:
        """Where the image-dependent value ``var`` comes from: ("conv"|"op"|"image", scope, eqn|name)."""
        if not scope.is_tainted(var):
            return []
        key = (id(scope), var)
        if key in self._found:
            return self._found[key]
        self._found[key] = []  # guards against revisiting
        if var in scope.invar_index:
            idx = scope.invar_index[var]
            if scope.parent is None:
                result = [("image", None, "image")]
            else:
                parent, eqn = scope.parent
                result = self.search(parent, eqn.invars[idx])
        else:
            eqn = scope.producer[var]
            name = eqn.primitive.name
            if name == "conv_general_dilated" and scope.is_tainted(eqn.invars[0]):
                result = [("conv", scope, eqn)]
            elif walk.call_body(eqn) is not None:
                sub = self._sub(scope, eqn)
                result = self.search(sub, sub.jaxpr.outvars[eqn.outvars.index(var)])
            elif name in _PASS:
                out_shape = getattr(var.aval, "shape", ())
                result = []
                for v in eqn.invars:
                    if scope.is_tainted(v) and not _modulation(v.aval, out_shape):
                        result += self.search(scope, v)
            else:
                result = [("op", None, name)]
        self._found[key] = result
        return result

    def value(self, scope, var):
        """The concrete value of an image-independent ``var`` (evaluated from the variables)."""
        if isinstance(var, jcore.Literal):
            return var.val
        if var in scope.consts:
            return scope.consts[var]
        if var in scope.invar_index:
            idx = scope.invar_index[var]
            if scope.parent is None:
                return self.leaves[idx]
            parent, eqn = scope.parent
            return self.value(parent, eqn.invars[idx])
        key = (id(scope), var)
        if key not in self._values:
            eqn = scope.producer[var]
            bound = eqn.primitive.get_bind_params(eqn.params)  # jax 0.10: params; older: (subfuns, params)
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            outs = eqn.primitive.bind(*subfuns, *[self.value(scope, v) for v in eqn.invars], **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
            for out_var, out in zip(eqn.outvars, outs):
                self._values[(id(scope), out_var)] = out
        return self._values[key]


def _modulation(aval, out_shape) -> bool:
    """True for an input broadcast over the spatial axes of a 4-D output (bias, gate)."""
    shape = getattr(aval, "shape", ())
    if len(out_shape) != 4 or tuple(out_shape[1:3]) == (1, 1):
        return False
    return len(shape) < 4 or tuple(shape[1:3]) == (1, 1)
