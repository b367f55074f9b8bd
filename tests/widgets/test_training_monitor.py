"""TrainingMonitor, headless: a short run fills the curves, changes and shows the conv1 kernels,
counts dead filters like an independent count; high learning rates kill filters; stop, close,
errors, responsiveness and export."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets import data
from cnnvis_widgets.models import digits
from cnnvis_widgets.widgets.training import TrainingMonitor

RUNNER = "cnnvis-training"


def _wait_for(condition, timeout=120.0):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def trained():
    """One short run at the default settings (1 epoch = 21 steps), and the grid before it."""
    monitor = TrainingMonitor(epochs=1, every=5)
    assert monitor.wait(300)  # the untrained model is shown
    before = monitor.kernel_grid.pixels.copy()
    monitor.start()
    assert monitor.wait(300)
    yield monitor, before
    monitor.close()


def _kernel_tiles_from_pixels(grid, n):
    """Read the n 3x3 kernels back off the montage sent to the browser."""
    assert grid.tile_shape == (n, 3, 3) and grid.zoom > 1  # enlarged, so the grid lines stay thin
    return np.stack([grid.tile_pixels(i)[..., 0] for i in range(n)]).astype(np.float32) / 255


def test_a_short_run_fills_the_loss_and_accuracy_curves(trained):
    monitor, _ = trained
    steps = monitor.planned_steps
    assert monitor.steps_done == steps == monitor.progress.value == 21
    x, y = np.asarray(monitor.loss_lines.x), np.asarray(monitor.loss_lines.y)
    assert len(x) == steps and np.all(np.diff(x) > 0)
    np.testing.assert_allclose(y, monitor.result.losses, rtol=1e-6)  # the curve is the run's loss
    assert y[-5:].mean() < y[0] - 0.2, y  # falls from its first value (2.77 -> ~2.3)
    ax, ay = np.asarray(monitor.accuracy_lines.x), np.asarray(monitor.accuracy_lines.y)
    assert ax.tolist() == [0, 5, 10, 15, 20, 21]  # every 5 steps and the last one
    assert ay.shape == (2, len(ax)) and np.all((ay >= 0) & (ay <= 1))
    assert ay[0, -1] == pytest.approx(monitor.result.test_accuracy, abs=1e-6)
    assert "done: 21 steps" in monitor.status.value and "steps/s" not in monitor.status.value


def test_the_accuracy_key_sits_under_the_plot_with_both_curves_in_their_colours(trained):
    # bqplot's in-plot legend boxed one of the two entries over the curves (issue 17, item 9)
    monitor, _ = trained
    lines = monitor.accuracy_lines
    assert not lines.display_legend
    panel = next(p for p in monitor.curves.children if lines in p.children[0].marks)
    figure, key = panel.children
    for label, colour in zip(lines.labels, lines.colors):
        assert f'<span style="color:{colour}">&#9644;</span> {label}' in key.value
    assert len(lines.labels) == 2 and lines.labels[1].startswith("train")
    # the exported figure (export.training_figure) draws the same curves, with a legend there
    accuracy = monitor.to_figure().subfigs[0].get_axes()[1]
    assert [line.get_label() for line in accuracy.lines] == list(lines.labels)
    np.testing.assert_allclose(accuracy.lines[0].get_ydata(), np.asarray(lines.y)[0])


def test_conv1_grid_changed_and_shows_the_trained_kernels(trained):
    monitor, before = trained
    assert monitor.kernel_grid.pixels.shape == before.shape
    assert not np.array_equal(monitor.kernel_grid.pixels, before)
    w = np.asarray(monitor.probe.variables["params"]["conv1_op"]["kernel"])[:, :, 0, :]  # (3, 3, 16)
    expected = np.moveaxis(0.5 + 0.5 * w / np.abs(w).max(), -1, 0)
    shown = _kernel_tiles_from_pixels(monitor.kernel_grid, 16)
    np.testing.assert_allclose(shown, expected, atol=1 / 255 + 1e-6)
    w0 = np.asarray(digits.init_variables(0)["params"]["conv1_op"]["kernel"])[:, :, 0, :]
    assert np.abs(w - w0).max() > 1e-3  # trained, not the initial kernels


def test_dead_filter_counts_match_an_independent_count(trained):
    monitor, _ = trained
    test = data.digits_split()[1]
    acts = monitor.probe.activations(monitor.probe.variables, test.images, list(monitor.conv_layers))
    expected = {name: int((np.asarray(a).max(axis=(0, 1, 2)) <= 0).sum()) for name, a in acts.items()}
    assert monitor.dead_counts == expected
    assert list(expected) == ["conv1", "conv2", "conv3", "conv4"]
    for name, n in expected.items():
        assert f"<td>{name}</td><td style='text-align:right'><b>{n}</b>" in monitor.dead_html.value
    assert monitor.probe.name == "digits-cnn (trained here)"


def test_a_high_learning_rate_without_warmup_kills_more_filters(trained):
    default, _ = trained
    hot = TrainingMonitor(epochs=1, every=5, learning_rate=0.5, warmup=False)
    try:
        hot.start()
        assert _wait_for(lambda: hot.progress.value >= 5)
        hot.stop()  # filters die within the first steps: no need for the whole epoch
        assert hot.wait(60)
        print(
            f"dead filters: default after {default.steps_done} steps {default.dead_counts}, "
            f"lr 0.5 without warm-up after {hot.steps_done} steps {hot.dead_counts}"
        )
        # seen: default {conv1 0, conv2 0, conv3 1, conv4 18}; lr 0.5: {0, 31, 34, 64}
        assert sum(hot.dead_counts.values()) > sum(default.dead_counts.values()) + 30
        assert hot.dead_counts["conv2"] > default.dead_counts["conv2"] + 10
        assert "×" in "".join(hot.map_grid.labels.text)  # dead filters are marked under their maps
    finally:
        hot.close()


def test_stop_ends_the_run_early_while_the_kernel_stays_responsive():
    monitor = TrainingMonitor(epochs=5, every=3)
    try:
        monitor.start()
        assert _wait_for(lambda: monitor.progress.value >= 3)  # training, not just compiling
        t0 = time.perf_counter()
        monitor.learning_rate.value = 0.01  # a main-thread call while the worker trains
        text = monitor.status.value
        elapsed = time.perf_counter() - t0
        assert monitor.runner.busy and elapsed < 0.5 and "steps/s" in text
        t0 = time.perf_counter()
        monitor.stop()
        assert monitor.wait(60)
        assert time.perf_counter() - t0 < 20
        assert 3 <= monitor.steps_done < monitor.planned_steps == 105
        assert "stopped at step" in monitor.status.value
        assert monitor.probe is not None  # what was trained so far is kept
    finally:
        monitor.close()


def test_a_new_start_replaces_the_run_and_close_leaves_no_training_thread():
    monitor = TrainingMonitor(epochs=5, every=3)
    monitor.start()
    assert _wait_for(lambda: monitor.progress.value >= 3)
    monitor.epochs.value = 4
    monitor.start()  # replaces the running run: only the newest one goes on
    assert _wait_for(lambda: monitor.progress.value >= 3)
    assert monitor.progress.max == 84 and "/84 ·" in monitor.status.value
    thread = monitor.runner._thread
    named = sum(t.name == RUNNER and t.is_alive() for t in threading.enumerate())
    assert thread.is_alive() and thread.name == RUNNER
    monitor.close()
    assert not thread.is_alive()
    assert sum(t.name == RUNNER and t.is_alive() for t in threading.enumerate()) == named - 1


def test_bad_learning_rates_show_in_the_status_and_the_next_start_works(monkeypatch):
    monitor = TrainingMonitor(epochs=1, every=2)
    try:
        assert monitor.wait(300)
        for bad in (float("nan"), -0.1):
            monitor.learning_rate.value = bad
            monitor.start()
            assert "learning_rate must be a positive finite number" in monitor.status.value
            assert not monitor.runner.busy
        # past the check (as from a script), NaN steps end the run as "diverged", not a dead thread
        monkeypatch.setattr(digits, "check_settings", lambda *a: None)
        monitor.learning_rate.value = float("nan")
        monitor.start()
        assert monitor.wait(300)
        assert "diverged" in monitor.status.value and monitor.steps_done == 2  # step 1's loss is finite
        monkeypatch.undo()
        monitor.learning_rate.value = 3e-3
        monitor.start()
        assert _wait_for(lambda: monitor.progress.value >= 2)
        monitor.stop()
        assert monitor.wait(60) and "stopped at step" in monitor.status.value
        assert np.isfinite(monitor.result.losses).all()
    finally:
        monitor.close()


def test_save_writes_a_png_of_curves_and_filters(trained, tmp_path):
    monitor, _ = trained
    path = monitor.save(tmp_path / "training.png")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 500
