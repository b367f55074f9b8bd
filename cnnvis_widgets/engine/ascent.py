"""Activation maximization: an image for every requested filter of a layer, in one compiled call.

The recipe, per filter (Lucid's split): a parameterization (``param``) gives an
image, transforms (``transforms``) jitter it, the objective scores the
network's activations, regularizers add penalties and image-space projections,
and an optax optimizer steps. ``jax.vmap`` runs it for all filters at once
(each with its own PRNG key, so random transforms differ per filter) and
a loop runs ``snapshot_every`` steps per compiled call; between calls the
callback sees the images and may stop the run.

Words used the same way in the engine (``renderer``, ``saliency``): a *call* is one run of a
compiled program (here ``snapshot_every`` optimizer steps); a *chunk* is how many items of a loop
one call takes (here filters, ``chunk``; in saliency's loops channels or patch positions); a
*batch* is the images processed together for one item (``batch`` images per filter here; a
dataset's images per forward pass in ``activations`` and ``embedding``); a *group* is the layers
one compiled program serves (``layer_groups``).

References: Erhan et al. 2009; Simonyan et al. 2013; Yosinski et al. 2015;
Mahendran & Vedaldi 2016; Olah et al. 2017 "Feature Visualization" (Distill).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jcore

from cnnvis_widgets import validation
from cnnvis_widgets.engine import objectives as objectives_lib
from cnnvis_widgets.engine import param as param_lib
from cnnvis_widgets.engine import recipes as recipes_lib
from cnnvis_widgets.engine import regularizers as reg_lib
from cnnvis_widgets.engine import renderer as renderer_lib
from cnnvis_widgets.engine import sharding
from cnnvis_widgets.engine import transforms as transforms_lib
from cnnvis_widgets.models.probe import owned_by_probe, require_probe

MAX_STEPS = 100_000  # per run: the objective curves alone take 400 KB per filter
MAX_FILTERS = 1 << 20  # more than any layer has: ``auto_chunk``'s cap is then the memory's alone


@dataclasses.dataclass
class AscentResult:
    """Images optimized for ``units`` of ``layer``.

    images: (N, H, W, C) in [0, 1] (the first image of each filter's batch);
    objective: (N, steps_done) objective value per filter per step;
    snapshots: (S, N, H, W, C) uint8 images after each call, and their steps;
    finite: (N,) False where a filter's optimization produced NaN/Inf (its image is then grey);
    scores: for class visualizations, each image's softmax probability of its class;
    batch_images: (N, B, H, W, C) all images of each filter when ``batch`` > 1;
    attribution: (N, H, W) where in its image each filter looked: the sum over steps of
      |d objective / d image| (MACO's transparency mask, Fel et al. 2023), scaled to [0, 1].
    """

    layer: str
    units: np.ndarray
    images: np.ndarray
    objective: np.ndarray
    snapshots: np.ndarray
    snapshot_steps: list[int]
    steps_done: int
    stopped: bool
    finite: np.ndarray
    scores: np.ndarray | None = None
    batch_images: np.ndarray | None = None
    attribution: np.ndarray | None = None


class Progress(NamedTuple):
    """What a callback sees after each compiled call (``snapshot_every`` steps).

    The filters run in ``groups`` groups one after another (``chunk`` filters per compiled call);
    ``step`` counts the steps of the current ``group`` (numbered from 0), so the whole run is at
    ``done_steps`` of ``all_steps``.
    """

    step: int
    total_steps: int
    units: np.ndarray
    images: np.ndarray  # (N, H, W, C): finished, current or (not yet started) initial images
    objective: np.ndarray  # (N,) latest objective value per filter (NaN if not started)
    finite: np.ndarray | None = None  # (N,) False where a filter diverged (NaN/Inf; its image is grey)
    group: int = 0
    groups: int = 1
    stage: int = 0  # of a progressive run (``progressive_filters``): 0 .. stages - 1
    stages: int = 1
    # True in the one report sent before a first step that must wait for XLA to compile (a
    # first visit); ``compile_estimate`` is then the seconds this probe's last compile took
    compiling: bool = False
    compile_estimate: float | None = None

    @property
    def done_steps(self) -> int:
        return self.group * self.total_steps + self.step

    @property
    def all_steps(self) -> int:
        return self.groups * self.total_steps


class _Setup(NamedTuple):
    param: param_lib.Param
    transform: Callable
    regs: tuple
    optimizer: optax.GradientTransformation | None  # None: Adam with a traced learning rate
    objective: str | objectives_lib.Objective  # a kind (renderer.OBJECTIVES) or an Objective
    relu_rule: str | None


def default_size(probe) -> tuple[int, int]:
    """The model's input size, capped at 128 px (digits-cnn: 32; EfficientNet-Lite0: 128), or
    its only size when it takes one size alone (``Probe.fixed_size``: a VGG-like dense head).

    The image is optimized and kept at this size; recipes that upsample (``recipes.IMAGENET``)
    show it to the network at its native size. A whole EfficientNet layer is slow on a CPU at
    this size; pass ``size=64`` and a filter range for interactive use.
    """
    h, w = probe.input_shape[:2]
    if probe.fixed_size:
        return h, w
    scale = min(1.0, 128 / max(h, w))
    return int(round(h * scale)), int(round(w * scale))


def seen_size(probe, size: tuple[int, int], recipe: recipes_lib.Recipe | None = None) -> tuple[int, int]:
    """The size at which the network sees an image optimized at ``size``: its native input size
    when the recipe (default ``recipes.for_probe``) upsamples smaller images, else ``size``."""
    recipe = recipes_lib.for_probe(probe) if recipe is None else recipes_lib.named(recipe)
    native = tuple(probe.input_shape[:2])
    if recipe.upsample and (size[0] < native[0] or size[1] < native[1]):
        return native
    return tuple(size)


# Bytes of one compiled call's activations (all filters of a chunk, all devices), as
# ``activation_bytes`` estimates them: with the process, the model and XLA's own memory, a whole
# EfficientNet-Lite0 layer at 128 px then peaks under Binder's 1 GB (the figures that chose it and
# the two below: benchmarks/bench_memory.py, benchmarks/results/why.md).
MEMORY_BUDGET = 288 * 2**20
# Runs upsampled to the native size (recipes.IMAGENET) get half: the estimate undercounts them, and
# their cold compile went over 1 GB with the whole budget.
UPSAMPLED_BUDGET = MEMORY_BUDGET // 2
# A first visit compiles init and step at once (two cores) only when a call's activations are
# below this: digits-cnn's whole grid, not EfficientNet-Lite0's (two of its compiles at once
# took ~100 MB more).
PARALLEL_COMPILE_BYTES = 64 * 2**20


def chunk_budget(probe, size: tuple[int, int], recipe: recipes_lib.Recipe | None = None) -> int:
    """The activation budget of one compiled call: ``UPSAMPLED_BUDGET`` when the network sees the
    image at another size than it is optimized at (``seen_size``), else ``MEMORY_BUDGET``."""
    return UPSAMPLED_BUDGET if seen_size(probe, size, recipe) != tuple(size) else MEMORY_BUDGET


def default_chunk(n: int, image_bytes: int = 0, per_device: int = 16, budget: int = MEMORY_BUDGET) -> int:
    """Filters per compiled call: ``per_device`` per device, fewer if their activations exceed ``budget``.

    ``image_bytes`` is one image's activation memory (``activation_bytes``). Large batches also
    spill out of the CPU caches, so smaller chunks can run faster (benchmarks/bench_ascent.py).
    """
    devices = len(jax.devices())
    cap = per_device * devices
    if image_bytes > 0:
        cap = min(cap, max(devices, budget // image_bytes // devices * devices))
    return max(1, min(n, cap))


def auto_chunk(
    probe, layer: str, n: int, size: tuple[int, int], recipe=None, batch: int = 1, per_device: int = 16
) -> int:
    """Filters per compiled call for ``n`` filters of ``layer`` at ``size``: ``default_chunk`` of the
    activations at the size the network sees (``seen_size``) within ``chunk_budget``."""
    seen = (1, *seen_size(probe, size, recipe), probe.input_shape[-1])
    nbytes = batch * activation_bytes(probe, probe.layer(layer).name, seen)
    return default_chunk(n, nbytes, per_device=per_device, budget=chunk_budget(probe, size, recipe))


def activation_bytes(probe, layer: str, shape: tuple[int, ...]) -> int:
    """Bytes of every value the forward pass computes on the way to ``layer`` for one (1, H, W, C) input.

    From the jaxpr of ``probe.reference_forward``, no compile: a liveness pass from the layer's
    output keeps only the work the layer needs. With the depthwise convolutions in their
    element-wise form (``jaxpr.speed.FORWARD``) it is about the measured marginal memory per image,
    hence ``MEMORY_BUDGET``'s margin (benchmarks/results/why.md).
    """
    return _activation_bytes(probe, tuple(shape))[probe.layer(layer).name]


@owned_by_probe
def _activation_bytes(probe, shape: tuple[int, ...]) -> dict[str, int]:
    """``activation_bytes`` of every layer, from one jaxpr of the whole forward pass."""
    names = probe.layer_names

    def fn(x):
        acts = probe.reference_forward(probe.variables, x)[1]
        return [acts[n] for n in names]

    jaxpr = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, jnp.float32)).jaxpr
    return {name: _live_bytes(jaxpr, [out]) for name, out in zip(names, jaxpr.outvars)}


# One compiled program serves a group of consecutive layers (``layer_group``): its forward pass
# runs to the group's deepest layer whichever layer is maximized, so once one layer of a group
# was visited its neighbours answer like warm ones, and each layer's forward costs at most
# GROUP_COST times its own (by ``activation_bytes`` at the native size). Chosen by
# benchmarks/bench_widgets.py (results/bench_widgets.txt: first visits against revisits).
GROUP_COST = 1.5


def layer_group(probe, layer: str, objective) -> tuple[tuple[str, ...], int]:
    """(the layers one program serves, ``layer``'s index among them) for an objective kind
    ("channel": groups over all layers, "neuron": over the spatial ones, others: the layer
    alone) or an ``Objective`` (its own layers, index 0)."""
    if not isinstance(objective, str):
        return tuple(objective.layers), 0
    if objective not in ("channel", "neuron"):  # class logits, DeepDream's energy: the layer alone
        return (layer,), 0
    for group in layer_groups(probe, objective == "neuron"):
        if layer in group:
            return group, group.index(layer)
    return (layer,), 0


@owned_by_probe
def layer_groups(probe, spatial_only: bool = False) -> tuple[tuple[str, ...], ...]:
    """The probe's layers (the spatial ones only, if asked) in groups of consecutive layers whose
    forward cost stays within ``GROUP_COST`` times that of the group's first layer. Spatial and
    dense layers never share a group: the explorers show only spatial ones, and a program that
    also reached the dense head would compile longer. A conv
    after its activation (``Layer.after``) joins its conv's group: one forward reaches both."""
    shape = (1, *probe.input_shape)
    layers = [info for info in probe.layers if info.spatial or not spatial_only]
    cost = {info.name: max(1, activation_bytes(probe, info.name, shape)) for info in layers}
    groups: list[list[str]] = []
    for info in layers:
        name = info.name
        first = probe.layer(groups[-1][0]) if groups else None
        if groups and info.after == groups[-1][-1]:
            groups[-1].append(name)
        elif first and first.spatial == info.spatial and cost[name] <= GROUP_COST * cost[first.name]:
            groups[-1].append(name)
        else:
            groups.append([name])
    return tuple(tuple(g) for g in groups)


def _live_bytes(jaxpr, outputs=None) -> int:
    """Bytes of the values ``jaxpr`` computes on the way to ``outputs`` (default all its outputs)."""

    def size(v):
        return int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize

    def inner(eqn):
        total = 0
        for value in eqn.params.values():
            sub = getattr(value, "jaxpr", None)
            if sub is not None:
                total += _live_bytes(getattr(sub, "jaxpr", sub))
        return total

    live = {v for v in (jaxpr.outvars if outputs is None else outputs) if isinstance(v, jcore.Var)}
    total = 0
    for eqn in reversed(jaxpr.eqns):
        if any(v in live for v in eqn.outvars):
            total += sum(size(v) for v in eqn.outvars) + inner(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    return total


def visualize_filters(
    probe,
    layer: str,
    filters: Sequence[int] | None = None,
    *,
    objective: objectives_lib.Objective | str = "channel",
    steps: int = 128,
    size: int | Sequence[int] | None = None,
    batch: int = 1,
    param: param_lib.Param | None = None,
    transforms: Callable | None = None,
    regularizers: Sequence[reg_lib.Regularizer] | None = None,
    weights: Sequence[float] | None = None,
    optimizer: optax.GradientTransformation | None = None,
    seed: int = 0,
    snapshot_every: int | None = None,
    callback: Callable[[Progress], bool | None] | None = None,
    chunk: int | None = None,
    variables: Any = None,
    relu_rule: str | None = "redirected",
    init_images: Any = None,
    recipe: recipes_lib.Recipe | str | None = None,
    learning_rate: float | None = None,
    share_layers: bool = False,
) -> AscentResult:
    """Optimize an image for each filter of ``layer`` (all filters when ``filters`` is None).

    Args:
      probe: a Probe (``cnnvis_widgets.load(name)`` or ``Probe(model, ...)``).
      layer: the layer's name (``probe.layer_names``).
      filters: channel indices (default all).
      objective: "channel", "neuron", or an ``Objective`` taking (acts, unit).
      steps: optimizer steps. size: image (H, W); default ``default_size(probe)``.
      batch: images per filter (>= 2 for a diversity objective).
      param / transforms / regularizers / optimizer: override the recipe's parts.
      weights: regularizer weights overriding their own (traced: no recompilation).
      seed: PRNG seed; filter i uses ``fold_in(key(seed), unit_i)``.
      snapshot_every: steps per compiled call, after which ``callback`` runs
        and a snapshot is kept (default: all steps in one call).
      callback: ``callback(Progress)``; returning True stops the run after this call.
      chunk: filters per compiled call (default ``default_chunk``: 16 per device, fewer when
        their activations would exceed ``MEMORY_BUDGET``).
      variables: model variables (default ``probe.variables``).
      relu_rule: "redirected" (default: Lucid's redirected ReLU gradient, so units that
        are silent on the grey start still get a gradient) or None for exact gradients; it
        applies to ``jax.nn.relu`` / ``relu6`` calls, not to a hand-written ``jnp.maximum(x, 0)``.
      init_images: start from these [0, 1] images (H, W, C) or (N, H, W, C) instead of
        noise (DeepDream, inversion); their size sets ``size``.
      recipe: how to draw (``engine.recipes``): a Recipe or its name; default
        ``recipes.for_probe(probe)`` (Lucid's parameterization and transforms with the image
        upsampled to the native size for ImageNet models, mild priors for small ones).
      learning_rate: Adam's step size (default the recipe's; traced: no recompilation). Ignored
        when ``optimizer`` is given.

      share_layers: compile one program for ``layer``'s whole group (``layer_groups``), so its
        neighbours reuse it: what the live explorers do. It costs a forward pass to the group's
        deepest layer (up to ``GROUP_COST`` x the work, and the memory); off for one-off calls.

    The work runs on the probe's ``renderer.Renderer`` for this setup: a program serves a bucket
    of filter counts (and a group of layers, with ``share_layers``), so other filters, other prior
    weights or another learning rate reuse it.
    """
    probe = require_probe(probe, "visualize_filters")
    info = probe.layer(layer)
    units = probe.check_units(info.name, filters)
    steps = validation.positive_int(steps, "steps", MAX_STEPS)
    batch = validation.positive_int(batch, "batch", 256)  # images per filter
    seed = validation.integer(seed, "seed")
    if not -(2**63) <= seed < 2**63:  # what jax.random.key takes
        raise ValueError(f"seed must fit in 64 bits (-2**63 <= seed < 2**63), got {seed}.")
    snapshot_every = (
        steps
        if snapshot_every is None
        else min(validation.positive_int(snapshot_every, "snapshot_every"), steps)
    )
    chunk = None if chunk is None else validation.positive_int(chunk, "chunk")
    if init_images is not None:
        init_images = probe.check_images(
            np.asarray(init_images)[None] if np.ndim(init_images) == 3 else init_images
        )
        if len(init_images) not in (1, len(units)):
            raise ValueError(
                f"init_images must hold 1 or {len(units)} images (one per filter), got {len(init_images)}."
            )
        size = tuple(init_images.shape[1:3])
    size = check_size(probe, size)
    recipe = recipes_lib.for_probe(probe) if recipe is None else recipes_lib.named(recipe)
    setup = _setup(
        probe, info, objective, size, param, transforms, regularizers, optimizer, relu_rule, recipe
    )
    w = reg_lib.default_weights(setup.regs) if weights is None else _weights(weights, setup.regs)
    if w.shape != (len(setup.regs),):
        raise ValueError(
            f"weights must have one value per regularizer ({len(setup.regs)}: "
            f"{[r.name for r in setup.regs]}), got shape {w.shape}."
        )
    if learning_rate is not None and (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float, np.number))
        or not 0 < learning_rate < float("inf")
    ):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    variables = probe.check_variables(variables)
    shape = (batch, *size, probe.input_shape[-1])
    per_snapshot = len(units) * int(np.prod(shape[1:]))  # uint8 bytes of one snapshot of every filter
    n_snapshots = -(-steps // snapshot_every)
    if n_snapshots * per_snapshot > 2**30:
        raise ValueError(
            f"steps={steps} with snapshot_every={snapshot_every} keeps {n_snapshots} snapshots of "
            f"{len(units)} images ({n_snapshots * per_snapshot / 2**30:.1f} GB); use a snapshot_every of "
            f"at least {-(-steps * per_snapshot // 2**30)} or fewer steps."
        )
    renderer, layer_index, per_call = _renderer(
        probe, info.name, setup, shape, len(units), chunk, snapshot_every, recipe, share_layers
    )
    # a first visit compiles the step on a second core while init compiles and runs, where the
    # program is small: two large compiles at once can take a Binder kernel over its 1 GB
    seen = (1, *seen_size(probe, size, recipe), probe.input_shape[-1])
    small = per_call * activation_bytes(probe, renderer.setup.layers[-1], seen) <= PARALLEL_COMPILE_BYTES
    rate = np.float32(recipe.learning_rate if learning_rate is None else learning_rate)
    n = len(units)
    starts = (
        None
        if init_images is None
        else np.broadcast_to(init_images[:, None], (n, batch, *init_images.shape[1:]))
    )
    return render(
        renderer, layer_index, units, steps, seed=seed, learning_rate=rate, variables=variables,
        weights=w, starts=starts, callback=callback, layer=info.name, background_compile=small,
    )  # fmt: skip


def render(
    renderer: renderer_lib.Renderer,
    layer_index: int,
    units: np.ndarray,
    steps: int,
    *,
    seed: int,
    learning_rate: float,
    variables,
    weights,
    starts: np.ndarray | None = None,
    callback: Callable[[Progress], bool | None] | None = None,
    layer: str = "",
    background_compile: bool = False,
) -> AscentResult:
    """The driver loop over a renderer's compiled programs: ``units`` in groups of
    ``renderer.setup.filters`` (padded by repeating the group's last filter), each run ``steps``
    steps, ``setup.steps`` per call; ``callback`` sees each call's images (and, on a first
    visit, a notice before XLA compiles) and may stop the run. ``starts``: (N, B, H, W, C)
    start images, or None for the parameterization's noise. ``layers[layer_index]`` of the
    setup is maximized (``layer`` names it in the result). ``background_compile``: a first
    visit compiles the step on another thread while init compiles and runs."""
    per_call, snapshot_every = renderer.setup.filters, renderer.setup.steps
    batch = renderer.setup.shape[0]
    w, rate = weights, np.float32(learning_rate)
    n = len(units)
    base_key = jax.random.key(seed)  # filter u draws from fold_in(base_key, u)
    groups = [slice(start, min(start + per_call, n)) for start in range(0, n, per_call)]

    def init_group(sl):
        """The group's initial state and images, padded to the call's filter count (a bucket) by
        repeating its last filter."""
        idx = sl.start + sharding.padded_indices(sl.stop - sl.start, per_call)
        with sharding.device_lock:  # see sharding.device_lock: concurrent sharded runs can deadlock
            state, start_images = renderer.init(
                base_key, units[idx], None if starts is None else starts[idx], rate
            )
            return state, units[idx], np.asarray(start_images)[: sl.stop - sl.start]

    if background_compile and not renderer.compiled:  # the step compiles while init does
        renderer.prepare(variables, w)
        renderer.wait_lowered()  # its tracing first: init's beside it would slow it down
    # every filter's start image, so a callback shows the groups not yet run (their init is
    # deterministic, so each group is initialized again when its turn comes)
    first = init_group(groups[0])
    all_images = np.concatenate([first[2]] + [init_group(sl)[2] for sl in groups[1:]])  # (N, B, H, W, C)
    images = all_images[:, 0]
    attribution = np.zeros(all_images.shape[:-1], np.float32)  # (N, B, H, W)
    latest = np.full(n, np.nan, np.float32)
    curves = np.full((n, steps), np.nan, np.float32)
    # snapshot j holds every filter at step snapshot_steps[j] (filled group by group)
    snapshot_steps = [min(j * snapshot_every, steps) for j in range(1, -(-steps // snapshot_every) + 1)]
    snapshots = np.repeat(_snapshot_uint8(images)[None], len(snapshot_steps), axis=0)  # start images
    diverged = np.zeros(n, bool)  # NaN/Inf so far, per filter: its image is shown grey
    taken = 0
    stopped, done, most = False, 0, 0
    if callback is not None and not renderer.compiled:  # say so before XLA's wait (it may stop here)
        estimate = renderer_lib.compile_estimate(renderer.probe)
        notice = Progress(0, steps, units, images.copy(), latest.copy(), None, 0, len(groups))
        stopped = bool(callback(notice._replace(compiling=True, compile_estimate=estimate)))
    for g, sl in enumerate(groups):
        if stopped:
            break
        m = sl.stop - sl.start
        state, group_units, _ = first if g == 0 else init_group(sl)
        done = 0
        while done < steps and not stopped:
            k = min(snapshot_every, steps - done)
            with sharding.device_lock:
                state, values, new_images = renderer.step(state, group_units, layer_index, k, variables, w)
                new_images = np.asarray(new_images)[:m]
            curves[sl, done : done + k] = np.asarray(values)[:k].T[:m]
            done += k
            most = max(most, done)
            all_images[sl] = new_images
            latest[sl] = curves[sl, done - 1]
            group = all_images[sl]  # a view: greying it greys all_images
            diverged[sl] |= ~np.isfinite(group).reshape(m, -1).all(axis=1) | ~np.isfinite(latest[sl])
            group[diverged[sl]] = 0.5
            snapshots[snapshot_steps.index(done), sl] = _snapshot_uint8(images[sl])
            taken = max(taken, snapshot_steps.index(done) + 1)
            progress = Progress(done, steps, units, images.copy(), latest.copy(), ~diverged, g, len(groups))
            if callback is not None and callback(progress):
                stopped = True
        with sharding.device_lock:  # the group's summed |gradient|, fetched once (not every frame)
            attribution[sl] = np.asarray(state[4]).sum(axis=-1)[:m]
        if stopped:
            break
    ran = ~np.isnan(curves).all(axis=1)
    finite = ~diverged & np.isfinite(all_images).reshape(n, -1).all(axis=1) & (~ran | np.isfinite(latest))
    all_images[~finite] = 0.5
    where = attribution.mean(axis=1)
    where = np.nan_to_num(where / np.maximum(where.max(axis=(1, 2), keepdims=True), 1e-30))
    return AscentResult(
        layer,
        units,
        images,
        curves[:, :most],  # steps past where a stopped run got to are not part of the result
        snapshots[:taken],
        snapshot_steps[:taken],
        done,
        stopped,
        finite,
        batch_images=all_images if batch > 1 else None,
        attribution=where,
    )


def progressive_filters(
    probe,
    layer: str,
    filters: Sequence[int] | None = None,
    *,
    sizes: Sequence[int | tuple[int, int]] = (64, 128),
    steps: Sequence[int] = (32, 96),
    callback: Callable[[Progress], bool | None] | None = None,
    recipe: recipes_lib.Recipe | str | None = None,
    per_device: int = 16,
    **kwargs,
) -> AscentResult:
    """``visualize_filters`` in stages of growing size: a quick draft, then the same images refined.

    Stage 0 runs ``steps[0]`` steps at ``sizes[0]`` with the network seeing the image at that size
    (no upsampling: cheap, a first picture within a second on a CPU); each later stage starts from
    the previous images resized to ``sizes[k]`` and runs ``steps[k]`` steps with the full recipe
    (upsampled to the native size where it says so). Each stage's progress reaches ``callback``
    with ``stage``/``stages`` set. The result is the last stage's, with the objective curves of all
    stages joined (they jump where the size changes: the network sees another image).
    Each stage picks its own filters per compiled call (``auto_chunk``, ``per_device`` at most).
    A size is an int (square) or (H, W), as a fixed-size model's one stage is.

    References: Mordvintsev et al. 2015, "Inceptionism" (octaves: optimize small, upsample, go on).
    """
    probe = require_probe(probe, "progressive_filters")
    recipe = recipes_lib.for_probe(probe) if recipe is None else recipes_lib.named(recipe)
    sizes, steps = list(sizes), list(steps)
    if not sizes or len(sizes) != len(steps):
        raise ValueError(f"sizes and steps need one value per stage, got sizes={sizes} and steps={steps}.")
    if "init_images" in kwargs or "size" in kwargs or "chunk" in kwargs:
        raise TypeError("progressive_filters takes sizes=... per stage, not size, chunk or init_images.")
    units = probe.check_units(layer, filters)
    objective = kwargs.get("objective", "channel")
    deepest = _program_layers(probe, probe.layer(layer).name, objective, kwargs.get("share_layers", False))[0][-1]
    curves, result, start = [], None, None
    for k, (size, n) in enumerate(zip(sizes, steps)):
        size = (size, size) if np.ndim(size) == 0 else tuple(size)  # a fixed-size model's (H, W)
        stage_recipe = recipe.replace(upsample=False) if k == 0 and len(sizes) > 1 else recipe
        on_progress = None if callback is None else (
            lambda p, k=k: callback(p._replace(stage=k, stages=len(sizes)))
        )  # fmt: skip
        chunk = auto_chunk(
            probe, deepest, MAX_FILTERS, size, stage_recipe, kwargs.get("batch", 1), per_device=per_device
        )
        result = visualize_filters(
            probe, layer, units, size=size, steps=n, recipe=stage_recipe, callback=on_progress,
            init_images=None if start is None else np.clip(_resize(start, size), 0.0, 1.0),
            chunk=chunk, **kwargs,
        )  # fmt: skip
        curves.append(result.objective)
        if result.stopped:
            break
        start = result.images
    result.objective = np.concatenate(curves, axis=1)
    return result


def progressive_stages(probe, size: int, steps: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sizes, steps) of a live run: a draft at half ``size`` for a third of the steps (at most 32)
    when the recipe upsamples to a native size above ``size``'s half and the model takes any size;
    one stage otherwise (small models are fast at their own size)."""
    if probe.fixed_size or not recipes_lib.for_probe(probe).upsample or size < 64 or steps < 6:
        return (size,), (steps,)
    first = min(32, steps // 3)
    return (max(16, size // 4 * 2), size), (first, steps - first)


def _snapshot_uint8(images: np.ndarray) -> np.ndarray:
    """Snapshots are kept as uint8 (display only): a quarter of the memory of float32."""
    return np.clip(np.nan_to_num(images, nan=0.5) * 255 + 0.5, 0, 255).astype(np.uint8)


def visualize_classes(
    probe, classes: Sequence[int] | None = None, *, layer: str | None = None, **kwargs
) -> AscentResult:
    """Class model visualization (Simonyan et al. 2013): maximize each class logit.

    ``result.scores`` holds the model's softmax probability of each class for its own image, seen
    as the optimization saw it (upsampled to the native size where the recipe says so).
    """
    probe = require_probe(probe, "visualize_classes")
    probe.require_classes("visualize_classes")
    layer = layer or probe.layer_names[-1]
    kwargs.setdefault("objective", "class")
    result = visualize_filters(probe, layer, classes, **kwargs)
    seen = seen_size(probe, result.images.shape[1:3], kwargs.get("recipe"))
    probs = probe.probabilities(kwargs.get("variables") or probe.variables, _resize(result.images, seen))
    result.scores = np.asarray(probs)[np.arange(len(result.units)), result.units]
    return result


def visualize_neuron(
    probe, layer: str, filters=None, *, y: int | None = None, x: int | None = None, **kwargs
) -> AscentResult:
    """Maximize one spatial position of each filter (default the centre) instead of its mean."""
    kwargs.setdefault(
        "objective", objectives_lib.neuron(require_probe(probe, "visualize_neuron").layer(layer).name, y, x)
    )
    return visualize_filters(probe, layer, filters, **kwargs)


# ------------------------------------------------------------------ internals
def _weights(weights, regs) -> np.ndarray:
    try:
        w = np.asarray(weights, np.float32)
    except (TypeError, ValueError):
        w = None
    if w is None or not np.all(np.isfinite(w)):
        raise ValueError(
            f"weights must be finite numbers, one per regularizer {[r.name for r in regs]}; got {weights!r}."
        )
    return w  # NumPy: a jnp copy would compile a staging program per new shape


def check_size(probe, size) -> tuple[int, int]:
    """``size`` (an int or (H, W); None: ``default_size``) as (H, W) the probe takes, else a ValueError."""
    size = default_size(probe) if size is None else ((size, size) if np.ndim(size) == 0 else tuple(size))
    if len(size) != 2 or any(not isinstance(s, (int, np.integer)) for s in size):
        raise ValueError(f"size must be an int or (H, W), got {size!r}.")
    h, w = probe.input_shape[:2]
    if probe.fixed_size and tuple(size) != (h, w):
        raise ValueError(f"{probe.name} takes only {h}x{w} images; got size {size}.")
    smallest = min(8, h, w)
    if min(size) < smallest:
        raise ValueError(
            f"size {tuple(size)} is too small for {probe.name}: use at least {smallest}x{smallest} "
            f"(its input is {h}x{w})."
        )
    return probe.check_size(size)  # not above probe.max_side, nor collapsing to nothing inside


def named_objective(kind: str, layer: str) -> objectives_lib.Objective:
    """The objective called ``kind`` on ``layer`` (``renderer.OBJECTIVES``)."""
    return renderer_lib.named_objective(kind, layer)


def default_optimizer(learning_rate: float = 0.05) -> optax.GradientTransformation:
    """Adam with ``learning_rate``, one object per value (``recipes.build_optimizer``)."""
    return recipes_lib.build_optimizer(float(learning_rate))


@functools.lru_cache(maxsize=64)
def _upsampled(transform: Callable, seen: tuple[int, int]) -> Callable:
    """``transform`` then a resize to ``seen`` (one object per argument, so compiles are reused)."""
    return transforms_lib.compose(transform, transforms_lib.resize(seen))


def _check_parts(param, transforms, regularizers, optimizer) -> None:
    """Type errors that name the module making each part, before JAX sees a wrong object."""
    if param is not None and not isinstance(param, param_lib.Param):
        raise TypeError(f"param must be a Param such as param.fourier() or param.pixel(), got {param!r}.")
    if transforms is not None and not callable(transforms):
        raise TypeError(
            f"transforms must be a transform such as transforms.jitter(4) or transforms.compose(...), "
            f"got {transforms!r}."
        )
    if regularizers is not None:
        bad = [
            r
            for r in (regularizers if isinstance(regularizers, (list, tuple)) else [regularizers])
            if not isinstance(r, reg_lib.Regularizer)
        ]
        if bad or not isinstance(regularizers, (list, tuple)):
            raise TypeError(
                f"regularizers must be a list of Regularizers such as regularizers.total_variation(1.0), "
                f"got {regularizers!r}."
            )
    if optimizer is not None and not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(f"optimizer must be an optax optimizer such as optax.adam(0.05), got {optimizer!r}.")


def _setup(
    probe, info, objective, size, param, transforms, regularizers, optimizer, relu_rule, recipe
) -> _Setup:
    """The run's parts: the recipe's, except those given explicitly. Given transforms are still
    followed by the recipe's upsampling to the model's native size."""
    channels = probe.input_shape[-1]
    if isinstance(objective, str):
        if objective == "neuron" and not info.spatial:
            raise ValueError(
                f"A neuron objective needs a spatial layer; {info.name!r} has shape {info.shape}."
            )
        named_objective(objective, info.name)  # an unknown kind fails here, naming the valid ones
    elif not isinstance(objective, objectives_lib.Objective):
        raise TypeError(f"objective must be a name or an Objective, got {type(objective).__name__}.")
    for name in [] if isinstance(objective, str) else objective.layers:
        probe.layer(name)
    _check_parts(param, transforms, regularizers, optimizer)
    transform = recipes_lib.build_transforms(recipe, size) if transforms is None else transforms
    seen = seen_size(probe, size, recipe)
    if seen != tuple(size):
        transform = _upsampled(transform, seen)
    return _Setup(
        param=param or recipes_lib.build_param(recipe.param, channels),
        transform=transform,
        regs=recipes_lib.build_priors(recipe) if regularizers is None else tuple(regularizers),
        optimizer=optimizer,
        objective=objective,
        relu_rule=relu_rule,
    )


def _program_layers(probe, layer: str, objective, share: bool) -> tuple[tuple[str, ...], int]:
    """(the layers a run's program serves, ``layer``'s index among them): its group with
    ``share`` (``layer_group``), else the layer alone (or a custom Objective's own layers)."""
    if share:
        return layer_group(probe, layer, objective)
    if isinstance(objective, str):
        return (layer,), 0
    return tuple(objective.layers), 0


def _renderer(probe, layer, setup: _Setup, shape, n: int, chunk, steps_per_call: int, recipe, share: bool):
    """(the probe's Renderer for this run, ``layer``'s index in its layers, filters per call)."""
    layers, index = _program_layers(probe, layer, setup.objective, share)
    if chunk is None:  # the memory's limit, for a forward pass to the group's deepest layer
        chunk = auto_chunk(probe, layers[-1], MAX_FILTERS, shape[1:3], recipe, shape[0])
    per_call = renderer_lib.filters_per_call(n, chunk, len(jax.devices()))
    parts = (setup.objective, setup.param, setup.transform, setup.regs, setup.optimizer, setup.relu_rule)
    setup = renderer_lib.Setup(layers, *parts, shape, per_call, steps_per_call)
    return renderer_lib.renderer_for(probe, setup), index, per_call


def _resize(images, size: tuple[int, int]):
    """``images`` as the network saw them while they were optimized (``seen_size``)."""
    if images.shape[1:3] == tuple(size):
        return images
    return np.asarray(jax.image.resize(images, (len(images), *size, images.shape[-1]), "linear"))
