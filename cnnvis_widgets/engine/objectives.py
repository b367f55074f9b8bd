"""Objectives for activation maximization: what an image should make the network do.

An `Objective` wraps `fn(acts, unit) -> scalar` to MAXIMIZE. `acts` maps layer names to the
activations of the B images of one optimization element, (B, H, W, C) for spatial layers
or (B, C) for dense ones; `unit` (an int32, traced under `jax.vmap`) is the filter, class
or neuron this element optimizes. Objectives compose: `a + b`, `a - b`, `w * a`, `-a`.

References: Olah et al. 2017, "Feature Visualization", Distill (Lucid `optvis.objectives`);
Gatys et al. 2015/2016 for the texture and style objectives (`gram`, `style`, `content`).
"""

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_ATOM, _PRODUCT, _SUM = 0, 1, 2  # precedence of a repr, for parentheses


class Objective:
    """A scalar to maximize, `obj(acts, unit)`, with the layers it reads in `obj.layers`."""

    def __init__(self, fn: Callable, layers: Sequence[str], name: str, _prec: int = _ATOM):
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name
        self._prec = _prec

    def __call__(self, acts, unit):
        return self.fn(acts, unit)

    def __repr__(self):
        return self.name

    def _wrapped(self, prec):
        return f"({self.name})" if self._prec > prec else self.name

    def __add__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(
            lambda a, u: self(a, u) + other(a, u),
            self.layers + other.layers,
            f"{self.name} + {other.name}",
            _SUM,
        )

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum([a, b]) starts from 0
            return self
        return NotImplemented

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(
            lambda a, u: self(a, u) - other(a, u),
            self.layers + other.layers,
            f"{self.name} - {other._wrapped(_PRODUCT)}",
            _SUM,
        )

    def __mul__(self, w):
        if isinstance(w, Objective) or np.ndim(w) != 0:
            raise TypeError(f"Objectives multiply by scalars only, got {type(w).__name__}.")
        return Objective(
            lambda a, u: w * self(a, u), self.layers, f"{w!r} * {self._wrapped(_PRODUCT)}", _PRODUCT
        )

    __rmul__ = __mul__

    def __neg__(self):
        return Objective(lambda a, u: -self(a, u), self.layers, f"-{self._wrapped(_ATOM)}", _PRODUCT)


def _get(acts, layer, ndims=(2, 4)):
    if layer not in acts:
        raise KeyError(f"No activations for layer {layer!r}; got layers {sorted(acts)}.")
    a = acts[layer]
    if a.ndim not in ndims:
        raise ValueError(
            f"Layer {layer!r} has activations of shape {a.shape}; expected "
            + " or ".join({2: "(B, C)", 4: "(B, H, W, C)"}[n] for n in ndims)
            + "."
        )
    return a


def channel(layer: str) -> Objective:
    """Mean activation of channel `unit` over images and positions (a dense unit's value)."""

    def fn(acts, unit):
        return jnp.mean(_get(acts, layer)[..., unit])

    return Objective(fn, [layer], f"channel({layer!r})")


def neuron(layer: str, y: Optional[int] = None, x: Optional[int] = None) -> Objective:
    """Activation of channel `unit` at one position (y, x) (default: the centre), mean over B."""

    def fn(acts, unit):
        a = _get(acts, layer, (4,))
        h, w = a.shape[1:3]
        yy, xx = h // 2 if y is None else y, w // 2 if x is None else x
        if not (-h <= yy < h and -w <= xx < w):
            raise ValueError(
                f"neuron({layer!r}) position {(yy, xx)} is outside the layer's "
                f"{h}x{w} grid (valid y in [0, {h}), x in [0, {w}))."
            )
        return jnp.mean(a[:, yy, xx, unit])

    where = "" if y is None and x is None else f", y={y}, x={x}"
    return Objective(fn, [layer], f"neuron({layer!r}{where})")


def class_logit(layer: str = "logits") -> Objective:
    """The logit (or any dense unit) `unit` of a (B, C) layer, mean over images."""

    def fn(acts, unit):
        return jnp.mean(_get(acts, layer, (2,))[:, unit])

    return Objective(fn, [layer], f"class_logit({layer!r})")


def direction(layer: str, vector) -> Objective:
    """Mean over images and positions of the dot product with a fixed vector (unit ignored).

    References: Olah et al. 2017, "Feature Visualization" (Lucid `direction`).
    """
    vector = jnp.asarray(vector, jnp.float32)
    if vector.ndim != 1:
        raise ValueError(f"direction needs a 1-D vector, got shape {vector.shape}.")

    def fn(acts, unit):
        a = _get(acts, layer)
        if a.shape[-1] != vector.shape[0]:
            raise ValueError(
                f"direction({layer!r}): layer has {a.shape[-1]} channels, the vector has {vector.shape[0]}."
            )
        return jnp.mean(a @ vector)

    return Objective(fn, [layer], f"direction({layer!r})")


def diversity(layer: str) -> Objective:
    """Minus the mean pairwise cosine similarity of the B images' Gram matrices (unit ignored).

    1 for identical images' Gram matrices -> -1; needs B >= 2 images per element.

    References: Olah et al. 2017, "Feature Visualization" (Lucid `diversity`).
    """

    def fn(acts, unit):
        a = _get(acts, layer)
        b, c = a.shape[0], a.shape[-1]
        if b < 2:
            raise ValueError(
                f"diversity({layer!r}) needs at least 2 images per element, got "
                f"activations of shape {a.shape}."
            )
        flat = a.reshape(b, -1, c)
        grams = jnp.einsum("bpi,bpj->bij", flat, flat).reshape(b, -1)
        grams = grams / jnp.maximum(jnp.linalg.norm(grams, axis=1, keepdims=True), 1e-10)
        sims = grams @ grams.T
        return -(jnp.sum(sims) - jnp.trace(sims)) / (b * (b - 1))

    return Objective(fn, [layer], f"diversity({layer!r})")


def activation_energy(layer: str) -> Objective:
    """Mean squared activation of a whole layer (unit ignored): the DeepDream objective.

    References: Mordvintsev et al. 2015, "Inceptionism: Going Deeper into Neural Networks".
    """

    def fn(acts, unit):
        return jnp.mean(jnp.square(_get(acts, layer)))

    return Objective(fn, [layer], f"activation_energy({layer!r})")


def feature_match(layer: str, target) -> Objective:
    """Minus the squared distance to target features, relative to their norm (unit ignored).

    ``target``: the layer's activations for one image, shape (H, W, C) or (C,).

    References: Mahendran & Vedaldi 2015/2016, "Understanding Deep Image Representations by
    Inverting Them" (the normalized reconstruction loss).
    """
    target = jnp.asarray(target)
    norm = jnp.maximum(jnp.sum(jnp.square(target)), 1e-12)

    def fn(acts, unit):
        a = _get(acts, layer)
        if a.shape[1:] != target.shape:
            raise ValueError(
                f"feature_match({layer!r}): target has shape {target.shape}, the layer gives {a.shape[1:]}."
            )
        return -jnp.mean(jnp.sum(jnp.square(a - target), axis=tuple(range(1, a.ndim)))) / norm

    return Objective(fn, [layer], f"feature_match({layer!r})")


def content(layer: str, target) -> Objective:
    """Minus the content loss: ``feature_match`` to one image's ``layer`` features (unit ignored).

    ``target``: the content image's activations, (H, W, C), (C,) or with a leading batch of 1.

    References: Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional Neural
    Networks" (the content loss, here relative to the target's squared norm).
    """
    obj = feature_match(layer, _one_image_features(target, "content"))
    return Objective(obj.fn, obj.layers, f"content({layer!r})")


def gram_matrix(features):
    """Gram matrices of feature maps: (..., H, W, C) -> (..., C, C), ``F^T F / (H W)`` with F the
    (H W, C) matrix of the maps, so images of any size give comparable values. NumPy arrays are
    computed in NumPy (no XLA program to compile), JAX arrays and tracers in JAX.

    References: Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional Neural Networks".
    """
    f = features if isinstance(features, (np.ndarray, jax.Array)) else np.asarray(features, np.float32)
    if f.ndim < 3:
        raise ValueError(f"gram_matrix takes feature maps (..., H, W, C), got shape {f.shape}.")
    h, w, c = f.shape[-3:]
    flat = f.reshape(*f.shape[:-3], h * w, c)
    return flat.swapaxes(-1, -2) @ flat / (h * w)


def gram_distance(grams, target):
    """``||G - T||^2 / ||T||^2`` (squared Frobenius norms) of Gram matrices (..., C, C) to a target
    (C, C): 0 when matched, 1 for all-zero ones. NumPy or JAX ``grams``; a concrete ``target``."""
    norm = max(float(np.sum(np.square(target))), 1e-12)
    return ((grams - target) ** 2).sum(axis=(-2, -1)) / norm


def gram(layer: str, target_gram) -> Objective:
    """Minus the squared Frobenius distance of each image's Gram matrix of ``layer`` to
    ``target_gram`` (C, C), divided by the target's squared norm, mean over images (unit ignored).

    The division makes a layer's value scale-free (0 when matched; 1 for an image whose Gram
    matrix is all zeros), so layers of different widths and magnitudes weigh alike when summed.

    References: Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional Neural Networks"
    (the per-layer loss E_l, here normalized by ||target||^2 instead of 4 N_l^2 M_l^2).
    """
    target = np.asarray(target_gram, np.float32)
    if target.ndim != 2 or target.shape[0] != target.shape[1]:
        raise ValueError(
            f"gram({layer!r}) needs a square (C, C) target Gram matrix, got shape {target.shape}."
        )

    def fn(acts, unit):
        a = _get(acts, layer, (4,))
        if a.shape[-1] != target.shape[0]:
            raise ValueError(
                f"gram({layer!r}): the layer has {a.shape[-1]} channels, the target Gram matrix "
                f"is {target.shape[0]}x{target.shape[0]}."
            )
        return -jnp.mean(gram_distance(gram_matrix(a), target))

    return Objective(fn, [layer], f"gram({layer!r})")


def style(features: Mapping[str, Any]) -> Objective:
    """Minus the style loss: the mean of ``gram`` over layers, each to the Gram matrix of one
    image's features (unit ignored). ``features``: ``{layer: (H, W, C) activations}`` (a leading
    batch of 1 is dropped), as ``probe.activations(variables, image[None], layers)`` gives them.

    References: Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional Neural
    Networks"; Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional Neural
    Networks" (equal layer weights w_l = 1 / L).
    """
    if not isinstance(features, Mapping) or not features:
        raise TypeError(
            f"style takes {{layer: activations}} for one or more layers, got {type(features).__name__}."
        )
    parts = [
        gram(layer, gram_matrix(_one_image_features(f, f"style layer {layer!r}", spatial=True)))
        for layer, f in features.items()
    ]

    def fn(acts, unit):
        return sum(part(acts, unit) for part in parts) / len(parts)

    return Objective(fn, list(features), f"style({list(features)!r})")


def _one_image_features(features, what: str, spatial: bool = False):
    """One image's activations: (H, W, C) (or (C,) unless ``spatial``), a leading batch of 1 dropped."""
    f = np.asarray(features, np.float32)  # concrete: targets are constants of the objective
    if f.ndim in (2, 4) and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 3 and (spatial or f.ndim != 1):
        want = "(H, W, C)" if spatial else "(H, W, C) or (C,)"
        raise ValueError(f"{what}: give one image's activations {want}, got shape {f.shape}.")
    return f
