"""digits-cnn: the bundled weights reach the stated accuracy; retraining really learns."""

import numpy as np
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.models import digits


def test_bundled_weights_accuracy_on_fixed_split():
    """Held-out accuracy on the fixed stratified split (test_size=0.25, random_state=0: 450 images)."""
    train, test = cw.data.digits_split()
    assert (len(train.labels), len(test.labels)) == (1347, 450)
    assert not set(map(tuple, train.images.reshape(len(train.labels), -1)[:50])) & set(
        map(tuple, test.images.reshape(len(test.labels), -1))
    )
    probe = cw.load("digits-cnn")
    preds = np.asarray(probe.logits(probe.variables, test.images)).argmax(-1)
    acc = float((preds == test.labels).mean())
    assert acc >= 0.97, acc
    assert acc == pytest.approx(digits.accuracy(probe.variables, test))


@pytest.mark.slow
def test_short_training_run_learns_and_can_stop():
    seen = []

    def callback(step, variables, loss):
        seen.append(loss)
        return step >= 150  # stop early

    result = digits.train_digits_cnn(progress=False, callback=callback)
    assert len(result.losses) == 150 == len(seen)  # the callback stopped it at step 150
    assert result.losses[-20:].mean() < 0.5 * result.losses[:20].mean()
    assert result.test_accuracy > 0.6  # far above chance (0.1) after 150 of 630 steps


def test_save_and_load_round_trip(tmp_path):
    variables = digits.init_variables(seed=3)
    path = digits.save_variables(variables, tmp_path / "w.msgpack")
    from flax import serialization

    restored = serialization.msgpack_restore(path.read_bytes())
    np.testing.assert_array_equal(
        restored["params"]["conv1_op"]["kernel"], variables["params"]["conv1_op"]["kernel"]
    )
