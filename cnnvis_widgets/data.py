"""Bundled images and datasets (all offline), and fitting images to a model's input.

Every image this module returns is float32 HWC (or NHWC) in [0, 1].
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# The most pixels an image (file, upload or PIL image) may have; checked on the header, before
# decoding. 50 MP takes a 48 MP phone photo (8000x6000). A float32 RGB copy costs 12 bytes a
# pixel (600 MB at the limit), and decoding then fitting an image to a model peaks near three
# such copies (measured: +400 MB at 12 MP, so ~1.7 GB here); 12000x12000 would need ~5 GB.
# Lower than Pillow's own bomb limits (89 MP warns, 179 MP fails), so ours is the one met.
MAX_IMAGE_PIXELS = 50_000_000


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
    """An image file as (H, W, 3) float32 in [0, 1], its pixels read by what its mode means.

    Refused from its header, before decoding, when over ``MAX_IMAGE_PIXELS``. EXIF orientation is
    applied. 8-bit modes go through Pillow's RGB conversion (a palette through its colours; alpha
    dropped, as ``to_float_image`` drops it); 16-bit ('I;16*', and 'I' within 0..65535) is divided
    by 65535; 'F' is taken as is within [0, 1]; other 'I' and 'F' images are stretched from their
    own range to [0, 1] (their scale is unknown), and NaN or Inf refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {str(path)!r}.")
    return _read(path, str(path))


def decode_image(content: bytes, name: str = "image") -> np.ndarray:
    """An image file's bytes (an upload) as (H, W, 3) float32 in [0, 1], exactly as ``load_image``."""
    return _read(io.BytesIO(bytes(content)), name)


def _read(file, source: str) -> np.ndarray:
    from PIL import Image

    with _pillow_errors(source), Image.open(file) as im:  # reads the header only
        return _pil_pixels(im, source)


@contextlib.contextmanager
def _pillow_errors(source: str):
    """Pillow's failures as ValueErrors naming ``source``; its decompression-bomb warning silenced
    (our ``MAX_IMAGE_PIXELS`` is lower, and is checked first)."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError as err:  # over twice Pillow's limit: refused in Image.open
            pixels = re.search(r"(\d+) pixels", str(err))
            size = f"{int(pixels[1]) / 1e6:.3g} megapixels" if pixels else str(err)
            raise _too_large(source, size) from None
        except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as err:
            reason = "not a format Pillow knows" if isinstance(err, UnidentifiedImageError) else err
            raise ValueError(
                f"Cannot read {source!r} as an image ({reason}); "
                f"readable formats include {', '.join(IMAGE_SUFFIXES)}."
            ) from None


def _too_large(source: str, size: str) -> ValueError:
    return ValueError(
        f"{source}: the image is {size}, over the limit of {MAX_IMAGE_PIXELS / 1e6:.3g} megapixels "
        "(cnnvis_widgets.data.MAX_IMAGE_PIXELS); shrink it first."
    )


def _pil_pixels(im, source: str) -> np.ndarray:
    """A PIL image → (H, W, 3) float32 in [0, 1], as ``load_image`` describes; size checked first."""
    from PIL import ImageOps

    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(source, f"{width}x{height} pixels ({width * height / 1e6:.3g} megapixels)")
    with _pillow_errors(source):
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            values = np.asarray(im, np.float32)
        else:
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")  # through the palette (with its transparency, then dropped)
            values = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    if values.dtype == np.uint8:
        return np.divide(values, np.float32(255), dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{source}: image contains NaN or Inf values.")
    lo, hi = float(values.min()), float(values.max())
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        lo, hi = 0.0, 65535.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    values = np.clip((values - lo) / max(hi - lo, np.finfo(np.float32).tiny), 0.0, 1.0)
    return np.repeat(values[..., None], 3, axis=-1)


def load_folder(folder: str | os.PathLike, limit: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Every image file in a folder (sorted by name), with the file names."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None (every image) or a positive integer, got {limit!r}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"No folder at {str(folder)!r}.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}.")
    return [load_image(p) for p in files], [p.name for p in files]


# ------------------------------------------------------------ preprocessing
def to_float_image(image, source: str = "image") -> np.ndarray:
    """uint8 or float array (H, W), (H, W, C) → float32 (H, W, C) in [0, 1].

    A PIL image is decoded as ``load_image`` decodes files (a palette, 16-bit or float values by
    their meaning, not as raw numbers). A masked array with masked pixels is refused: no fill
    value is right for every model, so the caller chooses one (``np.ma.filled(image, 0)``).
    """
    pil = sys.modules.get("PIL.Image")  # a PIL image implies PIL is imported; do not import it for arrays
    if pil is not None and isinstance(image, pil.Image):
        return _pil_pixels(image, source)
    if np.ma.is_masked(image):
        raise ValueError(
            f"{source}: a masked array with {np.ma.count_masked(image)} masked values; fill them first "
            f"(np.ma.filled(image, value)), or pass image.data to use the values under the mask."
        )
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


def reference_dataset(probe, dataset=None) -> tuple[np.ndarray, str]:
    """The images views search for a filter's or a concept's top patches, fitted to the model (N, H, W, C),
    and a description of them: ``dataset`` (an array, a list or a ``Dataset``) or by default the 450
    digits test images (grayscale models) or the bundled photos (RGB ones)."""
    if dataset is None:
        if probe.input_shape[-1] == 1:
            images = digits_split()[1].images
            description = f"the {len(images)} digits test images"
        else:
            images = [photo(name) for name in PHOTOS]
            description = f"the {len(images)} bundled photos"
    else:
        images = dataset.images if isinstance(dataset, Dataset) else dataset
        description = f"the {len(images)} given images"
    arr = images if isinstance(images, np.ndarray) else None
    if arr is not None and arr.ndim == 4 and tuple(arr.shape[1:]) == tuple(probe.input_shape):
        fitted = np.asarray(probe.check_images(arr))
    else:
        fitted = fit_to(list(images) if not isinstance(images, list) else images, probe)
    if len(fitted) == 0:
        raise ValueError("The dataset is empty: give at least one image.")
    return fitted, description


def fit_image(image, target, name: str = "image") -> np.ndarray:
    """One image (H, W[, C]) as ``fit_to`` makes it, (H, W, C); a bad one's error names it."""
    return fit_to([to_float_image(image, source=f"image {name!r}")], target)[0]


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
