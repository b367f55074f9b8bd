"""Activation maximization: images that really excite their filter; streaming, chunking, sharding, errors."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import optax
import pytest

import cnnvis_widgets as cw
from cnnvis_widgets.compile_cache import programs_lowered
from cnnvis_widgets.engine import regularizers
from cnnvis_widgets.engine import renderer as renderer_lib
from cnnvis_widgets.engine.ascent import visualize_classes, visualize_filters


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


def live_filters(probe, layer):
    """Filters that fire on at least one real digit (a dead filter has no image that excites it)."""
    acts = np.asarray(probe.activations(probe.variables, cw.data.digits().images, layer))
    return np.flatnonzero(acts.reshape(-1, acts.shape[-1]).max(axis=0) > 0)


def own_image_wins(probe, result):
    """For each filter: is its own image the one (of all generated) that excites it most?"""
    acts = np.asarray(probe.activations(probe.variables, result.images, result.layer)).mean(axis=(1, 2))
    acts = acts[:, result.units]  # (image of filter i, filter j)
    return acts.argmax(axis=0) == np.arange(len(result.units))


@pytest.mark.slow
def test_each_live_filter_is_excited_most_by_its_own_image(probe):
    result = visualize_filters(probe, "conv4", steps=128)
    assert result.images.shape == (64, 32, 32, 1) and result.finite.all()
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    live = live_filters(probe, "conv4")
    wins = own_image_wins(probe, result)
    print(
        f"conv4: {wins.sum()}/64 filters top-activated by their own image; "
        f"{wins[live].sum()}/{len(live)} of the live ones ({64 - len(live)} dead on all digits)"
    )
    # issue 3: at least 90 % of the layer's filters, on average over seeds: one seed's share varies
    # by a few filters (seeds 0-5 gave 0.875-0.953, mean 0.914; before the transforms drew their
    # numbers per batch, 0.891-0.938, mean 0.906)
    others = [visualize_filters(probe, "conv4", steps=128, seed=seed) for seed in (1, 2)]
    shares = [wins.mean()] + [own_image_wins(probe, r).mean() for r in others]
    assert min(shares) >= 0.85 and np.mean(shares) >= 0.9, shares
    # the objective really rose: last value far above the first for live filters
    assert np.median(result.objective[live, -1] - result.objective[live, 0]) > 1.0


@pytest.mark.slow
def test_class_visualizations_are_classified_as_their_class(probe):
    result = visualize_classes(probe, steps=256)
    print("class scores:", np.round(result.scores, 4))
    preds = np.asarray(probe.logits(probe.variables, result.images)).argmax(-1)
    np.testing.assert_array_equal(preds, np.arange(10))
    assert result.scores.min() >= 0.99


def test_results_do_not_depend_on_batch_composition_or_chunking(probe):
    alone = visualize_filters(probe, "conv2", [5], steps=12)
    together = visualize_filters(probe, "conv2", [3, 5, 7], steps=12)
    chunked = visualize_filters(probe, "conv2", [3, 5, 7], steps=12, chunk=1)
    np.testing.assert_allclose(alone.images[0], together.images[1], atol=1e-5)
    np.testing.assert_allclose(together.images, chunked.images, atol=1e-5)
    assert not np.allclose(together.images[0], together.images[1])  # own keys, own images


def test_callback_sees_every_snapshot_and_can_stop(probe):
    seen = []
    full = visualize_filters(
        probe, "conv1", [0, 1], steps=40, snapshot_every=10,
        callback=lambda p: None if p.compiling else seen.append(p.step),  # (a first visit's notice: below)
    )  # fmt: skip
    assert seen == [10, 20, 30, 40] and full.snapshot_steps == seen and full.snapshots.shape[:2] == (4, 2)
    assert full.objective.shape == (2, 40) and not full.stopped

    stopped = visualize_filters(
        probe, "conv1", [0, 1], steps=40, snapshot_every=10, callback=lambda p: p.step >= 20
    )
    assert stopped.stopped and stopped.steps_done == 20 and stopped.objective.shape == (2, 20)
    np.testing.assert_allclose(stopped.objective, full.objective[:, :20], rtol=1e-5, atol=1e-6)


def test_a_first_visit_is_announced_before_the_compile_and_can_be_stopped_there(probe, monkeypatch):
    visualize_filters(probe, "conv1", [0], steps=2, size=16)  # some compile, for the estimate
    seen = []
    # no background compile for this first call: where it finishes before init (a small program on
    # a quiet machine) there is no wait to announce, and the test would race it
    monkeypatch.setattr(renderer_lib.Renderer, "prepare", lambda self, variables, weights: None)
    first = visualize_filters(probe, "conv1", [0], steps=6, size=24, callback=lambda p: seen.append(p) or True)
    monkeypatch.undo()
    assert [(p.compiling, p.step) for p in seen] == [(True, 0)] and first.stopped and first.steps_done == 0
    assert seen[0].images.shape == (1, 24, 24, 1)  # the start images, shown while XLA works
    assert seen[0].compile_estimate > 0  # the last compile's seconds (the warm-up's)
    seen.clear()
    visualize_filters(probe, "conv1", [0], steps=6, size=24, callback=lambda p: seen.append(p))
    # the step compiled in the background meanwhile, or is still compiling: at most the notice
    assert [p.step for p in seen if not p.compiling] == [6] and not any(p.compiling for p in seen[1:])
    seen.clear()
    visualize_filters(probe, "conv1", [0], steps=6, size=24, callback=lambda p: seen.append(p))
    assert [(p.compiling, p.step) for p in seen] == [(False, 6)]  # warm: no notice


def test_progress_counts_the_whole_run_over_filter_groups(probe):
    seen = []
    visualize_filters(
        probe, "conv1", [0, 1, 2], steps=20, snapshot_every=10, chunk=1,
        callback=lambda p: None if p.compiling else seen.append(p),
    )  # fmt: skip
    assert [(p.group, p.groups, p.step) for p in seen] == [(g, 3, s) for g in range(3) for s in (10, 20)]
    assert [p.done_steps for p in seen] == [10, 20, 30, 40, 50, 60] and seen[-1].all_steps == 60


def test_regularizer_weights_change_without_recompiling(probe):
    regs = (regularizers.l2_decay(0.0), regularizers.total_variation(0.0))
    visualize_filters(probe, "conv1", [0], steps=8, regularizers=regs)
    lowered = programs_lowered()
    smooth = visualize_filters(probe, "conv1", [0], steps=8, regularizers=regs, weights=[0.0, 50.0])
    assert programs_lowered() == lowered
    rough = visualize_filters(probe, "conv1", [0], steps=8, regularizers=regs)
    tv = lambda img: np.abs(np.diff(img, axis=0)).mean() + np.abs(np.diff(img, axis=1)).mean()
    assert tv(smooth.images[0]) < tv(rough.images[0])


def test_sharded_over_four_devices_equals_unsharded(probe, tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, jax
        assert len(jax.devices()) == 4, jax.devices()
        import cnnvis_widgets as cw
        from cnnvis_widgets.engine.ascent import visualize_filters
        r = visualize_filters(cw.load("digits-cnn"), "conv2", list(range(10)), steps=12)  # padded to 12
        np.save(sys.argv[1], r.images)
    """)
    out = tmp_path / "sharded.npy"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, timeout=300)
    unsharded = visualize_filters(probe, "conv2", list(range(10)), steps=12).images
    np.testing.assert_allclose(np.load(out), unsharded, atol=1e-4)


def test_two_threads_running_sharded_optimizations_at_once_finish(tmp_path):
    """A widget's worker and the notebook's main thread, both on two host devices: without
    sharding.device_lock XLA:CPU's collectives could deadlock and abort the process."""
    script = textwrap.dedent("""
        import threading, numpy as np, jax
        assert len(jax.devices()) == 2, jax.devices()
        import cnnvis_widgets as cw
        probe = cw.load("digits-cnn")
        done = []
        def work(layer):
            for seed in range(4):
                r = cw.visualize_filters(probe, layer, list(range(6)), steps=8, snapshot_every=2, seed=seed)
                done.append(bool(r.finite.all()))
        threads = [threading.Thread(target=work, args=(layer,)) for layer in ("conv2", "conv3")]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("DONE", len(done), all(done))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", script], env=env, timeout=240, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DONE 8 True" in out.stdout


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(layer="conv9"), ValueError, r"Unknown layer 'conv9'.*Valid layers: conv1"),
        (dict(filters=[99]), ValueError, r"Filter 99 is out of range for layer 'conv1' with 16 channels"),
        (dict(steps=0), ValueError, "steps must be a positive integer, got 0"),
        (dict(steps=-3), ValueError, "steps must be a positive integer"),
        (dict(size=4), ValueError, r"size \(4, 4\) is too small for digits-cnn: use at least 8x8"),
        (
            dict(objective="fancy"),
            ValueError,
            r"Unknown objective 'fancy'; give one of \['channel', 'class', 'energy', 'neuron'\]",
        ),
        (dict(weights=[1.0]), ValueError, "weights must have one value per regularizer"),
        (dict(layer="fc1", objective="neuron"), ValueError, "A neuron objective needs a spatial layer"),
        (dict(seed=2**70), ValueError, r"seed must fit in 64 bits"),  # was OverflowError from JAX
        (dict(layer=["conv1"]), TypeError, r"layer is given by its name \(a str\), got list"),  # unhashable
    ],
)
def test_bad_arguments_give_clear_errors(probe, kwargs, error, message):
    args = dict(layer="conv1", steps=4)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        visualize_filters(probe, **args)


def test_divergence_is_reported_per_filter(probe):
    """A learning rate that blows up leaves non-finite filters flagged and grey, not silently wrong."""
    result = visualize_filters(probe, "conv1", [0, 1], steps=4, optimizer=optax.sgd(float("nan")))
    assert not result.finite.any()
    assert np.all(result.images == 0.5)


def test_diversity_makes_a_filters_images_differ(probe):
    """Lucid's diversity term makes the B images of one filter differ in what the layer sees: the
    mean pairwise cosine similarity of their conv3 Gram matrices (numpy, from the probe's own
    activations) drops. (Pixel differences were a weak proxy: they moved either way with the
    transforms' random draws.)"""
    from cnnvis_widgets.engine import objectives

    plain = visualize_filters(probe, "conv3", [7], steps=48, batch=3)
    diverse_obj = objectives.channel("conv3") + 2.0 * objectives.diversity("conv3")
    diverse = visualize_filters(probe, "conv3", [7], steps=48, batch=3, objective=diverse_obj)
    assert diverse.batch_images.shape == (1, 3, 32, 32, 1)

    def gram_similarity(images):
        acts = np.asarray(probe.activations(probe.variables, images, "conv3"), np.float64)
        flat = acts.reshape(len(acts), -1, acts.shape[-1])
        grams = np.einsum("bpc,bpd->bcd", flat, flat).reshape(len(flat), -1)
        grams /= np.linalg.norm(grams, axis=1, keepdims=True)
        return (grams @ grams.T)[np.triu_indices(len(grams), 1)].mean()

    plain_sim, diverse_sim = gram_similarity(plain.batch_images[0]), gram_similarity(diverse.batch_images[0])
    assert diverse_sim < 0.8 * plain_sim, (plain_sim, diverse_sim)  # measured 0.66 -> 0.40


def test_use_all_cores_exposes_one_cpu_device_per_core():
    script = "import cnnvis_widgets as cw; n = cw.use_all_cores(3); import jax; print(n, len(jax.devices()))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["3", "3"]


def test_compilation_cache_fills_a_per_user_directory(tmp_path):
    script = (
        "import cnnvis_widgets as cw\n"
        "from cnnvis_widgets.compile_cache import enable_compilation_cache\n"
        "print(enable_compilation_cache())\n"
        "cw.visualize_filters(cw.load('digits-cnn'), 'conv1', [0], steps=2)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env, timeout=300
    )
    cache = tmp_path / "cnnvis_widgets" / "jax"
    assert out.stdout.strip() == str(cache)
    assert any(cache.iterdir()), "nothing was written to the cache"
