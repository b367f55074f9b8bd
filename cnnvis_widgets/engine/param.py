"""Image parameterizations: what the optimizer actually updates.

A `Param` is three pure functions: `init(key, shape)` draws parameters for a batch of
`shape = (B, H, W, C)` images, `to_image(params)` maps them (differentiably) to float32
images in [0, 1] of that shape, and `from_image(images)` maps images back, so image-space
projections (blur, clipping) can be applied to any parameterization:
``params = from_image(project(to_image(params)))``.

References: Olah et al. 2017, "Feature Visualization", Distill (Lucid's `optvis.param`).
"""

from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Square root of the colour correlation of ImageNet, from Lucid (`param/color.py`).
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
_MAX_NORM_SVD_SQRT = np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
_COLOR_MATRIX = COLOR_CORRELATION_SVD_SQRT / _MAX_NORM_SVD_SQRT  # decorrelated -> RGB
_COLOR_MATRIX_INV = np.linalg.inv(_COLOR_MATRIX).astype(np.float32)

_LOGIT_EPS = 1e-4  # from_image clips to [eps, 1 - eps] before inverting the sigmoid
_FOURIER_MAGIC = 4.0  # Lucid's constant: divides the spectral image, reduces saturation


class Param(NamedTuple):
    """A parameterization: `init(key, shape)`, `to_image(params)`, `from_image(images)`.

    `bounded` is False when `to_image` can leave [0, 1] unless the render loop projects the
    params back after each step (plain pixels); sigmoid parameterizations are bounded.
    """

    init: Callable[[jax.Array, tuple], Any]
    to_image: Callable[[Any], jax.Array]
    from_image: Callable[[jax.Array], Any]
    bounded: bool = True


def _check_shape(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[-1] not in (1, 3) or min(shape) < 1:
        raise ValueError(f"Expected an image batch shape (B, H, W, C) with C in {{1, 3}}, got {shape}.")
    return shape


def decorrelated_to_rgb(t: jax.Array) -> jax.Array:
    """Maps decorrelated colour coordinates (..., 3) to RGB coordinates (not yet squashed).

    References: Olah et al. 2017, "Feature Visualization" (Lucid `_linear_decorelate_color`).
    """
    return t @ jnp.asarray(_COLOR_MATRIX.T)


def rgb_to_decorrelated(t: jax.Array) -> jax.Array:
    """Inverse of `decorrelated_to_rgb`."""
    return t @ jnp.asarray(_COLOR_MATRIX_INV.T)


def _squash(t: jax.Array, decorrelate: bool) -> jax.Array:
    """Lucid's `to_valid_rgb` with a sigmoid: optional colour decorrelation, then sigmoid."""
    if decorrelate and t.shape[-1] == 3:
        t = decorrelated_to_rgb(t)
    return jax.nn.sigmoid(t)


def _unsquash(images: jax.Array, decorrelate: bool) -> jax.Array:
    x = jnp.clip(images, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    t = jnp.log(x) - jnp.log1p(-x)
    if decorrelate and t.shape[-1] == 3:
        t = rgb_to_decorrelated(t)
    return t


def pixel(sd: float = 0.01, decorrelate: bool = False) -> Param:
    """Pixels are the parameters.

    With `decorrelate=False` (default) params are the image itself, initialised to
    0.5 + sd * noise. `to_image` clips to [0, 1] with a straight-through gradient (the value
    is clipped, the gradient passes as if it were the identity), so pixels at the range
    boundary still receive gradients; the render loop's projection
    ``params = from_image(to_image(params))`` then keeps params inside [0, 1].
    With `decorrelate=True` params are logits in decorrelated colour space (RGB only) and
    `to_image` is a sigmoid, as in Lucid's `image(..., fft=False, decorrelate=True)`.

    References: Olah et al. 2017, "Feature Visualization", Distill.

    Args:
      sd: standard deviation of the initial noise.
      decorrelate: parameterize in Lucid's decorrelated colour space through a sigmoid.

    Returns:
      A `Param`.
    """

    def init(key, shape):
        shape = _check_shape(shape)
        noise = sd * jax.random.normal(key, shape, jnp.float32)
        return noise if decorrelate else 0.5 + noise

    def to_image(params):
        if decorrelate:
            return _squash(params, True)
        return params + jax.lax.stop_gradient(jnp.clip(params, 0.0, 1.0) - params)

    def from_image(images):
        if decorrelate:
            return _unsquash(images, True)
        return jnp.clip(images, 0.0, 1.0)

    return Param(init, to_image, from_image, bounded=decorrelate)


def _check_spectrum_shape(shape, name: str) -> tuple:
    """`shape` if a spectrum of (H, W//2+1) columns tells its width (`_spectrum_image_size`)."""
    b, h, w, c = _check_shape(shape)
    if w % 2 and h != w:
        raise ValueError(f"{name} needs square images or an even width, got shape {shape}.")
    if h % 2 and w == h - 1:  # its spectrum has the columns of a square image: to_image would give h x h
        raise ValueError(
            f"{name} cannot tell a {h}x{w} image from a {h}x{h} one (same spectrum shape); "
            f"use {h}x{h}, {h + 1}x{w} or {h}x{w + 2}, got shape {shape}."
        )
    return b, h, w, c


def _spectrum_image_size(h: int, cols: int) -> tuple[int, int]:
    """The image size of an rfft2 spectrum with `cols` columns: W//2+1 columns fit both W = 2k
    and 2k+1, so square images, else even W (`_check_spectrum_shape` refuses the rest)."""
    return h, (h if h // 2 + 1 == cols else 2 * (cols - 1))


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude (cycles per pixel) of each `jnp.fft.rfft2` bin, shape (h, w//2+1)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy).astype(np.float32)


def fourier(sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True) -> Param:
    """Lucid's spectral parameterization: a scaled 2-D Fourier spectrum, then a sigmoid.

    Params are the real and imaginary parts of the `rfft2` spectrum of each image and channel,
    an array (B, C, H, W//2+1, 2), initialised to sd * noise. The image is
    ``sigmoid(decorrelate(irfft2(spectrum / max(freq, 1/max(H, W))**decay_power) / 4))``,
    so low frequencies dominate and steps are roughly whitened. RGB images (C = 3) use
    Lucid's colour decorrelation when `decorrelate` is true; grayscale (C = 1) never does.
    `from_image` is exact up to the sigmoid: images are clipped to [1e-4, 1 - 1e-4] first.
    Images must be square or have an even width (the spectrum's shape then gives W).

    References: Olah et al. 2017, "Feature Visualization", Distill (Lucid `fft_image`).

    Args:
      sd: standard deviation of the initial spectrum.
      decay_power: exponent of the 1 / frequency scaling.
      decorrelate: use Lucid's decorrelated colour space for RGB images.

    Returns:
      A `Param`.
    """

    def scale(h, w):
        s = 1.0 / np.maximum(rfft2d_freqs(h, w), 1.0 / max(h, w)) ** decay_power
        return jnp.asarray(s, jnp.float32)

    def init(key, shape):
        b, h, w, c = _check_spectrum_shape(shape, "fourier")
        return sd * jax.random.normal(key, (b, c, h, w // 2 + 1, 2), jnp.float32)

    def to_image_size(params, h, w):
        spectrum = jax.lax.complex(params[..., 0], params[..., 1]) * scale(h, w)
        t = jnp.fft.irfft2(spectrum, s=(h, w), norm="ortho") / _FOURIER_MAGIC  # (B, C, H, W)
        return _squash(jnp.moveaxis(t, 1, -1).astype(jnp.float32), decorrelate)

    def to_image(params):
        if params.ndim != 5 or params.shape[-1] != 2:
            raise ValueError(f"Expected Fourier params of shape (B, C, H, W//2+1, 2), got {params.shape}.")
        h, w = _spectrum_image_size(params.shape[2], params.shape[3])
        return to_image_size(params, h, w)

    def from_image(images):
        _, h, w, _ = images.shape
        t = jnp.moveaxis(_unsquash(images, decorrelate) * _FOURIER_MAGIC, -1, 1)
        spectrum = jnp.fft.rfft2(t, norm="ortho") / scale(h, w)
        return jnp.stack([spectrum.real, spectrum.imag], axis=-1).astype(jnp.float32)

    return Param(init, to_image, from_image)


# ---------------------------------------------------------------------------------- MACO
NATURAL_SPECTRUM_FILE = Path(__file__).with_name("natural_spectrum.npy")
NATURAL_SPECTRUM_SIZE = 128


def natural_spectrum(photos) -> np.ndarray:
    """The mean rfft2 magnitude of natural photos in decorrelated colour space, (3, 128, 65).

    Every photo is resized so its shorter side is 128 px and 256 px; each of its 128x128 tiles
    (a 64 px grid) is mapped as the parameterizations see images, ``rgb_to_decorrelated(logit(x))``,
    scaled to unit standard deviation, windowed (Hann: a tile's borders would add a cross of
    horizontal and vertical frequencies, drawn as a lattice) and transformed; the magnitudes are
    averaged over tiles.
    This is MACO's fixed magnitude (the paper uses ImageNet's; `natural_spectrum.npy` holds this
    function of the bundled photos, ``cnnvis_widgets.data.PHOTOS``).

    References: Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with
    MAgnitude Constrained Optimization" (NeurIPS).
    """
    n = NATURAL_SPECTRUM_SIZE
    total, count = np.zeros((3, n, n // 2 + 1)), 0
    hann = np.hanning(n)
    window = np.outer(hann, hann)[None] / np.sqrt(np.mean(np.outer(hann, hann) ** 2))  # unit power
    for image in photos:
        image = np.asarray(image, np.float32)
        for short in (n, 2 * n):
            h, w = image.shape[:2]
            f = short / min(h, w)
            size = (max(n, int(round(h * f))), max(n, int(round(w * f))), 3)
            scaled = np.asarray(jax.image.resize(jnp.asarray(image), size, "linear", antialias=True))
            for y in range(0, scaled.shape[0] - n + 1, n // 2):
                for x in range(0, scaled.shape[1] - n + 1, n // 2):
                    t = np.asarray(_unsquash(jnp.asarray(scaled[y : y + n, x : x + n]), True))
                    t = (t - t.mean()) / (t.std() + 1e-6)
                    total += np.abs(np.fft.rfft2(np.moveaxis(t, -1, 0) * window, norm="ortho"))
                    count += 1
    return (total / count).astype(np.float32)


def _magnitude_at(spectrum: np.ndarray, h: int, w: int, channels: int) -> np.ndarray:
    """`spectrum` (3, n, n//2+1) resampled to the rfft2 bins of an h x w image, (channels, h, w//2+1).

    Bins are matched by frequency (cycles per pixel): bilinear in the template, rows periodic.
    Grayscale images take the first (luminance-like) decorrelated channel.
    """
    from scipy import ndimage

    n = spectrum.shape[1]
    fy = np.fft.fftfreq(h)[:, None] * n  # template row (periodic)
    fx = np.fft.rfftfreq(w)[None, :] * n  # template column, in [0, n/2]
    rows, cols = np.broadcast_arrays(np.mod(fy, n), fx)
    out = np.stack(
        [ndimage.map_coordinates(ch, [rows, cols], order=1, mode="grid-wrap") for ch in spectrum[:channels]]
    )
    return out.astype(np.float32)


def _conjugate_symmetric(phase: jax.Array, w: int) -> jax.Array:
    """Phases (..., H, W//2+1) made odd in the rfft2 columns that hold conjugate pairs (x-frequency
    0, and W/2 for even W): bins k and -k of a real image's spectrum are conjugates there, and
    ``irfft2`` would otherwise average unmatched pairs and change their magnitude."""
    h = phase.shape[-2]
    flipped = (-np.arange(h)) % h
    for col in [0] + ([phase.shape[-1] - 1] if w % 2 == 0 else []):
        column = phase[..., col]
        phase = phase.at[..., col].set((column - column[..., flipped]) / 2)
    return phase


def load_natural_spectrum() -> np.ndarray:
    """The shipped `natural_spectrum.npy` (plain float32 array; never pickled)."""
    return np.load(NATURAL_SPECTRUM_FILE, allow_pickle=False)


def maco(spectrum: np.ndarray | None = None) -> Param:
    """MACO: only the phase of the image's spectrum is optimized; its magnitude stays natural.

    Params are phases (B, C, H, W//2+1), drawn uniformly. The image is
    ``sigmoid(decorrelate(standardize(irfft2(magnitude * exp(i * phase)))))``, where the magnitude
    is `spectrum` (default: the bundled photos' mean, ``natural_spectrum``) resampled to the image
    size, and ``standardize`` gives each image zero mean and unit deviation: the magnitude fixes
    how much of each frequency the picture has, so the optimizer can only move structure around.
    `from_image` projects an image onto that set: it keeps its phases.

    References: Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with
    MAgnitude Constrained Optimization" (NeurIPS); reference code: the `horama` package.

    Args:
      spectrum: a (3, n, n//2+1) magnitude template in decorrelated colour space.

    Returns:
      A `Param`.
    """
    spectrum = load_natural_spectrum() if spectrum is None else np.asarray(spectrum, np.float32)
    if spectrum.ndim != 3 or spectrum.shape[0] != 3 or spectrum.shape[2] != spectrum.shape[1] // 2 + 1:
        raise ValueError(f"maco needs a (3, n, n//2+1) magnitude spectrum, got shape {spectrum.shape}.")
    cache = {}

    def magnitude(h, w, c):
        if (h, w, c) not in cache:
            cache[(h, w, c)] = _magnitude_at(spectrum, h, w, c)
        return jnp.asarray(cache[(h, w, c)])

    def init(key, shape):
        b, h, w, c = _check_spectrum_shape(shape, "maco")
        return jax.random.uniform(key, (b, c, h, w // 2 + 1), jnp.float32, -np.pi, np.pi)

    def to_image(params):
        if params.ndim != 4:
            raise ValueError(f"Expected MACO phases of shape (B, C, H, W//2+1), got {params.shape}.")
        c = params.shape[1]
        h, w = _spectrum_image_size(params.shape[2], params.shape[3])
        mag = magnitude(h, w, c)
        params = _conjugate_symmetric(params, w)
        t = jnp.fft.irfft2(jax.lax.complex(mag * jnp.cos(params), mag * jnp.sin(params)), s=(h, w), norm="ortho")
        # standardized after the move to (B, H, W, C): standardizing the FFT's (B, C, H, W) output
        # made XLA:CPU's FFT gradient fail on a column-major layout with the filters sharded (jax 0.10.2)
        t = jnp.moveaxis(t, 1, -1).astype(jnp.float32)
        t = t - t.mean(axis=(1, 2, 3), keepdims=True)
        t = t / (t.std(axis=(1, 2, 3), keepdims=True) + 1e-4)
        return _squash(t, c == 3)

    def from_image(images):
        t = jnp.moveaxis(_unsquash(images, images.shape[-1] == 3), -1, 1)
        return jnp.angle(jnp.fft.rfft2(t, norm="ortho")).astype(jnp.float32)

    return Param(init, to_image, from_image)
