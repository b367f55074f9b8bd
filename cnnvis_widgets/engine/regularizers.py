"""Image priors for activation maximization: penalties and image-space projections.

A `Regularizer` has a `name`, a default `weight`, and one or both of
- `penalty(images) -> scalar`: UNWEIGHTED, added (times the weight) to the loss minimized;
- `project(images, grads, step, weight) -> images`: an image-space step after each optimizer
  update; `grads` is d objective / d images, `step` a traced int32, `weight` a traced float.
Images are float32 (B, H, W, C) in [0, 1]; "zero" of the papers (mean-subtracted images)
is grey, `GREY = 0.5`. Every penalty is a mean (over images, pixels and channels), so one
weight works for 32x32 digits and 224x224 photos. A weight of 0 turns any regularizer off.
"""

import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

GREY = 0.5


class Regularizer(NamedTuple):
    """A named image prior: an unweighted `penalty` and/or an image-space `project`."""

    name: str
    weight: float
    penalty: Optional[Callable[[jax.Array], jax.Array]] = None
    project: Optional[Callable[..., jax.Array]] = None


def _safe_pow(x, p):
    """x ** p for x >= 0 with a zero (not NaN) gradient at x = 0 when p < 1."""
    positive = x > 0
    return jnp.where(positive, jnp.where(positive, x, 1.0) ** p, 0.0)


def l2_decay(weight: float = 0.01, center: float = GREY) -> Regularizer:
    """Decays every pixel toward `center`: x <- x - weight * (x - center).

    References: Yosinski et al. 2015, "Understanding Neural Networks Through Deep
    Visualization" (L2 decay, applied as a step toward the dataset mean).
    """

    def project(images, grads, step, weight):
        return images - weight * (images - center)

    return Regularizer("l2_decay", weight, project=project)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalized 1-D Gaussian, radius max(1, ceil(3 sigma))."""
    if sigma <= 0:
        raise ValueError(f"gaussian_kernel needs sigma > 0, got {sigma}.")
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(images: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (B, H, W, C) images with half-sample symmetric padding.

    Symmetric ('symmetric' in `jnp.pad`, edge pixel repeated) padding makes the blur keep each
    channel's mean exactly (for radius <= size).
    """
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    h, w = images.shape[1:3]
    x = jnp.pad(images, ((0, 0), (r, r), (0, 0), (0, 0)), mode="symmetric")
    x = sum(k[i] * x[:, i : i + h] for i in range(len(k)))
    x = jnp.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="symmetric")
    return sum(k[i] * x[:, :, i : i + w] for i in range(len(k)))


def gaussian_blur(sigma: float = 0.5, every: int = 4, weight: float = 1.0) -> Regularizer:
    """Every `every` steps (when step % every == 0), x <- (1 - weight) x + weight blur(x).

    References: Yosinski et al. 2015, "Understanding Neural Networks Through Deep
    Visualization" (Gaussian blur every few steps).
    """
    gaussian_kernel(sigma)  # validates sigma
    if every < 1:
        raise ValueError(f"gaussian_blur needs every >= 1, got {every}.")

    def project(images, grads, step, weight):
        mixed = lambda x: x + weight * (blur(x, sigma) - x)
        return jax.lax.cond(step % every == 0, mixed, lambda x: x, images)

    return Regularizer("gaussian_blur", weight, project=project)


def _grey_smallest(images, scores, fraction):
    """Sets to grey, in each image, the round(fraction * H * W) pixels of smallest score."""
    b, h, w, _ = images.shape
    flat = scores.reshape(b, h * w)
    k = jnp.round(jnp.clip(fraction, 0.0, 1.0) * (h * w)).astype(jnp.int32)
    threshold = jnp.sort(flat, axis=1)[:, jnp.maximum(k - 1, 0)]
    mask = (flat <= threshold[:, None]) & (k > 0)
    return jnp.where(mask.reshape(b, h, w, 1), GREY, images)


def clip_norm(percentile: float = 20.0) -> Regularizer:
    """Sets to grey the pixels whose norm ||x - grey|| over channels is in the lowest percentile.

    The weight is the fraction clipped, percentile / 100 (traced, so a slider changes it
    without recompiling; 0 turns it off). Ties at the threshold are all clipped.

    References: Yosinski et al. 2015, "Understanding Neural Networks Through Deep
    Visualization" (clipping pixels with small norm).
    """

    def project(images, grads, step, weight):
        norms = jnp.sqrt(jnp.sum((images - GREY) ** 2, axis=-1))
        return _grey_smallest(images, norms, weight)

    return Regularizer("clip_norm", percentile / 100.0, project=project)


def clip_contribution(percentile: float = 20.0) -> Regularizer:
    """Sets to grey the pixels whose contribution |sum_c (x - grey) * grad| is in the lowest
    percentile (a linear estimate of what the objective loses if the pixel turns grey).

    The weight is the fraction clipped, percentile / 100 (traced; 0 turns it off).

    References: Yosinski et al. 2015, "Understanding Neural Networks Through Deep
    Visualization" (clipping pixels with small contribution).
    """

    def project(images, grads, step, weight):
        contribution = jnp.abs(jnp.sum((images - GREY) * grads, axis=-1))
        return _grey_smallest(images, contribution, weight)

    return Regularizer("clip_contribution", percentile / 100.0, project=project)


def total_variation(weight: float = 1.0, beta: float = 2.0) -> Regularizer:
    """Penalty mean_{b,u,v,k} ((x[u,v+1]-x[u,v])^2 + (x[u+1,v]-x[u,v])^2)^(beta/2).

    The mean runs over images, channels and the (H-1)(W-1) positions with both neighbours.

    References: Mahendran & Vedaldi 2016, "Visualizing Deep Convolutional Neural Networks
    Using Natural Pre-Images" (TV with exponent beta).
    """

    def penalty(images):
        x = images[:, :-1, :-1]
        dx = images[:, :-1, 1:] - x
        dy = images[:, 1:, :-1] - x
        return jnp.mean(_safe_pow(dx * dx + dy * dy, beta / 2.0))

    return Regularizer("total_variation", weight, penalty=penalty)


def alpha_norm(weight: float = 1.0, alpha: float = 6.0) -> Regularizer:
    """Penalty mean |(x - grey) / 0.5|^alpha: 1 for a pixel at 0 or 1, 0 for grey.

    References: Mahendran & Vedaldi 2016, "Visualizing Deep Convolutional Neural Networks
    Using Natural Pre-Images" (alpha-norm, normalized by the range).
    """

    def penalty(images):
        return jnp.mean(_safe_pow(jnp.abs(images - GREY) / 0.5, alpha))

    return Regularizer("alpha_norm", weight, penalty=penalty)


def bounded_range(weight: float = 1.0, bound: float = 0.4) -> Regularizer:
    """Penalty mean_{b,u,v} max(0, r_uv - bound)^2, r_uv = RMS over channels of x_uv - grey.

    A soft version of the bounded-range constraint ||x(u,v)|| <= B: pixels whose colour
    stays within `bound` of grey (r is at most 0.5, for any number of channels) cost nothing.

    References: Mahendran & Vedaldi 2016, "Visualizing Deep Convolutional Neural Networks
    Using Natural Pre-Images" (bounded range).
    """

    def penalty(images):
        r = jnp.sqrt(jnp.mean((images - GREY) ** 2, axis=-1) + 1e-12)
        return jnp.mean(jnp.maximum(r - bound, 0.0) ** 2)

    return Regularizer("bounded_range", weight, penalty=penalty)


def lp(weight: float = 1.0, p: float = 1.0) -> Regularizer:
    """Penalty mean |x - grey|^p (L1 for p = 1): a sparse departure from grey."""

    def penalty(images):
        return jnp.mean(_safe_pow(jnp.abs(images - GREY), p))

    return Regularizer(f"l{p:g}", weight, penalty=penalty)


def default_regularizers(channels: int = 3) -> list:
    """Mild priors for recognizable pictures: L2 decay, total variation, blur every 4 steps.

    Args:
      channels: image channels, 1 (grayscale) or 3 (RGB).
    """
    if channels not in (1, 3):
        raise ValueError(f"Expected channels in {{1, 3}}, got {channels}.")
    return [l2_decay(0.01), total_variation(1.0, beta=2.0), gaussian_blur(0.5, every=4)]


def default_weights(regs: Sequence[Regularizer]) -> jax.Array:
    """The regularizers' own weights as a float32 array (the `weights` of the helpers below)."""
    return jnp.asarray([r.weight for r in regs], jnp.float32)


def apply_penalties(regs: Sequence[Regularizer], weights, images) -> jax.Array:
    """Sum of weights[i] * regs[i].penalty(images) over regularizers with a penalty."""
    total = jnp.zeros((), jnp.float32)
    for i, reg in enumerate(regs):
        if reg.penalty is not None:
            total = total + weights[i] * reg.penalty(images)
    return total


def apply_projections(regs: Sequence[Regularizer], weights, images, grads, step) -> jax.Array:
    """Applies each regularizer's projection in order, with its weight."""
    for i, reg in enumerate(regs):
        if reg.project is not None:
            images = reg.project(images, grads, step, weights[i])
    return images
