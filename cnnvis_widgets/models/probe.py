"""Probe: the one way the rest of the package looks into a network.

A Probe wraps a Flax linen module + variables, or an nnx module, and exposes
the same pure, jittable functions for both: ``activations`` and ``logits`` of
images given in [0, 1] display space (the Probe applies the model's own
preprocessing), plus ``layers``, the visualizable layers in forward order.

Layers are what the model author declared with ``sow`` into the
``intermediates`` collection (linen) or ``nnx.Intermediate`` (nnx). A model
that sows nothing is looked into without changes: the outputs of its convs,
dense layers and top-level blocks are captured (linen
``capture_intermediates``; nnx ``nnx.capture(..., method_outputs=...)``).

The forward pass is the model's own function, traced and evaluated again with its depthwise and
1x1 convolutions in faster, equivalent forms (``jaxpr.speed.FORWARD``; the figures:
benchmarks/results/why.md); ``reference_forward`` keeps them as written.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import re
import sys
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnnvis_widgets import validation
from cnnvis_widgets.models import post_activation, receptive_field
from cnnvis_widgets.jaxpr import speed, walk
from cnnvis_widgets.jaxpr.evaluate import rewrite

KINDS = ("conv", "dense", "pool", "block")
# The largest image side a model that takes any size is given: MAX_SIDE_TIMES its input's side,
# at least MAX_SIDE px (``Probe.max_side``).
MAX_SIDE_TIMES = 4
MAX_SIDE = 512
_LINEN_LEAVES = {nn.Conv: "conv", nn.ConvTranspose: "conv", nn.Dense: "dense"}
_LINEN_SKIP = (nn.BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.Dropout)
# a module class named like these is a normalization or dropout, whichever package defines it
_NOT_LAYERS = re.compile(r"(Norm|Normalization|Dropout)(\d?d)?$")
# The call arguments that switch a model between training and evaluation, as Flax's examples and
# common code name them, with the value that selects evaluation (running statistics, no dropout).
EVALUATION_FLAGS = {
    "train": False,
    "training": False,
    "is_training": False,
    "deterministic": True,
    "use_running_average": True,
}


@dataclasses.dataclass(frozen=True)
class Layer:
    """A visualizable layer: its name, kind, output shape for one image and geometry.
    ``after``: for a ``<conv>+act`` layer, the conv (or dense) layer whose output it is once the
    norm and activation that follow it are applied (``models.post_activation``); else None."""

    name: str
    kind: str
    shape: tuple[int, ...]
    receptive_field: int
    stride: int
    after: str | None = None

    @property
    def channels(self) -> int:
        return self.shape[-1]

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        after = f", {self.after} after its activation" if self.after else ""
        return f"{self.name} ({self.kind}, {dims}, rf {self.receptive_field}, stride {self.stride}{after})"


def _is_nnx(obj: Any) -> bool:
    """Whether ``obj`` is an ``nnx.Module``. flax.nnx is not imported here (~0.1 s of a fresh
    process's start): a program holding an nnx model has imported it already."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)


def _identity(x):
    return x


def require_probe(probe: Any, what: str = "This function") -> Probe:
    """``probe`` if it is a Probe; otherwise a TypeError saying how to make one."""
    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, str):
        hint = f" For a zoo model use cnnvis_widgets.load({probe!r})."
    elif isinstance(probe, nn.Module) or _is_nnx(probe):
        hint = " Wrap the Flax model first: Probe(module, variables, input_shape=(H, W, C))."
    else:
        hint = " Make one with cnnvis_widgets.load(name) or Probe(flax_module, variables, input_shape=(H, W, C))."
    raise TypeError(f"{what} needs a Probe, got {type(probe).__name__} {_short_repr(probe)}.{hint}")


def _short_repr(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


@contextlib.contextmanager
def _model_errors(name: str, input_shape: tuple[int, ...], flags: Sequence[str] = ()):
    """Errors from tracing a user's model (Flax scope/shape errors) as one ValueError naming the input."""
    try:
        yield
    except Exception as err:  # re-raised with what was given
        training = _training_mode(err, flags)
        if training:
            raise ValueError(f"{name} runs in training mode: {training}") from err
        raise ValueError(
            f"Could not run {name} on a (1, {', '.join(map(str, input_shape))}) image with the given "
            f"variables: {type(err).__name__}: {err} Check input_shape (H, W, C) and that the variables "
            f"are this model's own (from module.init)."
        ) from err


def _training_mode(err: Exception, flags: Sequence[str]) -> str | None:
    """What a training-mode failure means and its fix, or None when ``err`` is another failure.
    ``flags``: the model's arguments from ``EVALUATION_FLAGS``."""
    text = f"{type(err).__name__}: {err}"
    if "batch_stats" in text or type(err).__name__ == "ModifyScopeVariableError":
        cause = "its BatchNorm updates its statistics ('batch_stats') on every call"
    elif type(err).__name__ == "InvalidRngError" or "PRNG" in text:
        cause = "a Dropout (or another random layer) asks for a random key"
    elif "unbound axis name" in text:
        cause = "its BatchNorm averages batch statistics over a device axis (axis_name)"
    else:
        return None
    if flags:
        fix = f"call it in evaluation mode: apply_kwargs={{{flags[0]!r}: {EVALUATION_FLAGS[flags[0]]}}}"
    else:
        fix = (
            "build it in evaluation mode (nn.BatchNorm(use_running_average=True), "
            "nn.Dropout(deterministic=True)) or pass the argument that selects it with apply_kwargs={...}"
        )
    return f"{cause}. To look at a trained model, {fix}. ({text})"


def _training_switches(model) -> dict[str, inspect.Parameter]:
    """``model``'s call arguments named in ``EVALUATION_FLAGS``, in its order (none when its
    signature cannot be read)."""
    try:
        parameters = inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p for name, p in parameters.items() if name in EVALUATION_FLAGS}


def _evaluation_mode(switches: Mapping[str, inspect.Parameter], given: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation values of the ``switches`` that ``given`` does not set and whose default is
    not evaluation already (or that have no default)."""
    return {
        name: EVALUATION_FLAGS[name]
        for name, p in switches.items()
        if name not in given and (p.default is inspect.Parameter.empty or p.default != EVALUATION_FLAGS[name])
    }


class Probe:
    """Looks into a Flax model: its layers, activations and logits of [0, 1] images.

    Args:
      model: a ``flax.linen.Module`` (pass ``variables``) or an ``nnx.Module``
        (its state is split off into ``probe.variables``).
      variables: the linen variables (``{'params': ..., 'batch_stats': ...}``).
      input_shape: ``(H, W, C)`` of the model's input images.
      preprocess: maps [0, 1] images to what the model expects (None: identity).
      apply_kwargs: extra keyword arguments for every call. A call argument that switches
        training off (``train``, ``training``, ``is_training``: False; ``deterministic``,
        ``use_running_average``: True) and is not given here is set to evaluation by itself
        (``probe.apply_kwargs`` shows what every call gets).
      output: which part of the model's output holds the class scores, when it returns more
        than one array: an index (a tuple), a key (a dict) or a function of the output.
      class_names: optional names of the output classes.
      layers: None: every Conv/Dense submodule and top-level block, plus every value the model
        sows into "intermediates"; "sown": only the sown values (the zoo's models sow theirs);
        or a list of those names to keep.
      layer_kinds: optional ``{layer_name: kind}`` overriding the inferred kinds.
      name: a readable model name for messages.

    ``num_classes`` is the output's size when it is class scores (N, classes), else None: a
    backbone's feature map has layers to look at but no classes to explain.
    """

    def __init__(
        self,
        model: Any,
        variables: Any = None,
        *,
        input_shape: Sequence[int],
        preprocess: Callable | None = None,
        apply_kwargs: Mapping[str, Any] | None = None,
        output: int | str | Callable | None = None,
        class_names: Sequence[str] | None = None,
        layers: Sequence[str] | str | None = None,
        layer_kinds: Mapping[str, str] | None = None,
        name: str | None = None,
    ):
        shape = () if isinstance(input_shape, str) else tuple(np.asarray(input_shape).reshape(-1).tolist())
        if len(shape) != 3 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise ValueError(f"input_shape must be (H, W, C) of positive integers, got {input_shape!r}.")
        self.input_shape = shape
        self.preprocess = preprocess or _identity
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name or type(model).__name__
        if not (isinstance(model, nn.Module) or _is_nnx(model)):
            raise TypeError(
                f"Probe needs a flax.linen.Module or flax.nnx.Module, got {type(model).__name__}."
            )
        if layers is not None and layers != "sown" and (isinstance(layers, str) or not _all_str(layers)):
            raise TypeError(f"layers must be None, 'sown' or a list of layer names, got {layers!r}.")
        given = dict(apply_kwargs or {})
        switches = _training_switches(model)
        self.apply_kwargs = {**_evaluation_mode(switches, given), **given}
        errors = _model_errors(self.name, self.input_shape, list(switches))
        only_sown = layers == "sown"
        self._post_activations: dict[str, str] = {}
        if isinstance(model, nn.Module):
            if variables is None:
                raise ValueError("A linen module needs its variables: Probe(module, variables, ...).")
            if not isinstance(variables, Mapping):
                raise TypeError(
                    f"A linen module's variables are a dict like {{'params': ...}} (from module.init), "
                    f"got {type(variables).__name__}."
                )
            self.module = model
            self.variables = variables
            with errors:
                forward, module_kinds, raw = _linen_forward(
                    model, variables, self.input_shape, self.apply_kwargs, only_sown
                )
        else:
            if variables is not None:
                raise ValueError("An nnx module carries its own state: pass variables=None.")
            self.module = model
            with errors:
                forward, self.variables, module_kinds, raw = _nnx_forward(
                    model, self.input_shape, self.apply_kwargs, only_sown
                )
        if not only_sown:  # each conv and dense also after the norm and activation that follow it
            example = (self.variables, jnp.zeros((1, *self.input_shape), jnp.float32))
            sources = [n for n, kind in module_kinds.items() if kind in ("conv", "dense")]
            forward, self._post_activations = post_activation.with_post_activations(forward, example, sources)
            module_kinds.update({new: module_kinds[source] for new, source in self._post_activations.items()})
        self._forward = self._reference_forward = _in_float32(_picked(forward, output, raw, self))
        self._forward = rewrite(self._forward, *speed.FORWARD)
        self.layers = _describe_layers(
            self, module_kinds, dict(layer_kinds or {}), None if only_sown else layers
        )
        self._by_name = {layer.name: layer for layer in self.layers}
        self.fixed_size = _needs_fixed_size(self)
        # compiled programs and other derived values made for this probe (``owned_by_probe``):
        # they are freed with it, where a module-level cache would keep it and its weights alive
        self.programs: dict = {}

    # ----------------------------------------------------------------- lookup
    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def default_layer(self) -> str:
        """The layer views and the command line start on: the middle spatial layer (the last layer
        when none is spatial)."""
        spatial = [layer.name for layer in self.layers if layer.spatial]
        return spatial[len(spatial) // 2] if spatial else self.layer_names[-1]

    def layer(self, name: str) -> Layer:
        """The Layer called ``name``; an unknown name lists the valid ones."""
        if isinstance(name, Layer):
            name = name.name
        if not isinstance(name, str):
            raise TypeError(
                f"A layer is given by its name (a str), got {type(name).__name__} {_short_repr(name)}. "
                f"Valid layers: {', '.join(self.layer_names)}."
            )
        if name not in self._by_name:
            hint = validation.did_you_mean(name, self.layer_names)
            raise ValueError(
                f"Unknown layer {name!r} for model {self.name}.{hint} "
                f"Valid layers: {', '.join(self.layer_names)}."
            )
        return self._by_name[name]

    def check_units(self, layer: str, units: Sequence[int] | None) -> np.ndarray:
        """Validated channel indices of ``layer`` (all of them for None)."""
        info = self.layer(layer)
        if units is None:
            return np.arange(info.channels)
        units = np.asarray(units).reshape(-1)
        if units.size == 0:
            raise ValueError(
                f"Empty list of filters for layer {info.name!r}; give at least one of 0..{info.channels - 1}."
            )
        if not np.issubdtype(units.dtype, np.integer):
            raise TypeError(
                f"Filter indices must be integers, got {units.dtype} values {units[:5].tolist()}."
            )
        bad = units[(units < 0) | (units >= info.channels)]
        if bad.size:
            raise ValueError(
                f"Filter {int(bad[0])} is out of range for layer {info.name!r} with "
                f"{info.channels} channels (valid: 0..{info.channels - 1})."
            )
        return units.astype(np.int32)

    @property
    def max_side(self) -> int:
        """The largest image side the package takes for this model: its own for a fixed-size
        model, else ``MAX_SIDE_TIMES`` its input's (at least ``MAX_SIDE`` px): work and memory grow
        with the square of the side, and a 4000x4000 image for a 32 px model took > 6 GB."""
        h, w, _ = self.input_shape
        return max(h, w) if self.fixed_size else max(MAX_SIDE, MAX_SIDE_TIMES * max(h, w))

    def check_size(self, size: tuple[int, int], what: str = "size") -> tuple[int, int]:
        """``size`` (H, W) if the model gives finite outputs for images of that size: not above
        ``max_side``, and not so small that a layer shrinks it to nothing (2x2 digits through two
        2x2 poolings gave NaN logits); else a ValueError saying which sizes work."""
        size = (int(size[0]), int(size[1]))
        h, w, _ = self.input_shape
        if max(size) > self.max_side:
            raise ValueError(
                f"{what} {size[0]}x{size[1]}: larger than {self.name} takes, at most {self.max_side} px a "
                f"side ({MAX_SIDE_TIMES}x its {h}x{w} input, or {MAX_SIDE}). Resize with "
                f"cnnvis_widgets.data.fit_to(images, probe)."
            )
        if min(size) < min(h, w) and _collapses(self, size):
            side = _smallest_side(self, min(h, w))
            raise ValueError(
                f"{what} {size[0]}x{size[1]}: too small for {self.name}, a layer shrinks it to nothing "
                f"and the outputs are not numbers; use at least {side}x{side} (its input is {h}x{w})."
            )
        return size

    def check_images(self, images: Any) -> jax.Array:
        """Validated NHWC float32 images in [0, 1]; uint8 images are scaled by 1/255.

        Value checks (NaN, range) need concrete arrays and are skipped under tracing.
        """
        if isinstance(images, jax.core.Tracer):
            arr = images
        else:
            try:
                arr = np.asarray(images)
            except ValueError:  # a list of arrays of different shapes
                shapes = sorted({np.shape(x) for x in images}, key=str)
                raise ValueError(
                    f"Images must be one array (N, H, W, C); got a sequence of images of different "
                    f"shapes {shapes[:4]}. Resize with cnnvis_widgets.data.fit_to(images, probe)."
                ) from None
            if arr.dtype == np.uint8:
                arr = arr.astype(np.float32) / 255.0
            elif not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"Images must be numeric arrays, got dtype {arr.dtype}.")
        h, w, c = self.input_shape
        if arr.ndim != 4:
            raise ValueError(
                f"Images must have shape (N, H, W, C) = (N, {h}, {w}, {c}) for {self.name}, got shape {tuple(arr.shape)}."
            )
        if arr.shape[-1] != c:
            kind = "grayscale" if c == 1 else "RGB" if c == 3 else f"{c}-channel"
            raise ValueError(
                f"{self.name} takes {kind} images with {c} channel(s); got {arr.shape[-1]} channels "
                f"(shape {tuple(arr.shape)})."
            )
        if self.fixed_size and tuple(arr.shape[1:3]) != (h, w):
            raise ValueError(
                f"{self.name} takes {h}x{w} images; got {arr.shape[1]}x{arr.shape[2]} "
                f"(shape {tuple(arr.shape)}). Resize with cnnvis_widgets.data.fit_to(images, probe)."
            )
        if arr.shape[0] == 0 or 0 in arr.shape[1:3]:
            raise ValueError(f"No images: got shape {tuple(arr.shape)}; give at least one {h}x{w}x{c} image.")
        self.check_size(tuple(arr.shape[1:3]), "images of size")
        if not isinstance(arr, jax.core.Tracer):
            if not np.all(np.isfinite(arr)):
                n_bad = int(np.size(arr) - np.isfinite(arr).sum())
                raise ValueError(f"Images contain {n_bad} NaN or Inf value(s); give finite values in [0, 1].")
            lo, hi = float(arr.min()), float(arr.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(
                    f"Images must hold values in [0, 1], got range [{lo:.3g}, {hi:.3g}]"
                    + (" (uint8-like values: divide by 255)." if hi > 1.5 else ".")
                )
        return jnp.asarray(arr, jnp.float32)

    # ------------------------------------------------------------- numerics
    def forward(self, variables: Any, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Pure: (model output, {layer: activation}) of [0, 1] images, unchecked. Depthwise and 1x1
        convolutions run in the forms XLA:CPU computes fastest (``jaxpr.speed``)."""
        return self._forward(variables, self.preprocess(images))

    def reference_forward(self, variables: Any, images: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``forward`` with the model's convolutions as written (``forward`` computes depthwise and
        1x1 ones in faster forms, ``jaxpr.speed``): for analyses that read them from the jaxpr."""
        return self._reference_forward(variables, self.preprocess(images))

    def activations(self, variables: Any, images: Any, layers: str | Sequence[str] | None = None):
        """Pure, jittable activations of [0, 1] images.

        ``layers`` as a name gives one array; as a list (or None: all) a dict.
        """
        single = isinstance(layers, (str, Layer))
        names = (
            [self.layer(layers).name]
            if single
            else (self.layer_names if layers is None else [self.layer(n).name for n in layers])
        )
        acts = _jitted(self, tuple(names))(self.check_variables(variables), self.check_images(images))
        picked = dict(zip(names, acts))
        return picked[names[0]] if single else picked

    def logits(self, variables: Any, images: Any) -> jax.Array:
        """Pure, jittable model output of [0, 1] images."""
        return _jitted(self, None)(self.check_variables(variables), self.check_images(images))

    def probabilities(self, variables: Any, images: Any) -> jax.Array:
        """Pure, jittable softmax of the model's output of [0, 1] images, flattened per image:
        (N, classes) for a classifier."""
        out = self.logits(variables, images)
        return jax.nn.softmax(out.reshape(out.shape[0], -1), axis=-1)

    def with_variables(self, variables: Any, name: str | None = None) -> Probe:
        """This Probe (same model, layers and conventions) over other ``variables``, e.g. weights
        trained or randomized elsewhere; it compiles its own programs."""
        twin = copy.copy(self)
        twin.variables = twin.check_variables(variables)
        twin.name = self.name if name is None else name
        return twin

    def class_name(self, index: int) -> str:
        """Class ``index``'s name (``class_names``), or the index as text when it has none."""
        names = self.class_names
        return str(names[index]) if names and 0 <= index < len(names) else str(int(index))

    def require_classes(self, what: str) -> int:
        """``num_classes``, or a ValueError saying that ``what`` needs class scores the model's
        output is not, with the ways out (a layer's unit as the target; ``output=``)."""
        if self.num_classes is None:
            spatial = [layer.name for layer in self.layers if layer.spatial]
            unit = f"target=({(spatial or self.layer_names)[-1]!r}, 0)"
            raise ValueError(
                f"{what} needs class scores, and {self.name} outputs no class scores: its output is "
                f"(N, {', '.join(map(str, self.output_shape))}), not (N, classes). Explain a unit of a "
                f"layer instead, e.g. {unit}, or, if the model returns the scores among other "
                f"outputs, pick them with Probe(..., output=...)."
            )
        return self.num_classes

    def check_variables(self, variables: Any) -> Any:
        """``variables`` (None: the model's own) if they have the model's parameter names and shapes."""
        if variables is None or variables is self.variables:
            return self.variables
        leaves = lambda tree: {
            jax.tree_util.keystr(path): tuple(np.shape(x))
            for path, x in jax.tree_util.tree_leaves_with_path(tree)
        }
        try:
            mine, theirs = leaves(self.variables), leaves(variables)
        except Exception:  # noqa: BLE001 - not a pytree of arrays
            mine, theirs = leaves(self.variables), {}
        if mine != theirs:
            missing = sorted(set(mine) - set(theirs))
            shapes = [
                f"{k}: {theirs[k]} (expected {mine[k]})"
                for k in sorted(mine)
                if k in theirs and theirs[k] != mine[k]
            ]
            extra = sorted(set(theirs) - set(mine))
            raise ValueError(
                f"variables do not match {self.name}'s (give probe.variables or a copy with the same "
                f"names and shapes; got a {type(variables).__name__}): "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else "")
                        if missing
                        else "",
                        f"wrong shape {', '.join(shapes[:3])}" if shapes else "",
                        f"unexpected {', '.join(extra[:3])}" if extra else "",
                    )
                    if part
                )
                + "."
            )
        return variables

    def __copy__(self) -> Probe:
        """A shallow copy with its own ``programs``: a copy over other variables must not run
        programs that may have the original's weights built in."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.programs = {}
        return twin

    def __repr__(self) -> str:
        rows = "\n".join(f"  {layer}" for layer in self.layers)
        return f"Probe({self.name}, input {self.input_shape}, {len(self.layers)} layers:\n{rows})"


def owned_by_probe(fn: Callable) -> Callable:
    """Cache ``fn(probe, *args)`` in ``probe.programs``, keyed by ``fn`` and the other arguments'
    values: a compiled program lives as long as its probe (functools.lru_cache would keep every
    probe it saw, and its weights, alive). The arguments must be hashable."""
    key_prefix = (fn.__module__, fn.__qualname__)

    @functools.wraps(fn)
    def cached(probe, *args, **kwargs):
        key = (*key_prefix, *args, *sorted(kwargs.items()))
        programs = probe.programs
        if key not in programs:
            programs[key] = fn(probe, *args, **kwargs)
        return programs[key]

    return cached


@owned_by_probe
def _collapses(probe: Probe, size: tuple[int, int]) -> bool:
    """Whether some value computed on a ``size`` image has no elements (a pooling or a valid
    convolution larger than what reaches it): the model's outputs are then NaN or empty."""
    image = jax.ShapeDtypeStruct((1, *size, probe.input_shape[-1]), jnp.float32)

    try:
        jaxpr = jax.make_jaxpr(lambda x: probe.reference_forward(probe.variables, x))(image).jaxpr
        return any(0 in getattr(v.aval, "shape", (1,)) for eqn in walk.eqns(jaxpr) for v in eqn.outvars)
    except Exception:  # noqa: BLE001 - a model that cannot even be traced at this size
        return True


def _smallest_side(probe: Probe, native: int) -> int:
    """The smallest square side (at most ``native``) the model does not collapse: by bisection."""
    lo, hi = 1, native
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if not _collapses(probe, (mid, mid)) else (mid + 1, hi)
    return lo


# ---------------------------------------------------------------- linen / nnx
@owned_by_probe
def _jitted(probe: Probe, names: tuple[str, ...] | None):
    """The forward pass compiled once per probe and set of layers (None: the output only), so
    eager calls neither run op by op nor keep every layer: XLA drops what is not returned."""

    def run(variables, x):
        out, acts = probe.forward(variables, x)
        return out if names is None else [acts[n] for n in names]

    return jax.jit(run)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, jax.Array]:
    """{'a': {'b': (x,)}} → {'a.b': x}; a module's own output '__call__' takes its path."""
    out = {}
    for key, value in tree.items():
        name = prefix if key == "__call__" else (f"{prefix}.{key}" if prefix else str(key))
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            value = getattr(value, "value", value)  # nnx Variable
            value = value[0] if isinstance(value, (tuple, list)) else value
            if hasattr(value, "shape"):  # a module returning a tuple or dict is not one activation
                out[name] = value
    return out


def _linen_forward(module, variables, input_shape, kwargs, only_sown: bool):
    """(forward(variables, x) -> (output, {layer: activation}), {layer: kind}, the output's shape
    tree). Layers: every Conv/Dense and top-level submodule's output plus every sown value, or
    the sown values alone (``only_sown``)."""
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    kinds: dict[str, str] = {}

    def capture(mdl, method_name):
        if method_name != "__call__" or _not_a_layer(mdl, _LINEN_SKIP) or not mdl.scope.path:
            return False
        path = ".".join(mdl.scope.path)
        for cls, kind in _LINEN_LEAVES.items():
            if isinstance(mdl, cls):
                kinds[path] = kind
                return True
        if len(mdl.scope.path) == 1:
            kinds[path] = "block"
            return True
        return False

    def forward(variables, x):
        out, state = module.apply(
            variables, x, mutable=["intermediates"], capture_intermediates=not only_sown and capture, **kwargs
        )
        acts = _flatten(state.get("intermediates", {}))
        acts.pop("", None)  # the root module's own output is the logits
        return out, acts

    out, _ = jax.eval_shape(forward, variables, dummy)  # fills `kinds` once
    return forward, dict(kinds), out


def _nnx_forward(model, input_shape, kwargs, only_sown: bool):
    """As ``_linen_forward`` for an nnx model (in evaluation mode: ``model.eval()``), with its
    state split off: (forward(state, x), state, {layer: kind}, the output's shape tree)."""
    from flax import nnx

    leaves = {nnx.Conv: "conv", nnx.ConvTranspose: "conv", nnx.Linear: "dense"}
    skip = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.Dropout)
    graphdef, state = nnx.split(model)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)

    def call(state, x, method_outputs):
        m = nnx.merge(graphdef, state)
        m.eval()
        fn = nnx.capture(m, nnx.Intermediate, method_outputs=method_outputs)
        return fn(x, **kwargs)

    out, sown = jax.eval_shape(lambda s, x: call(s, x, None), state, dummy)
    kinds = {name: "sown" for name in _flatten(nnx.to_pure_dict(sown))}
    if not only_sown:
        for path, mdl in nnx.iter_modules(model):
            if not path or _not_a_layer(mdl, skip):
                continue
            name = ".".join(str(p) for p in path)
            kind = next((k for cls, k in leaves.items() if isinstance(mdl, cls)), None)
            if kind is None and len(path) == 1:
                kind = "block"
            if kind is not None:
                kinds[name] = kind
    method_outputs = None if only_sown else nnx.Intermediate

    def forward(state, x):
        out, inter = call(state, x, method_outputs)
        acts = _flatten(nnx.to_pure_dict(inter))
        return out, {n: a for n, a in acts.items() if n in kinds}

    return forward, state, {n: k for n, k in kinds.items() if k != "sown"}, out


def _not_a_layer(module, skip: tuple) -> bool:
    """A normalization or dropout module (Flax's own, or a class named like one in any package)."""
    return isinstance(module, skip) or _NOT_LAYERS.search(type(module).__name__) is not None


def _all_str(items) -> bool:
    try:
        return all(isinstance(i, str) for i in items)
    except TypeError:
        return False


def _described(tree) -> str:
    """A model output's structure in words, shapes with the batch as N: for messages."""
    shape = lambda a: f"(N, {', '.join(map(str, a.shape[1:]))}) {a.dtype}" if a.ndim else f"() {a.dtype}"
    if isinstance(tree, Mapping):
        return "a dict with keys " + ", ".join(
            f"{k!r} {shape(v) if hasattr(v, 'shape') else type(v).__name__}" for k, v in tree.items()
        )
    if isinstance(tree, (tuple, list)):
        parts = ", ".join(shape(v) if hasattr(v, "shape") else type(v).__name__ for v in tree)
        return f"a {type(tree).__name__} of {len(tree)} values ({parts})"
    return shape(tree) if hasattr(tree, "shape") else f"a {type(tree).__name__}"


def _picked(forward: Callable, output, raw, probe: Probe) -> Callable:
    """``forward`` with the model's output reduced to its class scores by ``output`` (None: the
    output is one array already); checked on ``raw``, the output's shape tree. Sets the probe's
    ``output_shape`` (one image's) and ``num_classes`` (None when the output is not (N, classes))."""
    name = probe.name
    if output is None:
        if not isinstance(raw, jax.ShapeDtypeStruct):
            parts = list(raw.items()) if isinstance(raw, Mapping) else list(enumerate(raw))
            guess = next((k for k, v in parts if getattr(v, "ndim", 0) == 2), parts[0][0] if parts else 0)
            raise ValueError(
                f"{name} returns {_described(raw)}; say which holds the class scores with "
                f"output={guess!r} (an index for a tuple, a key for a dict, or a function of the output)."
            )
        picked, pick = raw, None
    else:
        if isinstance(output, bool) or not (callable(output) or isinstance(output, (int, str))):
            raise TypeError(
                f"output must be an index, a key or a function of the model's output, got {output!r}."
            )
        pick = output if callable(output) else (lambda out: out[output])
        try:
            picked = jax.eval_shape(pick, raw)
        except Exception as err:  # noqa: BLE001 - a wrong index or key, or a function that fails
            raise ValueError(
                f"output={output!r} does not pick from {name}'s output, {_described(raw)} "
                f"({type(err).__name__}: {err})."
            ) from err
        if not isinstance(picked, jax.ShapeDtypeStruct):
            raise ValueError(
                f"output={output!r} picks {_described(picked)} from {name}'s output; pick one array."
            )
    probe.output_shape = tuple(picked.shape[1:])
    classes = picked.ndim == 2 and jnp.issubdtype(picked.dtype, jnp.floating)
    probe.num_classes = int(picked.shape[-1]) if classes else None
    if pick is None:
        return forward

    def forward_picked(variables, x):
        out, acts = forward(variables, x)
        return pick(out), acts

    return forward_picked


def _in_float32(forward: Callable) -> Callable:
    """``forward`` with its output and activations in float32: a bfloat16 model runs in its own
    dtype, and every map, gradient and statistic made from it is computed in float32."""

    def up(a):
        return a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a

    def forward32(variables, x):
        out, acts = forward(variables, x)
        return up(out), {n: up(a) for n, a in acts.items()}

    return forward32


# -------------------------------------------------------------- description
def _infer_kind(name: str, shape: tuple[int, ...]) -> str:
    if "pool" in name.split(".")[-1].lower():
        return "pool"
    if len(shape) != 3:
        return "dense"
    if "block" in name.lower() and "." not in name:
        return "block"
    return "conv"


def _describe_layers(
    probe: Probe, module_kinds: dict[str, str], overrides: dict[str, str], keep: Sequence[str] | None
) -> list[Layer]:
    """The probe's layers in the model's order (``keep``: only these), with ``overrides`` of
    their kinds; names in either that the model does not have are errors that list the valid."""
    dummy = jnp.zeros((1, *probe.input_shape), jnp.float32)
    fn = lambda x: probe.reference_forward(probe.variables, x)[1]
    shapes = jax.eval_shape(fn, dummy)
    geometry = receptive_field.analyze(fn, dummy)
    for name, kind in overrides.items():
        if kind not in KINDS:
            raise ValueError(f"Layer kind for {name!r} must be one of {KINDS}, got {kind!r}.")
    for what, names in (("layer_kinds", list(overrides)), ("layers", list(keep or []))):
        unknown = [n for n in names if n not in geometry]
        if unknown:
            hint = validation.did_you_mean(unknown[0], geometry)
            raise ValueError(
                f"{what} names {unknown[0]!r}, which {probe.name} does not have.{hint} "
                f"Its layers: {', '.join(geometry)}."
            )
    layers = []
    # A block's output can be the very value of its last part (no residual): the part goes first.
    in_order = sorted(geometry.items(), key=lambda kv: (kv[1][0], -kv[0].count(".")))
    if keep is not None:
        in_order = [(name, g) for name, g in in_order if name in set(keep)]
    for name, (order, rf, stride) in in_order:
        shape = tuple(shapes[name].shape[1:])
        kind = overrides.get(name) or module_kinds.get(name) or _infer_kind(name, shape)
        if kind == "conv" and len(shape) != 3:
            kind = "dense"
        if len(shape) != 3:
            rf, stride = max(probe.input_shape[:2]), 1
        layers.append(Layer(name, kind, shape, rf, stride, probe._post_activations.get(name)))
    if not layers:
        raise ValueError(
            f"Found no layers to visualize in {probe.name}: it has no Conv/Dense submodules and sows no intermediates."
        )
    return layers


def _needs_fixed_size(probe: Probe) -> bool:
    """True when the model cannot take images of another size (e.g. Flatten → Dense). The size
    tried, 2x + 8 pixels, changes a dense head's input after any stride up to the image's size
    (8 pixels more alone floored to the same after a stride of 16 or 32) and breaks the sizes a
    model needs to be a multiple of 16 or 32, in one trace."""
    h, w, c = probe.input_shape
    image = jax.ShapeDtypeStruct((1, 2 * h + 8, 2 * w + 8, c), jnp.float32)
    try:
        jax.eval_shape(lambda x: probe.forward(probe.variables, x), image)
    except Exception:  # any shape error means the size is fixed
        return True
    return False
