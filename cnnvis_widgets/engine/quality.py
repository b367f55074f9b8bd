"""How good is a feature visualization? Numbers a benchmark can compare recipes by.

- ``filter_scores``: each image's channel-mean activation of each filter, measured by a separate
  forward pass with the image resized to the model's native input size (the scale the network
  learnt); its diagonal is each filter's activation on its own image, and a filter whose own image
  is its top activator is "won" (``own_filter_wins``).
- ``colourfulness``: Hasler & Süsstrunk 2003, on the 0..255 scale (grey images score 0; their
  "moderately colourful" is about 33, "highly colourful" 45).
- ``contrast``: the standard deviation of the pixel values, on [0, 1].

References: Hasler & Süsstrunk 2003, "Measuring colourfulness in natural images" (SPIE 5007).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnvis_widgets.models.probe import require_probe


def colourfulness(images) -> np.ndarray:
    """Hasler & Süsstrunk's colourfulness of each (N, H, W, 3) image in [0, 1], on 0..255.

    ``sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)`` with ``rg = R - G`` and
    ``yb = (R + G) / 2 - B``. Grayscale images (C = 1) score 0.
    """
    x = np.asarray(images, np.float64) * 255.0
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"colourfulness needs images (N, H, W, 1 or 3), got shape {x.shape}.")
    if x.shape[-1] == 1:
        return np.zeros(len(x))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    axes = (1, 2)
    spread = np.sqrt(rg.std(axis=axes) ** 2 + yb.std(axis=axes) ** 2)
    centre = np.sqrt(rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2)
    return spread + 0.3 * centre


def contrast(images) -> np.ndarray:
    """The standard deviation of each image's pixel values (all channels), on [0, 1]."""
    x = np.asarray(images, np.float64)
    return x.reshape(len(x), -1).std(axis=1)


def filter_scores(probe, images, layer: str, units, at_native_size: bool = True) -> np.ndarray:
    """(N images, U units): the channel-mean activation of ``units`` of ``layer`` on each image.

    With ``at_native_size`` each image is first resized (bilinearly) to the model's input size.
    """
    probe = require_probe(probe, "filter_scores")
    images = np.asarray(images, np.float32)
    h, w, c = probe.input_shape
    if at_native_size and images.shape[1:3] != (h, w):
        images = np.asarray(
            jax.image.resize(jnp.asarray(images), (len(images), h, w, c), "linear", antialias=True)
        )
    units = probe.check_units(layer, units)
    acts = np.asarray(probe.activations(probe.variables, np.clip(images, 0.0, 1.0), layer))
    acts = acts.reshape(len(images), -1, acts.shape[-1]).mean(axis=1)
    return acts[:, units]


def own_filter_wins(scores: np.ndarray) -> np.ndarray:
    """(U,) for square ``filter_scores`` (image i made for unit i): is image i unit i's top activator?"""
    scores = np.asarray(scores)
    return scores.argmax(axis=0) == np.arange(scores.shape[1])
