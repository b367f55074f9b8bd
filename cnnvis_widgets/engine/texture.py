"""Texture synthesis and style transfer: images that match another image's feature statistics.

A texture is summarized by the Gram matrices of its feature maps at several layers (which
features occur together, wherever they are); an image is optimized, from noise, until its own
Gram matrices match (``objectives.style``). Style transfer adds the features of a content image
at one deeper layer (``objectives.content``). Both run on ``visualize_filters``' render loop
(parameterization, transforms, progress callback as for filters): ``seeds`` images are made in
one vmapped call, each from its own noise (element i draws from ``fold_in(key(seed), i)``).

They are drawn with ``recipes.TEXTURE`` (free pixels, as the papers, at the model's native
size) unless given another recipe or parts. Both images are shown to the network at the size it
sees the optimized image at (``ascent.seen_size``: 224 px for EfficientNet-Lite0), so their
statistics are compared at one scale. The recipe and default layers were chosen by measuring the
Gram distance of the results and looking at them: ``benchmarks/bench_texture.py``,
``benchmarks/results/bench_texture.txt``.

References: Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional Neural Networks";
Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional Neural Networks".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cnnvis_widgets import validation
from cnnvis_widgets.engine import objectives, recipes
from cnnvis_widgets.engine.ascent import (
    MAX_STEPS,
    AscentResult,
    check_size,
    seen_size,
    visualize_filters,
)
from cnnvis_widgets.engine.inversion import one_image
from cnnvis_widgets.models.probe import require_probe

MAX_STYLE_LAYERS = 5  # Gatys et al. took five: VGG's conv1_1 and pool1 to pool4


def default_style_layers(probe) -> tuple[str, ...]:
    """The layers whose Gram matrices describe a texture: the first conv layer at each stride (where
    the resolution drops), at most ``MAX_STYLE_LAYERS``, after its activation where the probe has
    a ``+act`` layer. Gatys et al.'s choice, one layer per resolution as VGG's pool layers are;
    on EfficientNet-Lite0: stem, block1/3/5/11.depthwise (chosen among other sets by
    benchmarks/bench_texture.py, results/bench_texture.txt)."""
    probe = require_probe(probe, "default_style_layers")
    first: dict[int, str] = {}
    for info in _convs(probe):
        first.setdefault(info.stride, info.name)
    if not first:
        raise ValueError(
            f"{probe.name} has no spatial conv layers to take texture statistics from; give layers=[...] "
            f"(spatial layers: {', '.join(i.name for i in probe.layers if i.spatial) or 'none'})."
        )
    return tuple(first[s] for s in sorted(first)[:MAX_STYLE_LAYERS])


def default_content_layer(probe) -> str:
    """The layer whose features keep a content image's layout in style transfer: the last conv
    layer at the stride of the middle style layer (EfficientNet-Lite0: block5.expand; Gatys et al.
    took VGG's conv4_2, also in the middle of the network)."""
    probe = require_probe(probe, "default_content_layer")
    layers = default_style_layers(probe)
    stride = probe.layer(layers[len(layers) // 2]).stride
    return [info.name for info in _convs(probe) if info.stride == stride][-1]


def synthesize_texture(
    probe,
    image,
    layers: Sequence[str] | None = None,
    *,
    seeds: int = 1,
    steps: int = 256,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    **kwargs,
) -> AscentResult:
    """``seeds`` new images with the texture of ``image`` (H, W, C in [0, 1]): their Gram matrices
    at ``layers`` (default ``default_style_layers(probe)``) match those of ``image``.

    ``result.images`` (seeds, H, W, C); ``result.objective`` (seeds, steps) is minus the mean
    normalized Gram distance over the layers (``objectives.gram``). Other keyword arguments go to
    ``visualize_filters`` (``param``, ``transforms``, ``recipe``, ``callback``, ...).

    References: Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional Neural Networks".
    """
    probe = require_probe(probe, "synthesize_texture")
    kwargs["recipe"] = _recipe(kwargs.get("recipe"))
    layers = _spatial_layers(probe, default_style_layers(probe) if layers is None else layers, "layers")
    units = _seed_units(probe, layers, seeds)
    steps = validation.positive_int(steps, "steps", MAX_STEPS)
    size, seen = _sizes(probe, size, kwargs["recipe"])
    features = probe.activations(probe.variables, _fitted(probe, image, seen), layers)
    return _render(probe, objectives.style(features), units, steps, size, seed, kwargs)


def style_transfer(
    probe,
    content,
    style,
    *,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    style_weight: float = 100.0,
    from_content: bool = True,
    seeds: int = 1,
    steps: int = 256,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    **kwargs,
) -> AscentResult:
    """``content`` painted with the texture of ``style`` (both H, W, C in [0, 1]): an image whose
    ``content_layer`` features match the content image's and whose Gram matrices at
    ``style_layers`` match the style image's, maximizing ``content + style_weight * style``.

    Starts from the content image (``from_content``: closer to both after as many steps, see
    ``benchmarks/results/bench_texture.txt``), so seeds differ only where the transforms are
    random (none in ``recipes.TEXTURE``); ``from_content=False`` starts each seed from its own
    noise, as the paper. The default layers are ``default_content_layer(probe)`` and
    ``default_style_layers(probe)``. ``result.objective`` is the combined objective per step.
    Other keyword arguments go to ``visualize_filters``.

    References: Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional Neural Networks".
    """
    probe = require_probe(probe, "style_transfer")
    kwargs["recipe"] = _recipe(kwargs.get("recipe"))
    content_layer = default_content_layer(probe) if content_layer is None else content_layer
    content_layer = _spatial_layers(probe, content_layer, "content_layer")[0]
    layers = default_style_layers(probe) if style_layers is None else style_layers
    layers = _spatial_layers(probe, layers, "style_layers")
    if isinstance(style_weight, bool) or not (
        isinstance(style_weight, (int, float, np.number)) and 0 <= style_weight < float("inf")
    ):
        raise ValueError(f"style_weight must be a finite number >= 0, got {style_weight!r}.")
    units = _seed_units(probe, (content_layer, *layers), seeds)
    steps = validation.positive_int(steps, "steps", MAX_STEPS)
    size, seen = _sizes(probe, size, kwargs["recipe"])
    target = probe.activations(probe.variables, _fitted(probe, content, seen), content_layer)
    features = probe.activations(probe.variables, _fitted(probe, style, seen), layers)
    objective = objectives.content(content_layer, target) + float(style_weight) * objectives.style(features)
    if from_content:
        kwargs["init_images"] = _fitted(probe, content, size)
    return _render(probe, objective, units, steps, size, seed, kwargs)


def gram_distances(probe, images, reference, layers: Sequence[str], recipe=None) -> np.ndarray:
    """(N, L): each image's normalized Gram distance to ``reference`` at each layer,
    ``||G(image) - G(reference)||^2 / ||G(reference)||^2`` (minus ``objectives.gram``'s value), with
    both shown to the network as ``synthesize_texture`` shows them with ``recipe`` (default
    ``recipes.TEXTURE``; see ``ascent.seen_size``)."""
    probe = require_probe(probe, "gram_distances")
    layers = _spatial_layers(probe, layers, "layers")
    images = np.asarray(probe.check_images(images))
    _, seen = _sizes(probe, images.shape[1:3], _recipe(recipe))
    from cnnvis_widgets.data import resize

    shown = images if seen == images.shape[1:3] else np.clip(resize(images, seen), 0.0, 1.0)
    both = np.concatenate([_fitted(probe, reference, seen), shown])  # one forward pass, in NumPy after it
    acts = {name: np.asarray(a) for name, a in probe.activations(probe.variables, both, layers).items()}
    grams = {name: objectives.gram_matrix(a) for name, a in acts.items()}
    return np.stack([objectives.gram_distance(grams[name][1:], grams[name][0]) for name in layers], axis=1)


# ------------------------------------------------------------------ internals
def _convs(probe) -> list:
    """The probe's spatial conv layers in forward order, each after its activation where the
    probe has a ``+act`` layer for it (Gram matrices of rectified features, as the papers)."""
    names = set(probe.layer_names)
    rectified = lambda info: info.after is not None or f"{info.name}+act" not in names
    return [info for info in probe.layers if info.spatial and info.kind == "conv" and rectified(info)]


def _spatial_layers(probe, layers, what: str) -> tuple[str, ...]:
    """Validated names of spatial layers (Gram matrices need feature maps), in forward order."""
    if isinstance(layers, str):
        layers = [layers]
    names = [probe.layer(name).name for name in layers]
    if not names:
        raise ValueError(f"{what}: give at least one layer, e.g. {list(default_style_layers(probe))}.")
    flat = [name for name in names if not probe.layer(name).spatial]
    if flat:
        spatial = ", ".join(info.name for info in probe.layers if info.spatial)
        kind = probe.layer(flat[0]).kind
        raise ValueError(f"{what}: {flat[0]!r} has no feature maps ({kind}); spatial layers: {spatial}.")
    order = probe.layer_names
    return tuple(sorted(dict.fromkeys(names), key=order.index))


def _recipe(recipe) -> recipes.Recipe:
    """``recipe`` (a Recipe or its name), or ``recipes.TEXTURE`` for None."""
    return recipes.TEXTURE if recipe is None else recipes.named(recipe)


def _sizes(probe, size, recipe) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the optimized image's size, checked; the size the network sees it at)."""
    size = check_size(probe, size)
    return size, seen_size(probe, size, recipe)


def _fitted(probe, image, size: tuple[int, int]) -> np.ndarray:
    """One image checked, centre-cropped and resized to ``size``: (1, H, W, C)."""
    from cnnvis_widgets.data import fit_to

    x = one_image(probe, image)[0]
    return x[None] if x.shape[:2] == tuple(size) else fit_to(x, (*size, probe.input_shape[-1]))


def _seed_units(probe, layers, seeds) -> tuple[str, np.ndarray]:
    """(a layer, units 0..seeds-1 of it): the dummy units that make ``seeds`` images in one call.
    Units must be channels of a layer the objective reads; the widest one allows the most."""
    widest = max(layers, key=lambda name: probe.layer(name).channels)
    return widest, np.arange(validation.positive_int(seeds, "seeds", probe.layer(widest).channels))


def _render(probe, objective, units, steps, size, seed, kwargs) -> AscentResult:
    """``visualize_filters`` of ``objective`` (which ignores the unit) for ``units`` (``_seed_units``):
    one image per seed, each from its own noise (``fold_in(key(seed), unit)``), in one vmapped
    call, with exact ReLU gradients."""
    order = probe.layer_names  # forward order: the render loop sizes its memory by the last layer
    layers = sorted(objective.layers, key=order.index)
    objective = objectives.Objective(objective.fn, layers, objective.name)
    kwargs.setdefault("relu_rule", None)
    if "init_images" not in kwargs:
        kwargs["size"] = size
    result = visualize_filters(probe, *units, objective=objective, steps=steps, seed=seed, **kwargs)
    result.layer = ", ".join(layers)
    return result
