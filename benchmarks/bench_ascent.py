"""How fast is the engine's activation maximization, next to the obvious alternatives?

Workload: a small VGG-style Flax linen CNN (conv 32-32-pool-64-64-pool-128-128, ReLU,
64x64x3 input, random init, seed 0); an image for every filter of its last conv layer
("conv6", 128 filters), pixel parameterization, jitter + L2 decay + total variation,
Adam(0.05), the engine's redirected-ReLU gradient. Every variant does the same per-step math
with the same random numbers (keys derived as in the engine), so their final objectives agree
(printed as a check). Variants:

  compiled  the engine: ``visualize_filters(...)``, i.e. ``jax.vmap`` over filters +
            ``jax.lax.scan`` over steps, one compiled call (timed end to end, as a user sees it).
  loop      (a) one filter at a time: one jitted single step (compiled once, the filter index
            is a traced argument) called in a Python loop over steps, then over filters.
  batch     (b) what Lucent users do: one batch holding every filter's image, objective
            sum_i mean(channel i of image i), one jitted step over the batch called in a
            Python loop over steps. (The forward is vmapped over images so that the
            redirected-ReLU rule, like the engine's, looks at each image alone; XLA folds
            this vmap into the convolutions' batch dimension.)
  2dev      (e) ``compiled`` again, in a worker subprocess started with
            ``XLA_FLAGS=--xla_force_host_platform_device_count=2``: the engine then shards
            the filter axis over two host devices (one per core).
  matmul    reference: a jitted float32 2048x2048 @ 2048x2048 matmul (median of 5 calls).

The machine is shared and noisy, so variants run interleaved, one of each per round, and
the table shows medians over rounds. Columns: median wall seconds; that time divided by the
compiled call's (> 1: the compiled call is faster); GFLOP/s = FLOPs of the work / time, the
FLOPs counted by XLA's cost analysis of one compiled step (forward + input gradients; the
weight gradients are never computed, so it is ~2x, not 3x, the forward conv FLOPs: the
analytic count is printed beside it); cores = process CPU time / wall time (the matmul's
shows how many cores the machine really gave us); compile = seconds spent tracing, lowering
and compiling during the variant's first call (the union of JAX's "/jax/core/compile/*"
monitoring spans, so it does not depend on noisy run times). Targets: (a) and (b) ratio
>= 1.0, (c) compiled >= 50% of matmul GFLOP/s.

    .venv/bin/python benchmarks/bench_ascent.py            # the real measurement (minutes)
    .venv/bin/python benchmarks/bench_ascent.py --quick    # CI smoke run (< 1 min)

``bench_maxpool_grad.py`` (beside this file) measures one thing that slows the compiled call:
XLA:CPU's max-pool gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets.engine import ascent, objectives, param, regularizers, transforms
from cnnvis_widgets.jaxpr import speed
from cnnvis_widgets.jaxpr.evaluate import rewrite
from cnnvis_widgets.jaxpr.gradients import relu_rule
from machine import machine_info
from vggish import VGGish

jax.config.update("jax_enable_compilation_cache", False)  # compile times must be real compiles
LAYER = "conv6"


class Workload:
    """The model, probe and the one set of param/transforms/regularizers every variant shares.

    Built once and reused: the engine caches its compiled call on these very objects.
    """

    def __init__(self, filters: int, steps: int, size: int, module: nn.Module = VGGish()):
        self.filters, self.steps, self.size = filters, steps, size
        # Always VGGish's weights: a variant ``module`` with the same layer names shares them.
        variables = jax.jit(VGGish().init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
        self.probe = cw.Probe(module, variables, input_shape=(size, size, 3))
        self.variables = variables
        self.units = jnp.arange(filters, dtype=jnp.int32)
        self.param = param.pixel()
        self.transform = transforms.jitter(4)
        self.regs = (regularizers.l2_decay(0.01), regularizers.total_variation(1.0))
        self.weights = regularizers.default_weights(self.regs)
        self.objective = objectives.channel(LAYER)
        self.optimizer = optax.adam(0.05)
        self.forward = rewrite(
            lambda v, x: self.probe.forward(v, x)[1], *speed.GRADIENTS, relu_rule("redirected")
        )
        self.shape = (1, size, size, 3)  # one image per filter

    def engine(self):
        """The compiled call; returns each filter's final objective."""
        r = ascent.visualize_filters(
            self.probe,
            LAYER,
            np.arange(self.filters),
            steps=self.steps,
            snapshot_every=self.steps,
            size=self.size,
            param=self.param,
            transforms=self.transform,
            regularizers=self.regs,
            optimizer=self.optimizer,
        )
        return r.objective[:, -1]

    # ------------------------------------------------ the same step, written out (engine: renderer.Renderer)
    def init_one(self, unit):
        key, sub = jax.random.split(jax.random.fold_in(jax.random.key(0), unit))
        params = self.param.init(sub, self.shape)
        return params, self.optimizer.init(params), key, jnp.zeros((), jnp.int32)

    def image_loss(self, key, images, unit, variables):
        """(penalties - objective, objective) of one filter's (1, H, W, C) images."""
        acts = self.forward(variables, self.transform(key, images))
        obj = self.objective({LAYER: acts[LAYER]}, unit)
        return regularizers.apply_penalties(self.regs, self.weights, images) - obj, obj

    def update(self, params, opt_state, loss_fn, t):
        """One Adam step on ``loss_fn(images)``, then the image-space projections (L2 decay)."""
        images, to_params = jax.vjp(self.param.to_image, params)
        (_, obj), g = jax.value_and_grad(loss_fn, has_aux=True)(images)
        updates, opt_state = self.optimizer.update(to_params(g)[0], opt_state, params)
        params = optax.apply_updates(params, updates)
        projected = regularizers.apply_projections(
            self.regs, self.weights, self.param.to_image(params), -g, t
        )
        return self.param.from_image(jnp.clip(projected, 0.0, 1.0)), opt_state, obj

    def step_one(self, state, unit, variables):
        """(a): one step for one filter (variables are an argument, as in the engine, not constants)."""
        params, opt_state, key, t = state
        key, sub = jax.random.split(key)
        params, opt_state, obj = self.update(
            params, opt_state, lambda x: self.image_loss(sub, x, unit, variables), t
        )
        return (params, opt_state, key, t + 1), obj

    def init_batch(self, units):
        """(b): every filter's params as one array (F, 1, H, W, C), one Adam state for it."""
        params, _, keys, _ = jax.vmap(self.init_one)(units)
        return params, self.optimizer.init(params), keys, jnp.zeros((), jnp.int32)

    def step_batch(self, state, units, variables):
        """(b): one step for the batch of all filters' images, params (F, 1, H, W, C)."""
        params, opt_state, keys, t = state
        keys, subs = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)

        def loss(images):  # sum over filters i of (penalties_i - objective_i)
            losses, objs = jax.vmap(self.image_loss, in_axes=(0, 0, 0, None))(subs, images, units, variables)
            return losses.sum(), objs

        params, opt_state, objs = self.update(params, opt_state, loss, t)
        return (params, opt_state, keys, t + 1), objs


# ------------------------------------------------------------------ variants: (wall s, cpu s, result)
def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu, out


_SPANS = []  # (start, end) of every trace / lowering / backend compile JAX reports
jax.monitoring.register_event_time_span_listener(
    lambda event, start, end, **_: (
        _SPANS.append((start, end)) if event.startswith("/jax/core/compile/") else None
    )
)


def compile_seconds(fn) -> float:
    """Runs ``fn()``; returns the seconds JAX spent tracing, lowering and compiling in it."""
    first = len(_SPANS)
    jax.block_until_ready(fn())
    total, covered = 0.0, -np.inf  # union of possibly nested spans
    for start, end in sorted(_SPANS[first:]):
        total += max(0.0, end - max(start, covered))
        covered = max(covered, end)
    return total


class Loop:
    """(a) Python loops over filters and steps around one jitted single step."""

    def __init__(self, w: Workload):
        self.w, self.init, self.step = w, jax.jit(w.init_one), jax.jit(w.step_one)
        self.compile_s = compile_seconds(lambda: self.step(self.init(w.units[0]), w.units[0], w.variables))

    def __call__(self):
        finals = []
        for unit in self.w.units:
            state = self.init(unit)
            for _ in range(self.w.steps):
                state, obj = self.step(state, unit, self.w.variables)
            finals.append(obj)
        return jnp.stack(finals)


class Batch:
    """(b) a Python loop over steps around one jitted step of the whole batch."""

    def __init__(self, w: Workload):
        self.w, self.init, self.step = w, jax.jit(w.init_batch), jax.jit(w.step_batch)
        self.compile_s = compile_seconds(lambda: self.step(self.init(w.units), w.units, w.variables))
        # One step for all filters, the same math as one scan step of the compiled call. (After
        # the first call, lower().compile() is a cache hit.)
        cost = self.step.lower(self.init(w.units), w.units, w.variables).compile().cost_analysis()
        self.flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])

    def __call__(self):
        state = self.init(self.w.units)
        for _ in range(self.w.steps):
            state, objs = self.step(state, self.w.units, self.w.variables)
        return objs


MATMUL_N = 2048


def matmul(repeats: int = 5):
    """(median wall s, cpu s scaled to it) of a jitted float32 N x N @ N x N matmul."""
    a = jax.random.normal(jax.random.key(1), (MATMUL_N, MATMUL_N), jnp.float32)
    mm = jax.jit(jnp.dot)
    mm(a, a).block_until_ready()
    runs = [timed(lambda: mm(a, a))[:2] for _ in range(repeats)]
    wall = float(np.median([r[0] for r in runs]))
    return wall, wall * sum(r[1] for r in runs) / sum(r[0] for r in runs)


def analytic_flops(w: Workload) -> float:
    """2 x forward conv FLOPs (forward + input gradient) per image, times the filters."""
    total, hw, c_in = 0, w.size * w.size, 3
    for i, c_out in enumerate([32, 32, 64, 64, 128, 128]):
        total += 2 * hw * 9 * c_in * c_out
        c_in, hw = c_out, hw // 4 if i in (1, 3) else hw
    return 2 * total * w.filters


# ------------------------------------------------------------------ the two-device worker (e)
def worker(args):
    """Runs in the subprocess: warm up, then one timed compiled call per 'run' line on stdin."""
    w = Workload(args.filters, args.steps, args.size)
    compile_s = compile_seconds(w.engine)
    print(json.dumps({"devices": jax.device_count(), "compile_s": compile_s}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        wall, cpu, finals = timed(w.engine)
        print(json.dumps({"wall": wall, "cpu": cpu, "finals": np.asarray(finals).tolist()}), flush=True)


class TwoDevices:
    def __init__(self, args):
        env = dict(
            os.environ,
            XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip(),
        )
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            f"--filters={args.filters}",
            f"--steps={args.steps}",
            f"--size={args.size}",
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.proc.stdout.readline())
        self.devices, self.compile_s = ready["devices"], ready["compile_s"]

    def __call__(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        r = json.loads(self.proc.stdout.readline())
        return r["wall"], r["cpu"], np.asarray(r["finals"])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--filters", type=int, default=128, help="filters of conv6 to visualize (<= 128)")
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per filter")
    ap.add_argument("--size", type=int, default=64, help="image size (px)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (medians are reported)")
    ap.add_argument("--quick", action="store_true", help="CI size: 32 filters, 4 steps, 3 rounds")
    ap.add_argument("--no-2dev", action="store_true", help="skip the two-device subprocess (e)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_ascent.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.filters, args.steps, args.rounds = 32, 4, 3
    if args.worker:
        return worker(args)

    w = Workload(args.filters, args.steps, args.size)
    info = machine_info()
    print(
        f"{args.filters} filters of {LAYER}, {args.size}x{args.size}, {args.steps} steps, {args.rounds} rounds; "
        f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {info['load_avg_1_5_15'][0]:.1f}",
        flush=True,
    )
    compile_compiled = compile_seconds(w.engine)
    variants = {"compiled": w.engine, "loop": Loop(w), "batch": Batch(w)}
    two = None if args.no_2dev else TwoDevices(args)
    if two:
        variants["2dev"] = two
    flops = {"xla": variants["batch"].flops, "analytic": analytic_flops(w)}
    print(
        f"FLOPs per step, all filters: XLA cost analysis {flops['xla'] / 1e9:.2f} G, "
        f"analytic (2x forward convs) {flops['analytic'] / 1e9:.2f} G",
        flush=True,
    )

    runs = {name: [] for name in [*variants, "matmul"]}  # (wall s, cpu s) per round
    finals = {}
    for r in range(args.rounds):
        names = list(variants)
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order each round
            wall, cpu, out = variants[name]() if name == "2dev" else timed(variants[name])
            runs[name].append((wall, cpu))
            finals[name] = np.asarray(out)
        runs["matmul"].append(matmul())
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1][0]:.2f} s" for n, v in runs.items()), flush=True)
    if two:
        two.close()

    median = {n: float(np.median([x[0] for x in v])) for n, v in runs.items()}
    cores = {n: sum(x[1] for x in v) / sum(x[0] for x in v) for n, v in runs.items()}
    work = {n: flops["xla"] * args.steps for n in variants} | {"matmul": 2.0 * MATMUL_N**3}
    gflops = {n: work[n] / median[n] / 1e9 for n in runs}
    compile_s = {n: variants[n].compile_s for n in ["loop", "batch", "2dev"] if n in variants}
    compile_s["compiled"] = compile_compiled
    t0 = median["compiled"]

    print(f"\n{'variant':<10}{'median s':>10}{'t/t_compiled':>14}{'GFLOP/s':>9}{'cores':>7}{'compile s':>11}")
    rows = []
    for n in runs:
        ratio = None if n == "matmul" else median[n] / t0
        print(
            f"{n:<10}{median[n]:>10.3f}{'' if ratio is None else f'{ratio:.2f}x':>14}{gflops[n]:>9.1f}"
            f"{cores[n]:>7.2f}{'' if n not in compile_s else f'{compile_s[n]:.2f}':>11}"
        )
        rows.append(
            {
                "variant": n,
                "median_s": median[n],
                "t_over_t_compiled": ratio,
                "gflops": gflops[n],
                "cores_used": cores[n],
                "compile_s": compile_s.get(n),
                "rounds": [{"wall_s": x[0], "cpu_s": x[1]} for x in runs[n]],
            }
        )
    fraction = gflops["compiled"] / gflops["matmul"]
    targets = {
        "(a) loop / compiled >= 1.0": bool(median["loop"] / t0 >= 1.0),
        "(b) batch / compiled >= 1.0": bool(median["batch"] / t0 >= 1.0),
        "(c) compiled GFLOP/s >= 50% of matmul's": bool(fraction >= 0.5),
    }
    measured = [median["loop"] / t0, median["batch"] / t0, fraction]
    for (k, ok), m in zip(targets.items(), [f"{measured[0]:.2f}", f"{measured[1]:.2f}", f"{fraction:.0%}"]):
        print(f"{k}: {m}, {'met' if ok else 'NOT met'}")
    if two:
        print(f"(e) {two.devices} host devices: compiled / 2dev = {t0 / median['2dev']:.2f}x speed-up")
    agree = {n: float(np.max(np.abs(finals[n] - finals["compiled"]))) for n in variants if n != "compiled"}
    print(
        f"check, same math and keys: final objective ~{np.mean(finals['compiled']):.3g}, max |diff| vs compiled: "
        + ", ".join(f"{n} {v:.1g}" for n, v in agree.items())
    )

    info["load_avg_1_5_15_end"] = os.getloadavg()
    result = {
        "machine": info,
        "config": {k: v for k, v in vars(args).items() if k != "worker"} | {"layer": LAYER},
        "flops_per_step": flops,
        "variants": rows,
        "matmul_fraction": fraction,
        "targets": targets,
        "two_device_speedup": t0 / median["2dev"] if two else None,
        "final_objective_max_abs_diff": agree,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
