"""Renderers: activation-maximization programs owned by an object, built once per setup value.

A ``Renderer`` is made from a probe and a ``Setup`` (Lucid's split of a run: parameterization,
transforms, priors, optimizer, objective; plus the image shape and how many filters and steps
one call takes). It owns two jitted programs, pure functions of arrays, optax style::

    state = renderer.init(key, units, starts, learning_rate)
    state, values, images = renderer.step(state, units, layer, n, variables, weights)

Everything that changes while someone explores is a traced number, so it never compiles again:
the learning rate (``optax.inject_hyperparams``), the prior weights, the steps of a call
(``n`` <= ``Setup.steps``), which layer of the setup's ``layers`` is maximized (an index: every
layer's objective is computed on one forward pass that reaches the deepest of them, one is picked),
and which filters (the filter count is padded to a few bucket sizes, ``filters_per_call``).

Renderers live on their probe (``renderer_for`` stores them in ``probe.programs``), so they and
their compiled programs are freed with it; no module-level cache keeps a probe alive.

References: Olah et al. 2017 "Feature Visualization" (Distill; Lucid's optvis split);
optax's ``GradientTransformation`` (init/update pairs) and Flax nnx (state owned by objects).
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnvis_widgets.engine import objectives as objectives_lib
from cnnvis_widgets.engine import param as param_lib
from cnnvis_widgets.engine import regularizers as reg_lib
from cnnvis_widgets.engine import sharding
from cnnvis_widgets.jaxpr import speed
from cnnvis_widgets.jaxpr.evaluate import rewrite
from cnnvis_widgets.jaxpr.gradients import relu_rules

# Adam whose learning rate is a traced number in its state (set by ``Renderer.init``): a new
# learning rate is a new value, not a new program.
ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)

OBJECTIVES = {
    "channel": objectives_lib.channel,
    "neuron": objectives_lib.neuron,
    "class": objectives_lib.class_logit,
    "energy": objectives_lib.activation_energy,  # DeepDream's (inversion.deep_dream)
}

# XLA:CPU options for the programs, chosen by benchmarks/bench_compile.py (results/bench_compile.txt).
# LLVM at level 2 (XLA's default is 3): a first visit compiles faster and the steps run as fast
# (the convolutions are library calls; at levels 1 and 0 the steps run slower). Small models
# (input under SMALL_INPUT_PX, like digits-cnn) also use XLA's loop emitters instead of its fusion
# emitters: their compile is faster again at the same speed, where EfficientNet's steps ran slower.
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}
SMALL_MODEL_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
SMALL_INPUT_PX = 96


def compiler_options(probe) -> dict | None:
    """XLA options for ``probe``'s renderer programs on this backend (see ``CPU_COMPILER_OPTIONS``)."""
    if jax.default_backend() != "cpu":
        return None
    small = max(probe.input_shape[:2]) < SMALL_INPUT_PX
    return {**CPU_COMPILER_OPTIONS, **(SMALL_MODEL_OPTIONS if small else {})}


# Filters per compiled call: a selection is padded up to the next of these (so
# "3,5,9" and "0:4" share a program, and "0:16" and "top16"), at most 4x the work of the
# filters asked for, and never above the memory-bounded chunk (``ascent.auto_chunk``).
BUCKETS = (1, 4, 16, 64)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one pair of compiled programs does, by value (the key of ``renderer_for``).

    Attributes:
      layers: the layers these programs serve; ``step``'s ``layer`` argument picks one.
      objective: a name from ``OBJECTIVES`` (made for each of ``layers``) or one ``Objective``
        (then ``layers`` is its own and ``layer`` is ignored).
      param, transform, priors: the parameterization, the robustness transforms (including any
        upsampling to the native size) and the image priors (``recipes.build_*`` makes them once
        per value, so equal recipes give equal setups).
      optimizer: an optax optimizer, or None for ``ADAM`` with a traced learning rate.
      relu_rule: the ReLU gradient rule (``jaxpr.gradients.RELU_RULES``) or None.
      shape: (batch, H, W, C) of each filter's images.
      filters: filters per call (a bucket: ``filters_per_call``).
      steps: the most steps one ``step`` call runs (its ``n`` may be fewer).
    """

    layers: tuple[str, ...]
    objective: str | objectives_lib.Objective
    param: param_lib.Param
    transform: Callable
    priors: tuple[reg_lib.Regularizer, ...]
    optimizer: optax.GradientTransformation | None
    relu_rule: str | None
    shape: tuple[int, int, int, int]
    filters: int
    steps: int

    def objective_of(self, layer: str) -> objectives_lib.Objective:
        """The objective this setup maximizes on ``layer``."""
        if isinstance(self.objective, objectives_lib.Objective):
            return self.objective
        return named_objective(self.objective, layer)


class Renderer:
    """The compiled ``init`` and ``step`` of one ``Setup`` on one probe (see the module doc).

    ``compiled`` says whether ``step`` is compiled for this process (else the next call waits
    for XLA: ``compile_seconds`` of the last compile measures how long); ``warm`` compiles it
    ahead of use (``cnnvis warmup``, the explorers' idle time).
    """

    def __init__(self, probe, setup: Setup):
        self.probe = probe
        self.setup = setup
        self.compiled = False
        self.compile_seconds: float | None = None
        self._lock = threading.Lock()
        self._compiling: threading.Thread | None = None  # ``prepare``'s background compile
        self._lowered = threading.Event()  # set once ``step`` is traced and lowered (or that failed)
        spread = sharding.filter_sharding()  # init places the filter axis over the devices
        xla = compiler_options(probe)
        placed = {} if spread is None else {"out_shardings": spread}
        self.init = jax.jit(self._init, compiler_options=xla, **placed)
        self._step = jax.jit(self._step_impl, donate_argnums=0, compiler_options=xla)
        self._objectives = tuple(setup.objective_of(layer) for layer in setup.layers)
        needed = []
        for objective in self._objectives:
            needed += [name for name in objective.layers if name not in needed]
        self._needed = tuple(needed)
        self._forward = rewrite(  # fast gradients for the scanned steps, then the ReLU rule if any
            lambda v, x: probe.forward(v, x)[1], *speed.GRADIENTS, *relu_rules(setup.relu_rule)
        )

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return ADAM if self.setup.optimizer is None else self.setup.optimizer

    # ------------------------------------------------------------------ pure programs
    def _init(self, key, units, starts, learning_rate):
        """Every filter's state (params, optimizer state, key, step, summed |gradient|) and image."""
        par, shape, opt = self.setup.param, self.setup.shape, self.optimizer

        def one(k, start):
            k, sub = jax.random.split(k)
            params = par.init(sub, shape) if start is None else par.from_image(start)
            opt_state = opt.init(params)
            if self.setup.optimizer is None:
                rate = jnp.asarray(learning_rate, jnp.float32)
                opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})
            return params, opt_state, k, jnp.zeros((), jnp.int32), jnp.zeros(shape, jnp.float32)

        keys = jax.vmap(lambda u: jax.random.fold_in(key, u))(units)
        state = jax.vmap(one)(keys, starts) if starts is not None else jax.vmap(lambda k: one(k, None))(keys)
        return state, jax.vmap(par.to_image)(state[0])

    def _score(self, acts, unit, layer):
        """The objective of ``layers[layer]``: every layer's value, one picked by the traced index.
        (A ``lax.switch`` over the objectives computed only the one, but its conditional in the
        forward and the backward pass took longer to compile than the others' cheap means take to
        run: ``benchmarks/bench_compile.py --configs as-is+switch as-is``, results/bench_compile.txt.)"""
        if len(self._objectives) == 1:
            return self._objectives[0](acts, unit)
        return jnp.stack([o(acts, unit) for o in self._objectives])[layer]

    def _step_one(self, state, unit, layer, variables, weights):
        setup, opt = self.setup, self.optimizer
        par, priors = setup.param, setup.priors
        params, opt_state, key, t, attribution = state
        key, sub = jax.random.split(key)

        def loss(images):
            acts = self._forward(variables, setup.transform(sub, images))
            obj = self._score({n: acts[n] for n in self._needed}, unit, layer)
            return reg_lib.apply_penalties(priors, weights, images) - obj, obj

        images, to_params = jax.vjp(par.to_image, params)
        (_, obj), g_images = jax.value_and_grad(loss, has_aux=True)(images)
        updates, opt_state = opt.update(to_params(g_images)[0], opt_state, params)
        params = optax.apply_updates(params, updates)
        # image-space projections (decay, blur, clipping) only where a prior has one or the
        # parameterization is unbounded: the round trip through from_image costs two FFTs
        if not par.bounded or any(r.project is not None for r in priors):
            projected = reg_lib.apply_projections(priors, weights, par.to_image(params), -g_images, t)
            params = par.from_image(jnp.clip(projected, 0.0, 1.0))
        return (params, opt_state, key, t + 1, attribution + jnp.abs(g_images)), obj

    def _step_impl(self, state, units, layer, n, variables, weights):
        """``n`` optimizer steps for every filter: (state, objective values (steps, filters) with
        NaN past ``n``, images)."""
        one = jax.vmap(self._step_one, in_axes=(0, 0, None, None, None))

        def body(i, carry):
            state, values = carry
            state, obj = one(state, units, layer, variables, weights)
            return state, values.at[i].set(obj)

        values = jnp.full((self.setup.steps, units.shape[0]), jnp.nan, jnp.float32)
        state, values = jax.lax.fori_loop(0, n, body, (state, values))
        return state, values, jax.vmap(self.setup.param.to_image)(state[0])

    # ------------------------------------------------------------------ calls
    def step(self, state, units, layer: int, n: int, variables, weights):
        """``n`` steps (at most ``setup.steps``) of layer ``layers[layer]``; compiles on first use."""
        args = (state, units, np.int32(layer), np.int32(n), variables, weights)
        if not self.compiled:
            pending = self._compiling
            if pending is not None:
                pending.join()
            self._compile(args)  # a no-op once the background compile succeeded
        return self._step(*args)

    def prepare(self, variables, weights) -> None:
        """Start compiling ``step`` on a background thread, from the shapes alone, unless it is
        compiled or compiling: a first visit then compiles ``init`` and runs it meanwhile (XLA
        compiles on one core; a CPU has two or more). ``wait_lowered`` waits for its Python part."""
        with self._lock:
            if self.compiled or self._compiling is not None:
                return
            self._compiling = threading.Thread(
                target=self._compile_from_shapes, args=(variables, weights), name="cnnvis-compile", daemon=True
            )
            _BACKGROUND.add(self._compiling)
            self._compiling.start()

    def wait_lowered(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` s) until ``prepare``'s compile has traced and lowered ``step``.
        Tracing is Python, so another thread's tracing meanwhile (``init``'s) takes half of the
        interpreter from it; XLA's compiles that follow run side by side without it."""
        if self._compiling is not None:
            self._lowered.wait(timeout)

    def _compile_from_shapes(self, variables, weights) -> None:
        units = np.zeros(self.setup.filters, np.int32)
        try:
            state = jax.eval_shape(self.init, jax.random.key(0), units, None, np.float32(0.05))[0]
            spread = sharding.filter_sharding()  # where init puts the state
            state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=spread), state)
            self._compile((state, units, np.int32(0), np.int32(1), variables, weights))
        except Exception:  # noqa: BLE001 - step() compiles again in the caller's thread and reports it
            pass
        finally:
            self._lowered.set()
            _BACKGROUND.discard(threading.current_thread())

    def warm(self, variables=None) -> float:
        """Compile ``step`` now (no optimization runs); returns the seconds it took (0 if warm)."""
        if self.compiled:
            return 0.0
        units = np.zeros(self.setup.filters, np.int32)
        with sharding.device_lock:
            state, _ = self.init(jax.random.key(0), units, None, np.float32(0.05))
        weights = reg_lib.default_weights(self.setup.priors)
        self._compile((state, units, np.int32(0), np.int32(1), variables or self.probe.variables, weights))
        return self.compile_seconds or 0.0

    def _compile(self, args) -> None:
        with self._lock:
            if self.compiled:
                return
            start = time.monotonic()
            lowered = self._step.lower(*args)
            self._lowered.set()
            with _ONE_COMPILE:  # XLA's part: the memory
                lowered.compile()  # fills the jit's own cache (and the persistent one)
            self.compile_seconds = time.monotonic() - start
            self.compiled = True


# One step program compiles at a time in this process: an EfficientNet compile takes hundreds of
# MB, and a notebook's explorer, dashboard and cells compiling at once went over Binder's 1 GB.
_ONE_COMPILE = threading.Lock()

# Background compiles still running: the process waits for them at exit (XLA aborts the
# interpreter, "terminate called after throwing", if a compile is torn down mid-way).
_BACKGROUND: set[threading.Thread] = set()
# How many renderers (each a pair of compiled programs) a probe keeps: the FilterExplorer's layer
# groups at one size and filter selection, and a few sizes and selections more.
MAX_RENDERERS = 16


@atexit.register
def _join_background() -> None:
    for thread in list(_BACKGROUND):
        thread.join()


def renderer_for(probe, setup: Setup) -> Renderer:
    """The probe's renderer for ``setup``, kept in ``probe.programs`` with the ``MAX_RENDERERS``
    most recently used: every image size or filter bucket a session visits is a new setup, and a
    session that kept each one's compiled programs grew without end (issue 19;
    benchmarks/soak_explorers.py measures a long session)."""
    key = ("renderer", setup)
    programs = probe.programs
    renderer = programs.pop(key, None) or Renderer(probe, setup)
    programs[key] = renderer  # the most recently used last
    held = [k for k, v in list(programs.items()) if isinstance(v, Renderer)]
    for old in held[:-MAX_RENDERERS]:  # a run still using one keeps it until it ends
        programs.pop(old, None)
    return renderer


def compile_estimate(probe) -> float | None:
    """The seconds the probe's most recently made, compiled renderer took to compile (what a
    first visit will wait, roughly), or None before any."""
    times = [r.compile_seconds for r in probe.programs.values() if isinstance(r, Renderer) and r.compiled]
    return times[-1] if times else None


def named_objective(kind: str, layer: str) -> objectives_lib.Objective:
    """The objective called ``kind`` (``OBJECTIVES``) on ``layer``."""
    if kind not in OBJECTIVES:
        raise ValueError(f"Unknown objective {kind!r}; give one of {sorted(OBJECTIVES)} or an Objective.")
    return OBJECTIVES[kind](layer)


def filters_per_call(n: int, chunk: int, devices: int) -> int:
    """Filters one compiled call runs for ``n`` filters: ``n`` rounded up to a bucket (``BUCKETS``,
    then powers of two), or the largest power of two within the memory-bounded ``chunk``; then
    rounded up to a multiple of ``devices`` (the filter axis is split over them)."""
    bucket = next((b for b in BUCKETS if b >= n), None)
    if bucket is None:  # beyond the largest bucket: powers of two
        bucket = 1 << (n - 1).bit_length()
    most = max(1, chunk)
    if bucket > most:  # memory-bound: the largest power of two that fits
        bucket = 1 << (most.bit_length() - 1)
    return -(-bucket // devices) * devices
