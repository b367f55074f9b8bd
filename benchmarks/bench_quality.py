"""Picture quality of activation-maximization recipes, side by side in one run.

For a few layers of EfficientNet-Lite0 (early, middle, late expand convs) and of digits-cnn, every
recipe draws the same filters with the same seed, and each result is scored (engine/quality.py):

  act    mean activation of each filter on its own image, the image resized to the model's
         native input size (224 px for EfficientNet-Lite0) and run through a separate forward pass
  wins   share of images that are their own filter's top activator (among the images of the row)
  colour colourfulness (Hasler & Süsstrunk 2003, 0..255), mean over images
  std    pixel standard deviation on [0, 1], mean over images
  ms/fs  wall milliseconds per filter-step (compile excluded: each recipe is warmed first)

Recipes (engine/recipes.py): ``classic`` (the first wave's defaults: mild transforms, L2 decay +
TV + blur, no upsampling), ``lucid`` (Lucid/Lucent's defaults in this engine: Fourier +
decorrelated colour, Lucid's transforms, upsampled to 224, no priors), ``maco`` (the same with
MACO's phase-only parameterization), and variants given as ``name:field=value,...``.
Rows accumulate in results/bench_quality.json (keyed by model, layer, recipe, steps, size); the
text table results/bench_quality.txt is rewritten from it after each row. Grids of the images go
to results/quality/ to be looked at (not committed: 8 tiles per row make them ~0.4 MB each).

    .venv/bin/python benchmarks/bench_quality.py                      # the issue-15 table (~30 min)
    .venv/bin/python benchmarks/bench_quality.py --quick              # 64 px, 32 steps, 4 filters
    .venv/bin/python benchmarks/bench_quality.py --layers block6.expand --recipes lucid,lucid:learning_rate=0.1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

import cnnvis_widgets as cw  # noqa: E402

cw.use_all_cores()
from cnnvis_widgets import export  # noqa: E402
from cnnvis_widgets.engine import ascent, quality, recipes  # noqa: E402

EFFNET_LAYERS = "block3.expand,block6.expand,block10.expand"
DIGITS_LAYERS = "conv2,conv4,classes"


def parse_recipe(text: str) -> recipes.Recipe:
    """``lucid`` or ``lucid:learning_rate=0.1,transforms=mild`` (a named recipe with changes)."""
    base, _, changes = text.partition(":")
    recipe = recipes.named(base)
    if not changes:
        return recipe
    fields = {}
    for item in changes.split(","):
        key, _, value = item.partition("=")
        current = getattr(recipe, key)  # priors cannot be changed here
        fields[key] = value.lower() == "true" if isinstance(current, bool) else type(current)(value)
    return recipe.replace(name=text, **fields)


def score_row(probe, result, seconds: float, steps: int) -> dict:
    """The quality figures of one run."""
    scores = quality.filter_scores(probe, result.images, result.layer, result.units)
    own = np.diag(scores)
    return dict(
        act=float(own.mean()),
        wins=float(quality.own_filter_wins(scores).mean()),
        colour=float(quality.colourfulness(result.images).mean()),
        std=float(quality.contrast(result.images).mean()),
        ms_per_filter_step=1000 * seconds / (steps * len(result.units)),
        seconds=seconds,
        min_class_p=None if result.scores is None else float(np.min(result.scores)),
    )


def run_one(probe, layer: str, units, recipe, steps: int, size: int | None) -> tuple:
    chunk = min(32, steps)  # steps per compiled call: the warm-up run of `chunk` steps compiles it
    kwargs = dict(steps=steps, size=size, recipe=recipe, snapshot_every=chunk)
    if layer == "classes":
        call = lambda s: ascent.visualize_classes(probe, units, **{**kwargs, "steps": s})  # noqa: E731
    else:
        call = lambda s: ascent.visualize_filters(probe, layer, units, **{**kwargs, "steps": s})  # noqa: E731
    call(chunk)  # warm: compile this shape (the persistent cache keeps it for the next run)
    start = time.perf_counter()
    result = call(steps)
    return result, time.perf_counter() - start


HEADER = """\
# benchmarks/bench_quality.py: filters 0..7 of each EfficientNet-Lite0 layer (every filter of a
# digits-cnn layer; classes: the first 10 classes), seed 0, 2 CPU devices. act: mean activation of
# each filter on its own image resized to 224 px (digits: 32 px), by a separate forward pass; wins:
# images that are their own filter's top activator; colour: Hasler & Suesstrunk colourfulness
# (0..255); std: pixel standard deviation (0..1); ms/fs: wall ms per filter-step (rows ran one after
# another, some beside other jobs: compare ms/fs only within a model and layer); min p: the lowest
# class probability of a class visualization. Recipes: engine/recipes.py (imagenet = lucid with
# learning_rate=0.1).
"""


def table(rows: list[dict]) -> str:
    lines = [
        f"{'model':<19}{'layer':<15}{'recipe':<34}{'steps':>6}{'size':>5}{'act':>7}{'wins':>6}"
        f"{'colour':>8}{'std':>7}{'ms/fs':>7}{'min p':>7}"
    ]
    for r in rows:
        p = "" if r.get("min_class_p") is None else f"{r['min_class_p']:.3f}"
        lines.append(
            f"{r['model']:<19}{r['layer']:<15}{r['recipe']:<34}{r['steps']:>6}{r['size']:>5}"
            f"{r['act']:>7.2f}{100 * r['wins']:>5.0f}%{r['colour']:>8.1f}{r['std']:>7.3f}"
            f"{r['ms_per_filter_step']:>7.1f}{p:>7}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0,digits-cnn")
    parser.add_argument("--layers", default=None, help=f"default {EFFNET_LAYERS} / {DIGITS_LAYERS}")
    parser.add_argument("--recipes", default="classic,lucid,maco,imagenet")
    parser.add_argument("--filters", type=int, default=8, help="filters 0..N-1 of each layer (digits: all)")
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--size", type=int, default=None, help="default: the model's default size")
    parser.add_argument("--quick", action="store_true", help="64 px, 32 steps, 4 filters; writes nothing")
    parser.add_argument("--out", default=str(RESULTS / "bench_quality.json"))
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.filters = 64, 32, 4

    path = Path(args.out)
    rows = [] if args.quick or not path.exists() else json.loads(path.read_text())
    (RESULTS / "quality").mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    for model in args.model.split(","):
        probe = cw.load(model)
        digits = probe.input_shape[-1] == 1
        layers = args.layers or (DIGITS_LAYERS if digits else EFFNET_LAYERS)
        for layer in layers.split(","):
            if layer != "classes" and layer not in probe.layer_names:
                continue
            steps = args.steps if not digits else min(args.steps, 256 if layer == "classes" else 128)
            units = (
                np.arange(10) if layer == "classes"
                else np.arange(probe.layer(layer).channels if digits else args.filters)
            )  # fmt: skip
            for text in args.recipes.split(","):
                recipe = parse_recipe(text)
                result, seconds = run_one(probe, layer, units, recipe, steps, args.size)
                row = dict(
                    model=model, layer=layer, recipe=text, steps=steps,
                    size=int(result.images.shape[1]), **score_row(probe, result, seconds, steps),
                )  # fmt: skip
                print(table([row]).splitlines()[1], flush=True)
                if args.quick:
                    continue
                key = lambda r: (r["model"], r["layer"], r["recipe"], r["steps"], r["size"])  # noqa: E731
                rows = [r for r in rows if key(r) != key(row)] + [row]
                path.write_text(json.dumps(rows, indent=1))
                (RESULTS / "bench_quality.txt").write_text(HEADER + table(rows) + "\n")
                name = f"{model}-{layer}-{text.replace(':', '_').replace('=', '')}-{steps}.png"
                export.save_grid(result.images, str(RESULTS / "quality" / name), labels=list(map(str, units)))


if __name__ == "__main__":
    main()
