"""Images from features: feature inversion and DeepDream, both as activation maximization.

Both reuse ``visualize_filters``: inversion starts from noise and maximizes the
similarity to an image's features; DeepDream starts from the image and
amplifies whatever a layer already sees in it.
"""

from __future__ import annotations

import functools

import numpy as np

from cnnvis_widgets import validation
from cnnvis_widgets.engine import objectives, param, recipes, regularizers, transforms
from cnnvis_widgets.engine.ascent import AscentResult, visualize_filters
from cnnvis_widgets.models.probe import require_probe


def invert_features(
    probe,
    image,
    layer: str,
    *,
    steps: int = 256,
    tv: float = 2.0,
    alpha: float = 0.1,
    seed: int = 0,
    **kwargs,
) -> AscentResult:
    """An image whose ``layer`` features match those of ``image`` (H, W, C in [0, 1]).

    Regularized by total variation and an alpha-norm, the natural-image priors of the paper;
    deeper layers give images that keep the content but lose the exact pixels.

    References: Mahendran & Vedaldi 2016, "Visualizing Deep Convolutional Neural Networks
    Using Natural Pre-Images" (IJCV).
    """
    x = one_image(probe, image)
    target = np.asarray(probe.activations(probe.variables, x, layer))[0]
    kwargs.setdefault("regularizers", (regularizers.total_variation(tv), regularizers.alpha_norm(alpha)))
    kwargs.setdefault("param", _INVERSION_PARAM)
    kwargs.setdefault("transforms", _jitter(max(1, x.shape[1] // 32)))
    kwargs.setdefault("recipe", recipes.PLAIN)  # the features are compared at the image's own size
    return visualize_filters(
        probe,
        layer,
        [0],
        objective=objectives.feature_match(layer, target),
        steps=steps,
        size=x.shape[1:3],
        seed=seed,
        relu_rule=None,
        **kwargs,
    )


def deep_dream(
    probe, image, layer: str, *, steps: int = 32, learning_rate: float = 0.005, seed: int = 0, **kwargs
) -> AscentResult:
    """``image`` changed to excite ``layer`` as a whole: the network's patterns grow into it.

    References: Mordvintsev et al. 2015, "Inceptionism: Going Deeper into Neural Networks".
    """
    x = one_image(probe, image)
    if "optimizer" not in kwargs:
        validation.positive_number(learning_rate, "learning_rate")
    # parts by value and the learning rate traced: another photo or rate compiles nothing new
    kwargs.setdefault("regularizers", ())
    kwargs.setdefault("param", recipes.build_param("pixel", probe.input_shape[-1]))
    kwargs.setdefault("transforms", _jitter(max(1, x.shape[1] // 28)))
    if "optimizer" not in kwargs:
        kwargs["learning_rate"] = float(learning_rate)
    kwargs.setdefault("recipe", recipes.PLAIN)  # the photo is changed at its own size
    return visualize_filters(
        probe,
        layer,
        [0],
        objective="energy",
        steps=steps,
        init_images=x,
        seed=seed,
        relu_rule=None,
        **kwargs,
    )


_INVERSION_PARAM = param.pixel(sd=0.1)  # one object: a part of the program's key


@functools.lru_cache(maxsize=None)
def _jitter(d: int):
    """``transforms.jitter(d)``, one object per value (a transform is part of a program's key)."""
    return transforms.jitter(d)


def one_image(probe, image) -> np.ndarray:
    """One image (H, W[, C]) checked for ``probe``: (1, H, W, C) in [0, 1], at its own size when the
    model takes any size and it has the model's channels, else fitted (``data.fit_to``)."""
    from cnnvis_widgets.data import fit_to

    require_probe(probe, "This function")
    arr = np.asarray(image)
    if arr.ndim == 4:
        if len(arr) != 1:
            raise ValueError(f"Give one image (H, W, C), got a batch of {len(arr)}.")
        arr = arr[0]
    if arr.ndim not in (2, 3) or not (np.issubdtype(arr.dtype, np.number) and arr.dtype != bool):
        raise ValueError(
            f"Give one image, an array (H, W) or (H, W, C) with values in [0, 1]; got "
            f"{type(image).__name__} of shape {arr.shape} and dtype {arr.dtype}."
        )
    if arr.shape[-1] == probe.input_shape[-1] and (
        not probe.fixed_size or arr.shape[:2] == probe.input_shape[:2]
    ):
        return np.asarray(probe.check_images(arr[None]))
    return fit_to(arr, probe)
