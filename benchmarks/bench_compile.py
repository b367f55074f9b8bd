"""Which XLA options should the renderer's CPU programs be compiled with?

On a first visit XLA's compile is most of the wait (digits-cnn: ~4 s of a ~6.5 s first frame with
XLA's defaults), and the convolutions, the bulk of the run time, are library calls whose speed
does not depend on how XLA compiles the rest. Two options trade compile time for the speed of
the code XLA writes itself: LLVM's optimization level (``xla_backend_optimization_level``, 3 by
default) and XLA:CPU's newer fusion emitters (``xla_cpu_use_fusion_emitters``, on by default).
This script measures both sides for each configuration (``CONFIGS``), so the renderer's options
are chosen by numbers: the explorer's own programs (``FilterExplorer._optimize``: the same
recipe, priors, group program and steps per call) in fresh processes with an empty compile
cache, configurations interleaved round by round (the machine is shared and noisy), medians.

Columns: compile = XLA backend compile seconds of the run's programs (JAX's
``/jax/core/compile/backend_compile_duration`` events over 0.05 s, summed); first = the first
run, compile included; warm = median of three later runs (other seeds); ratios are to XLA's
defaults (or to as-is+switch when xla-default is not run).

The same way it weighs a change of the program itself: "as-is" is the renderer as it is,
"as-is+switch" picks the layer of a group program with a ``lax.switch`` (as it did before).

    .venv/bin/python benchmarks/bench_compile.py                 # digits-cnn and EfficientNet-Lite0
    .venv/bin/python benchmarks/bench_compile.py --models digits-cnn --rounds 1 --configs xla-default O2
    .venv/bin/python benchmarks/bench_compile.py --rounds 3 --configs as-is+switch as-is
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {  # name: the renderer's compiler options (renderer.compiler_options)
    "xla-default": {},
    "O0": {"xla_backend_optimization_level": 0},
    "O1": {"xla_backend_optimization_level": 1},
    "O2": {"xla_backend_optimization_level": 2},
    "no-fusion-emitters": {"xla_cpu_use_fusion_emitters": False},
    "O2+no-fusion-emitters": {"xla_backend_optimization_level": 2, "xla_cpu_use_fusion_emitters": False},
    # on top of the renderer's options: LLVM's expensive passes off, the LLVM module compiled in
    # one piece or split in parallel parts
    "+cheap-llvm": {"xla_llvm_disable_expensive_passes": True},
    "+split1": {"xla_cpu_parallel_codegen_split_count": 1},
    "+split8": {"xla_cpu_parallel_codegen_split_count": 8},
    # the renderer as it is (its own options), and with the layer of a group program picked by a
    # lax.switch over the objectives (as before 2026-12-06) instead of computing all and indexing
    "as-is": None,
    "as-is+switch": None,
}
LAYER = {"digits-cnn": ("conv4", "0:16"), "efficientnet-lite0": ("block3.expand", "0:16")}


def child(model: str, config: str, steps: int) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="cnnvis-bench-compile-"))
    compiles: list[float] = []

    def on_event(event: str, seconds: float, **_kw) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(on_event)
    import cnnvis_widgets as cw

    cw.use_all_cores()
    from cnnvis_widgets.engine import renderer
    from cnnvis_widgets.widgets import FilterExplorer

    if config.startswith("+"):
        own = renderer.compiler_options
        renderer.compiler_options = lambda probe: {**(own(probe) or {}), **CONFIGS[config]}
    elif not config.startswith("as-is"):
        renderer.compiler_options = lambda _probe: CONFIGS[config] or None
    if config.endswith("+switch"):
        def switch_score(self, acts, unit, layer):
            if len(self._objectives) == 1:
                return self._objectives[0](acts, unit)
            branches = [lambda a, u, o=o: o(a, u) for o in self._objectives]
            return jax.lax.switch(layer, branches, acts, unit)

        renderer.Renderer._score = switch_score
    layer, filters = LAYER[model]
    fe = FilterExplorer(model, layer=layer, filters=filters, steps=steps, autorun=False)
    units = fe.probe.check_units(layer, fe._units(fe.probe.layer(layer)))
    before = len(compiles)
    t = time.perf_counter()
    fe._optimize(fe._request(layer, units), None)
    first = time.perf_counter() - t
    compile_s = sum(s for s in compiles[before:] if s > 0.05)  # the step programs, not small helpers
    warm = []
    for seed in (1, 2, 3):
        request = dict(fe._request(layer, units), seed=seed)  # (setting fe.seed would start a run)
        t = time.perf_counter()
        fe._optimize(request, None)
        warm.append(time.perf_counter() - t)
    print(json.dumps(dict(model=model, config=config, first_s=first, compile_s=compile_s,
                          warm_s=statistics.median(warm), warm_all=warm)))


def run_child(model: str, config: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", model, config, "--steps", str(steps)],
        capture_output=True, text=True,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {model} {config} exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="*", default=list(LAYER))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.steps)
        return
    sys.path.insert(0, str(HERE))
    from machine import machine_info

    rows = []
    for _ in range(args.rounds):
        for model in args.models:
            for config in args.configs:
                rows.append(run_child(model, config, args.steps))
                print(f"  {model} {config}: {rows[-1]['compile_s']:.2f} s compile, "
                      f"{rows[-1]['warm_s']:.2f} s warm", file=sys.stderr)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    lines = [
        f"# bench_compile --models {' '.join(args.models)} --rounds {args.rounds} --steps {args.steps} "
        f"--configs {' '.join(args.configs)}",
        f"# ({stamp}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; the FilterExplorer's programs, "
        "fresh processes, empty compile cache; medians over rounds)",
    ]
    for model in args.models:
        layer, filters = LAYER[model]
        lines.append(f"{model} {layer} filters {filters}")
        lines.append(f"  {'config':22s}  compile s  first s  warm s  compile ratio  warm ratio")
        med = {}
        for config in args.configs:
            mine = [r for r in rows if r["model"] == model and r["config"] == config]
            med[config] = {
                k: statistics.median(r[k] for r in mine) for k in ("compile_s", "first_s", "warm_s")
            }
        ref = med.get("xla-default", med.get("as-is+switch", next(iter(med.values()))))
        for config in args.configs:
            m = med[config]
            lines.append(
                f"  {config:22s}  {m['compile_s']:9.2f}  {m['first_s']:7.2f}  {m['warm_s']:6.2f}  "
                f"{m['compile_s'] / ref['compile_s']:13.2f}  {m['warm_s'] / ref['warm_s']:10.2f}"
            )
    print("\n".join(lines))
    (HERE / "results" / "bench_compile.txt").write_text("\n".join(lines) + "\n")
    results = json.dumps(dict(machine=machine_info(), rows=rows), indent=2)
    (HERE / "results" / "bench_compile.json").write_text(results)


if __name__ == "__main__":
    main()
