"""explore(): views in tabs, built when opened, sharing the model and the selected image."""

import numpy as np
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.widgets.dashboard import VIEWS, Dashboard


@pytest.fixture
def dashboard():
    board = cw.explore("digits-cnn", views=["filters", "saliency", "activations", "weights"])
    yield board
    board.close()


def test_only_the_open_tab_is_built_and_opening_a_tab_builds_its_view(dashboard):
    assert list(dashboard.views) == ["filters"]
    assert dashboard.tabs.titles == ("Filters", "Saliency", "Feature maps", "Weights")
    dashboard.tabs.selected_index = 3  # as a click on the tab does
    weights = dashboard.views["weights"]
    assert type(weights).__name__ == "WeightsView" and dashboard.tabs.children[3] is weights
    assert weights.probe is dashboard.probe and dashboard.views["filters"].probe is dashboard.probe


def test_the_selected_image_is_shared_between_views(dashboard):
    saliency = dashboard.open_view("saliency")
    activations = dashboard.open_view("activations")
    for view in (saliency, activations):
        assert view.wait(120)
    before = activations.grid.pixels.copy()
    name = saliency.image_picker.names[5]
    saliency.image_picker.value = name
    assert activations.image_picker.value == name
    assert activations.wait(120) and saliency.wait(120)
    assert not np.array_equal(activations.grid.pixels, before), "the feature maps did not follow the image"
    np.testing.assert_array_equal(dashboard.image, saliency.image_picker.images[name])

    # an image of the user's own, added in one view, appears in the other (fitted to the model)
    mine = np.linspace(0, 1, 20 * 24, dtype=np.float32).reshape(20, 24)
    activations.image_picker.add("my drawing", mine)
    assert saliency.image_picker.value == "my drawing"
    assert saliency.image_picker.image.shape == (32, 32, 1)


def test_a_view_opened_later_starts_on_the_shared_image(dashboard):
    saliency = dashboard.open_view("saliency")
    name = saliency.image_picker.names[3]
    saliency.image_picker.value = name
    activations = dashboard.open_view("activations")
    assert activations.image_picker.value == name


def test_unknown_views_are_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="choose from: filters, saliency"):
        Dashboard("digits-cnn", views=["filters", "gradients"])
    with pytest.raises(ValueError, match="Unknown model"):
        cw.explore("resnet-50")


def test_a_view_that_fails_to_start_says_why_in_its_tab(monkeypatch):
    import cnnvis_widgets.widgets.dashboard as dash

    def broken(probe, images, dataset):
        raise RuntimeError("no weights for this layer")

    monkeypatch.setattr(dash, "VIEWS", VIEWS + (("weights", "Weights", broken),))  # the last one wins
    board = Dashboard("digits-cnn", views=["filters", "weights"], start="weights")
    try:
        assert "no weights for this layer" in board.tabs.children[1].value
    finally:
        board.close()


def test_every_view_opens_and_closing_the_dashboard_stops_every_worker():
    board = cw.explore("digits-cnn")
    assert len(board.tabs.children) == len(VIEWS)
    for key, _, _ in VIEWS:
        view = board.open_view(key)
        assert hasattr(view, "save"), f"{key}: {getattr(view, 'value', view)}"  # not an error note
    assert [type(v).__name__ for v in board.views.values()] == [
        "FilterExplorer",
        "SaliencyExplorer",
        "ConceptExplorer",
        "ActivationExplorer",
        "WeightsView",
        "EmbeddingExplorer",
        "TrainingMonitor",
    ]
    threads = [v.runner._thread for v in board.views.values() if v.runner._thread is not None]
    assert threads, "no view started its worker"
    board.close()
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, alive
