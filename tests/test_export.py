"""export.py's figures of the views, on made-up data: what each panel holds, read back off the
matplotlib figure (the pictures' pixels, the curves' points, the texts)."""

from types import SimpleNamespace

import numpy as np

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
