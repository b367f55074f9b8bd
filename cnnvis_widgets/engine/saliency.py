"""Attribution: which pixels make a network's score what it is.

One small function per method, all called the same way, ``method(probe, images, target)``
→ ``SaliencyResult``, plus the dispatcher ``saliency(probe, images, method, target)``.
Every method is one jitted call over the whole batch of images (``jax.vmap`` over
images), compiled once per (probe, method, target kind, static options, shapes) and
cached; options that are plain numbers (noise, fill value, baseline) are traced, so
changing them does not recompile.

Targets: ``None`` (each image's predicted class), a class index, an (N,) array of
class indices, a class name, or a unit of any layer, ``("conv3", 5)`` (the mean of
channel 5 of conv3 over its spatial positions) or ``("conv3", None)`` (the whole
layer's mean activation).

Maps are (N, H, W) at input resolution. Gradient methods keep their per-pixel,
per-channel values in ``result.attributions`` (N, H, W, C), before the channel
reduction: max |.| over channels for the sensitivity methods (vanilla, SmoothGrad,
guided backprop, deconvnet), a signed sum over channels for the attribution
methods (gradient x input, integrated gradients: the map then sums to the
attribution's total). CAM maps are ReLU'd and upsampled bilinearly; occlusion maps
hold the drop of the score, so they are signed.

Loops (SmoothGrad samples, integrated-gradient steps) are ``lax.scan`` over one flat
batch of images, never a vmap nested in a vmap, and differentiate through
the speed rewrites ``jaxpr.speed.GRADIENTS``, so convolution input-gradients stay on XLA:CPU's
fast path inside the loop (jax-ml/jax#12868).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnvis_widgets import pixels as px
from cnnvis_widgets import validation
from cnnvis_widgets.engine import sharding
from cnnvis_widgets.jaxpr import lrp as relevance
from cnnvis_widgets.jaxpr import speed, walk
from cnnvis_widgets.jaxpr.evaluate import evaluate, rewrite
from cnnvis_widgets.jaxpr.gradients import relu_rules
from cnnvis_widgets.models.probe import owned_by_probe, require_probe

MAX_LOOP = 10_000  # SmoothGrad samples / integrated-gradient steps per call
# Not a memory budget but a speed one: activation values (of the largest layer) per forward pass
# inside the Score-CAM / occlusion loops, 8 MB, so a pass stays in the CPU's caches (small batches
# ran faster per image than one large one: benchmarks/results/why.md).
CACHE_FRIENDLY_VALUES = 1 << 21
# The memory budget: the most activations (and their gradients) one call may hold, estimated from
# the layers' outputs (EfficientNet-Lite0 takes a few dozen images of 224 px at once).
BATCH_BUDGET = 2 * 2**30


@dataclasses.dataclass
class SaliencyResult:
    """Saliency maps of a batch of images.

    maps: (N, H, W) float32 at input resolution;
    targets: (N,) the resolved target: class index, or unit of ``target_layer`` (-1: the whole layer);
    scores: (N,) the target's value on each (clean) image (a logit for class targets);
    method: the method's name;
    target_layer: the layer of a unit target (None for classes);
    layer: the layer a CAM was computed at (CAM methods only);
    attributions: (N, H, W, C) per-channel values before the channel reduction (gradient methods).
    """

    maps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    method: str
    target_layer: str | None = None
    layer: str | None = None
    attributions: np.ndarray | None = None


PREDICTED = "predicted class"  # the text for target=None


class _Target(NamedTuple):
    """The static part of a target (the unit indices are traced)."""

    layer: str | None  # None: the model's output (classes)
    whole: bool  # the whole layer's mean


# ------------------------------------------------------------------ the dispatcher
def saliency(
    probe,
    images,
    method: str = "vanilla",
    target=None,
    *,
    normalize: bool = False,
    variables: Any = None,
    **options,
) -> SaliencyResult:
    """Saliency maps of ``images`` for ``target`` by ``method``.

    Args:
      probe: a Probe (``cnnvis_widgets.load(name)`` or ``Probe(model, ...)``).
      images: (N, H, W, C) in [0, 1] (uint8 is scaled by 1/255).
      method: one of ``METHODS``: "vanilla", "grad_x_input", "smoothgrad",
        "integrated_gradients", "guided_backprop", "deconvnet", "lrp", "gradcam", "gradcam_pp",
        "scorecam", "occlusion".
      target: None (predicted class), a class index or name, (N,) class indices, or a layer
        unit ``("conv3", 5)`` / ``("conv3", None)`` (whole layer).
      normalize: scale each map to [0, 1] (min-max).
      variables: model variables (default ``probe.variables``).
      **options: the method's own options (e.g. ``n_samples`` for SmoothGrad, ``layer`` for
        Grad-CAM); see each method's function.
    """
    check_method(method)
    check_options(method, options)
    result = METHODS[method](probe, images, target, variables=variables, **options)
    if normalize:
        result = dataclasses.replace(result, maps=normalize_maps(result.maps))
    return result


def parse_target(probe, text: str, n_classes: int | None = None):
    """A target as ``saliency`` takes it, from text (a widget's target box, a command line).

    "" or "predicted class" → None; a class name → its index; "7" or "#7" → class 7;
    "conv3:5" → ("conv3", 5); "conv3:*" or "conv3" → ("conv3", None) (the whole layer).
    Errors name what is valid.
    """
    text = (text or "").strip()
    if text.lower() in ("", PREDICTED, "predicted"):
        return None
    names = [str(n) for n in (probe.class_names or [])]
    n_classes = n_classes if n_classes is not None else num_classes(probe)
    if text in names:
        return names.index(text)
    match = re.fullmatch(r"#?\s*(\d+)", text)
    if match:
        index = int(match.group(1))
        if index >= n_classes:
            raise ValueError(f"Class {index} is out of range for {probe.name} (valid: 0..{n_classes - 1}).")
        return index
    layer, sep, unit = text.rpartition(":") if ":" in text else (text, "", "")
    layer = layer.strip()
    if sep or layer in probe.layer_names:
        info = probe.layer(layer)  # an unknown layer lists the valid ones
        unit = unit.strip()
        if unit in ("", "*", "all"):
            return (info.name, None)
        if not re.fullmatch(r"\d+", unit):
            raise ValueError(
                f"Unit {unit!r} of layer {info.name!r} is not a channel index: give one of "
                f"0..{info.channels - 1}, or * for the whole layer."
            )
        probe.check_units(info.name, [int(unit)])  # out of range: names 0..C-1
        return (info.name, int(unit))
    hint = validation.did_you_mean(text, names)
    if names:
        shown = ", ".join(names) if len(names) <= 20 else ", ".join(names[:8]) + ", …"
        classes = f"a class name ({shown}), a class index 0..{n_classes - 1}"
    else:
        classes = f"a class index 0..{n_classes - 1}"
    raise ValueError(
        f"Unknown target {text!r} for {probe.name}.{hint} Give {classes}, '{PREDICTED}', or a layer unit "
        f"like {probe.layer_names[0]}:0 (layers: {', '.join(probe.layer_names)})."
    )


def target_to_text(probe, target) -> str:
    """A target as text (a widget's target box, a command line): the inverse of ``parse_target``."""
    if target is None:
        return PREDICTED
    if isinstance(target, tuple):
        if len(target) != 2:
            raise ValueError(
                f"A layer-unit target is (layer_name, unit or None), e.g. ('conv3', 5); got {target!r}."
            )
        return f"{target[0]}:{'*' if target[1] is None else int(target[1])}"
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return probe.class_name(int(target))
    if isinstance(target, str):
        return target
    raise TypeError(f"A target is None, a class index or name, or (layer, unit); got {target!r}.")


def target_label(probe, result: SaliencyResult, i: int = 0) -> str:
    """The resolved target of image ``i`` of ``result``, readable (``unit_label``)."""
    return unit_label(probe, int(result.targets[i]), result.target_layer)


def unit_label(probe, unit: int, layer: str | None = None) -> str:
    """A resolved target, readable: class ``unit``'s name (or index) when ``layer`` is None, else
    ``layer:unit`` (``layer:*`` for the whole layer, ``unit`` < 0)."""
    if layer is None:
        return probe.class_name(unit)
    return f"{layer}:{'*' if unit < 0 else unit}"


def check_method(method) -> str:
    """``method`` if it is one of ``METHODS``, else a ValueError with the closest and all valid."""
    if not isinstance(method, str) or method not in METHODS:
        hint = validation.did_you_mean(method, METHODS, n=2)
        raise ValueError(f"Unknown saliency method {method!r}.{hint} Valid methods: {', '.join(METHODS)}.")
    return method


def check_options(method: str, options) -> dict:
    """``options`` (keyword -> value) if ``method`` takes each of them, else a TypeError naming
    the unknown ones and the method's own."""
    valid = method_options(method)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise TypeError(
            f"Method {method!r} got unknown option(s) {', '.join(bad)}; "
            f"its options: {', '.join(valid) or 'none'}."
        )
    return dict(options)


def check_options_by_method(options) -> dict:
    """``{method: {option: value}}`` (a view's per-method options) checked by ``check_method`` and
    ``check_options``; a copy."""
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise TypeError(
            f"options must be a dict method -> dict of that method's options, e.g. "
            f"{{'smoothgrad': {{'n_samples': 16}}}}; got {options!r}."
        )
    unknown = [method for method in options if method not in METHODS]
    if unknown:
        raise ValueError(
            f"Options for unknown method {unknown[0]!r}.{validation.did_you_mean(unknown[0], METHODS, n=2)} "
            f"Valid methods: {', '.join(METHODS)}."
        )
    return {method: check_options(method, opts) for method, opts in options.items()}


def method_options(method: str) -> list[str]:
    """The keyword options a method takes (beyond target and variables)."""
    params = inspect.signature(METHODS[method]).parameters.values()
    return [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "variables"]


def normalize_maps(maps) -> np.ndarray:
    """Each (..., H, W) map scaled to [0, 1] (min-max, ``pixels.normalize``); a constant map
    becomes zeros."""
    return px.normalize(maps, axis=(-2, -1))


# ------------------------------------------------------------------ gradient methods
def vanilla_gradient(probe, images, target=None, *, variables=None) -> SaliencyResult:
    """Gradient of the target w.r.t. the pixels; map = max |grad| over channels.

    References: Simonyan et al. 2013, "Deep Inside Convolutional Networks".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    g, s, t = _jit_gradients(probe, spec, None)(variables, x, units)
    return _result("vanilla", _max_abs(g), t, s, spec, attributions=g)


def gradient_x_input(probe, images, target=None, *, variables=None) -> SaliencyResult:
    """Gradient times input; map = signed sum over channels.

    References: Shrikumar et al. 2016, "Not Just a Black Box" (gradient * input).
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    g, s, t = _jit_gradients(probe, spec, None)(variables, x, units)
    attr = g * x
    return _result("grad_x_input", attr.sum(-1), t, s, spec, attributions=attr)


def smoothgrad(
    probe,
    images,
    target=None,
    *,
    n_samples: int = 32,
    noise: float = 0.15,
    squared: bool = False,
    seed: int = 0,
    variables=None,
) -> SaliencyResult:
    """Gradient averaged over noisy copies of each image; map = max |.| over channels.

    The noise is Gaussian with sigma = ``noise`` x (max - min) of each image (the paper's
    noise level). ``squared`` averages squared gradients (SmoothGrad-Squared, Hooker et al.
    2019). The targets are resolved on the clean images.

    References: Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise".
    """
    n_samples = validation.positive_int(n_samples, "n_samples", MAX_LOOP)
    noise = _non_negative(noise, "noise")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}.")
    x, spec, units, variables = _prepare(probe, images, target, variables)
    attr, s, t = _jit_smoothgrad(probe, spec, n_samples)(
        variables, x, units, jax.random.key(seed), jnp.float32(noise), jnp.bool_(squared)
    )
    return _result("smoothgrad", _max_abs(attr), t, s, spec, attributions=attr)


def integrated_gradients(
    probe, images, target=None, *, steps: int = 32, baseline=None, variables=None
) -> SaliencyResult:
    """(x - baseline) x the gradient averaged along the straight path from the baseline to x.

    Midpoint Riemann sum with ``steps`` gradient evaluations. ``baseline``: None (black, 0),
    a value, one image (H, W, C) or one per image (N, H, W, C), in [0, 1] display space. The
    map is the signed sum over channels, so each map sums to ~ f(x) - f(baseline)
    (completeness); more steps, closer.

    References: Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks".
    """
    steps = validation.positive_int(steps, "steps", MAX_LOOP)
    x, spec, units, variables = _prepare(probe, images, target, variables)
    base = _baseline(baseline, x.shape)
    attr, s, t = _jit_integrated(probe, spec, steps)(variables, x, units, base)
    return _result("integrated_gradients", attr.sum(-1), t, s, spec, attributions=attr)


def guided_backprop(probe, images, target=None, *, variables=None) -> SaliencyResult:
    """Gradient where every ReLU passes only positive gradient at positive inputs.

    The model is not edited: its computation is re-traced with the "guided" ReLU rule
    (``jaxpr.gradients``; it applies to ``jax.nn.relu`` / ``relu6``, not to a hand-written
    ``jnp.maximum(x, 0)``). Map = max |.| over channels.

    References: Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    g, s, t = _jit_gradients(probe, spec, "guided")(variables, x, units)
    return _result("guided_backprop", _max_abs(g), t, s, spec, attributions=g)


def deconvnet(probe, images, target=None, *, variables=None) -> SaliencyResult:
    """Gradient where every ReLU passes the positive part of the gradient, whatever its input
    (the "deconvnet" rule of ``jaxpr.gradients``, on ``jax.nn.relu`` / ``relu6`` calls).

    References: Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    g, s, t = _jit_gradients(probe, spec, "deconvnet")(variables, x, units)
    return _result("deconvnet", _max_abs(g), t, s, spec, attributions=g)


def lrp(
    probe,
    images,
    target=None,
    *,
    composite: str = "epsilon-plus-flat",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    variables=None,
) -> SaliencyResult:
    """Layer-wise relevance propagation; map = signed sum over channels of the pixels' relevance.

    ``composite`` picks each linear layer's rule (``jaxpr.lrp.COMPOSITES``): "epsilon-plus-flat"
    (z⁺ for convolutions, ε for dense layers, flat at the first layer), "epsilon-gamma-flat" (γ for
    convolutions) or "epsilon" (ε everywhere); ``epsilon`` and ``gamma`` are the ε and γ rules'
    parameters. The model is not edited: its computation is re-traced with the rules of
    ``jaxpr.lrp`` (biases absorb their share; a batch norm not folded into its conv passes relevance
    as a linear layer with ε = 0). Where no bias absorbs any, the map sums to the target's score.

    References: Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
    Layer-Wise Relevance Propagation"; Montavon et al. 2019, "Layer-Wise Relevance Propagation: An
    Overview".
    """
    relevance.composite(composite)  # an unknown name lists the valid ones
    epsilon, gamma = _non_negative(epsilon, "epsilon"), _non_negative(gamma, "gamma")
    x, spec, units, variables = _prepare(probe, images, target, variables)
    r, s, t = _jit_relevance(probe, spec, composite, epsilon, gamma)(variables, x, units)
    return _result("lrp", r.sum(-1), t, s, spec, attributions=r)


# ------------------------------------------------------------------ class activation maps
def gradcam(probe, images, target=None, *, layer: str | None = None, variables=None) -> SaliencyResult:
    """ReLU(sum_k a_k A_k), a_k = spatial mean of d target / d A_k, A = ``layer``'s activations.

    ``layer`` defaults to the last layer with spatial dimensions.

    References: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    layer = _cam_layer(probe, layer, spec, "Grad-CAM")
    maps, s, t = _jit_cam(probe, spec, layer, "gradcam")(variables, x, units)
    return _result("gradcam", maps, t, s, spec, layer=layer)


def gradcam_pp(probe, images, target=None, *, layer: str | None = None, variables=None) -> SaliencyResult:
    """Grad-CAM++: channel weights sum_ij alpha_kij ReLU(dS/dA_kij), higher-order alphas.

    Uses the closed form for an exponential score (the paper's eq. 19, as in its code).

    References: Chattopadhay et al. 2018, "Grad-CAM++: Improved Visual Explanations".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    layer = _cam_layer(probe, layer, spec, "Grad-CAM++")
    maps, s, t = _jit_cam(probe, spec, layer, "gradcam_pp")(variables, x, units)
    return _result("gradcam_pp", maps, t, s, spec, layer=layer)


def scorecam(
    probe, images, target=None, *, layer: str | None = None, chunk: int | None = None, variables=None
) -> SaliencyResult:
    """ReLU(sum_k w_k A_k), w = softmax over channels of the target's value on the image masked
    by each channel's upsampled, [0, 1]-normalized activation map.

    Gradient-free. The target's value is the logit (or unit mean), as in common implementations;
    masking multiplies the [0, 1] image, so masked-out pixels are black. ``chunk`` channels
    are scored per forward pass (default: from a memory budget).

    References: Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for CNNs".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    layer = _cam_layer(probe, layer, spec, "Score-CAM", need_after=False)
    chunk = loop_chunk(chunk, probe, x.shape)
    maps, s, t = _jit_scorecam(probe, spec, layer, chunk)(variables, x, units)
    return _result("scorecam", maps, t, s, spec, layer=layer)


# ------------------------------------------------------------------ occlusion
def occlusion(
    probe,
    images,
    target=None,
    *,
    patch: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: float = 0.5,
    chunk: int | None = None,
    variables=None,
) -> SaliencyResult:
    """Drop of the target's value when a patch of the image is covered, averaged over patches.

    A ``patch`` (default 1/8 of the image side) slides with ``stride`` (default half the patch;
    the last row/column of patches is aligned with the image border) and is filled with ``fill``
    (default 0.5, grey). Each pixel's value is the mean drop over the patches covering it;
    positive = covering it lowers the score. ``chunk`` patch positions per forward pass.

    References: Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks".
    """
    x, spec, units, variables = _prepare(probe, images, target, variables)
    h, w = x.shape[1:3]
    patch = _pair(patch if patch is not None else max(1, max(h, w) // 8), "patch")
    stride = _pair(stride if stride is not None else tuple(max(1, p // 2) for p in patch), "stride")
    if patch[0] > h or patch[1] > w:
        raise ValueError(
            f"Occlusion patch {patch[0]}x{patch[1]} is larger than the {h}x{w} images; "
            f"use a patch of at most {h}x{w}."
        )
    fill = _non_negative(fill, "fill")
    if fill > 1:
        raise ValueError(f"fill must be a value in [0, 1] (0.5: grey), got {fill}.")
    chunk = loop_chunk(chunk, probe, x.shape)
    maps, s, t = _jit_occlusion(probe, spec, (h, w), patch, stride, chunk)(
        variables, x, units, jnp.float32(fill)
    )
    return _result("occlusion", maps, t, s, spec)


METHODS: dict[str, Callable[..., SaliencyResult]] = {
    "vanilla": vanilla_gradient,
    "grad_x_input": gradient_x_input,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "lrp": lrp,
    "gradcam": gradcam,
    "gradcam_pp": gradcam_pp,
    "scorecam": scorecam,
    "occlusion": occlusion,
}
CAM_METHODS = ("gradcam", "gradcam_pp", "scorecam")
# Methods whose maps are signed attributions (show them with 0 in the middle of a diverging colormap).
SIGNED_METHODS = ("grad_x_input", "integrated_gradients", "lrp", "occlusion")


# ------------------------------------------------------------------ CAM formulas (pure, one image)
def gradcam_map(acts: jax.Array, grads: jax.Array) -> jax.Array:
    """Grad-CAM of one image: acts, grads (h, w, C) → (h, w)."""
    return jax.nn.relu(jnp.einsum("hwc,c->hw", acts, grads.mean(axis=(0, 1))))


def gradcam_pp_map(acts: jax.Array, grads: jax.Array) -> jax.Array:
    """Grad-CAM++ of one image: acts, grads (h, w, C) → (h, w)."""
    g2 = grads * grads
    denom = 2 * g2 + acts.sum(axis=(0, 1)) * g2 * grads
    alpha = jnp.where((grads != 0) & (denom != 0), g2 / jnp.where(denom != 0, denom, 1), 0)
    weights = (alpha * jax.nn.relu(grads)).sum(axis=(0, 1))
    return jax.nn.relu(jnp.einsum("hwc,c->hw", acts, weights))


_CAM_FORMULAS = {"gradcam": gradcam_map, "gradcam_pp": gradcam_pp_map}


# ------------------------------------------------------------------ targets and checks
def _prepare(probe, images, target, variables):
    probe = require_probe(probe, "saliency")
    if len(np.shape(images)) == 4 and np.shape(images)[-1] == probe.input_shape[-1]:
        probe.check_size(np.shape(images)[1:3], "images of size")  # one image too large: not a batch
        check_batch_memory(probe, np.shape(images))  # before the images are converted, even
    x = probe.check_images(images)
    spec, units = _resolve_target(probe, target, len(x))
    return x, spec, jnp.asarray(units, jnp.int32), probe.check_variables(variables)


def _resolve_target(probe, target, n: int) -> tuple[_Target, np.ndarray]:
    """(static target, (N,) int32 units); -1 = predicted class / whole layer."""
    if isinstance(target, tuple):
        if len(target) != 2 or not isinstance(target[0], str):
            raise ValueError(
                f"A layer-unit target is (layer_name, unit or None), e.g. ('conv3', 5); got {target!r}."
            )
        layer = probe.layer(target[0]).name
        if target[1] is None:
            return _Target(layer, True), np.full(n, -1, np.int32)
        units = probe.check_units(layer, target[1])
        return _Target(layer, False), _broadcast_targets(units, n, f"units of layer {layer!r}")
    n_classes = num_classes(probe)
    if target is None:
        return _Target(None, False), np.full(n, -1, np.int32)
    if isinstance(target, str):
        names = probe.class_names or []
        if target not in names:
            hint = validation.did_you_mean(target, names)
            raise ValueError(
                f"Unknown class name {target!r} for {probe.name}.{hint}"
                + (
                    f" Give a class name ({', '.join(map(str, names[:10]))}{', …' if len(names) > 10 else ''})"
                    f" or a class index 0..{n_classes - 1}."
                    if names
                    else " The model has no class names: give a class index."
                )
            )
        return _Target(None, False), np.full(n, names.index(target), np.int32)
    classes = np.asarray(target)
    if classes.dtype == bool or not np.issubdtype(classes.dtype, np.integer):
        raise TypeError(f"A class target must be an integer or an array of integers, got {target!r}.")
    bad = classes[(classes < 0) | (classes >= n_classes)]
    if bad.size:
        raise ValueError(
            f"Class {int(bad.reshape(-1)[0])} is out of range for {probe.name} with {n_classes} "
            f"classes (valid: 0..{n_classes - 1})."
        )
    return _Target(None, False), _broadcast_targets(classes, n, "class targets")


def _broadcast_targets(values, n: int, what: str) -> np.ndarray:
    values = np.asarray(values, np.int32).reshape(-1)
    if values.size == 1:
        return np.full(n, values[0], np.int32)
    if values.size != n:
        raise ValueError(f"Give one target or one per image: {n} {what} expected, got {values.size}.")
    return values


def num_classes(probe) -> int:
    """The number of classes the model scores (``Probe.require_classes``)."""
    return probe.require_classes("A class target")


def _cam_layer(probe, layer, spec: _Target, what: str, need_after: bool = True) -> str:
    spatial = [info.name for info in probe.layers if info.spatial]
    if layer is None:
        if not spatial:
            raise ValueError(f"{what} needs a layer with spatial dimensions, and {probe.name} has none.")
        layer = spatial[-1]
    info = probe.layer(layer)
    if not info.spatial:
        raise ValueError(
            f"{what} needs a layer with spatial dimensions (H, W, C); {info.name!r} has shape "
            f"{info.shape}. Spatial layers: {', '.join(spatial)}."
        )
    if need_after and spec.layer is not None:
        order = probe.layer_names
        if order.index(spec.layer) < order.index(info.name):
            raise ValueError(
                f"{what} at layer {info.name!r} explains a score computed after it, but the target "
                f"layer {spec.layer!r} comes before it: pick a target after {info.name!r} or an "
                f"earlier CAM layer."
            )
    return info.name


def _baseline(baseline, shape) -> jax.Array:
    if baseline is None:
        return jnp.zeros(shape, jnp.float32)
    arr = np.asarray(baseline, np.float32)
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"baseline must be a value, one image {shape[1:]} or one per image {shape}; "
            f"got shape {np.shape(baseline)}."
        ) from None
    if not np.all(np.isfinite(arr)):
        raise ValueError("baseline contains NaN or Inf values.")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"baseline must hold values in [0, 1] (display space, like the images), got range "
            f"[{arr.min():.3g}, {arr.max():.3g}]."
        )
    return jnp.asarray(arr)


def _non_negative(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.") from None
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}.")
    return validation.positive_int(pair[0], name), validation.positive_int(pair[1], name)


def loop_chunk(chunk, probe, shape) -> int:
    """Loop items (each a batch of ``shape``'s images) per forward pass: ``chunk`` if given, else as
    many as ``CACHE_FRIENDLY_VALUES`` of the largest layer's activations allow (at least one)."""
    if chunk is not None:
        return validation.positive_int(chunk, "chunk")
    n, h, w, _ = shape
    scale = h * w / (probe.input_shape[0] * probe.input_shape[1])
    largest = max(int(np.prod(info.shape)) for info in probe.layers) * scale
    return max(1, int(CACHE_FRIENDLY_VALUES // (n * largest)))


def check_batch_memory(probe, shape) -> None:
    """A ValueError before anything is allocated when ``shape``'s images would need more than
    ``BATCH_BUDGET`` bytes of activations and their gradients (every layer's output, scaled by
    the images' area) in one call; it says how many to pass at a time."""
    n, h, w, _ = shape
    per_image = 2 * 4 * sum(int(np.prod(info.shape)) for info in probe.layers)
    per_image = int(per_image * h * w / (probe.input_shape[0] * probe.input_shape[1]))
    if n * per_image > BATCH_BUDGET:
        raise ValueError(
            f"{n} images of {h}x{w} would take about {n * per_image / 2**30:.1f} GB of activations in "
            f"{probe.name} (the budget is {BATCH_BUDGET / 2**30:.0f} GB); pass at most "
            f"{max(1, BATCH_BUDGET // per_image)} at a time."
        )


def _result(method, maps, targets, scores, spec: _Target, layer=None, attributions=None) -> SaliencyResult:
    scores = np.asarray(scores, np.float32)
    if not np.all(np.isfinite(scores)):  # NaN logits would pick "class 0" and map nothing
        bad = np.flatnonzero(~np.isfinite(scores))
        raise ValueError(
            f"{method}: the model's score is NaN or Inf on image(s) {bad[:8].tolist()}: its outputs are "
            f"not numbers there (check the model's weights, e.g. probe.variables, for NaN or Inf)."
        )
    return SaliencyResult(
        maps=np.asarray(maps, np.float32),
        targets=np.asarray(targets, np.int32),
        scores=np.asarray(scores, np.float32),
        method=method,
        target_layer=spec.layer,
        layer=layer,
        attributions=None if attributions is None else np.asarray(attributions, np.float32),
    )


# ------------------------------------------------------------------ numerics (pure, jittable)
def _max_abs(attr: jax.Array) -> jax.Array:
    return jnp.abs(attr).max(axis=-1)


def _upsample(maps: jax.Array, size) -> jax.Array:
    """(N, h, w) → (N, H, W), bilinear (half-pixel centres)."""
    return jax.image.resize(maps, (maps.shape[0], *size), "bilinear")


def _score_fn(spec: _Target) -> Callable:
    """score(out, acts, units (B,)) → (the target's value (B,), resolved units (B,))."""

    def score(out, acts, units):
        if spec.layer is None:
            logits = out.reshape(out.shape[0], -1)
            units = jnp.where(units < 0, jnp.argmax(logits, axis=-1).astype(units.dtype), units)
            return jnp.take_along_axis(logits, units[:, None], axis=1)[:, 0], units
        a = acts[spec.layer]
        a = a.reshape(a.shape[0], -1, a.shape[-1])  # (B, positions, C)
        if spec.whole:
            return a.mean(axis=(1, 2)), units
        return jnp.take_along_axis(a, units[:, None, None], axis=2)[..., 0].mean(axis=1), units

    return score


@owned_by_probe
def _input_gradients(probe, spec: _Target, relu: str | None, fast_conv: bool) -> Callable:
    """g(variables, x (N, H, W, C), units (N,)) → (d target / d x, scores, units), vmapped over images."""
    rules = (speed.GRADIENTS if fast_conv else ()) + relu_rules(relu)
    return _gradients_of(rewrite(probe.forward, *rules) if rules else probe.forward, spec)


def _gradients_of(forward: Callable, spec: _Target) -> Callable:
    """g(variables, x, units) → (d target / d x, scores, units) of ``forward(v, x) → (out, acts)``."""
    score = _score_fn(spec)

    def one(variables, x, unit):
        def f(x):
            s, t = score(*forward(variables, x[None]), unit[None])
            return s[0], t[0]

        (s, t), g = jax.value_and_grad(f, has_aux=True)(x)
        return g, s, t

    return jax.vmap(one, in_axes=(None, 0, 0))


def relevance_compiler_options() -> dict | None:
    """XLA options for LRP's programs (here and in ``engine.concepts``): on the CPU, XLA's loop
    emitters instead of its fusion emitters, which compile the γ rule's many convolutions in far less
    memory at the same speed (benchmarks/results/why.md); Binder gives a kernel 1 GB."""
    return {"xla_cpu_use_fusion_emitters": False} if jax.default_backend() == "cpu" else None


@owned_by_probe
def _jit_relevance(probe, spec: _Target, composite: str, epsilon: float, gamma: float):
    pick = relevance.composite(composite, epsilon, gamma)
    return jax.jit(
        _gradients_of(relevance.lrp(probe.reference_forward, pick, image_arg=1), spec),
        compiler_options=relevance_compiler_options(),
    )


def _clean_scores(probe, spec: _Target, variables, x, units):
    return _score_fn(spec)(*probe.forward(variables, x), units)


@owned_by_probe
def _jit_gradients(probe, spec: _Target, relu: str | None):
    return jax.jit(_input_gradients(probe, spec, relu, False))


def _summed_gradients(grads, variables, inputs_for, items, units, like, term=lambda g: g):
    """sum over ``items`` of term(grads(variables, inputs_for(item), units)), one item per device
    per scan step: the items' image batches side by side, spread over the devices.

    SmoothGrad of 8 images on one device used 1.2 of 2 cores (benchmarks/bench_vs_pytorch.py);
    its noisy copies are independent, so each device takes its own.
    """
    d = jax.device_count()
    n = items.shape[0]
    rounds = -(-n // d)
    padded = jnp.concatenate([items, jnp.repeat(items[-1:], rounds * d - n, axis=0)])
    mask = (jnp.arange(rounds * d) < n).astype(like.dtype).reshape(rounds, d)  # padding adds 0
    spread = sharding.filter_sharding()

    def body(total, step):
        its, m = step
        batch = jax.vmap(inputs_for)(its)  # (d, N, H, W, C)
        flat = batch.reshape(-1, *batch.shape[2:])
        if spread is not None:
            flat = lax.with_sharding_constraint(flat, spread)
        g = term(grads(variables, flat, jnp.tile(units, d))[0]).reshape(batch.shape)
        return total + jnp.tensordot(m, g, axes=1), None

    total, _ = lax.scan(body, jnp.zeros_like(like), (padded.reshape(rounds, d, *items.shape[1:]), mask))
    return total


@owned_by_probe
def _jit_smoothgrad(probe, spec: _Target, n_samples: int):
    grads = _input_gradients(probe, spec, None, True)

    def run(variables, x, units, key, noise, squared):
        s, t = _clean_scores(probe, spec, variables, x, units)
        sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
        total = _summed_gradients(
            grads,
            variables,
            lambda k: x + sigma * jax.random.normal(k, x.shape, x.dtype),
            jax.random.split(key, n_samples),
            t,
            x,
            term=lambda g: jnp.where(squared, g * g, g),
        )
        return total / n_samples, s, t

    return _device_locked(jax.jit(run))


@owned_by_probe
def _jit_integrated(probe, spec: _Target, steps: int):
    grads = _input_gradients(probe, spec, None, True)

    def run(variables, x, units, baseline):
        s, t = _clean_scores(probe, spec, variables, x, units)
        alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps  # midpoint rule
        total = _summed_gradients(grads, variables, lambda a: baseline + a * (x - baseline), alphas, t, x)
        return (x - baseline) * total / steps, s, t

    return _device_locked(jax.jit(run))


def _device_locked(fn: Callable) -> Callable:
    """``fn`` holding ``sharding.device_lock``: its program may span the devices (see there)."""

    @functools.wraps(fn)
    def locked(*args):
        with sharding.device_lock:
            return jax.block_until_ready(fn(*args))

    return locked


@owned_by_probe
def _jit_cam(probe, spec: _Target, layer: str, formula: str):
    tapped = tap_layer(probe.forward, layer)
    score = _score_fn(spec)
    cam = _CAM_FORMULAS[formula]

    def one(variables, x, unit):
        shape = jax.eval_shape(probe.forward, variables, x[None])[1][layer].shape

        def f(delta):
            out, acts = tapped(variables, x[None], delta)
            s, t = score(out, acts, unit[None])
            return s[0], (t[0], acts[layer][0])

        (s, (t, a)), g = jax.value_and_grad(f, has_aux=True)(jnp.zeros(shape, x.dtype))
        return cam(a, g[0]), s, t

    def run(variables, x, units):
        maps, s, t = jax.vmap(one, in_axes=(None, 0, 0))(variables, x, units)
        return _upsample(maps, x.shape[1:3]), s, t

    return jax.jit(run)


@owned_by_probe
def _jit_scorecam(probe, spec: _Target, layer: str, chunk: int):
    score = _score_fn(spec)

    def run(variables, x, units):
        out, acts = probe.forward(variables, x)
        s, t = score(out, acts, units)
        a = acts[layer]  # (N, h, w, C)

        def channel(k):
            m = _upsample(jnp.take(a, k, axis=3), x.shape[1:3])
            lo, hi = m.min(axis=(1, 2), keepdims=True), m.max(axis=(1, 2), keepdims=True)
            m = jnp.where(hi > lo, (m - lo) / jnp.where(hi > lo, hi - lo, 1), 0)
            return score(*probe.forward(variables, x * m[..., None]), t)[0]

        masked = lax.map(channel, jnp.arange(a.shape[-1]), batch_size=min(chunk, a.shape[-1]))  # (C, N)
        weights = jax.nn.softmax(masked, axis=0)
        maps = jax.nn.relu(jnp.einsum("nhwc,cn->nhw", a, weights))
        return _upsample(maps, x.shape[1:3]), s, t

    return jax.jit(run)


def _starts(size: int, patch: int, stride: int) -> np.ndarray:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.asarray(starts)


@owned_by_probe
def _jit_occlusion(probe, spec: _Target, size, patch, stride, chunk: int):
    score = _score_fn(spec)
    (h, w), (ph, pw) = size, patch
    ys, xs = _starts(h, ph, stride[0]), _starts(w, pw, stride[1])
    rows = ((np.arange(h) >= ys[:, None]) & (np.arange(h) < ys[:, None] + ph)).astype(np.float32)  # (ny, H)
    cols = ((np.arange(w) >= xs[:, None]) & (np.arange(w) < xs[:, None] + pw)).astype(np.float32)  # (nx, W)
    count = rows.sum(0)[:, None] * cols.sum(0)[None]  # patches covering each pixel
    positions = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2).astype(np.int32)

    def run(variables, x, units, fill):
        s, t = _clean_scores(probe, spec, variables, x, units)

        def covered(pos):
            iy, ix = jnp.arange(h)[:, None], jnp.arange(w)[None]
            inside = (iy >= pos[0]) & (iy < pos[0] + ph) & (ix >= pos[1]) & (ix < pos[1] + pw)
            return score(*probe.forward(variables, jnp.where(inside[None, :, :, None], fill, x)), t)[0]

        drops = s - lax.map(covered, jnp.asarray(positions), batch_size=min(chunk, len(positions)))  # (P, N)
        total = jnp.einsum("yh,yxn,xw->nhw", rows, drops.reshape(len(ys), len(xs), -1), cols)
        return jnp.where(count > 0, total / np.maximum(count, 1), 0), s, t

    return jax.jit(run)


# ------------------------------------------------------------------ gradients at a layer
def tap_layer(forward: Callable, layer: str | tuple[str, ...], rules: Callable | None = None) -> Callable:
    """``forward(v, x) → (out, acts)`` as ``tapped(v, x, delta)`` with ``delta`` added to ``acts[layer]``
    where it is computed, so the rest of the model sees it: ``jax.grad`` w.r.t. ``delta`` at zero is the
    gradient w.r.t. the layer's output. A tuple of layers takes a tuple of deltas, one per layer. The
    model is not edited: its jaxpr is re-evaluated, under ``rules(jaxpr, image positions)``'s evaluator
    rules if given (LRP's: ``jaxpr.lrp.rules``).
    """
    layers = layer if isinstance(layer, tuple) else (layer,)

    def tapped(variables, x, delta):
        closed, shape = jax.make_jaxpr(forward, return_shape=True)(variables, x)
        leaves, tree = jax.tree_util.tree_flatten(shape)
        indices = jax.tree_util.tree_unflatten(tree, list(range(len(leaves))))[1]
        taps = {}
        for name, d in zip(layers, delta if isinstance(layer, tuple) else (delta,)):
            tap = _uncast(closed.jaxpr, closed.jaxpr.outvars[indices[name]])
            # the layer can be the model's output itself (a headless model's last activation)
            used = tap in closed.jaxpr.outvars[: len(jax.tree_util.tree_leaves(shape[0]))]
            if not (used or walk.read_later(closed.jaxpr, tap)):
                raise ValueError(
                    f"Cannot take gradients at layer {name!r}: the recorded activation is not used by the "
                    f"rest of the model's computation (is it a copy of the value passed on?)."
                )
            taps[tap] = d
        leaves = jax.tree_util.tree_leaves((variables, x))
        start = len(jax.tree_util.tree_leaves(variables))
        image = set(range(start, len(leaves)))
        given = rules(closed.jaxpr, image) if rules else ()
        outs = evaluate(closed.jaxpr, closed.consts, leaves, given, taps)
        return jax.tree_util.tree_unflatten(tree, outs)

    return tapped


def _uncast(jaxpr, var):
    """The value ``var`` is a dtype cast of (the Probe reports a bfloat16 model's activations in
    float32): the model computes on that one, so the tap goes there."""
    made = walk.producers(jaxpr)
    while var in made and made[var].primitive.name == "convert_element_type":
        var = made[var].invars[0]
    return var


__all__ = [
    "CAM_METHODS",
    "METHODS",
    "SaliencyResult",
    "check_batch_memory",
    "check_method",
    "check_options",
    "check_options_by_method",
    "deconvnet",
    "gradcam",
    "gradcam_map",
    "gradcam_pp",
    "gradcam_pp_map",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "loop_chunk",
    "lrp",
    "method_options",
    "normalize_maps",
    "occlusion",
    "saliency",
    "scorecam",
    "smoothgrad",
    "tap_layer",
    "target_label",
    "unit_label",
    "target_to_text",
    "vanilla_gradient",
]
