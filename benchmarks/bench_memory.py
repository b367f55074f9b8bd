"""Peak memory of a whole EfficientNet-Lite0 layer at 128x128, chunked from the memory budget.

Target (issue 9): a whole layer of EfficientNet-Lite0 at 128x128 within 1 GB peak, with the
chunk (filters per compiled call) chosen automatically (``ascent.default_chunk`` from
``ascent.activation_bytes`` and ``ascent.MEMORY_BUDGET``). Each run is a fresh process (peak
RSS = ru_maxrss, the whole process: Python, JAX, the model, XLA's compiles), after
``cw.use_all_cores()``, default settings but few steps (memory does not grow with steps).
With ``--contrast`` the same layer also runs with the old fixed chunk (16 per device).

``--after-compile`` measures instead what handing the compiler's freed scratch back to the system
(``memory.trim_after_compiles``, on from import) saves: notebook 02 in fast mode, in fresh kernels
alternating without and with it (peak = VmHWM, as tests/test_notebooks.py reads it).

    .venv/bin/python benchmarks/bench_memory.py
    .venv/bin/python benchmarks/bench_memory.py --after-compile
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LIMIT_MB = 1024

CHILD = r"""
import json, resource, sys, time
import cnnvis_widgets as cw
cw.use_all_cores()
import jax
from cnnvis_widgets.engine import ascent
probe = cw.load("efficientnet-lite0")
layer, size, steps, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = probe.layer(layer).channels
auto = ascent.auto_chunk(probe, layer, n, (size, size))  # as visualize_filters picks it (seen at 224 px)
chunk = auto if chunk == "auto" else int(chunk)
start = time.perf_counter()
result = cw.visualize_filters(probe, layer, steps=steps, size=size, chunk=chunk)
print(json.dumps(dict(layer=layer, filters=n, size=size, steps=steps, chunk=chunk, auto_chunk=auto,
                      devices=jax.device_count(), seconds=time.perf_counter() - start,
                      finite=int(result.finite.sum()),
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def after_compile(reps: int, out: Path) -> None:
    """Notebook 02 in fast mode, in fresh kernels, with the trim after compiles off and on."""
    sys.path.insert(0, str(HERE.parent))
    import nbformat

    from tests.test_notebooks import run_notebook

    source = nbformat.read(HERE.parent / "notebooks" / "02_what_each_layer_sees.ipynb", as_version=4)
    peaks = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("off", "on"):
            nb = copy.deepcopy(source)
            if mode == "off":
                nb.cells.insert(0, nbformat.v4.new_code_cell(
                    "import cnnvis_widgets.memory\ncnnvis_widgets.memory.TRIM_AFTER_COMPILE_S = float('inf')"))
            nbformat.write(nb, Path(tmp) / f"{mode}.ipynb")
        for _ in range(reps):
            for mode in ("off", "on"):
                peaks[mode].append(run_notebook(Path(tmp) / f"{mode}.ipynb", Path(tmp))[1])
                print(mode, f"{peaks[mode][-1]:.0f} MB", flush=True)
    on, off = (float(np.median(peaks[m])) for m in ("on", "off"))
    line = (f"notebook 02 (fast mode, EfficientNet-Lite0), {reps} fresh kernels each: peak median {off:.0f} MB "
            f"without the trim after compiles, {on:.0f} MB with it (saves {off - on:.0f} MB, ratio {on / off:.2f}); "
            f"all: off {[round(p) for p in peaks['off']]}, on {[round(p) for p in peaks['on']]}")
    print(line)
    out.write_text(json.dumps(peaks, indent=2))
    out.with_suffix(".txt").write_text(line + "\n")


def run(layer: str, size: int, steps: int, chunk: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, layer, str(size), str(steps), chunk],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="block5.expand,block1.expand")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--contrast", action="store_true", help="also run the old fixed chunk (slow)")
    parser.add_argument("--after-compile", action="store_true", help="the trim after a compile, on and off")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_memory.json"))
    args = parser.parse_args()
    if args.after_compile:
        return after_compile(args.reps, HERE / "results" / "memory_after_compile.json")
    rows, lines = [], []
    for layer in args.layers.split(","):
        for chunk in ("auto", "32") if args.contrast else ("auto",):
            r = run(layer, args.size, args.steps, chunk)
            r["met"] = r["peak_mb"] <= LIMIT_MB
            rows.append(r)
            lines.append(
                f"{layer} ({r['filters']} filters, {args.size}px, {args.steps} steps): chunk "
                f"{r['chunk']}{' (auto)' if chunk == 'auto' else ' (old default, 16 per device)'}: "
                f"peak {r['peak_mb']:.0f} MB, {r['seconds']:.0f} s"
                + (
                    f" — target <= {LIMIT_MB} MB {'met' if r['met'] else 'NOT met'}"
                    if chunk == "auto"
                    else ""
                )
            )
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
