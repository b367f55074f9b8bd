"""pixels.py, arrays to displayable pixels: each function on tiny hand-made arrays, against values
worked out by hand or through matplotlib's own colormap lookup."""

import numpy as np
import pytest
from matplotlib import colormaps

from cnnvis_widgets import pixels as px


@pytest.mark.parametrize(
    "n, ncols, shape", [(1, None, (1, 1)), (2, None, (1, 2)), (5, None, (2, 3)), (9, None, (3, 3)),
                        (10, None, (3, 4)), (10, 4, (3, 4)), (3, 1, (3, 1)), (7, 10, (1, 10))],
)  # fmt: skip
def test_grid_shape_is_near_square_or_has_the_columns_asked(n, ncols, shape):
    """(rows, cols): ceil(sqrt(n)) columns unless ncols is given, as many rows as needed."""
    assert px.grid_shape(n, ncols) == shape


def test_grid_shape_refuses_an_empty_grid():
    """No tiles: an error saying how many were given."""
    with pytest.raises(ValueError, match="at least one tile, got 0"):
        px.grid_shape(0)


def test_normalize_scales_to_unit_range_globally_or_per_tile():
    """Min-max over everything, or over the named axes per tile; a flat map gives zeros, not NaN."""
    maps = np.array([[[2.0, 4.0], [6.0, 4.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    np.testing.assert_allclose(px.normalize(maps[:1]), [[[0.0, 0.5], [1.0, 0.5]]])
    np.testing.assert_allclose(px.normalize(maps), (maps + 1) / 7)
    per_tile = px.normalize(maps, axis=(1, 2))
    np.testing.assert_allclose(per_tile, [[[0.0, 0.5], [1.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])


@pytest.mark.parametrize("cmap", ["gray", "viridis", "magma"])
def test_colorize_is_matplotlibs_colormap_at_256_levels(cmap):
    """Values quantized to 256 levels and looked up in the colormap; the last axis of size 1 is
    dropped; values outside [0, 1] take the end colours."""
    values = np.array([[0.0, 0.2, 0.5], [0.77, 1.0, 1.5]])
    want = colormaps[cmap](np.rint(np.clip(values, 0, 1) * 255).astype(int))[..., :3]
    np.testing.assert_allclose(px.colorize(values, cmap), want, rtol=1e-6)
    np.testing.assert_allclose(px.colorize(values[None, ..., None], cmap), want[None], rtol=1e-6)
    np.testing.assert_allclose(px.colorize(np.array([-0.5]), cmap), px.colorize(np.array([0.0]), cmap))


def test_to_uint8_rounds_and_clips():
    """v -> round(255 v), clipped to 0..255."""
    got = px.to_uint8(np.array([-0.1, 0.0, 0.2, 0.5, 1.0, 1.2]))
    assert got.dtype == np.uint8 and got.tolist() == [0, 0, 51, 128, 255, 255]


@pytest.mark.parametrize(
    "tile_hw, tile_px, factor",
    [((3, 3), 72, 12), ((32, 32), 72, 1), ((8, 8), 72, 5), ((8, 4), 72, 5),
     ((10, 10), 50, 1), ((9, 9), 50, 3)],  # fmt: skip
)
def test_pixel_zoom_enlarges_only_tiles_whose_pixels_would_be_coarse(tile_hw, tile_px, factor):
    """1 while a tile pixel covers at most 5 screen pixels; else ceil(screen px per pixel / 2), so
    the 1-pixel padding stays at most 2 screen pixels wide (the larger side counts)."""
    assert px.pixel_zoom(tile_hw, tile_px) == factor


def test_enlarge_makes_each_pixel_a_block():
    """factor 2: every pixel a 2x2 block; factor 1: the array itself."""
    tiles = np.array([[[1], [2]], [[3], [4]]])[None]
    want = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(px.enlarge(tiles, 2)[0, ..., 0], want)
    assert px.enlarge(tiles, 1) is tiles


def test_montage_places_tiles_row_major_with_padding_and_label_bands():
    """3 tiles of 2x2 in 2 columns, 1 px padding of pad_value; an empty slot stays padding; a
    row_gap leaves that many extra rows under each row of tiles."""
    tiles = np.stack([np.full((2, 2, 1), v) for v in (0.1, 0.2, 0.3)])
    got = px.montage(tiles, pad=1, pad_value=1.0)[..., 0]
    want = [
        [0.1, 0.1, 1.0, 0.2, 0.2],
        [0.1, 0.1, 1.0, 0.2, 0.2],
        [1.0, 1.0, 1.0, 1.0, 1.0],
        [0.3, 0.3, 1.0, 1.0, 1.0],
        [0.3, 0.3, 1.0, 1.0, 1.0],
    ]
    np.testing.assert_allclose(got, want)
    banded = px.montage(tiles, pad=1, pad_value=0.0, row_gap=2)[..., 0]
    assert banded.shape == (2 * (2 + 1 + 2) - 1, 5)
    np.testing.assert_allclose(banded[5:7, :2], 0.3)  # the second row starts after tile, gap, pad
    np.testing.assert_allclose(banded[2:5], 0.0)
    assert px.montage(tiles, ncols=3).shape == (2, 8, 1)
    with pytest.raises(ValueError, match=r"tiles of shape \(N, H, W, C\), got \(3, 2, 2\)"):
        px.montage(tiles[..., 0])


@pytest.mark.parametrize("n, ncols, row_gap", [(5, None, 0), (5, None, 3), (7, 2, 1)])
def test_tile_at_is_the_inverse_of_montage(n, ncols, row_gap):
    """Every montage pixel maps back to the tile drawn there; padding, label bands, the empty slots
    of the last row and points outside give None."""
    tiles = np.stack([np.full((3, 4, 1), i + 1.0) for i in range(n)])
    mont = px.montage(tiles, ncols, pad=1, pad_value=0.0, row_gap=row_gap)[..., 0]
    for y in range(mont.shape[0]):
        for x in range(mont.shape[1]):
            want = int(mont[y, x]) - 1 if mont[y, x] else None
            assert px.tile_at(y + 0.5, x + 0.5, n, (3, 4), ncols, pad=1, row_gap=row_gap) == want, (y, x)
    assert px.tile_at(-1, 0, n, (3, 4), ncols) is None and px.tile_at(0, 10_000, n, (3, 4), ncols) is None


def test_to_rgb_repeats_grey_and_drops_alpha():
    """(.., 1) -> the grey value in all three channels; (.., 4) -> the first three; (.., 3) unchanged."""
    grey, rgba = np.array([[[0.25]]]), np.array([[[0.1, 0.2, 0.3, 0.9]]])
    np.testing.assert_allclose(px.to_rgb(grey), [[[0.25, 0.25, 0.25]]])
    np.testing.assert_allclose(px.to_rgb(rgba), [[[0.1, 0.2, 0.3]]])
    np.testing.assert_allclose(px.to_rgb(rgba[..., :3]), rgba[..., :3])


def test_display_maps_scales_each_map_by_its_percentile_unsigned_or_around_grey():
    """Unsigned: (m - min) / percentile; signed: 0.5 + 0.5 m / percentile of |m|; clipped to [0, 1]."""
    maps = np.array([[[5.0, 6.0, 7.0]], [[0.0, 2.0, 8.0]]])
    np.testing.assert_allclose(px.display_maps(maps, percentile=100), [[[0, 0.5, 1]], [[0, 0.25, 1]]])
    signed = np.array([[[-2.0, 0.0, 1.0, 2.0]]])
    np.testing.assert_allclose(px.display_maps(signed, signed=True, percentile=100), [[[0, 0.5, 0.75, 1]]])
    np.testing.assert_allclose(px.display_maps(np.zeros((1, 2, 2))), 0.0)  # no NaN from a flat map


def test_display_maps_keeps_an_outlier_from_darkening_the_rest():
    """A single extreme pixel is clipped to 1 and the others keep their spread (99th percentile)."""
    ramp = np.linspace(0, 1, 200)
    maps = np.concatenate([ramp, [1000.0]])[None, None]
    shown = px.display_maps(maps, percentile=99)[0, 0]
    scale = np.percentile(maps, 99)
    np.testing.assert_allclose(shown[:200], np.clip(ramp / scale, 0, 1), rtol=1e-5)
    assert shown[-1] == 1.0 and shown[199] > 0.9


def test_display_maps_shared_uses_one_scale_for_all_maps():
    """shared=True: equal values get equal colours across maps; otherwise each map is stretched."""
    maps = np.array([[[0.0, 1.0]], [[0.0, 4.0]]])
    np.testing.assert_allclose(px.display_maps(maps, percentile=100, shared=True), [[[0, 0.25]], [[0, 1]]])
    np.testing.assert_allclose(px.display_maps(maps, percentile=100), [[[0, 1]], [[0, 1]]])


def test_colormap_css_is_a_left_to_right_gradient_of_the_colormap():
    """Three stops of gray: black, the middle grey (round(0.5 * 255) = 128), white."""
    assert px.colormap_css("gray", stops=3) == (
        "linear-gradient(to right, rgb(0,0,0), rgb(128,128,128), rgb(255,255,255))"
    )


def test_overlay_blends_heat_over_the_image_in_rgb():
    """(1 - opacity) * image (grey made RGB) + opacity * heat."""
    image, heat = np.full((1, 1, 1, 1), 0.2), np.array([[[[1.0, 0.0, 0.0]]]])
    np.testing.assert_allclose(px.overlay(image, heat, opacity=0.25), [[[[0.4, 0.15, 0.15]]]])
    np.testing.assert_allclose(px.overlay(image, heat, opacity=0.0), [[[[0.2, 0.2, 0.2]]]])
