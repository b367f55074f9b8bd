"""cnnvis_widgets (JAX) next to PyTorch on the same work, measured side by side in one run.

Targets (issue 9): whole-layer activation maximization >= 1.2x PyTorch's speed and >= 60 % of
the machine's float32 matmul GFLOP/s, on a small VGG-style CNN and on an EfficientNet-Lite0
middle layer; SmoothGrad faster than Captum-style SmoothGrad on the same network and batch.

Work (both sides; see ``torch_side.py`` for PyTorch's half):
  ascent      128 filters, 64x64, 128 steps, pixel images, jitter (4 px) + L2 + total variation,
              Adam(0.05). JAX: ``cw.visualize_filters`` after ``cw.use_all_cores()`` (one XLA
              device per core, the filter axis split over them). PyTorch: Lucent's batch
              objective, channels-last, ``torch.set_num_threads(2)``.
  smoothgrad  S=32 noisy copies of N=8 images through the model + global pool + dense(10),
              gradients w.r.t. the input. JAX: ``cw.saliency(..., "smoothgrad")``. PyTorch:
              Captum's NoiseTunnel recipe (the batch expanded S times, one backward).
  vanilla     one input-gradient batch of the N images (SmoothGrad's unit of cost).
  matmul      float32 2048^2 @ 2048^2 (each side's own), the machine's practical ceiling; JAX's
              is measured again just before each JAX round and the round's fraction uses the
              better of it and PyTorch's (the machine is shared: its speed drifts).

GFLOP/s of ascent = 2 x (XLA's FLOP count of the forward to the layer, one image) x filters x
steps / seconds, the same count for both sides (forward + input gradient; no weight gradients).
Rounds interleave JAX and PyTorch, each printed as it ends; the summary lines show medians. Compile time is excluded from the
JAX timings (a warm-up call first) and printed separately; PyTorch gets a 2-step warm-up.

    .venv/bin/python benchmarks/bench_vs_pytorch.py --setup-torch   # once: the torch venv
    .venv/bin/python benchmarks/bench_vs_pytorch.py                 # minutes
    .venv/bin/python benchmarks/bench_vs_pytorch.py --quick --out /tmp/q.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cnnvis_widgets as cw

cw.use_all_cores()  # before JAX's first array op

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cnnvis_widgets.engine import param, recipes, regularizers, saliency, transforms  # noqa: E402
from machine import machine_info  # noqa: E402
from vggish import VGGish  # noqa: E402

HERE = Path(__file__).resolve().parent
TORCH_ENV = HERE.parent / ".torch-bench-venv"
TORCH_PIN = "torch==2.13.0"


def vgg_probe(size: int, head: bool = False):
    module = VGGish(head=head)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return cw.Probe(module, variables, input_shape=(size, size, 3)), variables


def write_workload(variables, path: Path) -> None:
    """The VGG weights for the torch side (HWIO kernels; it transposes them)."""
    params = variables["params"]
    flat = {f"{name}.{k}": np.asarray(v) for name, p in params.items() for k, v in p.items()}
    np.savez(path, **flat)


def forward_flops(probe, layer: str, size: int) -> float:
    fn = jax.jit(lambda x: probe.forward(probe.variables, x)[1][layer])
    cost = fn.lower(jnp.zeros((1, size, size, 3))).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


# ------------------------------------------------------------------ JAX side
def ascent_settings(steps: int, size: int) -> dict:
    """``visualize_filters`` keywords for the compared work (torch_side.py does the same)."""
    return dict(
        steps=steps,
        size=size,
        snapshot_every=steps,
        param=param.pixel(),
        transforms=transforms.jitter(4),
        regularizers=(regularizers.l2_decay(0.01), regularizers.total_variation(1.0)),
        optimizer=optax.adam(0.05),
        recipe=recipes.PLAIN,  # no upsampling to the native size: both sides run at `size`
    )


class JaxAscent:
    def __init__(self, probe, layer, filters, size, steps):
        self.args = dict(layer=layer, filters=np.arange(filters), **ascent_settings(steps, size))
        self.probe = probe
        start = time.perf_counter()
        self()  # compile (and warm up)
        self.first_call_s = time.perf_counter() - start

    def __call__(self):
        args = dict(self.args)
        layer = args.pop("layer")
        start, cpu = time.perf_counter(), time.process_time()
        result = cw.visualize_filters(self.probe, layer, args.pop("filters"), **args)
        wall = time.perf_counter() - start
        return wall, (time.process_time() - cpu) / wall, float(np.mean(result.objective[:, -1]))


def jax_matmul(n: int = 2048, repeats: int = 5) -> float:
    f = jax.jit(lambda a, b: a @ b)
    a = jax.random.normal(jax.random.key(1), (n, n))
    f(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def jax_saliency(probe, images, method: str, **options) -> float:
    saliency.saliency(probe, images, method, **options)  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        saliency.saliency(probe, images, method, **options)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ------------------------------------------------------------------ torch side
def setup_torch() -> Path:
    python = TORCH_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", TORCH_PIN, "numpy"], check=True)
    return python


def torch_run(python: Path, workload: Path, **kwargs) -> dict:
    cmd = [str(python), str(HERE / "torch_side.py"), "--workload", str(workload)]
    for k, v in kwargs.items():
        cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main
def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setup-torch", action="store_true", help="create the torch venv and exit")
    parser.add_argument("--torch-python", help="a python with torch (default: the bench venv)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: vgg,effnet,smoothgrad")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_vs_pytorch.json"))
    args = parser.parse_args()
    python = Path(args.torch_python) if args.torch_python else setup_torch()
    if args.setup_torch:
        print(f"torch environment: {python}")
        return
    filters, size, steps, rounds = (16, 32, 8, 1) if args.quick else (128, 64, 128, args.rounds)
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-torch-"))
    report = {
        "machine": machine_info(),
        "devices": jax.device_count(),
        "workload": dict(filters=filters, size=size, steps=steps, rounds=rounds),
        "parts": {},
    }
    lines = []

    def say(line: str) -> None:
        """Print as it happens (a run takes 15-45 min) and keep the line for the .txt report."""
        lines.append(line)
        print(line, flush=True)

    say(
        f"{filters} filters, {size}x{size}, {steps} steps, {rounds} rounds; jax {jax.__version__} on "
        f"{jax.device_count()} CPU devices; load average {report['machine']['load_avg_1_5_15'][0]:.1f}"
    )

    np.savez(tmp / "none.npz")  # workloads without weights to pass
    matmul = {"jax": jax_matmul(), "torch": torch_run(python, tmp / "none.npz", what="matmul")["seconds"]}
    peak = {k: 2 * 2048**3 / v / 1e9 for k, v in matmul.items()}
    say(f"matmul 2048^2: jax {peak['jax']:.0f} GFLOP/s, torch {peak['torch']:.0f} GFLOP/s")
    report["matmul_gflops"] = peak
    ceiling_torch = peak["torch"]  # the machine's matmul rate is the better of the two libraries'

    parts = []
    if "vgg" not in skip:
        probe, variables = vgg_probe(size)
        write_workload(variables, tmp / "vgg.npz")
        parts.append(("vgg conv6", probe, "conv6", dict(model="vgg", layer="conv6"), tmp / "vgg.npz"))
    if "effnet" not in skip:
        probe = cw.load("efficientnet-lite0")
        parts.append(
            (
                "efficientnet-lite0 block5.expand",
                probe,
                "block5.expand",
                dict(model="effnet", layer="block5.expand"),
                tmp / "none.npz",
            )
        )
    for name, probe, layer, torch_model, workload in parts:
        n = min(filters, probe.layer(layer).channels)
        work = 2 * forward_flops(probe, layer, size) * n * steps
        jax_side = JaxAscent(probe, layer, n, size, steps)
        say(f"  {name}: jax first call incl. compile {jax_side.first_call_s:.1f} s")
        runs = {"jax": [], "torch": []}
        fractions = []  # of the matmul measured just before, in the same round
        for r in range(rounds):
            round_peak = 2 * 2048**3 / jax_matmul() / 1e9
            runs["jax"].append(jax_side())
            fractions.append(work / runs["jax"][-1][0] / 1e9 / max(round_peak, ceiling_torch))
            t = torch_run(python, workload, what="ascent", filters=n, size=size, steps=steps, **torch_model)
            runs["torch"].append((t["seconds"], t["cores"], t["objective"]))
            say(
                f"  {name} round {r + 1}: jax {runs['jax'][-1][0]:.2f} s ({runs['jax'][-1][1]:.2f} cores), "
                f"torch {runs['torch'][-1][0]:.2f} s ({runs['torch'][-1][1]:.2f} cores); "
                f"matmul this round {round_peak:.0f} GFLOP/s, jax at {fractions[-1]:.0%} of it"
            )
        med = {k: float(np.median([w for w, _, _ in v])) for k, v in runs.items()}
        cores = {k: float(np.median([c for _, c, _ in v])) for k, v in runs.items()}
        gflops = {k: work / v / 1e9 for k, v in med.items()}
        speedup = med["torch"] / med["jax"]
        fraction = float(np.median(fractions))
        report["parts"][name] = dict(
            seconds=med,
            cores=cores,
            gflops=gflops,
            work_gflop=work / 1e9,
            speedup_vs_torch=speedup,
            matmul_fraction=fraction,
            matmul_fraction_rounds=fractions,
            jax_first_call_s=jax_side.first_call_s,
            rounds=runs,
            targets={"speed-up >= 1.2": speedup >= 1.2, ">= 60% of matmul": fraction >= 0.6},
        )
        say(
            f"{name}: jax {med['jax']:.2f} s ({gflops['jax']:.0f} GFLOP/s, {cores['jax']:.2f} cores), "
            f"torch {med['torch']:.2f} s ({gflops['torch']:.0f} GFLOP/s, {cores['torch']:.2f} cores); "
            f"speed-up {speedup:.2f}x ({'met' if speedup >= 1.2 else 'NOT met'} >= 1.2), "
            f"{fraction:.0%} of matmul ({'met' if fraction >= 0.6 else 'NOT met'} >= 60%); "
            f"jax first call incl. compile {jax_side.first_call_s:.1f} s"
        )

    if "smoothgrad" not in skip:
        probe, variables = vgg_probe(size, head=True)
        write_workload(variables, tmp / "vggh.npz")
        images = jax.random.uniform(jax.random.key(2), (8, size, size, 3))
        samples = 8 if args.quick else 32
        j_sg = jax_saliency(probe, images, "smoothgrad", n_samples=samples)
        j_v = jax_saliency(probe, images, "vanilla")
        kw = dict(model="vgg", layer="conv6", size=size, images=8, samples=samples)
        t_sg = torch_run(python, tmp / "vggh.npz", what="smoothgrad", **kw)["seconds"]
        t_v = torch_run(python, tmp / "vggh.npz", what="vanilla", **kw)["seconds"]
        report["parts"]["smoothgrad"] = dict(
            jax=dict(smoothgrad=j_sg, vanilla=j_v, ratio=j_sg / (samples * j_v)),
            torch=dict(smoothgrad=t_sg, vanilla=t_v, ratio=t_sg / (samples * t_v)),
            speedup_vs_torch=t_sg / j_sg,
            samples=samples,
            targets={"jax <= 1.1 x S vanilla": j_sg <= 1.1 * samples * j_v, "faster than torch": j_sg < t_sg},
        )
        say(
            f"smoothgrad S={samples} N=8 (vgg + pool + dense): jax {j_sg:.3f} s "
            f"(= {j_sg / (samples * j_v):.2f} x S vanilla), captum-style torch {t_sg:.3f} s "
            f"({t_sg / (samples * t_v):.2f} x S vanilla); jax is {t_sg / j_sg:.2f}x faster"
        )
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
