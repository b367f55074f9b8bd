"""Bundled images and datasets (all offline), and fitting images to a model's input.

Every image this module returns is float32 HWC (or NHWC) in [0, 1].
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class Dataset(NamedTuple):
    """Images (N, H, W, C) in [0, 1], integer labels (N,) and the label names."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]


# ------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=4)
def digits(size: int = 32) -> Dataset:
    """scikit-learn's 1797 real 8x8 handwritten digits, bilinearly upsampled to size x size."""
    from sklearn.datasets import load_digits

    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= 1024:
        raise ValueError(f"size must be an integer in 1..1024 (pixels a side), got {size!r}.")
    raw = load_digits()
    small = raw.images.astype(np.float32) / 16.0  # sklearn digits hold 0..16
    images = resize(small[..., None], (size, size))
    return Dataset(np.clip(images, 0.0, 1.0), raw.target.astype(np.int32), [str(i) for i in range(10)])


def digits_split(size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
    """The fixed stratified train/test split used to train and test digits-cnn.

    With the defaults: 1347 training and 450 test images, every class in both
    in proportion (``sklearn.model_selection.train_test_split``, random_state=0).
    """
    from sklearn.model_selection import train_test_split

    data = digits(size)
    idx = np.arange(len(data.labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=data.labels, random_state=seed)
    pick = lambda ix: Dataset(data.images[ix], data.labels[ix], data.names)
    return pick(np.sort(train)), pick(np.sort(test))


# ------------------------------------------------------------------- photos
def _skimage(name):
    def load():
        import skimage.data

        img = getattr(skimage.data, name)()
        return img[0] if name == "stereo_motorcycle" else img  # (left, right, disparity)

    return load


def _sklearn(filename):
    def load():
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


PHOTOS = {
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}


def photo(name: str) -> np.ndarray:
    """A bundled photo (H, W, 3) in [0, 1]: one of ``PHOTOS``."""
    if name not in PHOTOS:
        raise ValueError(f"Unknown photo {name!r}. Bundled photos: {', '.join(PHOTOS)}.")
    return to_float_image(PHOTOS[name](), source=name)


# --------------------------------------------------------------- user images
def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) float32 in [0, 1] (grayscale and RGBA become RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {str(path)!r}.")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(
            f"Cannot read {str(path)!r} as an image ({err}); readable formats include {', '.join(IMAGE_SUFFIXES)}."
        ) from None
    return rgb.astype(np.float32) / 255.0


def load_folder(folder: str | os.PathLike, limit: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Every image file in a folder (sorted by name), with the file names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"No folder at {str(folder)!r}.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}.")
    return [load_image(p) for p in files], [p.name for p in files]


# ------------------------------------------------------------ preprocessing
def to_float_image(image, source: str = "image") -> np.ndarray:
    """uint8 or float array (H, W), (H, W, C) → float32 (H, W, C) in [0, 1]."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32)
    else:
        raise TypeError(f"{source}: expected a numeric image array, got dtype {arr.dtype}.")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{source}: expected an image of shape (H, W), (H, W, 1|3|4), got {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{source}: the image is empty (shape {arr.shape}).")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source}: image contains NaN or Inf values.")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"{source}: float images must be in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]."
        )
    return arr[..., :3] if arr.shape[-1] == 4 else arr


def resize(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of (..., H, W, C) to size=(h, w)."""
    import jax
    import jax.numpy as jnp

    images = np.asarray(images, np.float32)
    size = tuple(np.atleast_1d(size).tolist())
    if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
        raise ValueError(f"size must be (height, width) of positive integers, got {size!r}.")
    if images.ndim < 3:
        raise ValueError(f"resize takes images (..., H, W, C), got shape {images.shape}.")
    shape = (*images.shape[:-3], int(size[0]), int(size[1]), images.shape[-1])
    return np.asarray(jax.image.resize(jnp.asarray(images), shape, "linear", antialias=True))


def center_crop(image: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """The largest centred crop of (H, W, C) with width/height = aspect."""
    h, w = image.shape[:2]
    if w / h > aspect:
        cw = int(round(h * aspect))
        x0 = (w - cw) // 2
        return image[:, x0 : x0 + cw]
    ch = int(round(w / aspect))
    y0 = (h - ch) // 2
    return image[y0 : y0 + ch]


def fit_to(images, target, crop: bool = True) -> np.ndarray:
    """Images resized (centre-cropped first) and channel-converted for a model's input.

    ``target`` is a Probe or an (H, W, C) shape. Accepts one image (H, W[, C])
    or a list/batch; returns (N, H, W, C) float32 in [0, 1].
    """
    shape = tuple(np.atleast_1d(getattr(target, "input_shape", target)).tolist())
    if len(shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in shape) or shape[-1] not in (1, 3):
        raise ValueError(
            f"fit_to needs a Probe or an input shape (H, W, C) with C in (1, 3), got {target!r}."
        )
    h, w, c = shape
    batch = images if isinstance(images, (list, tuple)) or np.ndim(images) == 4 else [images]
    if len(batch) == 0:
        raise ValueError("fit_to got no images: give one image (H, W[, C]) or a list / batch of them.")
    out = []
    for i, img in enumerate(batch):
        img = to_float_image(img, source=f"image {i}")
        if crop:
            img = center_crop(img, w / h)
        img = resize(img, (h, w))
        if img.shape[-1] != c:
            img = img.mean(-1, keepdims=True) if c == 1 else np.repeat(img, c, axis=-1)
        out.append(img)
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)
