"""Concept relevance: which channels of a layer made a prediction, where each sits in the image, and
which lower-layer channels make up each one.

A channel's relevance is the sum over positions of the layer's relevance ``a ⊙ g`` (the activation
times its cotangent: LRP's, or the plain gradient's for ``method="grad_x_act"``). Its *conditional*
heatmap (Concept Relevance Propagation) is the input relevance of the backward pass from the layer
with every other channel's cotangent set to zero. The pass is linear in that cotangent, so the heatmaps
of all channels sum to the layer's share of the unconditioned map, and the top-k heatmaps are one
forward pass and k backward passes vmapped in one compiled call. ``decompose`` conditions the same
on one channel of a higher layer, splitting its relevance into the channels of a lower one.
``concept_examples`` ranks a dataset's images by a channel's relevance ("relevance maximization") or
its activation, with the receptive-field patches where it peaks.

References: Achtibat et al. 2023, "From attribution maps to human-understandable explanations through
Concept Relevance Propagation" (Nature Machine Intelligence); Olah et al. 2018, "The Building Blocks
of Interpretability" (Distill); Bach et al. 2015 (LRP).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnvis_widgets import validation
from cnnvis_widgets.engine import activations, saliency
from cnnvis_widgets.jaxpr import lrp as relevance
from cnnvis_widgets.models.probe import owned_by_probe, require_probe

METHODS = ("lrp", "grad_x_act")
DEFAULT_TOP_K = 8
# γ for convolutions, not saliency's z⁺: on EfficientNet-Lite0, z⁺'s conditional heatmaps are one
# stride checkerboard for every channel, γ's tell the channels apart (benchmarks/results/why.md)
DEFAULT_COMPOSITE = "epsilon-gamma-flat"


@dataclasses.dataclass
class ConceptResult:
    """The concepts (channels) of ``layer`` behind ``target`` on one image.

    relevance: (C,) each channel's relevance (signed; they sum to the layer's relevance);
    channels: (k,) the channels shown, most relevant first (or as asked);
    heatmaps: (k, H, W) each channel's conditional relevance at the input (CRP);
    layer_maps: (k, h, w) each channel's relevance at the layer's positions ((k,) for dense layers);
    target, score: the resolved target (class or unit) and its value on the image;
    within: (layer, channel) the relevance was conditioned on (``decompose``), or None.
    """

    layer: str
    relevance: np.ndarray
    channels: np.ndarray
    heatmaps: np.ndarray
    layer_maps: np.ndarray
    target: int
    score: float
    method: str
    target_layer: str | None = None
    within: tuple[str, int] | None = None

    @property
    def total(self) -> float:
        """The layer's relevance: the sum over its channels."""
        return float(self.relevance.sum())

    @property
    def resolved_target(self):
        """The target explained, as ``concepts`` takes it: a class index, or ``(layer, unit or None)``."""
        if self.target_layer is None:
            return self.target
        return self.target_layer, None if self.target < 0 else self.target

    @property
    def shares(self) -> np.ndarray:
        """(k,) each shown channel's relevance as a signed fraction of the channels' absolute total."""
        scale = float(np.abs(self.relevance).sum())
        return self.relevance[self.channels] / scale if scale > 0 else np.zeros(len(self.channels))


class ConceptExamples(NamedTuple):
    """The images of a dataset where a channel is most relevant (or active), best first.

    indices: into the given images; values: the channel's peak relevance (activation) in each;
    positions: (k, 2) the peak's (y, x) in the layer's grid (None for dense layers);
    patches: (k, P, P, C) the receptive field there (the whole images for dense layers).
    """

    layer: str
    channel: int
    by: str
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray | None
    patches: np.ndarray


class _How(NamedTuple):
    """How relevance is propagated (static: it picks the compiled program)."""

    method: str
    composite: str
    epsilon: float
    gamma: float


# ------------------------------------------------------------------ public functions
def concepts(
    probe,
    image,
    target=None,
    layer: str | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    channels=None,
    method: str = "lrp",
    composite: str = DEFAULT_COMPOSITE,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    within: tuple[str, int] | None = None,
    variables: Any = None,
) -> ConceptResult:
    """The channels of ``layer`` most relevant to ``target`` on ``image``, and where each sits in it.

    Args:
      image: (H, W, C) or (1, H, W, C) in [0, 1].
      target: None (the predicted class), a class index or name, or a layer unit ``("conv3", 5)``.
      layer: the layer whose channels are the concepts (default ``probe.default_layer``).
      top_k: how many of the most relevant channels get heatmaps (ignored when ``channels`` is given).
      channels: the channels to give heatmaps for, instead of the top ones.
      method: "lrp" (``composite``, ``epsilon``, ``gamma`` as ``saliency(..., "lrp")``; by default γ for
        convolutions, ε for dense layers, flat at the first: Kohlbrenner et al. 2020) or
        "grad_x_act" (the plain gradient times the activation, at the layer and at the input).
      within: ``(higher_layer, channel)``: relevance conditioned on that one channel (``decompose``).
    """
    probe = require_probe(probe, "concepts")
    how = _check_how(method, composite, epsilon, gamma)
    layer = probe.layer(probe.default_layer if layer is None else layer).name
    n = probe.layer(layer).channels
    if channels is not None:
        picked = probe.check_units(layer, np.atleast_1d(channels))
    else:
        top_k = validation.positive_int(top_k, "top_k")
        picked = np.full(min(top_k, n), -1, np.int32)
    within, channel = _check_within(probe, layer, within)
    x, spec, units, variables = saliency._prepare(probe, _one_image(image), target, variables)
    program = _jit_concepts(probe, spec, how, layer, within)
    r, chosen, heat, at_layer, s, t = program(variables, x, units, jnp.int32(channel), jnp.asarray(picked))
    score = np.asarray(s, np.float32)
    if not np.isfinite(score).all():
        raise ValueError(
            f"concepts: the model's score is {float(score[0])} on this image (check its weights)."
        )
    return ConceptResult(
        layer=layer,
        relevance=np.asarray(r, np.float32),
        channels=np.asarray(chosen, np.int32),
        heatmaps=np.asarray(heat, np.float32),
        layer_maps=np.asarray(at_layer, np.float32),
        target=int(np.asarray(t)[0]),
        score=float(score[0]),
        method=method,
        target_layer=spec.layer,
        within=None if within is None else (within, channel),
    )


def decompose(probe, image, layer: str, channel: int, into: str | None = None, target=None, **options):
    """``channel`` of ``layer``'s relevance for ``target`` split into the channels of the lower layer
    ``into`` (default: the nearest lower layer that is not a pool): ``concepts(..., layer=into,
    within=(layer, channel))``; the lower channels' relevances sum to the channel's share that flows
    through ``into``."""
    probe = require_probe(probe, "decompose")
    layer = probe.layer(layer).name
    if into is None:
        into = lower_layer(probe, layer)
    return concepts(probe, image, target, into, within=(layer, channel), **options)


def lower_layer(probe, layer: str) -> str:
    """The nearest layer below ``layer`` that is not a pool (a pool's channels are the layer's below)."""
    names = probe.layer_names
    below = [lyr for lyr in probe.layers[: names.index(probe.layer(layer).name)] if lyr.kind != "pool"]
    if not below:
        raise ValueError(
            f"Layer {layer!r} is {probe.name}'s first layer: there is no layer below to decompose into."
        )
    return below[-1].name


def concept_examples(
    probe,
    images,
    layer: str,
    channel,
    target=None,
    *,
    k: int = 9,
    by: str = "relevance",
    method: str = "lrp",
    composite: str = DEFAULT_COMPOSITE,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    pad_value: float = 0.0,
    batch_size: int = 32,
    variables: Any = None,
):
    """The ``k`` images where ``channel`` of ``layer`` is most relevant to ``target`` (``by="relevance"``,
    relevance maximization: Achtibat et al. 2023, section 2.3; each image's own predicted class for
    ``target=None``) or most active (``by="activation"``, Zeiler & Fergus 2014), with the patches
    its receptive field sees at the peak: a ``ConceptExamples``, or a list of them for a sequence of
    channels (one pass over the images for all of them)."""
    probe = require_probe(probe, "concept_examples")
    validation.one_of(by, ("relevance", "activation"), "by")
    info = probe.layer(layer)
    channels = probe.check_units(info.name, np.atleast_1d(channel))
    activations._check_count(k, "k", len(images), "images given")  # before any pass over them
    if by == "activation":
        tops = [
            activations.top_images(probe, images, info.name, c, k, batch_size, variables) for c in channels
        ]
    else:
        how = _check_how(method, composite, epsilon, gamma)
        variables = probe.check_variables(variables)
        tops = _most_relevant(probe, images, info.name, channels, target, k, how, batch_size, variables)
    found = []
    for top in tops:
        top = top if info.spatial else top._replace(positions=None)
        patches = activations.patches_at(probe, images, top, pad_value)
        found.append(
            ConceptExamples(info.name, top.unit, by, top.indices, top.values, top.positions, patches)
        )
    return found if np.ndim(channel) else found[0]


def _most_relevant(probe, images, layer, channels, target, k, how, batch_size, variables) -> list:
    """``activations.TopK`` of each channel, by its peak relevance in each image."""
    spec, units = saliency._resolve_target(probe, target, len(images))
    program = _jit_relevance_peaks(probe, spec, how, layer)
    best, where, start = [], [], 0
    for x, valid in activations.batches(probe, images, batch_size):
        batch = np.resize(units[start : start + int(valid.sum())], len(x))  # the padding repeats
        value, pos = program(variables, x, jnp.asarray(batch))  # (B, C), (B, C, 2)
        best.append(np.asarray(value)[valid])
        where.append(np.asarray(pos)[valid])
        start += int(valid.sum())
    best, where = np.concatenate(best), np.concatenate(where)
    tops = []
    for c in channels:
        order = np.argsort(-best[:, c], kind="stable")[:k]
        tops.append(activations.TopK(layer, int(c), order.astype(np.int32), best[order, c], where[order, c]))
    return tops


# ------------------------------------------------------------------ checks
def _check_how(method, composite, epsilon, gamma) -> _How:
    validation.one_of(method, METHODS, "concept relevance method")
    if method == "lrp":
        relevance.composite(composite)  # an unknown name lists the valid ones
    return _How(
        method, composite, saliency._non_negative(epsilon, "epsilon"), saliency._non_negative(gamma, "gamma")
    )


def _check_within(probe, layer: str, within) -> tuple[str | None, int]:
    if within is None:
        return None, -1
    if not (isinstance(within, tuple) and len(within) == 2 and isinstance(within[0], str)):
        raise ValueError(f"within is (higher_layer, channel), e.g. ('conv4', 3); got {within!r}.")
    upper = probe.layer(within[0]).name
    names = probe.layer_names
    if names.index(upper) <= names.index(layer):
        raise ValueError(
            f"within=({upper!r}, …) must name a layer above {layer!r}: relevance flows down from it "
            f"(layers in order: {', '.join(names)})."
        )
    return upper, int(probe.check_units(upper, [within[1]])[0])


def _one_image(image):
    shape = np.shape(image)
    if len(shape) == 4 and shape[0] != 1:
        raise ValueError(f"concepts explains one image: give (H, W, C) or (1, H, W, C), got shape {shape}.")
    return image if len(shape) == 4 else np.asarray(image)[None]


# ------------------------------------------------------------------ compiled programs
def _forward_and_rules(probe, how: _How) -> tuple[Callable, Callable | None]:
    """The forward pass and the evaluator rules whose gradients are the method's relevance cotangents."""
    if how.method == "grad_x_act":
        return probe.forward, None
    pick = relevance.composite(how.composite, how.epsilon, how.gamma)
    return probe.reference_forward, lambda jaxpr, image: relevance.rules(jaxpr, image, pick)


def _cotangent_at(forward, rules, layer: str, seed: Callable) -> Callable:
    """g(variables, x) → (acts[layer], d seed / d acts[layer], aux) for ``seed(out, acts) → (value, aux)``."""
    tapped = saliency.tap_layer(forward, layer, rules)

    def at(variables, x):
        shape = jax.eval_shape(forward, variables, x)[1][layer]

        def f(delta):
            out, acts = tapped(variables, x, delta)
            value, aux = seed(out, acts)
            return value, (acts[layer], aux)

        (_, (a, aux)), g = jax.value_and_grad(f, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
        return a, g, aux

    return at


def _target_seed(spec, units) -> Callable:
    score = saliency._score_fn(spec)

    def seed(out, acts):
        s, t = score(out, acts, units)
        return s.sum(), (s, t)

    return seed


def _layer_relevance(probe, spec, how: _How, layer: str, within: str | None) -> Callable:
    """f(variables, x, units, channel) → (acts, cotangent at ``layer``, score, target), the cotangent
    conditioned on ``channel`` of ``within`` when given."""
    forward, rules = _forward_and_rules(probe, how)

    def f(variables, x, units, channel):
        if within is None:
            a, g, (s, t) = _cotangent_at(forward, rules, layer, _target_seed(spec, units))(variables, x)
            return a, g, s, t
        return _conditioned(variables, x, units, channel)

    tapped = saliency.tap_layer(forward, (within, layer), rules) if within else None
    score = saliency._score_fn(spec)

    def _conditioned(variables, x, units, channel):
        """One forward pass tapped at both layers, pulled back twice: from the target to ``within``,
        then from ``channel`` of ``within`` alone to ``layer``."""
        shapes = jax.eval_shape(forward, variables, x)[1]
        zeros = tuple(jnp.zeros(shapes[n].shape, shapes[n].dtype) for n in (within, layer))

        def tapped_at(up, low):
            out, acts = tapped(variables, x, (up, low))
            s, t = score(out, acts, units)
            return (s.sum(), acts[within]), (acts[layer], s, t)

        (total, a_up), pull, (a, s, t) = jax.vjp(tapped_at, *zeros, has_aux=True)
        g_up = pull((jnp.ones_like(total), jnp.zeros_like(a_up)))[0]
        only = g_up * (jnp.arange(a_up.shape[-1]) == channel).astype(g_up.dtype)
        return a, pull((jnp.zeros_like(total), only))[1], s, t

    return f


def _below(probe, how: _How, layer: str) -> Callable:
    """lower(variables, x) → acts[layer], evaluated so its VJP is the method's relevance cotangent."""
    forward, _ = _forward_and_rules(probe, how)
    lower = lambda variables, x: forward(variables, x)[1][layer]
    if how.method == "grad_x_act":
        return lower
    return relevance.lrp(lower, relevance.composite(how.composite, how.epsilon, how.gamma), image_arg=1)


@owned_by_probe
def _jit_concepts(probe, spec, how: _How, layer: str, within: str | None):
    at_layer = _layer_relevance(probe, spec, how, layer, within)
    below = _below(probe, how, layer)

    def run(variables, x, units, channel, picked):
        a, g, s, t = at_layer(variables, x, units, channel)
        r = a * g  # (1, ..., C): the relevance at the layer
        per_channel = r.reshape(-1, r.shape[-1]).sum(0)
        chosen = jnp.where(picked >= 0, picked, jnp.argsort(-per_channel)[: len(picked)])
        _, pull = jax.vjp(lambda x: below(variables, x), x)

        def heatmap(c):  # CRP: the backward pass from the layer with only channel c's cotangent
            ct = pull(g * (jnp.arange(g.shape[-1]) == c).astype(g.dtype))[0]
            return (ct if how.method == "lrp" else ct * x)[0].sum(-1)

        heat = jax.vmap(heatmap)(chosen)
        return per_channel, chosen, heat, jnp.moveaxis(jnp.take(r[0], chosen, axis=-1), -1, 0), s, t

    return jax.jit(run, compiler_options=saliency.relevance_compiler_options())


@owned_by_probe
def _jit_relevance_peaks(probe, spec, how: _How, layer: str):
    """f(variables, x (B, ...), units (B,)) → each channel's peak relevance (B, C) and where ((B, C, 2):
    (y, x) in the layer's grid, zeros for a dense layer)."""
    at_layer = _layer_relevance(probe, spec, how, layer, None)

    def one(variables, x, unit):
        a, g, _, _ = at_layer(variables, x[None], unit[None], -1)
        r = (a * g)[0]  # (h, w, C) or (C,)
        flat = r.reshape(-1, r.shape[-1])
        best = flat.argmax(0)
        peak = jnp.take_along_axis(flat, best[None], 0)[0]
        if r.ndim != 3:
            return peak, jnp.zeros((r.shape[-1], 2), jnp.int32)
        return peak, jnp.stack(jnp.unravel_index(best, r.shape[:2]), -1).astype(jnp.int32)

    return jax.jit(
        jax.vmap(one, in_axes=(None, 0, 0)), compiler_options=saliency.relevance_compiler_options()
    )


__all__ = [
    "ConceptExamples",
    "ConceptResult",
    "METHODS",
    "concept_examples",
    "concepts",
    "decompose",
    "lower_layer",
]
