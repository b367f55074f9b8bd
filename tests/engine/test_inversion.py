"""Feature inversion and DeepDream on digits-cnn."""

import numpy as np
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.compile_cache import programs_lowered
from cnnvis_widgets.engine.inversion import deep_dream, invert_features


@pytest.fixture(scope="module")
def setup():
    probe = cw.load("digits-cnn")
    digits = cw.data.digits()
    return probe, digits.images[7], int(digits.labels[7])


def predict(probe, image):
    return int(np.asarray(probe.logits(probe.variables, image[None])).argmax())


def test_inverting_early_features_recovers_the_image(setup):
    probe, x, label = setup
    result = invert_features(probe, x, "conv2")
    rec = result.images[0]
    assert np.corrcoef(rec.ravel(), x.ravel())[0, 1] > 0.9
    assert predict(probe, rec) == label
    assert result.objective[0, -1] > 0.5 * result.objective[0, 0]  # relative feature error fell


def test_inverting_the_penultimate_layer_keeps_the_class(setup):
    probe, x, label = setup
    rec = invert_features(probe, x, "fc1").images[0]
    assert predict(probe, rec) == label


def test_deep_dream_amplifies_the_layer_from_the_image(setup):
    probe, x, _ = setup
    result = deep_dream(probe, x, "conv3")
    energy = lambda img: float(np.mean(np.square(probe.activations(probe.variables, img[None], "conv3"))))
    assert energy(result.images[0]) > 1.5 * energy(x)  # measured: 6.8 → 12.8 after 32 steps
    assert np.corrcoef(result.images[0].ravel(), x.ravel())[0, 1] > 0.5  # still the same digit underneath


def test_another_photo_or_learning_rate_dreams_without_compiling(setup):
    probe, x, _ = setup
    deep_dream(probe, x, "conv3", steps=4)
    lowered = programs_lowered()
    calm = deep_dream(probe, 1 - x, "conv3", steps=4, learning_rate=1e-6)
    assert programs_lowered() == lowered
    np.testing.assert_allclose(calm.images[0], 1 - x, atol=1e-4)  # a tiny rate barely moves it


def test_bad_inputs(setup):
    probe, x, _ = setup
    with pytest.raises(ValueError, match="Give one image"):
        invert_features(probe, np.stack([x, x]), "conv2")
    with pytest.raises(ValueError, match="Unknown layer 'conv7'"):
        deep_dream(probe, x, "conv7")
    with pytest.raises(ValueError, match="NaN"):
        invert_features(probe, np.full_like(x, np.nan), "conv2")
