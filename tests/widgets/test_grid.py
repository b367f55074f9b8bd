"""widgets.grid.ImageGrid, headless: what the browser would be sent (pixels, figure box, labels,
caption) after updates, stale marking and clicks, against a montage laid out here by hand."""

import numpy as np
import pytest

from cnnvis_widgets.widgets.grid import FIT_WIDTH_PX, MAX_WIDTH_PX, ImageGrid, fitted_tile_px
from tests.widgets.test_activation_explorer import click_tile, expected_viridis

RNG = np.random.default_rng(0)


def _layout(tiles_u8, cols, gap=0):
    """Tiles (N, h, w, 3) uint8 in ``cols`` columns, 1 px white padding, ``gap`` white rows under
    each row: the montage the grid should send, built independently of images.montage."""
    n, h, w, _ = tiles_u8.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 1 + gap) - 1, cols * (w + 1) - 1, 3), 255, np.uint8)
    for i, tile in enumerate(tiles_u8):
        r, c = divmod(i, cols)
        out[r * (h + 1 + gap) : r * (h + 1 + gap) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return out


def _grey_u8(tiles):
    """Grey tiles (N, h, w, 1) in [0, 1] as the gray colormap shows them: round(255 v) in R, G, B."""
    return np.repeat(np.rint(np.clip(tiles, 0, 1) * 255).astype(np.uint8), 3, axis=-1)


def test_grey_tiles_with_labels_are_sent_as_the_montage_laid_out_by_hand():
    """5 grey 4x6 tiles at 24 px: 3 columns, a label band of ceil(14 * 4 / 24) = 3 rows; labels
    centred in the band under each tile (x right, y up); one frame sent, figure shown."""
    tiles = RNG.random((5, 4, 6, 1))
    grid = ImageGrid(tiles, [10, 11, 12, 13, 14], tile_px=24)
    np.testing.assert_array_equal(grid.pixels, _layout(_grey_u8(tiles), cols=3, gap=3))
    assert grid.frames == 1 and grid.tile_shape == (5, 4, 6) and grid.tile_pixels(4).shape == (4, 6, 3)
    assert list(grid.labels.text) == ["10", "11", "12", "13", "14"]
    height = 2 * (4 + 1 + 3) - 1
    np.testing.assert_allclose(grid.labels.x, [3, 10, 17, 3, 10])  # tile left + 6 / 2
    np.testing.assert_allclose(grid.labels.y, [height - (4 + 1.8)] * 3 + [height - (12 + 1.8)] * 2)
    assert grid.figure.layout.display is None and grid.figure.layout.width == "72px"  # 3 columns x 24


def test_rgb_tiles_are_clipped_and_viridis_tiles_are_matplotlibs_colours():
    """RGB(A) tiles: their first three channels, clipped, no labels: no band; one-channel tiles
    with cmap='viridis': matplotlib's viridis of each value."""
    rgba = RNG.uniform(-0.2, 1.2, (4, 3, 3, 4))
    grid = ImageGrid(rgba, tile_px=30)
    want = np.rint(np.clip(rgba[..., :3], 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(grid.pixels, _layout(want, cols=2))
    maps = RNG.random((3, 5, 5, 1))
    viridis = ImageGrid(maps, cmap="viridis", tile_px=30)
    for i in range(3):
        assert np.abs(viridis.tile_pixels(i).astype(int) - expected_viridis(maps[i]).astype(int)).max() <= 1


def test_tiny_tiles_are_enlarged_but_read_back_at_their_own_size():
    """enlarge_tiny: 3x3 tiles at 72 px are drawn 12x larger (72 / 3 / 2), so the padding stays thin;
    tile_shape and tile_pixels still give the 3x3 tiles."""
    tiles = RNG.random((4, 3, 3, 1))
    grid = ImageGrid(tiles, tile_px=72, enlarge_tiny=True)
    assert grid.zoom == 12 and grid.tile_shape == (4, 3, 3)
    assert grid.pixels.shape[:2] == (2 * 36 + 1, 2 * 36 + 1)  # 2 x 2 tiles of 36 px, 1 px between
    for i in range(4):
        np.testing.assert_array_equal(grid.tile_pixels(i), _grey_u8(tiles[i]))


@pytest.mark.parametrize("n, tile_px", [(1, 256), (4, 256), (9, 186), (100, 56), (400, 48)])
def test_fitted_tile_px_fills_the_fit_width_within_48_to_256(n, tile_px):
    """FIT_WIDTH_PX (560) // columns, between 48 and 256."""
    assert FIT_WIDTH_PX == 560 and fitted_tile_px(n) == tile_px


def test_the_figure_box_has_the_montages_aspect_and_a_width_cap():
    """Width: columns x tile size (fitted when tile_px=0), at most MAX_WIDTH_PX; height in the
    montage's proportion."""
    fit = ImageGrid(RNG.random((9, 8, 8, 1)), tile_px=0)
    assert fit.shown_tile_px == 186 and fit.figure.layout.width == "558px"
    assert fit.figure.layout.height == "558px"  # 3 x 3 tiles of 8 px, no labels: a square
    wide = ImageGrid(RNG.random((2, 8, 30, 1)), ["a", "b"], tile_px=600)
    h, w = wide.pixels.shape[:2]
    assert wide.figure.layout.width == f"{MAX_WIDTH_PX}px"
    assert wide.figure.layout.height == f"{MAX_WIDTH_PX * h / w:.0f}px"


def test_mark_stale_fades_the_tiles_at_once_and_the_next_frame_clears_it():
    """Stale: pixels faded to 40 % ink (v * 2 // 5 + 153), labels '…', the selection dropped, the
    caption set, no frame counted; the next update is sent even when throttled, and is fresh."""
    tiles = RNG.random((4, 5, 5, 1))
    grid = ImageGrid(tiles, list("abcd"), tile_px=30, max_fps=1e-3)
    grid.selected = 1
    plain = _layout(_grey_u8(tiles), cols=2, gap=int(np.ceil(14 * 5 / 30)))
    grid.mark_stale("conv2 · starting")
    np.testing.assert_array_equal(grid.pixels, (plain.astype(np.uint16) * 2 // 5 + 153).astype(np.uint8))
    assert grid.stale and grid.selected == -1 and grid.frames == 1
    assert list(grid.labels.text) == ["…"] * 4 and grid.caption.value == "conv2 · starting"
    newer = RNG.random((4, 5, 5, 1))
    assert grid.update(newer, list("abcd"), force=False, caption="conv2")
    assert not grid.stale and grid.frames == 2 and grid.caption.value == "conv2"
    np.testing.assert_array_equal(grid.pixels, _layout(_grey_u8(newer), cols=2, gap=3))
    assert list(grid.labels.text) == list("abcd")


def test_mark_stale_before_any_tiles_only_sets_the_caption():
    """Nothing shown yet: the figure stays hidden, the caption says what is coming."""
    grid = ImageGrid()
    grid.mark_stale("loading")
    assert grid.stale and grid.caption.value == "loading" and grid.figure.layout.display == "none"
    assert grid.frames == 0


def test_unforced_updates_beyond_max_fps_are_skipped():
    """At 0.001 frames/s, a burst of unforced updates sends at most one more frame; forced ones all go."""
    tiles = RNG.random((2, 4, 4, 1))
    grid = ImageGrid(tiles, tile_px=20, max_fps=1e-3)
    sent = [grid.update(tiles * 0.5, force=False) for _ in range(5)]
    assert sent.count(True) <= 1 and sent[-1] is False and grid.frames == 1 + sent.count(True)
    assert grid.update(tiles * 0.25) and grid.frames == 2 + sent.count(True)
    np.testing.assert_array_equal(grid.tile_pixels(0), _grey_u8(tiles[0] * 0.25))


def test_clicks_on_a_tile_select_it_and_clicks_on_padding_or_bands_do_nothing():
    """Each tile's centre selects it; padding, a label band or the empty last slot select nothing."""
    grid = ImageGrid(RNG.random((5, 4, 4, 1)), list("abcde"), tile_px=16)  # 3 columns, band of 4 rows
    for i in range(5):
        click_tile(grid, i)
        assert grid.selected == i
    h = grid.mark.y[1]
    for x, y_down in [(4, 1), (1, 5), (11, 10)]:  # the padding column, a label band, the empty 6th slot
        assert grid.click(x + 0.5, h - y_down - 0.5) is None and grid.selected == 4
    grid.mouse._handle_custom_msg({"event": "dblclick", "domain": {"x": 2, "y": h - 2}}, [])
    grid.mouse._handle_custom_msg({"event": "click", "domain": {}}, [])
    assert grid.selected == 4  # other events and clicks without coordinates are ignored


def test_new_tiles_of_another_shape_drop_the_selection():
    """A selection belongs to the tiles it was made on: more tiles, no selection, no frame."""
    grid = ImageGrid(RNG.random((4, 4, 4, 1)), tile_px=16)
    grid.selected = 3
    grid.update(RNG.random((6, 4, 4, 1)))
    assert grid.selected == -1 and not (grid.pixels == (255, 140, 0)).all(-1).any()


def test_tiles_that_are_not_a_batch_of_images_are_refused():
    """A single (H, W, C) image is refused, the message giving the shape it got."""
    with pytest.raises(ValueError, match=r"tiles of shape \(N, H, W, C\), got \(4, 4, 3\)"):
        ImageGrid(np.zeros((4, 4, 3)))


def test_the_label_band_follows_whether_labels_are_given():
    """Labels added or removed on tiles of the same shape: the montage of a grid made that way."""
    tiles = RNG.random((5, 4, 6, 1))
    grid = ImageGrid(tiles, tile_px=24)
    grid.update(tiles, list("abcde"))
    np.testing.assert_array_equal(grid.pixels, ImageGrid(tiles, list("abcde"), tile_px=24).pixels)
    grid.update(tiles)
    np.testing.assert_array_equal(grid.pixels, ImageGrid(tiles, tile_px=24).pixels)


def test_a_tile_size_change_while_stale_reaches_the_next_frame():
    """tile_px changed between mark_stale and the next frame: that frame is laid out at the new size."""
    tiles = RNG.random((4, 8, 8, 1))
    grid = ImageGrid(tiles, list("abcd"), tile_px=40)
    grid.mark_stale("next")
    grid.tile_px = 80
    grid.update(tiles, list("abcd"))
    assert grid.figure.layout.width == "160px"
