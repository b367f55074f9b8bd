"""The zoo: names, errors, and one Probe per model."""

import pytest

import cnnvis_widgets as cw


def test_unknown_model_lists_the_zoo():
    with pytest.raises(
        ValueError,
        match=r"Unknown model 'digits'\. Did you mean 'digits-cnn'\?.*digits-cnn, efficientnet-lite0",
    ):
        cw.load("digits")


def test_load_is_cached_and_has_class_names():
    p = cw.load("digits-cnn")
    assert p is cw.load("digits-cnn")
    assert p.class_names == [str(i) for i in range(10)]
    assert p.input_shape == (32, 32, 1)


@pytest.mark.slow
def test_efficientnet_layers_are_readable():
    p = cw.load("efficientnet-lite0")
    names = p.layer_names
    assert names[:4] == ["stem", "block0.depthwise", "block0.project", "block0"]
    assert names[-3:] == ["head", "pool", "logits"]
    assert p.layer("block3.expand").kind == "conv" and p.layer("block3").kind == "block"
    assert p.layer("block5.depthwise").shape == (14, 14, 240)
    assert len(p.class_names) == 1000 and "espresso" in p.class_names
