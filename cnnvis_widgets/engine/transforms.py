"""Random image transforms applied before each forward pass (transformation robustness).

A transform is a pure function `t(key, images) -> images` on a float32 batch (B, H, W, C).
Each of the B images gets its own random draw (uniform numbers drawn for the whole batch), and
different keys give different draws, so `jax.vmap` over per-filter keys makes every filter's
jitter/scale/rotation independent. All transforms keep the shape except `pad` (which grows
it) and `center_crop` (which cuts it back); `standard_transforms` keeps it, so any model with a
fixed input size works.

References: Olah et al. 2017, "Feature Visualization", Distill (Lucid `optvis.transform`).
"""

from typing import Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Transform = Callable[[jax.Array, jax.Array], jax.Array]


def _per_image(fn, draws: int):
    """Lifts `fn(u, image (H, W, C))`, `u` being `draws` uniform numbers in [0, 1), to a transform
    with one draw per image of the batch.

    The batch's numbers come from one `jax.random.uniform` call, not a key split per image and a
    `randint` each: the same distribution for a third less of a step program's compile time
    (XLA compiles every random call site; benchmarks/results/bench_compile.txt).
    """

    def t(key, images):
        if images.ndim != 4:
            raise ValueError(f"Expected images of shape (B, H, W, C), got {images.shape}.")
        return jax.vmap(fn)(jax.random.uniform(key, (images.shape[0], draws)), images)

    return t


def _index(u, n: int):
    """An integer in [0, n) from a uniform number u in [0, 1)."""
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def identity() -> Transform:
    """The transform that returns its images unchanged."""
    return lambda key, images: images


def pad(n: int, mode: Union[str, float] = "reflect") -> Transform:
    """Pads n pixels on every side: `mode` is a `jnp.pad` mode or a constant value.

    References: Olah et al. 2017, "Feature Visualization" (Lucid `pad`).
    """
    if n < 0:
        raise ValueError(f"pad needs n >= 0, got {n}.")
    widths = ((0, 0), (n, n), (n, n), (0, 0))

    def t(key, images):
        del key
        if isinstance(mode, str):
            return jnp.pad(images, widths, mode=mode)
        return jnp.pad(images, widths, constant_values=mode)

    return t


def center_crop(size: Union[int, Sequence[int]]) -> Transform:
    """Crops the central `size` (int or (H, W)) pixels."""
    h, w = (size, size) if isinstance(size, int) else size

    def t(key, images):
        del key
        top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
        if top < 0 or left < 0:
            raise ValueError(f"center_crop to {(h, w)} needs larger images, got {images.shape}.")
        return images[:, top : top + h, left : left + w]

    return t


def jitter(d: int) -> Transform:
    """Shifts each image by a random integer offset in [-d, d] pixels on each axis.

    The image is reflect-padded by d and a window of the original size is cut at a random
    offset with `jax.lax.dynamic_slice`, so the shape is kept (Lucid's jitter crops instead).

    References: Mordvintsev et al. 2015, "Inceptionism"; Olah et al. 2017 (Lucid `jitter`).
    """
    if d < 0:
        raise ValueError(f"jitter needs d >= 0, got {d}.")
    if d == 0:
        return identity()

    def one(u, image):
        h, w, c = image.shape
        padded = jnp.pad(image, ((d, d), (d, d), (0, 0)), mode="reflect")
        oy, ox = _index(u, 2 * d + 1)
        return jax.lax.dynamic_slice(padded, (oy, ox, 0), (h, w, c))

    return _per_image(one, 2)


def _choose(u, values):
    """One of `values` (a 1-D numpy array), picked by a uniform number u in [0, 1)."""
    if values.size == 1:
        return jnp.asarray(values[0])
    return jnp.asarray(values)[_index(u, values.size)]


def _warp(image, matrix, mode, cval=0.0, before=(0.0, 0.0), after=(0.0, 0.0)):
    """Samples `image` (H, W, C) bilinearly at `matrix @ (p + after - c) + c + before` for each
    output pixel p, c being the centre: a shift by `after`, the zoom and rotation `matrix` about
    the centre, then a shift by `before` (in the input's pixels), in one resampling."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) + after[0] - cy,
        jnp.arange(w, dtype=jnp.float32) + after[1] - cx,
        indexing="ij",
    )
    src_y = matrix[0, 0] * yy + matrix[0, 1] * xx + cy + before[0]
    src_x = matrix[1, 0] * yy + matrix[1, 1] * xx + cx + before[1]
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [src_y, src_x], order=1, mode=mode, cval=cval)
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def random_affine(
    scales: Sequence[float] = (1.0,),
    angles_degrees: Sequence[float] = (0.0,),
    mode: str = "reflect",
    *,
    shifts: tuple[int, int] = (0, 0),
    cval: float = 0.0,
) -> Transform:
    """Zooms each image by a factor from `scales` and rotates it by an angle (degrees) from
    `angles_degrees`, about its centre, in one bilinear resampling, keeping its shape.

    One resampling instead of a scale then a rotation: half the sampling work and half the
    blur; a factor > 1 enlarges the content, < 1 shrinks it, and the border is filled by `mode`
    (a `jax.scipy.ndimage.map_coordinates` mode; `cval` is the value of mode "constant").
    `shifts` (d1, d2): a random integer shift in [-d1, d1] pixels per axis before the zoom and
    rotation and one in [-d2, d2] after, in the same resampling (Lucid's jitters around them).

    References: Olah et al. 2017, "Feature Visualization" (Lucid `random_scale`, `random_rotate`).
    """
    scales = np.asarray(scales, np.float32)
    angles = np.asarray(angles_degrees, np.float32)
    if scales.ndim != 1 or scales.size == 0 or np.any(scales <= 0):
        raise ValueError(
            f"random_affine/random_scale needs a non-empty sequence of positive scales, got {scales}."
        )
    if angles.ndim != 1 or angles.size == 0:
        raise ValueError(f"random_affine/random_rotate needs a non-empty sequence of angles, got {angles}.")
    if len(shifts) != 2 or min(shifts) < 0:
        raise ValueError(f"random_affine needs shifts (before, after) >= 0, got {shifts}.")
    d1, d2 = (int(d) for d in shifts)

    def shift(u, d):
        return jnp.stack([_index(u[0], 2 * d + 1), _index(u[1], 2 * d + 1)]).astype(jnp.float32) - d

    def one(u, image):
        a = jnp.deg2rad(_choose(u[1], angles))
        cos, sin = jnp.cos(a), jnp.sin(a)
        matrix = jnp.array([[cos, -sin], [sin, cos]]) / _choose(u[0], scales)
        if d1 == d2 == 0:
            return _warp(image, matrix, mode, cval)
        return _warp(image, matrix, mode, cval, before=shift(u[2:4], d1), after=shift(u[4:6], d2))

    return _per_image(one, 2 if d1 == d2 == 0 else 6)


def random_scale(scales: Sequence[float], mode: str = "reflect") -> Transform:
    """Zooms each image about its centre by a factor chosen from `scales` (see `random_affine`)."""
    return random_affine(scales, (0.0,), mode)


def random_rotate(angles_degrees: Sequence[float], mode: str = "reflect") -> Transform:
    """Rotates each image about its centre by an angle (degrees) from `angles_degrees` (see `random_affine`)."""
    return random_affine((1.0,), angles_degrees, mode)


def compose(*transforms: Transform) -> Transform:
    """Applies `transforms` in order, each with its own key split from the given one."""

    def t(key, images):
        for sub, fn in zip(jax.random.split(key, max(len(transforms), 1)), transforms):
            images = fn(sub, images)
        return images

    return t


def resize(size: Union[int, Sequence[int]]) -> Transform:
    """Resamples each image to `size` (int or (H, W)) bilinearly (antialiased when shrinking).

    The last transform of an ImageNet recipe: the image is optimized, stored and shown at a small
    size (cheap), but the network sees it at its native input size, the scale its features were
    trained at (Lucent's ``render_vis`` upsamples images smaller than 224 px the same way).
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if min(h, w) < 1:
        raise ValueError(f"resize needs a positive size, got {(h, w)}.")

    def t(key, images):
        del key
        if images.ndim != 4:
            raise ValueError(f"Expected images of shape (B, H, W, C), got {images.shape}.")
        if images.shape[1:3] == (h, w):
            return images
        return jax.image.resize(images, (images.shape[0], h, w, images.shape[3]), "linear")

    return t


MILD_ZOOMS = (1.0, 0.975, 1.025, 0.95, 1.05)
MILD_ANGLES = tuple(range(-5, 6))
# Lucid's and Lucent's own ranges (``optvis.transform.standard_transforms``): zoom 0.9-1.1,
# rotation -10..10 degrees with 0 drawn more often.
LUCID_ZOOMS = tuple(1 + (i - 5) / 50 for i in range(11))
LUCID_ANGLES = tuple(range(-10, 11)) + 5 * (0,)


def standard_transforms(
    size: Union[int, Sequence[int]],
    zooms: Sequence[float] = MILD_ZOOMS,
    angles: Sequence[float] = MILD_ANGLES,
    reference: int = 224,
) -> Transform:
    """Lucid's standard robustness transforms, scaled to the image size, keeping the shape.

    For a `reference`-pixel image: jitter 8, a zoom from `zooms` and a rotation (degrees) from
    `angles`, jitter 4, with grey beyond the image's border: Lucid's pad 12 (grey), jitter,
    scale, rotate, jitter and crop back, but as one resampling (``random_affine`` with
    ``shifts``), which XLA compiles and runs faster than the chain
    (benchmarks/bench_transforms.py). Pixel amounts scale with max(H, W) / reference
    (at least 1 pixel), so 32x32 digits get jitters of 1. The default zooms and angles are milder
    than Lucid's own (``LUCID_ZOOMS``, ``LUCID_ANGLES``), which the ImageNet recipe uses
    (``engine.recipes``).

    References: Olah et al. 2017, "Feature Visualization" (Lucid `standard_transforms`).

    Args:
      size: the image size, an int or (H, W).
      zooms, angles: the random zoom factors and rotations (degrees) to draw from.
      reference: the image size at which the pixel amounts are 12, 8 and 4.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    px = lambda n: max(1, int(round(n * max(h, w) / reference)))
    return random_affine(tuple(zooms), tuple(angles), "constant", shifts=(px(8), px(4)), cval=0.5)
