"""EmbeddingExplorer, headless: the scatter is the engine's embedding, colours follow labels, hover
and click (as bqplot sends them) show the image and both kinds of neighbours, the mosaic, errors,
a responsive kernel during a run, and export."""

import time

import numpy as np
import pytest
import traitlets
from PIL import Image

from cnnvis_widgets import data
from cnnvis_widgets import pixels as px
from cnnvis_widgets.engine.embedding import embed, features, mosaic, mosaic_layout
from cnnvis_widgets.widgets.embedding import EmbeddingExplorer
from cnnvis_widgets.widgets.grid import ImageGrid

N = 200


@pytest.fixture(scope="module")
def digits():
    test = data.digits_split()[1]
    return test.images[:N], test.labels[:N]


@pytest.fixture
def explorer():
    ex = EmbeddingExplorer("digits-cnn", limit=N, method="pca", k=6)
    assert ex.wait(120), ex.status.value
    yield ex
    ex.close()


def xy(ex):
    return np.stack([np.asarray(ex.scatter.x), np.asarray(ex.scatter.y)], axis=1)


def click(ex, i):
    ex.scatter._handle_custom_msgs(None, {"event": "element_click", "data": {"index": i, "x": 0.0, "y": 0.0}})


def hover(ex, i):
    ex.scatter._handle_custom_msgs(None, {"event": "hover", "data": {"index": i, "x": 0.0, "y": 0.0}})


def knn(points, i, k):
    """Independent k nearest neighbours of point i (itself excluded), nearest first."""
    flat = np.asarray(points, np.float64).reshape(len(points), -1)
    d = ((flat - flat[i]) ** 2).sum(axis=1)
    d[i] = np.inf
    return np.argsort(d, kind="stable")[:k]


def rendered(tiles, labels=None, **kwargs):
    return ImageGrid(tiles, labels, cmap="gray", **kwargs).pixels


def test_scatter_is_the_engines_embedding_and_follows_method_and_layer(digits):
    images, _ = digits
    ex = EmbeddingExplorer("digits-cnn", limit=N)  # t-SNE of the penultimate layer
    try:
        assert ex.wait(120), ex.status.value
        assert ex.result.layer == ex.layer_slider.value == "fc1" and ex.result.method == "tsne"
        expected = embed(features(ex.probe, images, "fc1"), "tsne", seed=0)
        np.testing.assert_allclose(xy(ex), expected, atol=1e-4)
        assert "t-SNE" in ex.status.value and f"{N} images" in ex.status.value

        tsne = xy(ex)
        ex.method.value = "pca"
        assert ex.wait(120)
        np.testing.assert_allclose(xy(ex), embed(features(ex.probe, images, "fc1"), "pca"), atol=1e-4)
        assert not np.allclose(xy(ex), tsne, atol=1e-2)
        assert ex._ax_x.label == "PC 1"

        fc1 = xy(ex)
        ex.layer_slider.value = "conv4"
        assert ex.wait(120)
        assert ex.result.layer == "conv4"
        np.testing.assert_allclose(xy(ex), embed(features(ex.probe, images, "conv4"), "pca"), atol=1e-3)
        assert not np.allclose(xy(ex), fc1, atol=1e-2)
    finally:
        ex.close()


def test_colours_follow_labels(explorer, digits):
    images, labels = digits
    np.testing.assert_array_equal(explorer.scatter.color, labels)  # names "0".."9": code = digit
    colours = explorer._sc.colors
    assert explorer._sc.domain == list(range(10)) and len(set(colours)) == 10
    for digit in range(10):  # the legend gives each label the colour the scale gives its points
        assert f"<span style='color:{colours[digit]}'>●</span> {digit} " in explorer.legend.value

    parity = np.where(labels % 2, "odd", "even")
    explorer.set_dataset((images, parity))
    assert explorer.wait(120)
    assert explorer.result.points.names == ["even", "odd"]
    np.testing.assert_array_equal(explorer.scatter.color, labels % 2)
    assert (
        explorer._sc.domain == [0, 1] and "even" in explorer.legend.value and "odd" in explorer.legend.value
    )


def test_click_selects_and_shows_feature_and_pixel_neighbours(explorer, digits):
    images, labels = digits
    i, k = 17, 6
    click(explorer, i)
    assert explorer.selected == i
    assert explorer.scatter.selected is not None and list(explorer.scatter.selected) == [i]
    feats = features(explorer.probe, images, "fc1")
    for space, grid, header, points in (
        ("feature", explorer.feature_grid, explorer.feature_header, feats),
        ("pixel", explorer.pixel_grid, explorer.pixel_header, images),
    ):
        expected = knn(points, i, k)
        assert grid._shape[0] == k
        names = [str(label) for label in labels[expected]]
        assert list(grid.labels.text) == names
        np.testing.assert_array_equal(grid.pixels, rendered(images[expected], names, tile_px=56, ncols=k))
        same = int((labels[expected] == labels[i]).sum())
        assert f"{same}/{k} share the label {labels[i]}" in header.value, space
        assert explorer.agreement[space] == pytest.approx(same / k)
    # rings mark the point and its feature neighbours on the scatter
    ring = np.concatenate([[i], knn(feats, i, k)])
    np.testing.assert_allclose(explorer.rings.x, xy(explorer)[ring, 0])

    explorer.k.value = 3  # fewer neighbours
    assert explorer.feature_grid._shape[0] == 3 and explorer.pixel_grid._shape[0] == 3
    explorer.pixel_grid.selected = 1  # a click on a neighbour tile selects that neighbour
    assert explorer.selected == knn(images, i, 3)[1]


def test_hover_shows_the_image_in_the_preview(explorer, digits):
    images, labels = digits
    before = explorer.preview.pixels.copy()
    hover(explorer, 42)
    assert explorer.hovered == 42
    assert not np.array_equal(explorer.preview.pixels, before)
    np.testing.assert_array_equal(explorer.preview.pixels, rendered(images[42:43], ["x"], tile_px=96))
    assert list(explorer.preview.labels.text) == [f"#42 · {labels[42]}"]
    hover(explorer, 43)
    np.testing.assert_array_equal(explorer.preview.pixels, rendered(images[43:44], ["x"], tile_px=96))


def test_mosaic_view_shows_the_engines_mosaic_sized_by_the_grid(explorer, digits):
    images, _ = digits
    explorer.view.value = "mosaic"
    assert explorer.stage.children == (explorer.mosaic_grid,)
    cells = explorer.cells.value
    assert explorer.mosaic_grid.pixels.shape == (cells * 32, cells * 32, 3)
    coords = explorer.result.coords
    expected = px.to_uint8(px.colorize(mosaic(images, coords, (cells, cells)), "gray"))
    np.testing.assert_array_equal(explorer.mosaic_grid.pixels, expected)

    explorer.cells.value = 9
    assert explorer.mosaic_grid.pixels.shape == (9 * 32, 9 * 32, 3)
    layout = mosaic_layout(coords, (9, 9))
    row, col = np.argwhere(layout >= 0)[0]
    h = explorer.mosaic_grid.mark.y[1]  # a click as bqplot-image-gl's MouseInteraction sends it (y up)
    click_at = {"event": "click", "domain": {"x": col * 32 + 16, "y": h - (row * 32 + 16)}}
    explorer.mosaic_grid.mouse._handle_custom_msg(click_at, [])
    assert explorer.selected == layout[row, col]
    explorer.view.value = "scatter"
    assert explorer.stage.children == (explorer.figure,)


def test_bad_dataset_or_layer_shows_an_error_and_the_next_request_works(explorer, digits, monkeypatch):
    images, labels = digits
    with pytest.raises(ValueError, match="grayscale images with 1 channel"):
        EmbeddingExplorer("digits-cnn", np.zeros((10, 32, 32, 3), np.float32), autorun=False)

    explorer.set_dataset((images[:50], labels[:40]))
    assert "50 images but labels of shape (40,)" in explorer.status.value
    explorer.set_dataset(np.zeros((10, 32, 32, 3), np.float32))
    assert "⚠" in explorer.status.value and "got 3 channels" in explorer.status.value
    explorer.set_dataset(images[:2])
    assert "needs at least 3 images, got 2" in explorer.status.value
    assert len(explorer.points.images) == N  # the old dataset stays

    # the slider's trait refuses a layer it does not list, naming those it does (it used to keep it)
    with pytest.raises(traitlets.TraitError, match="'conv9' cannot be chosen here: choose one of conv1"):
        explorer.layer_slider.value = "conv9"

    from cnnvis_widgets.engine import embedding as emb

    def broken(*_args, **_kwargs):
        raise RuntimeError("embedding exploded")

    monkeypatch.setattr(emb, "embed", broken)  # an error inside the worker
    explorer.layer_slider.value = "pool3"
    assert explorer.wait(60)
    assert "RuntimeError: embedding exploded" in explorer.status.value
    monkeypatch.undo()

    explorer.set_dataset((images[:N], labels[:N]))
    assert explorer.wait(120)
    assert explorer.result.layer == "pool3" and "⚠" not in explorer.status.value
    assert explorer.runner._thread.is_alive()


def test_the_kernel_stays_responsive_while_the_embedding_runs(explorer, digits):
    images, _ = digits
    explorer.method.value = "tsne"  # seconds of t-SNE on the worker
    start = time.monotonic()
    hover(explorer, 7)
    click(explorer, 8)
    elapsed = time.monotonic() - start
    assert explorer.runner.busy  # the main-thread calls above finished while the job still runs
    assert elapsed < 1.5
    assert explorer.hovered == 7 and explorer.selected == 8
    assert explorer.result.method == "pca"  # nothing half-done was written
    np.testing.assert_array_equal(explorer.preview.pixels, rendered(images[7:8], ["x"], tile_px=96))
    assert explorer.wait(120)
    assert explorer.result.method == "tsne"


def test_save_writes_pngs_and_the_mosaic_view_exports_the_mosaic(explorer, tmp_path):
    path = explorer.save(tmp_path / "scatter.png")
    plain = Image.open(path).size
    assert plain[0] > 500 and plain[1] > 500
    click(explorer, 3)
    selected = Image.open(explorer.save(tmp_path / "selected.png")).size
    assert selected[1] > plain[1]  # the neighbour rows under the scatter
    explorer.view.value = "mosaic"
    fig = explorer.to_figure()
    assert fig.axes[0].images[0].get_array().shape[:2] == explorer.mosaic.shape[:2]


def test_a_newer_request_replaces_a_running_one_and_the_stale_result_is_dropped(explorer, digits):
    images, _ = digits
    finished = explorer.runner.finished
    drawn = []  # every x the scatter is given from now on
    explorer.scatter.observe(lambda change: drawn.append(np.asarray(change["new"]).copy()), "x")
    explorer.method.value = "tsne"  # starts seconds of t-SNE...
    time.sleep(0.2)
    explorer.seed.value = 1  # ...replaced by other t-SNEs (queued)...
    explorer.layer_slider.value = "pool3"
    explorer.method.value = "pca"  # ...replaced by PCA, the only one that may write
    assert explorer.wait(120)
    assert explorer.runner.finished == finished + 1
    assert (explorer.result.layer, explorer.result.method, explorer.result.seed) == ("pool3", "pca", 1)
    assert len(drawn) == 1  # the replaced t-SNE never reached the scatter
    expected = embed(features(explorer.probe, images, "pool3"), "pca")
    np.testing.assert_allclose(xy(explorer), expected, atol=1e-4)
