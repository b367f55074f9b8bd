"""Faithfulness of explanations: deletion and insertion curves and the areas under them.

A saliency map orders the pixels, most relevant first. Deletion replaces them in that order by a
baseline: if the map is faithful, the target class's probability falls fast, and the area under the
curve (probability against the fraction of pixels deleted) is small. Insertion starts from a blurred
copy and puts the original pixels back in that order: the probability should rise fast, and the area
is large. ``faithfulness`` computes both for several saliency methods on a batch and ranks them.

Defaults follow RISE's code: deletion sets pixels to 0 (``substrate_fn=torch.zeros_like``; here 0 in
[0, 1] display space, i.e. black, where RISE zeroes the normalized tensor, i.e. the mean colour),
insertion starts from a Gaussian blur of sigma 5 pixels (RISE truncates its kernel at 11 taps; ours
reaches 3 sigma, so it blurs a little more).

References: Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
Black-box Models" (BMVC), section 4.1.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnvis_widgets import validation
from cnnvis_widgets.engine import regularizers
from cnnvis_widgets.engine.saliency import (
    CAM_METHODS,
    METHODS,
    check_batch_memory,
    check_method,
    check_options_by_method,
    loop_chunk,
    saliency,
)
from cnnvis_widgets.models.probe import owned_by_probe, require_probe

DEFAULT_STEPS = 32  # fractions of the pixels after 0: 0, 1/32, ..., 1 (fewer in images of fewer pixels)
BLUR_SIGMA = 5.0  # pixels: RISE's insertion start


class FaithfulnessResult(NamedTuple):
    """Deletion and insertion curves of each method's maps, their areas and the methods' ranking.

    methods: (M,) the methods, in the order asked; fractions: (S+1,) fraction of the pixels deleted
    (inserted) at each step, 0 to 1; deletion, insertion: (M, N, S+1) the target's probability at each
    step; deletion_auc (lower is better), insertion_auc (higher is better): (M, N) areas under them, in
    [0, 1]; targets: (N,) the class explained; ranking: the methods, best first by the mean over the
    images of ``score``.
    """

    methods: tuple[str, ...]
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    targets: np.ndarray
    ranking: tuple[str, ...]

    @property
    def score(self) -> np.ndarray:
        """(M, N) insertion AUC - deletion AUC: higher is better, in [-1, 1]."""
        return self.insertion_auc - self.deletion_auc


# ------------------------------------------------------------------ definitions (pure)
def pixel_order(maps) -> jax.Array:
    """(N, H, W) maps → (N, H*W) flat pixel indices, most relevant (largest value) first; equal values
    keep raster order (row by row), so the order is deterministic."""
    flat = jnp.asarray(maps).reshape(np.shape(maps)[0], -1)
    return jnp.argsort(-flat, axis=-1, stable=True)


def pixel_ranks(maps) -> jax.Array:
    """(N, H, W) each pixel's place in ``pixel_order`` (0: the most relevant)."""
    order = pixel_order(maps)
    n, hw = order.shape
    places = jnp.broadcast_to(jnp.arange(hw, dtype=jnp.int32), (n, hw))
    ranks = jnp.zeros((n, hw), jnp.int32).at[jnp.arange(n)[:, None], order].set(places)
    return ranks.reshape(np.shape(maps))


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """(steps+1,) pixels changed at each step: floor(k * n_pixels / steps), k = 0..steps."""
    return (np.arange(steps + 1) * n_pixels) // steps


def perturb(images, ranks, substrate, count) -> jax.Array:
    """``images`` (N, H, W, C) with their ``count`` first pixels by ``ranks`` (N, H, W) taken from
    ``substrate`` (same shape as the images, or broadcastable)."""
    return jnp.where((ranks < count)[..., None], substrate, images)


def deletion_images(images, maps, baseline, counts) -> jax.Array:
    """(S+1, N, H, W, C): the images with the first ``counts[k]`` pixels by ``maps`` set to ``baseline``."""
    ranks = pixel_ranks(maps)
    return jax.vmap(lambda c: perturb(images, ranks, baseline, c))(jnp.asarray(counts))


def insertion_images(images, maps, start, counts) -> jax.Array:
    """(S+1, N, H, W, C): ``start`` (e.g. the blurred images) with the first ``counts[k]`` pixels by
    ``maps`` put back from ``images``."""
    ranks = pixel_ranks(maps)
    return jax.vmap(lambda c: perturb(start, ranks, images, c))(jnp.asarray(counts))


def class_probability(outputs, classes) -> jax.Array:
    """(N,) softmax probability of ``classes`` (N,) from the model's outputs (N, ...)."""
    probs = jax.nn.softmax(outputs.reshape(outputs.shape[0], -1), axis=-1)
    return jnp.take_along_axis(probs, jnp.asarray(classes)[:, None], axis=1)[:, 0]


def area_under_curve(curves, fractions) -> np.ndarray:
    """Trapezoid rule along the last axis of ``curves`` over ``fractions`` (0 to 1): in [0, 1] for
    probabilities."""
    return np.trapezoid(np.asarray(curves, np.float64), np.asarray(fractions, np.float64), axis=-1)


def rank_methods(methods: Sequence[str], score) -> tuple[str, ...]:
    """``methods`` sorted by the mean over images of ``score`` (M, N), highest first; ties keep order."""
    mean = np.asarray(score, np.float64).mean(axis=-1)
    return tuple(methods[i] for i in np.argsort(-mean, kind="stable"))


def applicable_methods(probe) -> tuple[str, ...]:
    """The saliency methods ``probe`` can be explained by: all, less the CAMs without a spatial layer."""
    spatial = any(layer.spatial for layer in probe.layers)
    return tuple(m for m in METHODS if spatial or m not in CAM_METHODS)


# ------------------------------------------------------------------ the public functions
class Curves(NamedTuple):
    """Deletion and insertion curves of one set of maps: fractions (S+1,); deletion, insertion
    (N, S+1) probabilities; deletion_auc, insertion_auc (N,) areas under them."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray


def curves_of_maps(
    probe,
    images,
    maps,
    classes=None,
    *,
    steps: int | None = None,
    deletion_baseline: float | str = 0.0,
    insertion_baseline: float | str = "blur",
    blur_sigma: float = BLUR_SIGMA,
    chunk: int | None = None,
    variables=None,
) -> Curves:
    """Deletion and insertion curves of ``images`` (N, H, W, C) in the pixel order of ``maps``
    (N, H, W), any maps (a saliency method's, a hand-made one) for ``classes`` (None: each image's
    predicted class; a class index; (N,) indices). Every step of both curves runs in one compiled
    program, ``chunk`` steps per forward pass. Other arguments: see ``faithfulness``.

    References: Petsiuk et al. 2018, "RISE" (BMVC), deletion and insertion.
    """
    probe = require_probe(probe, "curves_of_maps")
    deletion_fill = _check_baseline(deletion_baseline, "deletion_baseline")
    insertion_fill = _check_baseline(insertion_baseline, "insertion_baseline")
    uses_blur = "blur" in (deletion_fill, insertion_fill)
    sigma = validation.positive_number(blur_sigma, "blur_sigma") if uses_blur else None
    if len(np.shape(images)) == 4:
        check_batch_memory(probe, np.shape(images))  # before the images are converted
    x = probe.check_images(images)
    n, h, w, _ = x.shape
    steps = min(DEFAULT_STEPS, h * w) if steps is None else steps
    steps = validation.positive_int(steps, "steps", h * w, f"fractions of the {h}x{w} images' pixels")
    maps = _check_maps(maps, (n, h, w))
    variables = probe.check_variables(variables)
    classes = _check_classes(probe, classes, variables, x)
    chunk = loop_chunk(chunk, probe, x.shape)
    run = _jit_curves(probe, steps, chunk, deletion_fill == "blur", insertion_fill == "blur", sigma)
    fills = [jnp.float32(0.0 if f == "blur" else f) for f in (deletion_fill, insertion_fill)]
    deletion, insertion = (np.asarray(c) for c in run(variables, x, maps, classes, *fills))
    fractions = (step_counts(h * w, steps) / (h * w)).astype(np.float32)
    return Curves(
        fractions,
        deletion,
        insertion,
        area_under_curve(deletion, fractions).astype(np.float32),
        area_under_curve(insertion, fractions).astype(np.float32),
    )


def faithfulness(
    probe,
    images,
    methods: Sequence[str] | str | None = None,
    target=None,
    *,
    steps: int | None = None,
    deletion_baseline: float | str = 0.0,
    insertion_baseline: float | str = "blur",
    blur_sigma: float = BLUR_SIGMA,
    options: dict | None = None,
    chunk: int | None = None,
    variables=None,
    callback: Callable[[int, int, str], bool | None] | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves and their areas for each saliency method's maps of ``images``,
    and the methods ranked by insertion AUC - deletion AUC.

    Args:
      probe: a Probe with class scores.
      images: (N, H, W, C) in [0, 1].
      methods: saliency methods (``saliency.METHODS``); None: every one ``probe`` allows.
      target: None (each image's predicted class), a class index or name, or (N,) class indices.
      steps: the curves have steps + 1 points, from no pixel to all (at most H*W; None:
        ``DEFAULT_STEPS``, or H*W where that is fewer).
      deletion_baseline: what deleted pixels become: a value in [0, 1] (default 0, black) or "blur".
      insertion_baseline: where insertion starts: "blur" (default) or a value in [0, 1].
      blur_sigma: the blur's sigma in pixels.
      options: per-method saliency options, e.g. ``{"smoothgrad": {"n_samples": 16}}``.
      chunk: steps per forward pass (default: ``saliency.loop_chunk``'s budget).
      variables: model variables (default ``probe.variables``).
      callback: ``callback(done, total, method)`` after each method; returning True stops, and the
        result holds the methods done.

    References: Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (BMVC), deletion and insertion metrics.
    """
    probe = require_probe(probe, "faithfulness")
    probe.require_classes("faithfulness (it measures class probabilities)")
    methods = _check_methods(probe, methods)
    options = check_options_by_method(options or {})
    if isinstance(target, tuple):
        raise ValueError(
            f"faithfulness measures the probability of a class, and a layer unit {target!r} has none: give "
            f"None (the predicted class), a class index or name, or one class index per image."
        )
    settings = dict(
        steps=None if steps is None else validation.positive_int(steps, "steps"),
        deletion_baseline=_check_baseline(deletion_baseline, "deletion_baseline"),
        insertion_baseline=_check_baseline(insertion_baseline, "insertion_baseline"),
        blur_sigma=validation.positive_number(blur_sigma, "blur_sigma"),
        chunk=chunk,
        variables=variables,
    )
    first = saliency(probe, images, methods[0], target, variables=variables, **options.get(methods[0], {}))
    x, classes = probe.check_images(images), first.targets
    curves = []
    for method in methods:
        result = (
            first
            if method == methods[0]
            else saliency(probe, x, method, classes, variables=variables, **options.get(method, {}))
        )
        curves.append(curves_of_maps(probe, x, result.maps, classes, **settings))
        if callback is not None and callback(len(curves), len(methods), method):
            methods = methods[: len(curves)]
            break
    stack = lambda field: np.stack([getattr(c, field) for c in curves])
    deletion_auc, insertion_auc = stack("deletion_auc"), stack("insertion_auc")
    return FaithfulnessResult(
        methods=methods,
        fractions=curves[0].fractions,
        deletion=stack("deletion"),
        insertion=stack("insertion"),
        deletion_auc=deletion_auc,
        insertion_auc=insertion_auc,
        targets=np.asarray(classes, np.int32),
        ranking=rank_methods(methods, insertion_auc - deletion_auc),
    )


# ------------------------------------------------------------------ the compiled curves
@owned_by_probe
def _jit_curves(probe, steps: int, chunk: int, deletion_blur: bool, insertion_blur: bool, sigma):
    """curves(variables, x (N, H, W, C), maps (N, H, W), classes (N,), deletion fill, insertion fill)
    → (deletion (N, S+1), insertion (N, S+1)): every step of both curves in one program, ``chunk``
    steps per forward pass."""

    def run(variables, x, maps, classes, deletion_fill, insertion_fill):
        _, h, w, _ = x.shape
        ranks = pixel_ranks(maps)
        blurred = regularizers.blur(x, sigma) if sigma is not None else None
        removed = blurred if deletion_blur else jnp.full_like(x, deletion_fill)
        start = blurred if insertion_blur else jnp.full_like(x, insertion_fill)
        counts = np.tile(step_counts(h * w, steps), 2).astype(np.int32)
        inserting = np.repeat([False, True], steps + 1)

        def probability(item):
            count, insert = item
            image = jnp.where(insert, perturb(start, ranks, x, count), perturb(x, ranks, removed, count))
            return class_probability(probe.forward(variables, image)[0], classes)

        items = (jnp.asarray(counts), jnp.asarray(inserting))
        curves = lax.map(probability, items, batch_size=min(chunk, len(counts)))  # (2(S+1), N)
        return curves[: steps + 1].T, curves[steps + 1 :].T

    return jax.jit(run)


# ------------------------------------------------------------------ checks
def _check_methods(probe, methods) -> tuple[str, ...]:
    if methods is None:
        return applicable_methods(probe)
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    if not methods:
        raise ValueError(f"methods is empty: give one or more of {', '.join(METHODS)} (or None: all).")
    for method in methods:
        check_method(method)
    if len(set(methods)) < len(methods):
        raise ValueError(f"methods {list(methods)!r} names a method twice; give each once.")
    return methods


def _check_maps(maps, shape) -> jax.Array:
    """(N, H, W) finite maps as float32, or a ValueError naming the shape expected."""
    arr = np.asarray(maps, np.float32)
    if arr.shape != shape:
        raise ValueError(f"maps must have one (H, W) map per image, shape {shape}; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("maps hold NaN or Inf values, which order no pixels; give finite maps.")
    return jnp.asarray(arr)


def _check_classes(probe, classes, variables, x) -> jax.Array:
    """(N,) int32 class indices: ``classes`` broadcast to the images, or each one's predicted class."""
    n_classes = probe.require_classes("Deletion and insertion curves (they measure class probabilities)")
    if classes is None:
        return jnp.argmax(probe.logits(variables, x).reshape(len(x), -1), axis=-1).astype(jnp.int32)
    arr = np.asarray(classes)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or arr.ndim > 1:
        raise TypeError(f"classes must be None, a class index or (N,) class indices, got {classes!r}.")
    if arr.size not in (1, len(x)) or np.any((arr < 0) | (arr >= n_classes)):
        raise ValueError(
            f"classes must be one index or one per image ({len(x)}), each in 0..{n_classes - 1}; "
            f"got {classes!r}."
        )
    return jnp.asarray(np.broadcast_to(arr.reshape(-1), (len(x),)), jnp.int32)


def _check_baseline(value, name: str):
    """ "blur", or a value in [0, 1] as a float."""
    if isinstance(value, str):
        validation.one_of(value, ("blur",), f"{name} (a value in [0, 1] or 'blur')")
        return value
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a value in [0, 1] (display space) or 'blur', got {value!r}.")
    return float(value)


__all__ = [
    "BLUR_SIGMA",
    "Curves",
    "DEFAULT_STEPS",
    "FaithfulnessResult",
    "applicable_methods",
    "area_under_curve",
    "class_probability",
    "curves_of_maps",
    "deletion_images",
    "faithfulness",
    "insertion_images",
    "perturb",
    "pixel_order",
    "pixel_ranks",
    "rank_methods",
    "step_counts",
]
