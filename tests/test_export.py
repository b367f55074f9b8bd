"""export.py's figures of the views, on made-up data: what each panel holds, read back off the
matplotlib figure (the pictures' pixels, the curves' points, the texts)."""

from types import SimpleNamespace

import numpy as np
import pytest

from cnnvis_widgets import export

RNG = np.random.default_rng(0)


def _images(fig):
    """Every image drawn in the figure and its subfigures, in drawing order."""
    return [im.get_array() for ax in fig.get_axes() for im in ax.get_images()]


def _texts(fig):
    out = [t.get_text() for ax in fig.get_axes() for t in ax.texts + [ax.title]]
    subfigures = [fig, *fig.subfigs, *(s for sub in fig.subfigs for s in sub.subfigs)]
    return out + [s._suptitle.get_text() for s in subfigures if s._suptitle is not None]


def test_saliency_figure_holds_the_maps_the_top5_and_the_sanity_row():
    tiles, cascade = RNG.random((4, 8, 8, 3)), RNG.random((3, 8, 8, 3))
    fig = export.saliency_figure(
        tiles, ["a", "b", "c", "d"], [("cat", 0.9), ("dog", 0.05)], "model · gradcam · batch",
        cascade=(cascade, ["trained", "fc", "conv4"]),
    )  # fmt: skip
    drawn = _images(fig)
    assert len(drawn) == 7
    for got, want in zip(drawn, list(tiles) + list(cascade)):
        np.testing.assert_allclose(got, want)
    texts = "\n".join(_texts(fig))
    assert " 0.900  cat" in texts and " 0.050  dog" in texts and "model · gradcam · batch" in texts
    assert "sanity check" in texts and "conv4" in texts
    assert len(_images(export.saliency_figure(tiles[:1], ["a"], [], "t"))) == 1  # no sanity row


def test_feature_maps_figure_adds_the_selected_filters_patches_and_optimized_image():
    maps = RNG.random((6, 5, 5, 1))
    assert len(_images(export.feature_maps_figure(maps, list("abcdef"), "conv2"))) == 6
    patches, optimized = RNG.random((2, 4, 4, 1)), RNG.random((9, 9, 1))
    detail = SimpleNamespace(unit=3, values=np.array([2.5, 1.25]), patches=patches, optimized=optimized)
    fig = export.feature_maps_figure(maps, list("abcdef"), "conv2", detail, patches_of="the test digits")
    drawn = _images(fig)
    assert len(drawn) == 9
    np.testing.assert_allclose(drawn[6], detail.patches[0, ..., 0])
    np.testing.assert_allclose(drawn[8], detail.optimized[..., 0])
    texts = _texts(fig)
    assert "2.50" in texts and "filter 3: top 2 patches over the test digits" in texts


def test_training_figure_plots_the_history_and_the_kernels():
    history = dict(
        loss_step=[1, 2, 3], loss=[2.3, 1.9, 1.2], eval_step=[0, 3], test_acc=[0.1, 0.6], train_acc=[0.1, 0.7]
    )
    kernels = RNG.random((4, 3, 3, 1))
    curves = {"test": ("#d62728", "test_acc"), "train": ("#2ca02c", "train_acc")}
    fig = export.training_figure(history, curves, kernels, {"conv1": 1, "conv2": 0})
    loss_ax, acc_ax = fig.subfigs[0].get_axes()
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), history["loss"])
    assert [line.get_label() for line in acc_ax.lines] == ["test", "train"]
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), history["train_acc"])
    assert acc_ax.lines[0].get_color() == "#d62728"
    drawn = _images(fig)
    assert len(drawn) == 4
    np.testing.assert_allclose(drawn[2], kernels[2, ..., 0])
    assert "conv1 kernels at step 3 · dead filters: conv1 1 · conv2 0" in _texts(fig)


def test_embedding_figure_rings_the_query_and_lists_its_neighbours_per_space():
    coords = RNG.random((10, 2))
    points = SimpleNamespace(
        names=["zero", "one"], codes=np.array([0, 1] * 5), images=RNG.random((10, 4, 4, 1)), labelled=True
    )
    plain = export.embedding_figure(coords, points, ["#000000", "#ff0000"], "emb", ("PC 1", "PC 2"))
    (ax,) = plain.get_axes()
    assert len(ax.collections) == 2 and ax.get_xlabel() == "PC 1"
    np.testing.assert_allclose(ax.collections[1].get_offsets(), coords[1::2])
    found = {"feature": np.array([2, 4, 5]), "pixel": np.array([7, 9, 1])}
    fig = export.embedding_figure(
        coords, points, ["#000000", "#ff0000"], "emb", ("PC 1", "PC 2"), query=0, neighbours=found
    )
    scatter = fig.subfigs[0].get_axes()[0]
    np.testing.assert_allclose(scatter.collections[-1].get_offsets(), coords[[0, 2, 4, 5]])  # the rings
    drawn = _images(fig)
    assert len(drawn) == 8  # the query and 3 neighbours, per space
    np.testing.assert_allclose(drawn[5], points.images[7, ..., 0])
    texts = _texts(fig)
    assert "feature\n2/3" in texts and "pixel\n0/3" in texts  # 2 and 4 share the query's class; 7, 9, 1 not


def test_save_png_writes_the_pixels_enlarged_by_scale(tmp_path):
    """Floats in [0, 1] become round(255 v), each pixel a scale x scale block; (H, W, 1) is a
    grey PNG, (H, W, 4) keeps its alpha, uint8 is written as is; missing folders are made."""
    from PIL import Image

    rgb = RNG.random((3, 2, 3))
    path = export.save_png(rgb, tmp_path / "new" / "rgb.png", scale=2)
    got = np.asarray(Image.open(path))
    want = np.rint(rgb * 255).astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1)
    assert got.shape == (6, 4, 3)
    np.testing.assert_array_equal(got, want)
    grey = Image.open(export.save_png(np.full((2, 2, 1), 0.2), tmp_path / "grey.png"))
    assert grey.mode == "L" and np.asarray(grey).tolist() == [[51, 51], [51, 51]]
    rgba = np.asarray(Image.open(export.save_png(np.full((1, 1, 4), 1.0), tmp_path / "rgba.png")))
    assert rgba.tolist() == [[[255, 255, 255, 255]]]
    raw = np.array([[[7, 8, 9]]], np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(export.save_png(raw, tmp_path / "raw.png"))), raw)


def test_grid_figure_draws_each_tile_with_its_label_and_the_title():
    """One axes per grid cell (5 tiles: 2 x 3, the last cell empty), grey tiles through the colormap
    on 0..1, RGB tiles clipped; labels above the tiles, the title on top; 1.1 in a tile (+0.4 in
    for the title)."""
    grey = RNG.random((5, 4, 4, 1))
    fig = export.grid_figure(grey, [f"#{i}" for i in range(5)], title="conv2", cmap="magma")
    assert tuple(fig.get_size_inches()) == pytest.approx((3 * 1.1, 2 * 1.1 + 0.4))
    assert len(fig.axes) == 6 and not fig.axes[5].get_images()
    drawn = _images(fig)
    assert len(drawn) == 5
    for got, want in zip(drawn, grey[..., 0]):
        np.testing.assert_allclose(got, want)
    assert {im.get_cmap().name for ax in fig.axes for im in ax.get_images()} == {"magma"}
    assert {tuple(im.get_clim()) for ax in fig.axes for im in ax.get_images()} == {(0, 1)}
    assert [ax.get_title() for ax in fig.axes] == ["#0", "#1", "#2", "#3", "#4", ""]
    assert "conv2" in _texts(fig)
    rgb = RNG.uniform(-0.5, 1.5, (2, 3, 3, 3))
    np.testing.assert_allclose(_images(export.grid_figure(rgb))[1], np.clip(rgb[1], 0, 1))


def test_figures_show_themselves_as_png_of_their_size_at_100_dpi():
    """export.figure() makes a Figure Jupyter shows as PNG (its _repr_png_): width x height inches x 100."""
    import io

    from PIL import Image

    fig = export.figure(figsize=(2.0, 1.5))
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (200, 150)
    assert Image.open(io.BytesIO(export.figure_png(fig, dpi=50))).size == (100, 75)


def test_save_grid_writes_the_grid_figure_at_its_dpi(tmp_path):
    """4 tiles, no title: 2 x 2 cells of 1.1 in at 150 dpi is a 330 x 330 PNG, in a new folder."""
    from PIL import Image

    path = export.save_grid(RNG.random((4, 5, 5, 3)), tmp_path / "out" / "grid.png", labels=list("abcd"))
    assert path == tmp_path / "out" / "grid.png" and Image.open(path).size == (330, 330)


def test_filter_detail_figure_fades_where_the_filter_did_not_look_and_marks_stages():
    """With an attribution, a middle panel: the image with alpha = attribution / its 95th
    percentile, clipped; each stage start a dashed line half a step after it; curve over steps 1..n."""
    image, attribution = RNG.random((8, 8, 1)), RNG.random((8, 8)) * 3
    objective = np.linspace(0.0, 2.0, 12)
    fig = export.filter_detail_figure(image, objective, "conv2 · 3", attribution, stage_starts=[4])
    assert len(fig.axes) == 3 and fig.axes[1].get_title() == "where it looks"
    faded = fig.axes[1].get_images()[0].get_array()
    np.testing.assert_allclose(faded[..., :3], np.repeat(image, 3, axis=-1))
    np.testing.assert_allclose(faded[..., 3], np.clip(attribution / np.percentile(attribution, 95), 0, 1))
    curve, stage = fig.axes[2].get_lines()
    np.testing.assert_allclose(curve.get_xdata(), np.arange(1, 13))
    np.testing.assert_allclose(curve.get_ydata(), objective)
    assert list(stage.get_xdata()) == [4.5, 4.5] and stage.get_linestyle() == "--"
    assert "full size" in _texts(fig)
    assert len(export.filter_detail_figure(image, objective, "t").axes) == 2  # no attribution: no middle


def _concept_result(k: int = 2, size: int = 8):
    heatmaps = RNG.normal(size=(k, size, size)).astype(np.float32)
    return SimpleNamespace(
        layer="conv4", channels=np.array([7, 3][:k]), shares=np.array([0.25, -0.05][:k]), heatmaps=heatmaps,
        target=1, target_layer=None, within=("fc1", 2), method="lrp",
    )  # fmt: skip


def test_concept_cards_a_column_a_concept_and_grey_where_an_example_is_hardly_relevant():
    image = RNG.uniform(size=(8, 8, 1)).astype(np.float32)
    result = _concept_result()
    patch = lambda value: np.full((4, 4, 1), value, np.float32)  # noqa: E731
    examples = [
        SimpleNamespace(patches=np.stack([patch(1.0), patch(0.0)]), values=np.array([2.0, 0.6])),
        SimpleNamespace(patches=np.stack([patch(1.0), patch(0.0)]), values=np.array([2.0, 0.4])),  # < 1/4
    ]
    features = [np.zeros((16, 16, 1), np.float32), None]
    tiles, labels = export.concept_cards(image, result, examples, features, patches=2, opacity=1.0)
    assert tiles.shape == (2 * 4, 8, 8, 3) and labels == ["7 · +25.0%", "3 · -5.0%"] + [""] * 6
    np.testing.assert_array_equal(tiles[0], 0.0)  # feature visualization (resized to the tile)
    np.testing.assert_array_equal(tiles[1], 0.5)  # none yet: grey
    heat = export.concept_overlays(image, result.heatmaps, opacity=1.0)
    np.testing.assert_allclose(tiles[2:4], heat)  # the heatmaps over the image
    np.testing.assert_allclose(tiles[4:6], 1.0)  # the best patches
    np.testing.assert_allclose(tiles[6], 0.0)  # a relevant second patch
    np.testing.assert_allclose(tiles[7], 0.5)  # a second patch hardly relevant: grey


def test_concepts_figure_draws_the_main_tiles_above_the_cards_with_their_rows_named():
    image = RNG.uniform(size=(8, 8, 3)).astype(np.float32)
    result = _concept_result()
    probe = SimpleNamespace(class_name=lambda i: f"digit {i}")
    main, main_labels = export.concept_main(probe, image, result, 1)
    cards, labels = export.concept_cards(image, result, [None, None], None, patches=1)
    rows = export.concept_rows(False, 1)
    title = export.concept_title(probe, result)
    texts = _texts(export.concepts_figure(main, main_labels, cards, labels, rows, title, "path"))
    assert main_labels == ["target class digit 1", "conv4:3 · -5.0%"]
    assert rows == ["heatmap on the image", "top patches"]
    assert "conv4 inside fc1:2: 2 concepts for class digit 1 (LRP)" in texts
    assert {"heatmap on the image", "top patches", "7 · +25.0%", "3 · -5.0%", "path"} <= set(texts)
    assert len(_images(export.concepts_figure(main, main_labels, cards, labels, rows, title))) == 2 + 2 * 2
