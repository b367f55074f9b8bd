"""What a layer does with real images: feature maps, per-filter statistics, top images and patches.

Everything here runs the Probe's pure forward pass in jitted batches and returns
numpy arrays. Conventions:

- images are NHWC float32 in [0, 1] (uint8 is scaled), as ``probe.check_images`` accepts;
- every function takes ``variables`` (default ``probe.variables``), so a model in
  training or a modified copy can be looked at without building a new Probe;
- "dead" means silent on the whole dataset: the filter's maximum over every image and
  position is <= 0 (for ReLU layers: it never fires).

References: Zeiler & Fergus 2014 (top-k patches of a unit, receptive fields);
Yosinski et al. 2015 (feature maps of every layer, live); Araujo et al. 2019
(receptive-field centres, Distill).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnvis_widgets import validation
from cnnvis_widgets.jaxpr import match, walk
from cnnvis_widgets.models import kernels as kernels_lib
from cnnvis_widgets.models.probe import owned_by_probe, require_probe


class FilterStats(NamedTuple):
    """Per-channel statistics of a layer over a dataset (each array has one value per channel).

    mean: mean activation over images and positions; max: maximum over them;
    zero_fraction: fraction of (image, position) values <= 0; dead: max <= 0;
    count: number of images.
    """

    layer: str
    mean: np.ndarray
    max: np.ndarray
    zero_fraction: np.ndarray
    dead: np.ndarray
    count: int


class TopK(NamedTuple):
    """The k images that activate a unit most, best first.

    indices: into the given images; values: the unit's maximum over positions in each;
    positions: (k, 2) the (y, x) of that maximum in the layer's grid (None for dense layers).
    """

    layer: str
    unit: int
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray | None


class Ranked(NamedTuple):
    """Channels ranked by activation, highest first, with their values."""

    units: np.ndarray
    values: np.ndarray


# ------------------------------------------------------------------ feature maps
def feature_maps(probe, image: Any, layer: str | None, variables: Any = None):
    """A layer's activations for one image: (H', W', C) for spatial layers, (C,) for dense.

    ``image`` is (H, W, C) or (1, H, W, C). With ``layer=None``: a dict of every layer's.
    """
    require_probe(probe, "feature_maps")
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] != 1:
        raise ValueError(f"feature_maps takes one image, (H, W, C) or (1, H, W, C); got shape {arr.shape}.")
    x = probe.check_images(arr[None] if arr.ndim == 3 else arr)
    variables = probe.variables if variables is None else variables
    names = probe.layer_names if layer is None else [probe.layer(layer).name]
    acts = _forward(probe, tuple(names))(variables, x)
    maps = {n: np.asarray(a[0]) for n, a in zip(names, acts)}
    return maps if layer is None else maps[names[0]]


def most_activated(probe, image: Any, layer: str, n: int = 9, variables: Any = None) -> Ranked:
    """The ``n`` channels of ``layer`` with the highest mean activation (over positions) for one image."""
    info = require_probe(probe, "most_activated").layer(layer)
    _check_count(n, "n", info.channels, f"channels in layer {info.name!r}")
    acts = feature_maps(probe, image, info.name, variables)
    means = acts.reshape(-1, info.channels).mean(axis=0)
    order = np.argsort(-means, kind="stable")[:n]
    return Ranked(order.astype(np.int32), means[order])


# -------------------------------------------------------------------- statistics
def filter_stats(probe, images: Any, layer: str, batch_size: int = 256, variables: Any = None) -> FilterStats:
    """Per-filter mean, max, fraction of values <= 0, and dead filters of ``layer`` over ``images``.

    Computed in jitted batches of ``batch_size`` images (the last one padded and masked).
    """
    info = require_probe(probe, "filter_stats").layer(layer)
    variables = probe.variables if variables is None else variables
    total = np.zeros(info.channels, np.float64)
    zeros = np.zeros(info.channels, np.float64)
    peak = np.full(info.channels, -np.inf, np.float32)
    n = values = 0
    for x, valid in batches(probe, images, batch_size):
        s, z, m, positions = _stats_fn(probe, info.name)(variables, x, valid)
        total += np.asarray(s, np.float64)
        zeros += np.asarray(z, np.float64)
        peak = np.maximum(peak, np.asarray(m))
        n += int(valid.sum())
        values += int(valid.sum()) * int(positions)
    return FilterStats(
        info.name,
        (total / values).astype(np.float32),
        peak,
        (zeros / values).astype(np.float32),
        peak <= 0,
        n,
    )


def top_images(
    probe, images: Any, layer: str, unit: int, k: int = 9, batch_size: int = 256, variables: Any = None
) -> TopK:
    """The ``k`` images whose strongest response (max over positions) of ``unit`` is highest.

    Ties go to the lower index.
    """
    info = require_probe(probe, "top_images").layer(layer)
    unit = int(probe.check_units(info.name, [unit])[0])
    if hasattr(images, "__len__"):
        _check_count(k, "k", len(images), "images given")
    variables = probe.variables if variables is None else variables
    best, where = [], []
    for x, valid in batches(probe, images, batch_size):
        value, pos = _unit_max_fn(probe, info.name)(variables, x, jnp.int32(unit))
        best.append(np.asarray(value)[valid])
        where.append(np.asarray(pos)[valid])
    best, where = np.concatenate(best), np.concatenate(where)
    _check_count(k, "k", len(best), "images given")
    order = np.argsort(-best, kind="stable")[:k]
    positions = where[order] if info.spatial else None
    return TopK(info.name, unit, order.astype(np.int32), best[order], positions)


# ------------------------------------------------------------ receptive fields
def receptive_box(probe, layer: str, position: Sequence[int]) -> tuple[int, int, int]:
    """(y0, x0, size): the input pixels that position (y, x) of ``layer`` sees.

    The box may reach past the image borders (where the model sees its padding).
    Its centre is ``start + jump * position`` per axis, read off the traced model
    (conv/pool padding included, e.g. TF "SAME" padding of stride-2 layers); its
    size is the layer's receptive field.
    """
    info = require_probe(probe, "receptive_box").layer(layer)
    if not info.spatial:
        raise ValueError(
            f"Layer {info.name!r} is a {info.kind} layer (shape {info.shape}): every unit sees the whole "
            f"image, there is no receptive-field patch. Spatial layers: "
            f"{', '.join(lyr.name for lyr in probe.layers if lyr.spatial)}."
        )
    (sy, jy), (sx, jx) = _centre_geometry(probe, info.name)
    size = info.receptive_field
    y, x = (int(p) for p in position)
    if y < 0 or x < 0:  # no upper bound: a model that takes larger images has a larger grid
        raise ValueError(f"Position {(y, x)} of layer {info.name!r} must be (y, x) with y, x >= 0.")
    corner = lambda start, jump, p: int(np.floor(start + jump * p - (size - 1) / 2 + 0.5))
    return corner(sy, jy, y), corner(sx, jx, x), size


def receptive_patches(
    probe,
    images: Any,
    layer: str,
    unit: int,
    k: int = 9,
    pad_value: float = 0.0,
    batch_size: int = 256,
    variables: Any = None,
) -> np.ndarray:
    """The input crops (k, P, P, C) that ``unit`` of ``layer`` sees at its k strongest responses.

    ``P`` is the layer's receptive field; crops reaching past an image border are
    padded with ``pad_value``, so all have the same size. Order as :func:`top_images`.

    References: Zeiler & Fergus 2014.
    """
    info = require_probe(probe, "receptive_patches").layer(layer)
    if not info.spatial:
        receptive_box(probe, info.name, (0, 0))  # raises the error for non-spatial layers
    top = top_images(probe, images, info.name, unit, k, batch_size, variables)
    return patches_at(probe, images, top, pad_value)


def patches_at(probe, images: Any, top: TopK, pad_value: float = 0.0) -> np.ndarray:
    """The crops (k, P, P, C) of ``images[top.indices]`` that ``top.layer`` sees at ``top.positions``
    (the whole images where positions is None: a dense layer's units see all of it)."""
    x = np.asarray(probe.check_images(np.asarray(images)[top.indices]))
    if top.positions is None:
        return x
    crops = []
    for img, pos in zip(x, top.positions):
        y0, x0, size = receptive_box(probe, top.layer, pos)
        crops.append(_crop(img, y0, x0, size, pad_value))
    return np.stack(crops)


def _crop(img: np.ndarray, y0: int, x0: int, size: int, pad_value: float) -> np.ndarray:
    h, w, c = img.shape
    out = np.full((size, size, c), pad_value, np.float32)
    ys, xs = slice(max(y0, 0), min(y0 + size, h)), slice(max(x0, 0), min(x0 + size, w))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = img[ys, xs]
    return out


@owned_by_probe
def _centre_geometry(probe, layer: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """((start, jump) along y, (start, jump) along x): position p's centre is start + jump * p.

    Walks the traced forward pass carrying, for every image-dependent NHWC value, the
    input coordinate of position 0's centre and the distance between positions; a
    window of size k, stride s, dilation d and left padding l maps (start, jump) to
    (start + (d (k - 1) / 2 - l) jump, s jump) (Araujo et al. 2019). Where the walk
    loses track (an unknown op changing the grid) it falls back to SAME padding:
    start = (stride - 1) / 2.
    """
    dummy = jnp.zeros((1, *probe.input_shape), jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: probe.reference_forward(v, x)[1][layer])(probe.variables, dummy)
    n_in = len(closed.jaxpr.invars)
    start = [None] * (n_in - 1) + [{1: (0.0, 1.0), 2: (0.0, 1.0)}]
    (geometry,) = walk.propagate(closed.jaxpr, start, _centres)
    if geometry is None or 1 not in geometry or 2 not in geometry:
        stride = probe.layer(layer).stride
        return ((stride - 1) / 2, float(stride)), ((stride - 1) / 2, float(stride))
    return geometry[1], geometry[2]


def _centres(eqn, ins, inner) -> list:
    """The ``walk.propagate`` step: each NHWC output's geometry (None for other values)."""
    outs = inner if inner is not None else [_window_centres(eqn, ins)] * len(eqn.outvars)
    return [g if len(getattr(v.aval, "shape", ())) == 4 else None for v, g in zip(eqn.outvars, outs)]


def _window_centres(eqn, ins) -> dict | None:
    """Geometry of a single eqn's output; None when it is not an NHWC spatial value."""
    name, p = eqn.primitive.name, eqn.params
    g = ins[0]
    found = match.windows(eqn)
    if found is not None:  # a convolution or a pooling: NHWC in, the same axes out
        if g is None or any(axis not in found for axis in g) or any(axis not in g for axis in (1, 2)):
            return None
        return {axis: _step(g[axis], found[axis]) for axis in g}
    if name == "pad" and g is not None:
        config = p["padding_config"]
        return {
            a: (g[a][0] - config[a][0] * g[a][1] / (config[a][2] + 1), g[a][1] / (config[a][2] + 1))
            for a in g
        }
    if name == "slice" and g is not None:
        strides = p["strides"] or (1,) * len(p["start_indices"])
        return {a: (g[a][0] + p["start_indices"][a] * g[a][1], g[a][1] * strides[a]) for a in g}
    out_shape = getattr(eqn.outvars[0].aval, "shape", ())
    for v, gi in zip(eqn.invars, ins):  # element-wise: the first input on the same grid
        if gi is not None and tuple(getattr(v.aval, "shape", ())[1:3]) == tuple(out_shape[1:3]):
            return gi
    return None


def _step(geometry, window):
    """(start, jump) after ``window`` (a ``match.Window``): Araujo et al. 2019's recurrence."""
    start, jump = geometry
    jump = jump / window.input_dilation
    return start + (window.dilation * (window.size - 1) / 2 - window.pad_lo) * jump, jump * window.stride


# ----------------------------------------------------------------- kernels
def kernels_as_images(
    probe,
    layer: str,
    input_channels: str | Sequence[int] = "auto",
    scale: str = "layer",
    variables: Any = None,
) -> np.ndarray:
    """The kernels producing ``layer`` as displayable tiles in [0, 1] (0 weight → 0.5 grey).

    Args:
      input_channels: how input channels become tiles:
        "rgb" → (out, kh, kw, 3), each kernel in colour (needs 3 input channels);
        "all" → (out, in, kh, kw, 1), one grayscale tile per input channel;
        "mean" → (out, kh, kw, 1), averaged over the input channels;
        a list of input channel indices → (out, len(list), kh, kw, 1);
        "auto" → "rgb" for a conv reading 3 channels (the first layer of an RGB model),
        else "all" (a depthwise conv has in = 1: one tile per filter).
      scale: "layer" divides by the largest |weight| of the whole layer (relative
        strengths stay visible), "filter" by each filter's own.
    """
    conv = kernels_lib.layer_conv(require_probe(probe, "kernels_as_images"), layer, variables)
    w = np.moveaxis(conv.kernel, -1, 0)  # (out, kh, kw, in)
    n_in = w.shape[-1]
    if isinstance(input_channels, str):
        mode = ("rgb" if n_in == 3 else "all") if input_channels == "auto" else input_channels
        if mode not in ("rgb", "all", "mean"):
            raise ValueError(
                f"input_channels must be 'auto', 'rgb', 'all', 'mean' or a list of channel indices, "
                f"got {input_channels!r}."
            )
        if mode == "rgb" and n_in != 3:
            raise ValueError(
                f"input_channels='rgb' needs a kernel over 3 input channels; layer {conv.layer!r} reads "
                f"{n_in} (per group). Use 'all' or 'mean'."
            )
    else:
        picked = np.asarray(input_channels).reshape(-1)
        bad = picked[(picked < 0) | (picked >= n_in)] if np.issubdtype(picked.dtype, np.integer) else picked
        if picked.size == 0 or bad.size:
            raise ValueError(
                f"input_channels must be indices in 0..{n_in - 1} for layer {conv.layer!r}, "
                f"got {np.asarray(input_channels).tolist()}."
            )
        mode, w = "all", w[..., picked]
    if mode == "mean":
        w = w.mean(axis=-1, keepdims=True)
    if scale not in ("layer", "filter"):
        raise ValueError(f"scale must be 'layer' or 'filter', got {scale!r}.")
    axes = tuple(range(w.ndim)) if scale == "layer" else tuple(range(1, w.ndim))
    peak = np.abs(w).max(axis=axes, keepdims=True)
    tiles = 0.5 + 0.5 * w / np.where(peak > 0, peak, 1.0)
    if mode == "all":
        tiles = np.moveaxis(tiles, -1, 1)[..., None]  # (out, in, kh, kw, 1)
    return np.clip(tiles, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------- helpers
def _check_count(value, name: str, available: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if not 1 <= value <= available:
        raise ValueError(
            f"{name}={value} is out of range: there are {available} {what} (valid: 1..{available})."
        )


def batches(probe, images: Any, batch_size: int):
    """Checked batches (x, valid) of exactly ``batch_size`` images (the last padded by repeats)."""
    batch_size = validation.positive_int(batch_size, "batch_size")
    arr = images if isinstance(images, (np.ndarray, jax.Array)) else np.asarray(images)
    if np.ndim(arr) != 4:
        probe.check_images(arr)  # raises the shape error
    n = len(arr)
    if n == 0:
        raise ValueError("No images given: the dataset is empty.")
    size = min(batch_size, n)
    for start in range(0, n, size):
        x = np.asarray(probe.check_images(np.asarray(arr[start : start + size])))
        valid = np.ones(size, bool)
        if len(x) < size:
            valid[len(x) :] = False
            x = np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])
        yield jnp.asarray(x), valid


@owned_by_probe
def _forward(probe, names: tuple[str, ...]):
    def layers(variables, x):
        acts = probe.forward(variables, x)[1]  # one forward pass for all the names
        return [acts[n] for n in names]

    return jax.jit(layers)


@owned_by_probe
def _stats_fn(probe, layer: str):
    def stats(variables, x, valid):
        acts = probe.forward(variables, x)[1][layer]
        acts = acts.reshape(acts.shape[0], -1, acts.shape[-1])  # (B, positions, C)
        mask = jnp.asarray(valid)[:, None, None]
        total = jnp.where(mask, acts, 0.0).sum(axis=(0, 1))
        zeros = (mask & (acts <= 0)).sum(axis=(0, 1))
        peak = jnp.where(mask, acts, -jnp.inf).max(axis=(0, 1))
        return total, zeros, peak, acts.shape[1]

    return jax.jit(stats)


@owned_by_probe
def _unit_max_fn(probe, layer: str):
    def unit_max(variables, x, unit):
        acts = jnp.take(probe.forward(variables, x)[1][layer], unit, axis=-1)  # (B, H', W') or (B,)
        a = acts.reshape(acts.shape[0], -1)
        flat = a.argmax(axis=1)
        if acts.ndim != 3:
            return a.max(axis=1), jnp.zeros((len(flat), 2), jnp.int32)
        return a.max(axis=1), jnp.stack(jnp.unravel_index(flat, acts.shape[1:]), axis=-1).astype(jnp.int32)

    return jax.jit(unit_max)
