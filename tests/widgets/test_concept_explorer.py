"""ConceptExplorer, headless on digits-cnn: the layer, the target, the method, a click on a card,
decompose and back up each change what is shown, and what is shown is the engine's (``cw.concepts``,
``cw.decompose``, ``cw.concept_examples``, ``ascent.progressive_filters``) for the same inputs; a bad
target is reported in the status line, not raised."""

import numpy as np
import pytest
from PIL import Image

import cnnvis_widgets as cw
from cnnvis_widgets import data
from cnnvis_widgets import pixels as px
from cnnvis_widgets.engine import ascent
from cnnvis_widgets.engine.concepts import lower_layer
from cnnvis_widgets.widgets import ConceptExplorer
from cnnvis_widgets.widgets.dashboard import Dashboard

K = 4  # concepts shown
PATCHES = 2


@pytest.fixture
def explorer():
    ce = ConceptExplorer("digits-cnn", layer="conv4", top_k=K, patches=PATCHES, steps=0)
    assert ce.wait(300), ce.status.value
    yield ce
    ce.close()


def _engine(ce, layer="conv4", target=None, method="lrp"):
    return cw.concepts(ce.probe, ce.image, target, layer, top_k=K, method=method)


def _expected_overlay(ce, heatmap) -> np.ndarray:
    """The engine's heatmap over the image as the view should draw it: signed, 0 at the colormap's
    centre, blended with the opacity control's weight (uint8, as sent to the browser)."""
    heat = px.colorize(px.display_maps(heatmap[None], signed=True), ce.cmap)
    return px.to_uint8(px.overlay(ce.image[None], heat, ce.opacity.value))[0].astype(int)


def _assert_shows(ce, expected) -> None:
    """The view's result, card labels and large overlay are the engine's ``expected`` ConceptResult."""
    r = ce.result
    assert r.layer == expected.layer and r.within == expected.within and r.target == expected.target
    np.testing.assert_array_equal(r.channels, expected.channels)
    np.testing.assert_allclose(r.heatmaps, expected.heatmaps, rtol=1e-4, atol=1e-6)
    labels = list(ce.cards.labels.text)[:K]
    assert labels == [f"{c} · {s:+.1%}" for c, s in zip(expected.channels, expected.shares)]
    overlay = ce.main.tile_pixels(1).astype(int)
    assert np.abs(overlay - _expected_overlay(ce, expected.heatmaps[ce.selected])).max() <= 1


def _click_tile(grid, i: int) -> None:
    """Click tile ``i`` of an ImageGrid as the browser's mouse does (figure coordinates, y up)."""
    top, left, h, w = grid.tile_box(i)
    grid.click(left + w / 2, grid.mark.y[1] - (top + h / 2))


def test_first_view_is_the_engines_concepts_with_their_top_patches(explorer):
    ce = explorer
    _assert_shows(ce, _engine(ce))
    assert ce.selected == 0 and ce.channel == int(ce.result.channels[0])
    dataset, _ = data.reference_dataset(ce.probe)
    for i, channel in enumerate(ce.result.channels[:2]):
        found = cw.concept_examples(ce.probe, dataset, "conv4", int(channel), ce.result.target, k=PATCHES)
        np.testing.assert_array_equal(ce.examples[i].indices, found.indices)
        np.testing.assert_allclose(ce.examples[i].patches, found.patches)
    # the cards: a column a concept, the heatmap row then the patch rows, nothing grey left
    assert ce.cards.tile_shape[0] == K * (1 + PATCHES) and ce.cards.ncols == K
    tiles = [ce.cards.tile_pixels(i).astype(int) for i in range(K * (1 + PATCHES))]
    assert all(np.abs(t - 128).max() > 20 for t in tiles)
    assert "450 digits test images" in ce.cards.caption.value and "⚠" not in ce.status.value


def test_layer_change_shows_that_layers_concepts(explorer):
    ce = explorer
    before = ce.cards.pixels.copy()
    ce.layer_slider.value = "conv3"
    assert ce.wait(300), ce.status.value
    _assert_shows(ce, _engine(ce, "conv3"))
    assert not np.array_equal(ce.cards.pixels, before)
    assert "conv3: 4 concepts for class" in ce.status.value


def test_target_change_explains_that_class(explorer):
    ce = explorer
    predicted = ce.result.target
    other = (predicted + 1) % 10
    before = ce.main.pixels.copy()
    ce.target.value = str(other)
    assert ce.wait(300), ce.status.value
    assert ce.result.target == other
    _assert_shows(ce, _engine(ce, target=other))
    assert not np.array_equal(ce.main.pixels, before)


def test_method_change_shows_gradient_times_activation(explorer):
    ce = explorer
    before = ce.main.pixels.copy()
    assert not ce.composite.disabled
    ce.method.value = "grad_x_act"
    assert ce.wait(300), ce.status.value
    assert ce.composite.disabled and ce.result.method == "grad_x_act"
    _assert_shows(ce, _engine(ce, method="grad_x_act"))
    assert not np.array_equal(ce.main.pixels, before)


def test_clicking_a_card_overlays_its_heatmap_without_a_job(explorer):
    ce = explorer
    generation, finished = ce.runner.generation, ce.runner.finished
    before = ce.main.pixels.copy()
    _click_tile(ce.cards, K + 2)  # the third concept's heatmap tile (second row)
    assert ce.selected == 2 and ce.cards.selected == 2  # its card is framed on its top tile
    expected = _engine(ce)
    assert np.abs(ce.main.tile_pixels(1).astype(int) - _expected_overlay(ce, expected.heatmaps[2])).max() <= 1
    assert not np.array_equal(ce.main.pixels, before)
    assert f"conv4:{int(expected.channels[2])}" in ce.about.value
    assert (ce.runner.generation, ce.runner.finished) == (generation, finished) and not ce.runner.busy
    ce.opacity.value = 0.0  # the overlay without heat is the image itself
    np.testing.assert_array_equal(ce.main.tile_pixels(1), ce.main.tile_pixels(0))
    assert (ce.runner.generation, ce.runner.finished) == (generation, finished)


def test_decompose_shows_the_engines_split_and_back_up_returns(explorer):
    ce = explorer
    ce.select(int(ce.result.channels[1]))
    channel = ce.channel
    lower = lower_layer(ce.probe, "conv4")
    assert lower == "conv3" and not ce.decompose_button.disabled and ce.back_button.disabled
    ce.decompose_button.click()
    assert ce.wait(300), ce.status.value
    assert ce.layer_slider.value == "conv3" and ce.path == [("conv4", channel)]
    _assert_shows(ce, cw.decompose(ce.probe, ce.image, "conv4", channel, top_k=K))
    assert ce.result.within == ("conv4", channel)
    assert f"conv4:{channel} → <b>conv3</b>" in ce.breadcrumb.value and not ce.back_button.disabled
    assert f"inside conv4:{channel}" in ce.status.value
    assert f"of conv4:{channel}&#x27;s relevance" in ce.about.value  # the share is of that channel's

    ce.back_button.click()
    assert ce.wait(300), ce.status.value
    assert ce.layer_slider.value == "conv4" and ce.path == [] and ce.back_button.disabled
    assert ce.channel == channel and ce.selected == 1  # the concept decomposed is selected again
    _assert_shows(ce, _engine(ce))
    assert ce.breadcrumb.value.endswith("<b>conv4</b>")


def test_moving_the_layer_slider_leaves_the_decomposition(explorer):
    ce = explorer
    ce.decompose()
    assert ce.wait(300) and ce.path
    ce.layer_slider.value = "conv4"  # the user's own move: a fresh start there
    assert ce.wait(300)
    assert ce.path == [] and ce.result.within is None
    _assert_shows(ce, _engine(ce))


@pytest.mark.parametrize(
    "text, valid",
    [
        ("seven", "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"),
        ("conv9:1", "Valid layers: conv1, conv2"),
        ("12", "valid: 0..9"),
    ],
)
def test_a_bad_target_is_shown_not_raised_and_the_next_one_works(explorer, text, valid):
    ce = explorer
    shown = ce.result
    ce.target.value = text
    assert ce.wait(30)
    assert "⚠" in ce.status.value and valid in ce.status.value
    assert ce.result is shown  # the last concepts stay
    ce.target.value = "3"
    assert ce.wait(300)
    assert "⚠" not in ce.status.value and ce.result.target == 3


def test_feature_visualizations_fill_in_and_are_the_engines():
    ce = ConceptExplorer("digits-cnn", layer="conv4", top_k=2, patches=1, steps=8)
    try:
        assert ce.wait(300), ce.status.value
        channels = ce.result.channels
        sizes, steps = ascent.progressive_stages(ce.probe, 32, 8)
        drawn = ascent.progressive_filters(
            ce.probe, "conv4", channels, sizes=sizes, steps=steps, share_layers=True
        )
        np.testing.assert_allclose(np.stack(ce.features), drawn.images, atol=1e-5)
        expected = px.to_uint8(px.to_rgb(drawn.images)).astype(int)
        for i in range(2):  # the first row of cards (inside the selected card's frame)
            inside = (slice(3, -3), slice(3, -3))
            assert np.abs(ce.cards.tile_pixels(i).astype(int)[inside] - expected[i][inside]).max() <= 1
        assert ce.cards.tile_shape[0] == 2 * 3  # feature visualization, heatmap, one patch
    finally:
        ce.close()


def test_save_writes_the_views_figure(explorer, tmp_path):
    explorer.decompose()
    assert explorer.wait(300)
    path = explorer.save(tmp_path / "concepts.png")
    width, height = Image.open(path).size
    assert width > 600 and height > 600


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Valid: lrp, grad_x_act"):
        ConceptExplorer("digits-cnn", method="gradcam", autorun=False)
    with pytest.raises(ValueError, match="choose one of conv1, conv2"):
        ConceptExplorer("digits-cnn", layer="fc1", autorun=False)
    with pytest.raises(ValueError, match="Unknown target .seven."):
        ConceptExplorer("digits-cnn", target="seven", autorun=False)


def test_the_dashboards_concepts_tab_shares_the_image():
    board = Dashboard("digits-cnn", views=["saliency", "concepts"], start="saliency")
    try:
        saliency = board.views["saliency"]
        concepts = board.open_view("concepts")
        assert isinstance(concepts, ConceptExplorer) and board.tabs.titles == ("Saliency", "Concepts")
        name = saliency.image_picker.names[4]
        saliency.image_picker.value = name
        assert concepts.image_picker.value == name
    finally:
        board.close()
