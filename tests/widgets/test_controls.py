"""widgets.controls, headless: each control's traits set as a user would (text typed, slider
moved, box ticked), and the state that results, against hand-written expectations."""

import types

import numpy as np
import pytest
import traitlets

import cnnvis_widgets as cw
from cnnvis_widgets.engine import recipes
from cnnvis_widgets.widgets.controls import (
    FilterPicker,
    ImagePicker,
    LayerSlider,
    RegularizerPanel,
)

DIGITS_SPATIAL = ["conv1", "conv2", "pool1", "conv3", "pool2", "conv4"]
# RegularizerPanel's rows: L2 decay, blur, grey faint, grey useless, TV, α-norm, bounded range, L1
PANEL_DEFAULT = [0.01, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
PANEL_WEIGHTS_ON = [0.01, 1.0, 0.1, 0.1, 1.0, 1.0, 1.0, 0.1]  # each regularizer's own weight


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


def _stand_in(input_shape):
    """Just enough of a Probe for ImagePicker: its input shape."""
    return types.SimpleNamespace(input_shape=input_shape)


# ------------------------------------------------------------------ LayerSlider
def test_layer_slider_offers_the_spatial_layers_and_starts_in_the_middle(probe):
    """digits-cnn's six spatial layers, in forward order; the default is the middle one (conv3)."""
    slider = LayerSlider(probe)
    assert slider.names == DIGITS_SPATIAL and slider.value == "conv3"
    assert (slider.slider.min, slider.slider.max, slider.slider.value) == (0, 5, 3)
    assert slider.label.value == "<b>conv3</b> <small>conv, 16×16×48, rf 10px</small>"
    every = LayerSlider(probe, value="fc1", spatial_only=False)
    assert every.names == [*DIGITS_SPATIAL, "pool3", "fc1", "logits"] and every.slider.value == 7


def test_moving_the_slider_and_setting_value_keep_each_other_and_the_label_in_step(probe):
    """Slider moved -> value and label follow; value set -> the slider moves there."""
    slider = LayerSlider(probe, value="conv1")
    seen = []
    slider.observe(lambda change: seen.append(change["new"]), "value")
    slider.slider.value = 5
    assert slider.value == "conv4" and "<b>conv4</b>" in slider.label.value and "8×8×64" in slider.label.value
    slider.value = "pool1"
    assert slider.slider.value == 2
    assert slider.label.value == "<b>pool1</b> <small>pool, 16×16×32, rf 6px</small>"
    assert seen == ["conv4", "pool1"]  # one change each, no echo from the slider


def test_a_value_that_is_not_one_of_the_layers_is_refused(probe):
    """Setting value to a dense layer of a spatial-only slider is refused, naming the valid layers."""
    slider = LayerSlider(probe, value="conv2")
    with pytest.raises((traitlets.TraitError, ValueError), match="conv1, conv2"):
        slider.value = "fc1"


def test_a_model_without_spatial_layers_is_refused_with_its_name():
    """Nothing to choose: the error names the model (a stand-in with one dense layer)."""
    mlp = types.SimpleNamespace(name="tiny-mlp", layers=[types.SimpleNamespace(name="fc", spatial=False)])
    with pytest.raises(ValueError, match="^tiny-mlp has no spatial layers to choose from.$"):
        LayerSlider(mlp)


# ------------------------------------------------------------------ FilterPicker
def test_filter_picker_value_is_the_text_both_ways():
    """Typing in the box sets value; setting value fills the box."""
    picker = FilterPicker()
    assert picker.value == picker.text.value == "0:16"
    picker.text.value = "3,5,9"
    assert picker.value == "3,5,9"
    picker.value = "top8"
    assert picker.text.value == "top8"


# ------------------------------------------------------------------ RegularizerPanel
def test_regularizer_panel_weights_follow_each_toggle_and_slider():
    """Defaults: L2 decay, blur and TV on at their own weights. Each tick changes exactly its own
    entry (to its regularizer's weight, or 0), in one change; a slider moves its entry only while
    ticked, and an unticked row's slider is disabled."""
    panel = RegularizerPanel()
    assert panel.weights == PANEL_DEFAULT
    changes = []
    panel.observe(lambda change: changes.append(change["new"]), "weights")
    for i, toggle in enumerate(panel.toggles):
        before = list(panel.weights)
        toggle.value = not toggle.value
        want = before.copy()
        want[i] = PANEL_WEIGHTS_ON[i] if toggle.value else 0.0
        assert panel.weights == pytest.approx(want), panel.toggles[i].description
        assert panel.sliders[i].disabled == (not toggle.value)
    assert len(changes) == len(panel.toggles)
    panel.toggles[0].value = False
    changes.clear()
    panel.sliders[0].value = 0.05  # off: the weight stays 0, no change sent
    assert changes == [] and panel.weights[0] == 0.0
    panel.toggles[0].value = True
    assert panel.weights[0] == pytest.approx(0.05)


def test_a_recipe_ticks_only_its_priors_at_its_weights():
    """A recipe with total variation 3.0 and blur 0.25: those two ticked at those weights; the
    ImageNet recipe (no priors): nothing ticked, every weight 0, every slider disabled."""
    recipe = recipes.Recipe("test", priors=(("total_variation", 3.0), ("gaussian_blur", 0.25)))
    panel = RegularizerPanel(recipe)
    assert panel.weights == [0.0, 0.25, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]
    assert [t.value for t in panel.toggles] == [False, True, False, False, True, False, False, False]
    none = RegularizerPanel(recipes.IMAGENET)
    assert none.weights == [0.0] * 8 and all(s.disabled for s in none.sliders)


def test_a_recipe_weight_outside_the_sliders_range_is_kept():
    """The panel's weights are the recipe's, whatever the sliders' default ranges."""
    panel = RegularizerPanel(recipes.Recipe("strong", priors=(("l2_decay", 0.5),)))
    assert panel.weights[0] == 0.5


# ------------------------------------------------------------------ ImagePicker
def test_image_picker_names_a_batch_and_fits_each_image_to_the_model():
    """An (N, H, W, C) batch becomes 'image 0'.., each resized and channel-converted for the model:
    a uint8 grey image given to an RGB model is the same grey in every channel."""
    batch = np.stack([np.full((16, 16, 1), v, np.uint8) for v in (0, 51, 255)])
    picker = ImagePicker(_stand_in((8, 8, 3)), images=batch, upload=False)
    assert picker.names == ["image 0", "image 1", "image 2"] and picker.value == "image 0"
    for name, v in zip(picker.names, (0, 51, 255)):
        image = picker.images[name]
        assert image.shape == (8, 8, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image, v / 255, atol=1e-6)
    one = ImagePicker(_stand_in((4, 6, 1)), images=np.zeros((8, 12, 3)), upload=False)  # one image
    assert one.names == ["image 0"] and one.image.shape == (4, 6, 1)


def test_a_half_black_half_white_image_keeps_its_halves_when_fitted():
    """Downsized 16x16 -> 8x8 (RGB -> grey): columns far from the edge keep their value."""
    image = np.zeros((16, 16, 3), np.float32)
    image[:, 8:] = 1.0
    fitted = ImagePicker(_stand_in((8, 8, 1)), images={"split": image}).image[..., 0]
    np.testing.assert_allclose(fitted[:, :3], 0.0, atol=1e-6)
    np.testing.assert_allclose(fitted[:, 5:], 1.0, atol=1e-6)


def test_add_replaces_or_appends_and_selects_only_when_asked():
    """add() fits the image, appends its name to the dropdown, and selects it unless select=False."""
    picker = ImagePicker(_stand_in((4, 4, 3)), images={"a": np.zeros((4, 4, 3))}, upload=False)
    picker.add("b", np.ones((8, 8, 3)), select=False)
    assert picker.value == "a" and list(picker.dropdown.options) == ["a", "b"]
    picker.add("a", np.full((4, 4), 0.5))
    assert picker.value == picker.dropdown.value == "a" and list(picker.dropdown.options) == ["a", "b"]
    np.testing.assert_allclose(picker.image, 0.5)
    picker.dropdown.value = "b"  # the user picks another one
    assert picker.value == "b" and picker.image.min() == 1.0


def test_an_unreadable_image_is_refused_by_name():
    """The error names the image that could not be read, and what shapes are taken."""
    images = {"ok": np.zeros((4, 4, 3)), "two channels": np.zeros((4, 4, 2))}
    with pytest.raises(ValueError, match=r"image 'two channels': expected an image of shape .* \(4, 4, 2\)"):
        ImagePicker(_stand_in((4, 4, 3)), images=images)
