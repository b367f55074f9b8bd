"""SaliencyExplorer, headless on digits-cnn: controls recompute maps that change the grid; bad
targets, opacity, modes, the sanity and faithfulness rows, top-5, a responsive kernel and export."""

import html
import re
import time

import jax
import numpy as np
import pytest
from PIL import Image

import cnnvis_widgets as cw
from cnnvis_widgets import pixels as px
from cnnvis_widgets.compile_cache import programs_lowered
from cnnvis_widgets.engine import saliency as sal
from cnnvis_widgets.widgets.saliency import LABELS, SaliencyExplorer


@pytest.fixture
def explorer():
    se = SaliencyExplorer("digits-cnn")
    assert se.wait(120)
    yield se
    se.close()


def _tile(grid, i):
    """Tile i as sent to the browser, at the tile's own size (ImageGrid may enlarge small tiles)."""
    return grid.tile_pixels(i).astype(int)


def test_method_switch_changes_the_picture_and_compiles_nothing_twice(explorer):
    assert explorer.result.method == "vanilla"
    vanilla = explorer.grid.pixels.copy()
    explorer.method.value = "gradcam"
    assert explorer.wait(120)
    assert explorer.result.method == "gradcam" and explorer.result.layer == "conv4"
    assert not np.array_equal(explorer.grid.pixels, vanilla)
    lowered = programs_lowered()
    explorer.method.value = "vanilla"
    assert explorer.wait(120)
    explorer.method.value = "gradcam"
    assert explorer.wait(120)
    assert programs_lowered() == lowered
    explorer.method.value = "vanilla"
    assert explorer.wait(120)
    np.testing.assert_array_equal(explorer.grid.pixels, vanilla)


def test_image_change_shows_the_engines_maps_of_the_new_image(explorer):
    before = explorer.grid.pixels.copy()
    explorer.image_picker.value = explorer.image_picker.names[3]
    assert explorer.wait(120)
    assert not np.array_equal(explorer.grid.pixels, before)
    expected = sal.saliency(explorer.probe, explorer.image[None], "vanilla")
    np.testing.assert_allclose(explorer.result.maps, expected.maps, atol=1e-6)
    # an array of the caller's own goes into the picker and is shown
    own = np.zeros((32, 32, 1), np.float32)
    own[8:24, 14:18] = 1.0  # a "1"
    name = explorer.set_image(own, "my one")
    assert explorer.wait(120)
    assert explorer.image_picker.value == name == "my one"
    np.testing.assert_allclose(
        explorer.result.maps, sal.saliency(explorer.probe, own[None], "vanilla").maps, atol=1e-6
    )


def test_target_class_name_and_layer_unit_change_the_maps(explorer):
    predicted = explorer.result
    other = str((int(predicted.targets[0]) + 1) % 10)
    explorer.target.value = other  # a class name of digits-cnn
    assert explorer.wait(120)
    assert explorer.result.targets.tolist() == [int(other)] and explorer.result.target_layer is None
    assert not np.allclose(explorer.result.maps, predicted.maps)
    explorer.target.value = "conv3:5"
    assert explorer.wait(120)
    assert explorer.result.target_layer == "conv3" and explorer.result.targets.tolist() == [5]
    assert not np.allclose(explorer.result.maps, predicted.maps)
    assert "conv3:5" in explorer.status.value and "⚠" not in explorer.status.value
    explorer.method.value = "gradcam"  # a CAM of a unit sits at the unit's layer
    assert explorer.wait(120)
    assert explorer.result.layer == "conv3" and explorer.result.target_layer == "conv3"


@pytest.mark.parametrize(
    "text, valid",
    [
        ("seven", "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"),
        ("conv9:1", "Valid layers: conv1, conv2, pool1, conv3"),
        ("conv3:999", "valid: 0..47"),
    ],
)
def test_a_bad_target_names_the_valid_ones_and_the_next_request_works(explorer, text, valid):
    maps = explorer.result.maps.copy()
    explorer.target.value = text
    assert explorer.wait(30)
    assert "⚠" in explorer.status.value and valid in explorer.status.value
    np.testing.assert_array_equal(explorer.result.maps, maps)  # the last maps stay
    explorer.target.value = "3"
    assert explorer.wait(120)
    assert "⚠" not in explorer.status.value and explorer.result.targets.tolist() == [3]


def test_opacity_reblends_on_the_kernel_without_a_job(explorer):
    generation, finished = explorer.runner.generation, explorer.runner.finished
    image, before = _tile(explorer.grid, 0), explorer.grid.pixels.copy()
    explorer.opacity.value = 0.0
    np.testing.assert_array_equal(_tile(explorer.grid, 1), image)  # no heat: the overlay is the image
    explorer.opacity.value = 1.0
    heat = px.to_uint8(px.colorize(explorer.maps[0], explorer.cmap)).astype(int)
    assert np.abs(_tile(explorer.grid, 1) - heat).max() <= 1  # all heat
    assert not np.array_equal(explorer.grid.pixels, before)
    assert (explorer.runner.generation, explorer.runner.finished) == (generation, finished)
    assert not explorer.runner.busy


def test_batch_mode_shows_one_tile_per_image_and_compare_one_per_method(explorer):
    names = explorer.image_picker.names
    explorer.mode.value = "batch"
    assert explorer.wait(120)
    assert len(explorer.grid.labels.text) == len(names) == explorer.maps.shape[0] == 16
    assert explorer.result.maps.shape == (16, 32, 32)
    explorer.batch_size.value = 5
    assert explorer.wait(120)
    assert len(explorer.grid.labels.text) == 5 and explorer.result.maps.shape[0] == 5
    assert explorer.grid.pixels.shape[1] == 3 * 33 - 1  # 3 columns of 32-px tiles
    explorer.mode.value = "compare"
    assert explorer.wait(120)
    assert list(explorer.grid.labels.text) == [LABELS[m] for m in sal.METHODS]
    assert list(explorer.results) == list(sal.METHODS) and explorer.maps.shape[0] == len(sal.METHODS)
    assert explorer.result.method == explorer.method.value
    tiles = [_tile(explorer.grid, i) for i in range(3)]
    assert not np.array_equal(tiles[0], tiles[1]) and not np.array_equal(tiles[1], tiles[2])


def test_sanity_row_reports_similarities_to_the_trained_maps(explorer, tmp_path):
    assert not explorer.cascade_box.children and explorer.cascade is None
    explorer.method.value = "gradcam"
    explorer.sanity.value = True
    assert explorer.wait(180)
    assert explorer.cascade_grid in explorer.cascade_box.children
    labels = list(explorer.cascade_grid.labels.text)
    assert len(labels) == len(explorer.cascade.steps) == 7  # trained + six parameter modules
    rho = [float(re.search(r"ρ=(-?[\d.]+)", label).group(1)) for label in labels]
    assert labels[0].startswith("trained") and rho[0] == 1.0
    assert all(-1.0 <= r <= 1.0 for r in rho) and min(rho[1:]) < 0.9
    np.testing.assert_allclose(explorer.cascade.spearman[:, 0, 0], rho, atol=0.006)
    assert Image.open(explorer.save(tmp_path / "sanity.png")).size[1] > 300
    explorer.sanity.value = False
    assert not explorer.cascade_box.children


def test_faithfulness_row_ranks_the_methods_as_the_engine_does(explorer):
    assert not explorer.faithfulness_box.children and explorer.faithfulness_result is None
    statuses = []
    explorer.status.observe(lambda c: statuses.append(c["new"]), "value")
    explorer.image_picker.value = explorer.image_picker.names[1]
    explorer.faithfulness.value = True
    assert explorer.wait(300)
    assert explorer.faithfulness_box.children == (explorer.faithfulness_table,)
    assert any("faithfulness: " in t and f"({len(sal.METHODS)}/{len(sal.METHODS)})" in t for t in statuses)
    engine = cw.faithfulness(explorer.probe, explorer.image[None])  # every method, the predicted class
    cell = r"<td[^>]*>([^<]*)</td>"
    rows = re.findall(f"<tr[^>]*>{cell * 5}</tr>", explorer.faithfulness_table.value)
    assert [html.unescape(r[1]) for r in rows] == [LABELS[m] for m in engine.ranking]
    for (rank, _label, deletion, insertion, _score), method in zip(rows, engine.ranking):
        k = engine.methods.index(method)
        assert float(deletion) == pytest.approx(engine.deletion_auc[k, 0], abs=5e-4)
        assert float(insertion) == pytest.approx(engine.insertion_auc[k, 0], abs=5e-4)
    texts = [t.get_text() for t in explorer.to_figure().findobj(lambda a: hasattr(a, "get_text"))]
    assert any(LABELS[engine.ranking[0]] in t and "insertion" in t for t in texts)
    explorer.target.value = "conv3:5"  # a unit has no probability: the row says so
    assert explorer.wait(120)
    assert "Needs a class target" in explorer.faithfulness_table.value
    assert explorer.faithfulness_result is None
    explorer.faithfulness.value = False
    assert not explorer.faithfulness_box.children


def test_top5_match_an_independent_softmax(explorer):
    probe = explorer.probe
    for name in explorer.image_picker.names[:2]:
        explorer.image_picker.value = name
        assert explorer.wait(120)
        probs = np.asarray(jax.nn.softmax(probe.logits(probe.variables, explorer.image[None]))[0])
        top = np.argsort(-probs)[:5]
        assert [n for n, _ in explorer.top5] == [probe.class_names[i] for i in top]
        np.testing.assert_allclose([p for _, p in explorer.top5], probs[top], atol=1e-5)
        assert f"{probs[top[0]]:.3f}" in explorer.top5_buttons[0].description


def test_the_kernel_answers_while_a_slow_job_runs():
    se = SaliencyExplorer(
        "digits-cnn",
        method="occlusion",
        mode="batch",
        batch_size=8,
        options={"occlusion": {"patch": 4, "stride": 1}},  # 841 positions x 8 images: seconds
        autorun=False,
    )
    try:
        probe = se.probe
        probe.logits(probe.variables, se.image[None])  # warm the eager call
        se.run()
        deadline = time.monotonic() + 10
        while not se.runner._running and time.monotonic() < deadline:
            time.sleep(0.005)
        assert se.runner._running
        start = time.monotonic()
        logits = probe.logits(probe.variables, se.image[None])
        status = se.status.value
        elapsed = time.monotonic() - start
        assert se.runner._running, f"the job ended before the main thread's call ({elapsed:.2f} s)"
        assert logits.shape == (1, 10) and "computing" in status
        assert se.wait(180)
        assert se.result.method == "occlusion" and se.result.maps.shape == (8, 32, 32)
    finally:
        se.close()


def test_save_writes_a_png(explorer, tmp_path):
    path = explorer.save(tmp_path / "x.png")
    width, height = Image.open(path).size
    assert width > 100 and height > 100


def test_constructor_rejects_a_bad_method_or_target():
    with pytest.raises(ValueError, match="Valid methods: vanilla"):
        SaliencyExplorer("digits-cnn", method="vanila", autorun=False)
    with pytest.raises(ValueError, match="Valid layers"):
        SaliencyExplorer("digits-cnn", target=("conv9", 1), autorun=False)


def test_the_image_shows_at_once_while_the_first_map_computes():
    se = SaliencyExplorer("digits-cnn", autorun=False)
    try:
        with se.runner._cond:  # hold the worker: what shows now was drawn by run() itself
            se.run()
            assert se.grid.frames == 1 and "computing" in se.grid.labels.text[0]
            assert se.grid.pixels.max() > 200  # the digit (white strokes), not a blank black box
        assert se.wait(120) and "computing" not in " ".join(se.grid.labels.text)
    finally:
        se.close()


def test_clicking_a_top5_class_makes_it_the_target(explorer):
    assert explorer.target.value == sal.PREDICTED
    second = explorer.top5[1][0]
    explorer.top5_buttons[1].click()
    assert explorer.target.value == second
    assert explorer.wait(120)
    assert explorer.target_label(explorer.result, 0) == second
    assert f"target {second}:" in explorer.top5_note.value
    assert explorer.image_picker.value.startswith("test image #0 — label ")


def test_batch_maps_share_one_scale_and_the_target_line_is_the_picked_images(explorer):
    explorer.target.value = "3"
    explorer.mode.value = "batch"
    explorer.batch_size.value = 4
    explorer.image_picker.value = explorer.image_picker.names[2]
    assert explorer.wait(120)
    maps = explorer.result.maps
    # one scale: the displayed maps are the raw ones through a single affine map (independently)
    lo, scale = maps.min(), np.percentile(np.abs(maps - maps.min()), 99.5)
    np.testing.assert_allclose(explorer.maps, np.clip((maps - lo) / scale, 0, 1), atol=1e-5)
    own = np.percentile(explorer.maps, 99.5, axis=(1, 2))  # 1.0 for every map if each had its own scale
    assert own.min() < 0.95, own
    picked = explorer.image_picker.value
    assert picked in explorer.top5_title.value
    assert f"{explorer.result.scores[2]:.3g}" in explorer.top5_note.value  # image 2's score, not image 0's
    assert [t.split(" → ")[0] for t in explorer.grid.labels.text] == ["#0", "#1", "#2", "#3"]  # names too long
    assert "one scale for all 4 images" in explorer.colorbar.value


def test_compare_mode_reports_each_method_and_shows_both_colour_bars(explorer):
    statuses = []
    explorer.status.observe(lambda c: statuses.append(c["new"]), "value")
    explorer.mode.value = "compare"
    assert explorer.method.disabled
    assert explorer.wait(300)
    n = len(sal.METHODS)
    for k, method in enumerate(sal.METHODS):
        assert any(f"computing {LABELS[method]} ({k + 1}/{n})" in t for t in statuses), method
    from cnnvis_widgets.pixels import colormap_css

    assert colormap_css(explorer.cmap) in explorer.colorbar.value
    assert colormap_css(explorer.signed_cmap) in explorer.colorbar.value
    explorer.mode.value = "single"
    assert not explorer.method.disabled and explorer.wait(120)
    assert colormap_css(explorer.signed_cmap) not in explorer.colorbar.value  # vanilla: magnitudes only


def test_a_batch_without_the_picked_image_gives_no_score_for_it(explorer):
    explorer.mode.value = "batch"
    explorer.batch_size.value = 2
    explorer.image_picker.value = explorer.image_picker.names[5]  # not among the first 2
    assert explorer.wait(120)
    assert "not in the batch" in explorer.top5_note.value and "logit" not in explorer.top5_note.value
    assert explorer.image_picker.value in explorer.top5_title.value
