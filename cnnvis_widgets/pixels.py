"""Arrays → displayable pixels: scaling, colormaps and montages (shared by widgets and export)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cnnvis_widgets import validation


def grid_shape(n: int, ncols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding n tiles."""
    if n <= 0:
        raise ValueError(f"A grid needs at least one tile, got {n}.")
    cols = ncols or math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def normalize(maps: np.ndarray, axis: Sequence[int] | None = None, eps: float = 1e-8) -> np.ndarray:
    """Min-max scale to [0, 1], per tile when ``axis`` names the within-tile axes."""
    maps = np.asarray(maps, np.float32)
    lo = maps.min(axis=axis, keepdims=axis is not None)
    hi = maps.max(axis=axis, keepdims=axis is not None)
    return (maps - lo) / np.maximum(hi - lo, eps)


def feature_map_tiles(maps: np.ndarray, per: str = "map") -> np.ndarray:
    """A layer's feature maps (H, W, C) as C tiles (C, H, W, 1) in [0, 1]: min-max per map
    (``per="map"``) or over the whole layer (``per="layer"``, so tiles compare)."""
    if per not in ("map", "layer"):
        raise ValueError(f"normalization must be 'map' or 'layer', got {per!r}.")
    tiles = np.moveaxis(np.asarray(maps, np.float32), -1, 0)[..., None]
    return normalize(tiles, axis=(1, 2, 3) if per == "map" else None)


def check_colormap(name, what: str = "colormap") -> str:
    """``name`` if it is a matplotlib colormap's, else a ValueError with the closest names."""
    from matplotlib import colormaps

    if not isinstance(name, str) or name not in colormaps:
        raise ValueError(
            f"Unknown {what} {name!r}.{validation.did_you_mean(name, colormaps)} Any matplotlib "
            "colormap name works, e.g. 'inferno', 'viridis' (sequential) or 'RdBu_r' (diverging)."
        )
    return name


def colorize(maps: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Single-channel maps in [0, 1], shape (..., H, W) or (..., H, W, 1) → RGB (..., H, W, 3)."""
    from matplotlib import colormaps

    maps = np.asarray(maps, np.float32)
    if maps.shape[-1] == 1:
        maps = maps[..., 0]
    lut = colormaps[cmap](np.linspace(0, 1, 256))[:, :3].astype(np.float32)
    return lut[np.clip(np.rint(maps * 255), 0, 255).astype(np.int32)]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 (values outside are clipped)."""
    return np.clip(np.rint(np.asarray(images, np.float32) * 255), 0, 255).astype(np.uint8)


def pixel_zoom(tile_hw: Sequence[int], tile_px: int, coarse: float = 5.0, fine: float = 2.0) -> int:
    """The integer factor to enlarge tiles of ``tile_hw`` pixels by before a montage shown at
    ``tile_px`` screen pixels a tile: 1 unless one tile pixel would cover more than ``coarse``
    screen pixels (a 3x3 kernel, an 8x8 feature map), else enough that the 1-pixel padding between
    tiles covers at most ``fine`` screen pixels."""
    per_pixel = tile_px / max(tile_hw)
    return 1 if per_pixel <= coarse else int(np.ceil(per_pixel / fine))


def enlarge(images: np.ndarray, factor: int) -> np.ndarray:
    """(N, H, W, C) → (N, factor*H, factor*W, C), each pixel a factor × factor block."""
    if factor == 1:
        return images
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def montage(
    images: np.ndarray, ncols: int | None = None, pad: int = 1, pad_value: float = 1.0, row_gap: int = 0
) -> np.ndarray:
    """N tiles (N, H, W, C) → one image (rows*(H+pad+row_gap)-pad, cols*(W+pad)-pad, C), row-major.

    ``row_gap`` leaves a band under each row (for labels).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"montage expects tiles of shape (N, H, W, C), got {images.shape}.")
    n, h, w, c = images.shape
    rows, cols = grid_shape(n, ncols)
    step_y = h + pad + row_gap
    out = np.full((rows * step_y - pad, cols * (w + pad) - pad, c), pad_value, images.dtype)
    for i, tile in enumerate(images):
        r, k = divmod(i, cols)
        out[r * step_y : r * step_y + h, k * (w + pad) : k * (w + pad) + w] = tile
    return out


def tile_at(
    y: float,
    x: float,
    n: int,
    tile_hw: tuple[int, int],
    ncols: int | None = None,
    pad: int = 1,
    row_gap: int = 0,
) -> int | None:
    """Index of the tile under montage pixel (y, x), or None on padding / outside."""
    rows, cols = grid_shape(n, ncols)
    h, w = tile_hw
    r, dy = divmod(int(y), h + pad + row_gap)
    k, dx = divmod(int(x), w + pad)
    if not (0 <= r < rows and 0 <= k < cols) or dy >= h or dx >= w:
        return None
    i = r * cols + k
    return i if i < n else None


def to_rgb(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 1|3|4) → (..., H, W, 3): grey repeated, alpha dropped."""
    images = np.asarray(images, np.float32)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]


def display_maps(
    maps: np.ndarray, signed: bool = False, percentile: float = 99.5, shared: bool = False
) -> np.ndarray:
    """(N, H, W) maps → [0, 1] for colouring: 0 → 0 (unsigned) or 0.5 (signed, ± around it).

    Each map is scaled by its ``percentile`` of |value| and clipped, so a few extreme pixels
    (common in gradient maps) do not leave the rest dark. ``shared``: one scale (and offset)
    for all maps, so equal colours mean equal values across them (a batch compared side by side).
    """
    maps = np.asarray(maps, np.float32)
    axes = (0, 1, 2) if shared else (1, 2)
    lo = np.zeros((len(maps), 1, 1), np.float32) if signed else maps.min(axis=axes, keepdims=True)
    scale = np.percentile(np.abs(maps - lo), percentile, axis=axes, keepdims=True)
    scale = np.where(scale > 0, scale, np.abs(maps - lo).max(axis=axes, keepdims=True))
    scaled = (maps - lo) / np.where(scale > 0, scale, 1)
    return np.clip(0.5 + 0.5 * scaled if signed else scaled, 0.0, 1.0)


def colormap_css(cmap: str, stops: int = 11) -> str:
    """A CSS ``linear-gradient`` (left to right) of a matplotlib colormap, for a colour bar."""
    rgb = to_uint8(colorize(np.linspace(0, 1, stops)[None], cmap)[0])
    return "linear-gradient(to right, " + ", ".join(f"rgb({r},{g},{b})" for r, g, b in rgb) + ")"


def overlay(images: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Heat maps (RGB) blended over images: ``(1 - opacity) * image + opacity * heat``."""
    return (1.0 - opacity) * to_rgb(images) + opacity * np.asarray(heat, np.float32)
