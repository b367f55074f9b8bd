"""Lucid's robustness transforms as a chain of five steps or as one resampling: compile and run.

``transforms.standard_transforms`` was Lucid's chain (pad grey, jitter, zoom and rotate, jitter,
crop back), five steps with two reflect-padded jitters; it is now one ``random_affine`` with
whole-pixel shifts before and after the zoom and rotation and grey beyond the border. This script
weighs the two as the renderer uses them: the gradient of a loss through the transform, vmapped
over 16 filters, compiled with the renderer's XLA options (``renderer.CPU_COMPILER_OPTIONS``,
plus ``SMALL_MODEL_OPTIONS`` at digits size), each measurement in a fresh process with an empty
compile cache, the two interleaved round by round, medians.

    .venv/bin/python benchmarks/bench_transforms.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (image size, channels, the recipe's zooms/angles/reference): digits-cnn's draft and final
# stages (the "default" recipe) and the ImageNet recipe's 128-px image (``recipes.build_transforms``)
CASES = {"digits 32px": (32, 1, "mild", 224), "imagenet 128px": (128, 3, "lucid", 128)}
VARIANTS = ("chain", "one-resampling")


def build(variant: str, size: int, ranges: str, reference: int):
    from cnnvis_widgets.engine import transforms as T

    zooms, angles = (T.MILD_ZOOMS, T.MILD_ANGLES) if ranges == "mild" else (T.LUCID_ZOOMS, T.LUCID_ANGLES)
    if variant == "one-resampling":
        return T.standard_transforms(size, zooms, angles, reference=reference)
    px = lambda n: max(1, int(round(n * size / reference)))
    return T.compose(T.pad(px(12), 0.5), T.jitter(px(8)), T.random_affine(zooms, angles), T.jitter(px(4)),
                     T.center_crop(size))


def child(variant: str, case: str) -> None:
    import jax
    import jax.numpy as jnp

    from cnnvis_widgets.engine import renderer

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="cnnvis-bench-transforms-"))
    size, channels, ranges, reference = CASES[case]
    transform = build(variant, size, ranges, reference)
    options = dict(renderer.CPU_COMPILER_OPTIONS)
    if size < renderer.SMALL_INPUT_PX:
        options.update(renderer.SMALL_MODEL_OPTIONS)

    def loss(images, key):
        out = jax.vmap(transform)(jax.random.split(key, images.shape[0]), images)
        return jnp.sum(jnp.sin(out) * out)

    grad = jax.jit(jax.grad(loss), compiler_options=options)
    x = jax.random.uniform(jax.random.key(0), (16, 1, size, size, channels))
    t0 = time.perf_counter()
    lowered = grad.lower(x, jax.random.key(1))
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    compiled(x, jax.random.key(1)).block_until_ready()
    t3 = time.perf_counter()
    for i in range(20):
        out = compiled(x, jax.random.key(i))
    out.block_until_ready()
    print(json.dumps(dict(variant=variant, case=case, trace_lower_s=t1 - t0, compile_s=t2 - t1,
                          run_ms=(time.perf_counter() - t3) / 20 * 1e3)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(HERE))
    from machine import machine_info

    rows = []
    for _ in range(args.rounds):
        for case in CASES:
            for variant in VARIANTS:
                out = subprocess.run([sys.executable, __file__, "--child", variant, case],
                                     capture_output=True, text=True)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                if not lines:
                    raise RuntimeError(f"child {variant} {case} failed: {out.stderr[-2000:]}")
                rows.append(json.loads(lines[-1]))
    info = machine_info()
    lines = [f"# bench_transforms --rounds {args.rounds}  ({info['date']}, {info['cpu_count']} cpus, "
             f"load {info['load_avg_1_5_15'][0]:.1f}; gradient through the transform, 16 filters, fresh "
             "processes, empty compile cache; medians)"]
    for case in CASES:
        lines.append(f"{case}")
        lines.append(f"  {'variant':16s} {'trace+lower s':>13s} {'compile s':>10s} {'run ms':>8s}")
        med = {}
        for variant in VARIANTS:
            mine = [r for r in rows if r["case"] == case and r["variant"] == variant]
            m = med[variant] = {k: statistics.median(r[k] for r in mine)
                                for k in ("trace_lower_s", "compile_s", "run_ms")}
            lines.append(f"  {variant:16s} {m['trace_lower_s']:13.2f} {m['compile_s']:10.2f} "
                         f"{m['run_ms']:8.1f}")
        ratio = {k: med["one-resampling"][k] / med["chain"][k] for k in ("compile_s", "run_ms")}
        lines.append(f"  one-resampling / chain: compile {ratio['compile_s']:.2f}, run {ratio['run_ms']:.2f}")
    text = "\n".join(lines)
    print(text)
    results = HERE / "results"
    (results / "bench_transforms.txt").write_text(text + "\n")
    (results / "bench_transforms.json").write_text(json.dumps(dict(machine=info, rows=rows), indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
