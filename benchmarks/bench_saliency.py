"""Do SmoothGrad and integrated gradients cost no more than their gradients?

SmoothGrad with S samples and integrated gradients with T steps are S (T) input gradients of
the whole batch. The engine runs them as one jitted ``lax.scan`` over samples (steps), each
step one vmapped gradient of the flat batch of images, with the loop-friendly convolution
input-gradient of ``jaxpr.speed`` (XLA:CPU leaves a stock conv's input-gradient off its
fast path inside loops, jax-ml/jax#12868). So the targets are

    smoothgrad / (S x vanilla) <= 1.1      integrated_gradients / (T x vanilla) <= 1.1
    lrp / vanilla <= 1.5
    top-8 concept heatmaps in one call / 8 one-channel calls <= 0.3   (--concepts)

where ``vanilla`` is one ``saliency(..., "vanilla")`` call on the same batch (one gradient,
outside any loop, stock convs). All variants are timed end to end through the public API, as a
user calls them. For contrast, ``naive_sg`` is SmoothGrad as one would first write it: a
``jax.vmap`` over images of a ``jax.vmap`` over samples of ``jax.grad``, with the same noise
(so its result must equal the engine's: printed as a check). ``lrp`` is layer-wise relevance
propagation with its default composite (epsilon-plus-flat), one modified gradient.

Workload: digits-cnn (32x32 grayscale), N real digit images, target = each image's label;
optionally (``--imagenet``) EfficientNet-Lite0 on 8 photos at 224x224.

The machine is shared and noisy, so variants run interleaved, one of each per round (the
order rotates), and the table shows medians over rounds. Columns: median wall seconds;
the ratio to its target's reference (S or T x vanilla); cores = process CPU time / wall time;
cpu / sys = median CPU seconds of the process, in all / in the kernel (page faults of
freshly allocated buffers show up there); cpu ratio = the same ratio as "ratio" on CPU
time, which the other tenants of a shared machine disturb less than wall time;
compile = first call - median call (the persistent compilation cache is off). ``naive_sg``
is timed after the others (its rounds follow theirs): interleaved, its huge buffers made the
next calls of the others several times slower.

    .venv/bin/python benchmarks/bench_saliency.py              # digits-cnn, 64 images, S = T = 32
    .venv/bin/python benchmarks/bench_saliency.py --quick      # CI smoke run (seconds)
    .venv/bin/python benchmarks/bench_saliency.py --imagenet   # + EfficientNet-Lite0, 8 x 224^2
    .venv/bin/python benchmarks/bench_saliency.py --concepts --imagenet   # cw.concepts, both models
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import cnnvis_widgets as cw
from cnnvis_widgets.engine.saliency import _score_fn, _Target, saliency
from machine import machine_info

jax.config.update("jax_enable_compilation_cache", False)  # compile times must be real compiles
NOISE = 0.15


def timed(fn):
    """(wall s, (cpu s, of which sys s) of this process, result); sys from os.times (10 ms ticks)."""
    wall, cpu, t0 = time.perf_counter(), time.process_time(), os.times()
    out = fn()
    jax.block_until_ready(out.attributions if hasattr(out, "attributions") else out)
    cpu, t1 = time.process_time() - cpu, os.times()
    return time.perf_counter() - wall, (cpu, t1.system - t0.system), out


def naive_smoothgrad(probe, n_samples: int):
    """vmap over images of vmap over samples of grad (stock convs), the engine's noise draws."""
    score = _score_fn(_Target(None, False))

    def grad_one(v, x, t):  # one image (H, W, C)
        return jax.grad(lambda x: score(*probe.forward(v, x[None]), t[None])[0][0])(x)

    def run(v, x, targets, key):
        sigma = NOISE * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
        keys = jax.random.split(key, n_samples)
        noise = jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys)  # (S, N, H, W, C)
        noisy = x[:, None] + sigma[:, None] * jnp.moveaxis(noise, 0, 1)  # (N, S, H, W, C)
        per_sample = jax.vmap(jax.vmap(grad_one, in_axes=(None, 0, None)), in_axes=(None, 0, 0))
        return per_sample(v, noisy, targets).mean(axis=1)

    run = jax.jit(run)
    return lambda x, targets: run(probe.variables, jnp.asarray(x), jnp.asarray(targets), jax.random.key(0))


def workload(name, probe, images, targets, samples, steps, rounds, naive: bool):
    n = len(images)
    print(
        f"\n== {name}: {n} images {images.shape[1]}x{images.shape[2]}x{images.shape[3]}, "
        f"SmoothGrad S={samples}, integrated gradients T={steps}, {rounds} rounds",
        flush=True,
    )
    variants = {
        "vanilla": lambda: saliency(probe, images, "vanilla", targets),
        "smoothgrad": lambda: saliency(probe, images, "smoothgrad", targets, n_samples=samples, noise=NOISE),
        "integrated_gradients": lambda: saliency(probe, images, "integrated_gradients", targets, steps=steps),
        "lrp": lambda: saliency(probe, images, "lrp", targets),
    }
    first, outs = {}, {}
    for k, fn in variants.items():  # first calls: trace + compile + run
        first[k], _, outs[k] = timed(fn)
        print(f"  first call {k}: {first[k]:.2f} s", flush=True)
    runs = {k: [] for k in variants}
    for r in range(rounds):
        names = list(variants)
        for k in names[r % len(names) :] + names[: r % len(names)]:
            wall, cpu, _ = timed(variants[k])
            runs[k].append((wall, cpu))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.3f} s" for k, v in runs.items()), flush=True)
    if naive:  # timed after the others: interleaved, its huge buffers made their next calls ~4x slower
        naive_fn = naive_smoothgrad(probe, samples)
        variants["naive_sg"] = lambda: naive_fn(images, targets)
        first["naive_sg"], _, outs["naive_sg"] = timed(variants["naive_sg"])
        runs["naive_sg"] = [timed(variants["naive_sg"])[:2] for _ in range(rounds)]
        print(
            f"  first call naive_sg: {first['naive_sg']:.2f} s; rounds: "
            + ", ".join(f"{w:.3f} s" for w, _ in runs["naive_sg"]),
            flush=True,
        )

    median = {k: float(np.median([w for w, _ in v])) for k, v in runs.items()}
    cores = {k: sum(c[0] for _, c in v) / sum(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: float(np.median([c[0] for _, c in v])) for k, v in runs.items()}
    system = {k: float(np.median([c[1] for _, c in v])) for k, v in runs.items()}
    compile_s = {k: first[k] - median[k] for k in variants}
    reference = {"vanilla": None, "smoothgrad": samples, "integrated_gradients": steps, "lrp": 1}
    reference["naive_sg"] = samples
    rows = []
    print(
        f"\n{'variant':<22}{'median s':>10}{'reference':>16}{'ratio':>8}{'cpu s':>8}{'sys s':>8}{'cpu ratio':>10}"
        f"{'cores':>7}{'compile s':>11}"
    )
    for k in variants:
        mult = reference[k]
        ratio = None if mult is None else median[k] / (mult * median["vanilla"])
        cpu_ratio = None if mult is None else cpu[k] / max(mult * cpu["vanilla"], 1e-9)
        ref = "" if mult is None else f"{mult} x vanilla"
        print(
            f"{k:<22}{median[k]:>10.3f}{ref:>16}{'' if ratio is None else f'{ratio:.2f}':>8}{cpu[k]:>8.3f}"
            f"{system[k]:>8.3f}{'' if cpu_ratio is None else f'{cpu_ratio:.2f}':>10}{cores[k]:>7.2f}"
            f"{compile_s[k]:>11.2f}"
        )
        rows.append(
            {
                "variant": k,
                "median_s": median[k],
                "reference_multiple_of_vanilla": mult,
                "ratio": ratio,
                "median_cpu_s": cpu[k],
                "median_sys_s": system[k],
                "cpu_ratio": cpu_ratio,
                "cores_used": cores[k],
                "compile_s": compile_s[k],
                "first_call_s": first[k],
                "rounds": [{"wall_s": w, "cpu_s": c[0], "sys_s": c[1]} for w, c in runs[k]],
            }
        )
    sg_ratio = median["smoothgrad"] / (samples * median["vanilla"])
    ig_ratio = median["integrated_gradients"] / (steps * median["vanilla"])
    lrp_ratio = median["lrp"] / median["vanilla"]
    ratios = {
        "smoothgrad / (S x vanilla) <= 1.1": (sg_ratio, 1.1),
        "integrated_gradients / (T x vanilla) <= 1.1": (ig_ratio, 1.1),
        "lrp / vanilla <= 1.5": (lrp_ratio, 1.5),
    }
    targets_met = {k: bool(ratio <= limit) for k, (ratio, limit) in ratios.items()}
    for k, ok in targets_met.items():
        print(f"{k}: {ratios[k][0]:.2f}, {'met' if ok else 'NOT met'}")
    check = None
    if naive:
        engine, ref = outs["smoothgrad"].attributions, np.asarray(outs["naive_sg"])
        check = float(np.abs(engine - ref).max() / np.abs(ref).max())
        print(
            f"naive_sg / smoothgrad = {median['naive_sg'] / median['smoothgrad']:.2f}x slower; "
            f"check, same noise: max |diff| / max |grad| = {check:.1e}"
        )
    return {
        "workload": name,
        "images": list(images.shape),
        "samples": samples,
        "steps": steps,
        "rounds": rounds,
        "variants": rows,
        "targets": targets_met,
        "naive_vs_engine_max_rel_diff": check,
    }


def distinctness(heatmaps) -> float:
    """1 - the mean correlation between the heatmaps of different channels: 0 when every channel
    shows the same map (a checkerboard of the strides, say), larger when they tell channels apart."""
    flat = np.asarray(heatmaps).reshape(len(heatmaps), -1)
    corr = np.corrcoef(flat)
    return float(1 - corr[~np.eye(len(flat), dtype=bool)].mean())


def concept_workload(name, probe, image, layers, k, rounds, composites):
    """The top-``k`` concept heatmaps of one image as one call (one forward pass, ``k`` vmapped
    backward passes) against ``k`` calls of one channel each (``channels=[c]``), interleaved; and how
    distinct the channels' heatmaps are under each LRP composite."""
    print(f"\n== {name} concepts: top-{k} heatmaps in one call vs {k} calls, {rounds} rounds", flush=True)
    rows = []
    for layer, composite in [(layer, c) for layer in layers for c in composites]:
        options = {"layer": layer, "composite": composite}
        top = cw.concepts(probe, image, top_k=k, **options)  # compiles the top-k program
        channels = [int(c) for c in top.channels]
        cw.concepts(probe, image, channels=channels[:1], **options)  # and the one-channel one
        one = lambda: cw.concepts(probe, image, top_k=k, **options)
        separate = lambda: [cw.concepts(probe, image, channels=[c], **options) for c in channels]
        got = [np.asarray(r.heatmaps[0]) for r in separate()]
        check = float(np.abs(np.stack(got) - top.heatmaps).max() / max(np.abs(top.heatmaps).max(), 1e-12))
        together, apart = [], []
        for r in range(rounds):
            for fn, runs in ((one, together), (separate, apart))[:: 1 if r % 2 else -1]:
                runs.append(timed(fn)[0])
        ratio = float(np.median(together) / np.median(apart))
        apart_from = distinctness(top.heatmaps)
        print(
            f"  {layer:<16} {composite:<19} one call {np.median(together):.3f} s, {k} calls "
            f"{np.median(apart):.3f} s, ratio {ratio:.2f} ({'met' if ratio <= 0.3 else 'NOT met'}: <= 0.3); "
            f"same maps: max rel diff {check:.1e}; distinctness {apart_from:.2f}",
            flush=True,
        )
        rows.append(
            {"layer": layer, "composite": composite, "k": k, "one_call_s": together, "separate_calls_s": apart,
             "ratio": ratio, "max_rel_diff": check, "distinctness": apart_from}
        )  # fmt: skip
    return {"workload": f"{name} concepts", "rounds": rounds, "layers": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64, help="digit images in the batch")
    ap.add_argument("--samples", type=int, default=32, help="SmoothGrad samples S")
    ap.add_argument("--steps", type=int, default=32, help="integrated-gradient steps T")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (medians are reported)")
    ap.add_argument("--quick", action="store_true", help="CI size: 8 images, S = T = 4, 3 rounds")
    ap.add_argument("--no-naive", action="store_true", help="skip the nested-vmap SmoothGrad")
    ap.add_argument("--imagenet", action="store_true", help="also EfficientNet-Lite0 on 8 photos at 224x224")
    ap.add_argument("--imagenet-samples", type=int, default=8, help="S = T for EfficientNet-Lite0")
    ap.add_argument(
        "--imagenet-naive", action="store_true", help="also the nested vmap on EfficientNet (slow)"
    )
    ap.add_argument(
        "--concepts", action="store_true",
        help="instead: the top-8 concept heatmaps (cw.concepts) in one call vs 8 calls (target <= 0.3)",
    )  # fmt: skip
    ap.add_argument("--out", default=None, help="JSON (default results/bench_saliency[_concepts].json)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.samples, args.steps, args.rounds = 8, 4, 4, 3
    results_dir = Path(__file__).parent / "results"
    args.out = args.out or str(results_dir / f"bench_saliency{'_concepts' if args.concepts else ''}.json")

    info = machine_info()
    print(
        f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {info['load_avg_1_5_15'][0]:.1f}",
        flush=True,
    )
    data = cw.data.digits()
    if args.concepts:
        rounds = max(args.rounds, 5)
        composites = ["epsilon-gamma-flat", "epsilon-plus-flat"]
        digits = cw.load("digits-cnn")
        results = [
            concept_workload("digits-cnn", digits, data.images[0], ["conv3", "conv4"], 8, rounds, composites)
        ]
        if args.imagenet:
            probe = cw.load("efficientnet-lite0")
            image = cw.data.fit_image(cw.data.photo("chelsea"), probe.input_shape)
            layers = ["block6.expand", probe.default_layer, "block13", "block15.expand"]
            results.append(
                concept_workload("efficientnet-lite0", probe, image, layers, 8, rounds, composites)
            )
        return _write(args, info, results)
    results = [
        workload(
            "digits-cnn",
            cw.load("digits-cnn"),
            data.images[: args.images],
            data.labels[: args.images],
            args.samples,
            args.steps,
            args.rounds,
            naive=not args.no_naive,
        )
    ]
    if args.imagenet:
        probe = cw.load("efficientnet-lite0")
        photos = [cw.data.photo(name) for name in cw.data.PHOTOS][:8]
        images = cw.data.fit_to(photos * (8 // len(photos) + 1), probe)[:8]
        targets = np.asarray(jax.jit(lambda x: probe.forward(probe.variables, x)[0])(images)).argmax(-1)
        results.append(
            workload(
                "efficientnet-lite0",
                probe,
                images,
                targets,
                args.imagenet_samples,
                args.imagenet_samples,
                args.rounds,
                naive=args.imagenet_naive,
            )
        )

    _write(args, info, results)


def _write(args, info, results):
    info["load_avg_1_5_15_end"] = os.getloadavg()
    out = {"machine": info, "config": vars(args), "noise": NOISE, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
