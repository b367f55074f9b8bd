"""How long does ranking every saliency method by deletion and insertion take, on one image?

``cw.faithfulness`` computes each method's map (``cw.saliency``) and then both curves of it, every
step in one compiled program (``curves_of_maps``). This times, on one digits-cnn image (32x32) and on
skimage's chelsea for EfficientNet-Lite0 (224x224):

    first      the first call, compiling everything (the persistent compilation cache is off);
    warm       the median of later calls;
    per method the median seconds of its map (saliency) and of its two curves (curves_of_maps),
               with its areas and its place in the ranking.

    .venv/bin/python benchmarks/bench_faithfulness.py            # both models (minutes at 224 px)
    .venv/bin/python benchmarks/bench_faithfulness.py --quick    # digits-cnn only, one round
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import cnnvis_widgets as cw
from cnnvis_widgets.engine.faithfulness import DEFAULT_STEPS, applicable_methods
from machine import machine_info

jax.config.update("jax_enable_compilation_cache", False)  # first calls must be real compiles


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def workload(model: str, image: np.ndarray, rounds: int) -> dict:
    probe = cw.load(model)
    x = cw.data.fit_to(image, probe)
    methods = applicable_methods(probe)
    first, result = seconds(lambda: cw.faithfulness(probe, x))
    warm = [seconds(lambda: cw.faithfulness(probe, x))[0] for _ in range(rounds)]
    classes = result.targets
    per_method = {}
    for k, method in enumerate(methods):
        maps_s, curves_s = [], []
        for _ in range(rounds):
            t, maps = seconds(lambda: cw.saliency(probe, x, method, classes).maps)
            maps_s.append(t)
            curves_s.append(seconds(lambda: cw.curves_of_maps(probe, x, maps, classes))[0])
        per_method[method] = {
            "map_s": float(np.median(maps_s)),
            "curves_s": float(np.median(curves_s)),
            "deletion_auc": float(result.deletion_auc[k, 0]),
            "insertion_auc": float(result.insertion_auc[k, 0]),
            "rank": result.ranking.index(method) + 1,
        }
    return {
        "model": model,
        "image": f"{x.shape[1]}x{x.shape[2]}x{x.shape[3]}",
        "target": probe.class_name(int(classes[0])),
        "steps": min(DEFAULT_STEPS, x.shape[1] * x.shape[2]),
        "first_s": first,
        "warm_s": float(np.median(warm)),
        "rounds": rounds,
        "ranking": list(result.ranking),
        "methods": per_method,
    }


def table(run: dict) -> str:
    lines = [
        f"{run['model']} · one {run['image']} image · target {run['target']} · {run['steps']} steps · "
        f"first call {run['first_s']:.1f} s (compiles), warm {run['warm_s']:.2f} s (median of {run['rounds']})",
        f"{'rank':>4}  {'method':<22}{'deletion':>9}{'insertion':>10}{'map s':>8}{'curves s':>10}",
    ]
    for method in run["ranking"]:
        m = run["methods"][method]
        lines.append(
            f"{m['rank']:>4}  {method:<22}{m['deletion_auc']:9.3f}{m['insertion_auc']:10.3f}"
            f"{m['map_s']:8.3f}{m['curves_s']:10.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits-cnn only, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_faithfulness"))
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    runs = [workload("digits-cnn", cw.data.digits().images[0], rounds)]
    if not args.quick:
        runs.append(workload("efficientnet-lite0", cw.data.photo("chelsea"), max(1, rounds - 1)))
    text = "\n\n".join(table(run) for run in runs)
    print(text)
    if not args.quick:
        Path(args.out + ".txt").write_text(text + "\n")
        Path(args.out + ".json").write_text(
            json.dumps({"machine": machine_info(), "runs": runs}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
