"""The Renderer: pure init/step, traced numbers (learning rate, layer, steps), filter buckets, ownership."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets.compile_cache import programs_lowered
from cnnvis_widgets.engine import ascent, param, renderer, transforms


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


def _setup(probe, layers, filters=4, steps=5, objective="channel", relu_rule="redirected"):
    return renderer.Setup(
        layers=tuple(layers),
        objective=objective,
        param=param.pixel(),
        transform=transforms.identity(),
        priors=(),
        optimizer=None,
        relu_rule=relu_rule,
        shape=(1, 32, 32, 1),
        filters=filters,
        steps=steps,
    )


def _run(r, probe, units, lr, layer=0, n=5):
    units = np.asarray(units, np.int32)
    state, start = r.init(jax.random.key(0), units, None, np.float32(lr))
    start = np.asarray(start)
    state, values, images = r.step(state, units, layer, n, probe.variables, np.zeros(0, np.float32))
    return start, np.asarray(values), np.asarray(images)


def test_step_scores_the_chosen_layer_as_an_independent_forward_pass_does(probe):
    r = renderer.Renderer(probe, _setup(probe, ["conv2", "conv3"], steps=1, relu_rule=None))
    units = [0, 1, 2, 3]
    for index, layer in enumerate(["conv2", "conv3"]):
        start, values, _ = _run(r, probe, units, 0.0, layer=index, n=1)
        acts = np.asarray(probe.activations(probe.variables, start[:, 0], layer))  # (4, H, W, C)
        expected = acts[np.arange(4), :, :, units].mean(axis=(1, 2))
        np.testing.assert_allclose(values[0], expected, rtol=1e-4, atol=1e-6)


def test_learning_rate_and_step_count_are_traced(probe):
    r = renderer.Renderer(probe, _setup(probe, ["conv1"]))
    start, values, still = _run(r, probe, [0, 1, 2, 3], 0.0, n=5)
    np.testing.assert_array_equal(still, start)  # Adam at learning rate 0 moves nothing
    lowered = programs_lowered()
    start, values, moved = _run(r, probe, [0, 1, 2, 3], 0.05, n=3)
    assert programs_lowered() == lowered  # another learning rate and step count: same programs
    assert np.abs(moved - start).max() > 1e-3
    assert np.isfinite(values[:3]).all() and np.isnan(values[3:]).all()  # steps past n are NaN
    assert (values[2] >= values[0]).all() and (values[2] > values[0]).sum() >= 3  # ascent
    assert r.compiled and r.compile_seconds > 0


def test_a_new_selection_of_the_same_bucket_or_a_layer_of_the_same_group_compiles_nothing(probe):
    group, _ = ascent.layer_group(probe, "conv2", "channel")
    assert {"conv2", "conv3", "conv4"} <= set(group)
    cw.visualize_filters(probe, "conv2", [3, 5, 9], steps=4, share_layers=True)
    lowered = programs_lowered()
    result = cw.visualize_filters(probe, "conv3", [0, 7, 30, 31], steps=4, share_layers=True)
    assert programs_lowered() == lowered
    assert list(result.units) == [0, 7, 30, 31] and result.images.shape[0] == 4  # trimmed
    cw.visualize_filters(probe, "conv2", list(range(5)), steps=4, share_layers=True)  # the next bucket
    assert programs_lowered() > lowered
    # a one-off call (no share_layers) compiles for its layer alone: the forward stops there
    alone = cw.visualize_filters(probe, "conv3", [0, 7, 30, 31], steps=4)
    np.testing.assert_allclose(alone.images, result.images, atol=1e-5)  # the same pictures


@pytest.mark.parametrize(
    "n, chunk, devices, expected",
    [(1, 64, 1, 1), (3, 64, 1, 4), (4, 64, 1, 4), (5, 64, 1, 16), (16, 64, 1, 16), (17, 64, 1, 64),
     (100, 128, 1, 128), (3, 2, 1, 2), (20, 12, 1, 8), (1, 64, 2, 2), (3, 64, 2, 4), (16, 64, 2, 16),
     (10, 64, 2, 16), (5, 3, 2, 2)],
)  # fmt: skip
def test_filters_per_call_are_buckets_within_the_memory_chunk(n, chunk, devices, expected):
    assert renderer.filters_per_call(n, chunk, devices) == expected


def test_layer_groups_cover_every_layer_once_in_order(probe):
    eff = cw.load("efficientnet-lite0")
    for p in (probe, eff):
        groups = ascent.layer_groups(p)
        assert [name for g in groups for name in g] == p.layer_names
        for g in groups:  # within a group, no layer's forward costs over GROUP_COST x the first's
            first = ascent.activation_bytes(p, g[0], (1, *p.input_shape))
            assert ascent.activation_bytes(p, g[-1], (1, *p.input_shape)) <= ascent.GROUP_COST * first
    assert ascent.layer_group(probe, "logits", "class") == (("logits",), 0)
    assert all(probe.layer(n).spatial for g in ascent.layer_groups(probe, True) for n in g)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def test_a_dropped_probe_frees_its_programs():
    module = Tiny()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
    p = cw.Probe(module, variables, input_shape=(16, 16, 1), name="tiny")
    cw.visualize_filters(p, "conv", [0, 1], steps=2)
    cw.saliency(p, np.full((1, 16, 16, 1), 0.5, np.float32), "vanilla")
    assert any(isinstance(v, renderer.Renderer) for v in p.programs.values())
    gone = weakref.ref(p)
    del p
    gc.collect()
    assert gone() is None


def test_a_probe_keeps_only_its_most_recently_used_renderers(probe):
    """Issue 19, item 12: each size or filter bucket a session visits is a new setup; a probe
    that kept every renderer (and its compiled programs) grew without end."""
    p = cw.Probe(probe.module, probe.variables, input_shape=probe.input_shape, layers="sown")
    setups = [_setup(p, ["conv1"], steps=s) for s in range(1, renderer.MAX_RENDERERS + 6)]
    made = [renderer.renderer_for(p, setup) for setup in setups]
    held = [v for v in p.programs.values() if isinstance(v, renderer.Renderer)]
    assert held == made[-renderer.MAX_RENDERERS :]  # the oldest five were let go
    # using a held one makes it the newest: the next new setup lets the oldest go, not it
    oldest = made[-renderer.MAX_RENDERERS]
    assert renderer.renderer_for(p, setups[-renderer.MAX_RENDERERS]) is oldest
    renderer.renderer_for(p, _setup(p, ["conv1"], steps=99))
    held = [v for v in p.programs.values() if isinstance(v, renderer.Renderer)]
    assert oldest in held and made[-renderer.MAX_RENDERERS + 1] not in held
    gone = weakref.ref(made[0])
    del made, held
    gc.collect()
    assert gone() is None  # nothing else keeps a renderer that was let go
    assert renderer.renderer_for(p, setups[0]) is not None  # and asking again makes a new one


def test_warm_compiles_ahead_so_the_first_step_does_not(probe):
    r = renderer.Renderer(probe, _setup(probe, ["conv1"], filters=1, steps=2))
    assert not r.compiled
    assert r.warm() > 0 and r.compiled
    lowered = programs_lowered()
    _run(r, probe, [0], 0.05, n=2)
    assert programs_lowered() == lowered
    assert r.warm() == 0.0


def test_prepare_compiles_in_the_background_what_step_then_uses(probe):
    r = renderer.Renderer(probe, _setup(probe, ["conv2"], filters=4, steps=3))
    before = programs_lowered()
    r.wait_lowered(timeout=0.01)  # nothing to wait for before prepare
    r.prepare(probe.variables, np.zeros(0, np.float32))
    r.wait_lowered(timeout=60)  # the step is traced and lowered when it returns (XLA may still work)
    assert programs_lowered() > before
    units = np.arange(4, dtype=np.int32)
    state, _ = r.init(jax.random.key(1), units, None, np.float32(0.05))  # meanwhile, in this thread
    r._compiling.join()
    assert r.compiled
    lowered = programs_lowered()
    r.step(state, units, 0, 3, probe.variables, np.zeros(0, np.float32))
    assert programs_lowered() == lowered  # the background compile is the one step runs


def test_compiler_options_follow_the_model_size(probe):
    # chosen by benchmarks/bench_compile.py: level 2 for every model; a small model (digits-cnn,
    # 32 px) also without XLA's fusion emitters, a 224 px one keeps them (its steps ran slower)
    class Big:
        input_shape = (224, 224, 3)

    assert renderer.compiler_options(probe) == {
        "xla_backend_optimization_level": 2,
        "xla_cpu_use_fusion_emitters": False,
    }
    assert renderer.compiler_options(Big()) == {"xla_backend_optimization_level": 2}
    # XLA accepts them: a program compiled with them runs and gives the same numbers as without
    f = lambda x: jnp.tanh(x) @ x.T
    x = jax.random.normal(jax.random.key(0), (8, 8))
    fast = jax.jit(f, compiler_options=renderer.compiler_options(probe))(x)
    np.testing.assert_allclose(fast, jax.jit(f)(x), rtol=1e-5, atol=1e-6)
