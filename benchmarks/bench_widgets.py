"""How fast are the live widgets, without a browser?

1. kernel ms per frame: ``ImageGrid.update(tiles, force=True)`` for 64 random 32x32 RGB tiles,
   median over many frames, including the widget's state serialization and a JSON dump of
   each comm message (a capturing comm stands in for the kernel); also the binary buffer size.
2. frames/s delivered during a FilterExplorer run (digits-cnn, conv4, filters "all" = 64):
   ``grid.frames`` over the run's wall time, for snapshot_every 2, 4 and 8 (each compiled
   first by a warm-up run), with the engine's steps/s and the time spent in ``grid.update``.
3. slider change → first frame: warm (same process, the layer already compiled) and cold
   (fresh subprocesses with JAX's persistent compilation cache in a temp dir: the first fills
   it, the second is measured: import → first frame, and slider change → first frame for a
   layer that process has not run yet).

Targets: <= 5 ms per frame, >= 10 frames/s, first frame <= 0.3 s warm, and a fresh process
with a warm persistent compile cache at its first frame <= 3 s from the start of its imports.

    .venv/bin/python benchmarks/bench_widgets.py           # ~2-3 min
    .venv/bin/python benchmarks/bench_widgets.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

T_IMPORT = time.monotonic()  # for the cold child: time from interpreter start of this module

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_widgets.json"


# ----------------------------------------------------------------------------- a fake kernel
class _Stats:
    lock = threading.Lock()
    messages = 0
    json_bytes = 0
    buffer_bytes = 0
    last_buffers: list[int] = []

    @classmethod
    def reset(cls):
        with cls.lock:
            cls.messages = cls.json_bytes = cls.buffer_bytes = 0
            cls.last_buffers = []


def install_capturing_comm() -> None:
    """Make every widget's comm a capturing one: it JSON-dumps each message (as the kernel's
    session would) and counts the binary buffers, but sends nothing."""
    import comm
    from comm.base_comm import BaseComm

    class CapturingComm(BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            text = json.dumps(data or {}, default=str)
            sizes = [memoryview(b).nbytes for b in (buffers or [])]
            with _Stats.lock:
                _Stats.messages += 1
                _Stats.json_bytes += len(text)
                _Stats.buffer_bytes += sum(sizes)
                if sizes:
                    _Stats.last_buffers = sizes

    comm.create_comm = lambda *a, **k: CapturingComm(*a, **k)


# ----------------------------------------------------------------------------- 1. kernel ms
def bench_grid(frames: int) -> dict:
    import numpy as np

    from cnnvis_widgets.widgets.grid import ImageGrid

    rng = np.random.default_rng(0)
    tiles = rng.random((8, 64, 32, 32, 3), dtype=np.float32)
    grid = ImageGrid(tiles[0], labels=[str(i) for i in range(64)])
    for i in range(5):  # warm-up
        grid.update(tiles[i % 8], force=True)
    _Stats.reset()
    times = []
    for i in range(frames):
        t = time.perf_counter()
        grid.update(tiles[i % 8], force=True)
        times.append(time.perf_counter() - t)
    # where the time goes: montage + uint8 conversion alone
    from cnnvis_widgets import pixels as px

    t = time.perf_counter()
    for i in range(frames):
        px.to_uint8(px.montage(tiles[i % 8], None, pad=1, pad_value=1.0))[::-1]
    montage_ms = (time.perf_counter() - t) / frames * 1e3
    h, w = grid.pixels.shape[:2]
    return dict(
        frames=frames,
        median_ms=statistics.median(times) * 1e3,
        p90_ms=sorted(times)[int(0.9 * len(times))] * 1e3,
        montage_only_ms=montage_ms,
        montage_shape=[h, w, 3],
        messages_per_frame=_Stats.messages / frames,
        buffer_bytes_per_frame=_Stats.buffer_bytes / frames,
        json_bytes_per_frame=_Stats.json_bytes / frames,
    )


# ----------------------------------------------------------------------------- 2. fps
def bench_fps(snapshots, steps: int, repeats: int) -> list[dict]:
    from cnnvis_widgets.widgets import FilterExplorer

    out = []
    for every in snapshots:
        fe = FilterExplorer("digits-cnn", layer="conv4", filters="all", steps=steps,
                            snapshot_every=every, autorun=False)
        update_times = []
        calls = [0]
        orig = fe.grid.update

        def timed(*a, **k):
            t = time.perf_counter()
            sent = orig(*a, **k)
            calls[0] += 1
            if sent:
                update_times.append(time.perf_counter() - t)
            return sent

        fe.grid.update = timed

        chunks = 1  # FilterExplorer runs up to 64 filters as one group, so the whole grid moves
        fe.run()
        assert fe.wait(600), "warm-up run did not finish"
        rows = []
        for _ in range(repeats):
            update_times.clear()
            calls[0] = 0
            f0 = fe.grid.frames
            t = time.perf_counter()
            fe.run()
            assert fe.wait(600)
            wall = time.perf_counter() - t
            frames = fe.grid.frames - f0
            rows.append(dict(wall_s=wall, frames=frames, fps=frames / wall, callbacks=calls[0],
                             update_ms=1e3 * statistics.median(update_times) if update_times else None,
                             update_total_s=sum(update_times)))
        best = max(rows, key=lambda r: r["fps"])
        med_fps = statistics.median(r["fps"] for r in rows)
        wall = statistics.median(r["wall_s"] for r in rows)
        callbacks = best["callbacks"]
        out.append(dict(
            snapshot_every=every, steps=steps, filters=64, fps=med_fps, frames=best["frames"],
            callbacks=callbacks, wall_s=wall, filter_chunks=chunks,
            # optimizer steps of one filter group per second (the groups run one after another)
            steps_per_s=steps * chunks / wall,
            # frames the engine could hand over if nothing were dropped (callbacks / wall)
            callbacks_per_s=callbacks / wall,
            update_ms=best["update_ms"], update_share=best["update_total_s"] / best["wall_s"],
            max_fps=fe.grid.max_fps, runs=rows,
        ))
        fe.close()
    return out


# ----------------------------------------------------------------------------- 3. first frame
def first_frame_after(fe, change, timeout: float = 600.0, optimized: bool = False) -> float:
    """Seconds from calling ``change()`` (a slider move) to the grid's next frame; with
    ``optimized``, its next frame of optimized images: not the start images a first visit shows
    while XLA compiles (their caption says "compiling")."""
    event = threading.Event()
    stamp = {}

    def seen(_c):
        if not event.is_set() and not (optimized and "compiling" in fe.grid.caption.value):
            stamp["t"] = time.perf_counter()
            event.set()

    fe.grid.observe(seen, "frames")
    try:
        t = time.perf_counter()
        change()
        if not event.wait(timeout):
            raise TimeoutError("no frame")
        return stamp["t"] - t
    finally:
        fe.grid.unobserve(seen, "frames")


def bench_warm(snapshot_every: int, steps: int, repeats: int) -> dict:
    from cnnvis_widgets.widgets import FilterExplorer

    fe = FilterExplorer("digits-cnn", layer="conv4", filters="all", steps=steps,
                        snapshot_every=snapshot_every, autorun=False)
    slider = fe.layer_slider.slider
    i3, i4 = fe.layer_slider.names.index("conv3"), fe.layer_slider.names.index("conv4")
    fe.run()
    assert fe.wait(600)
    first_visit = first_frame_after(fe, lambda: setattr(slider, "value", i3))  # compiles conv3
    assert fe.wait(600)
    warm = []
    for r in range(repeats):
        target = i4 if r % 2 == 0 else i3
        warm.append(first_frame_after(fe, lambda: setattr(slider, "value", target)))
        assert fe.wait(600)
    fe.close()
    return dict(snapshot_every=snapshot_every, first_visit_of_layer_s=first_visit,
                warm_median_s=statistics.median(warm), warm_s=warm)


def child_main(snapshot_every: int, steps: int) -> None:
    """A fresh process: import → first frame, then a slider change to a new layer → first frame."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    install_capturing_comm()
    import cnnvis_widgets as cw

    cw.use_all_cores()
    from cnnvis_widgets.widgets import FilterExplorer

    t_imported = time.monotonic()
    box = {}
    fe_holder = {}

    def make():
        fe_holder["fe"] = FilterExplorer("digits-cnn", layer="conv4", filters="all", steps=steps,
                                         snapshot_every=snapshot_every, autorun=False)

    make()
    fe = fe_holder["fe"]
    t_built = time.monotonic()
    box["import_to_first_frame_s"] = first_frame_after(fe, fe.run) + (t_built - T_IMPORT)
    box["import_s"] = t_imported - T_IMPORT
    box["build_explorer_s"] = t_built - t_imported
    assert fe.wait(600)
    i3 = fe.layer_slider.names.index("conv3")
    box["slider_to_first_frame_s"] = first_frame_after(fe, lambda: setattr(fe.layer_slider.slider, "value", i3))
    assert fe.wait(600)
    box["devices"] = len(jax.devices())
    fe.close()
    print("RESULT " + json.dumps(box), flush=True)


def bench_cold(snapshot_every: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cnnvis-jaxcache-") as cache:
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
        runs = []
        for _ in range(2):  # 1: empty cache (fills it); 2: the measurement
            proc = subprocess.run(
                [sys.executable, __file__, "--child", "--snapshot-every", str(snapshot_every),
                 "--steps", str(steps)],
                env=env, capture_output=True, text=True, timeout=900,
            )
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not line:
                raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            runs.append(json.loads(line[-1][7:]))
        entries = sum(1 for _ in Path(cache).rglob("*") if _.is_file())
    return dict(snapshot_every=snapshot_every, empty_cache=runs[0], warm_cache=runs[1], cache_files=entries)


# ----------------------------------------------------------------------------- 4. first touch
def _settle(fe) -> None:
    fe.stop()
    assert fe.wait(900), "run did not stop"


def _new_explorer_first_frame(model: str, steps: int):
    """A fresh process with an empty compile cache: (a new FilterExplorer, seconds from building
    it to its first optimized frame after Run, seconds the imports took)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    install_capturing_comm()
    import cnnvis_widgets as cw

    cw.use_all_cores()
    from cnnvis_widgets.widgets import FilterExplorer

    imported = time.monotonic() - T_IMPORT
    t = time.perf_counter()
    fe = FilterExplorer(model, filters="0:16", steps=steps, autorun=False)
    build = time.perf_counter() - t
    seconds = build + first_frame_after(fe, fe.run, optimized=True)
    _settle(fe)
    return fe, seconds, imported


def child_first_frame(model: str, steps: int) -> None:
    """Only the new explorer's first frame (``--first-frame-rounds`` more fresh processes)."""
    fe, seconds, _ = _new_explorer_first_frame(model, steps)
    fe.close()
    print("RESULT " + json.dumps(dict(new_explorer_first_frame_s=seconds)), flush=True)


def child_first_touch(model: str, steps: int) -> None:
    """A fresh process with an empty compile cache: a new FilterExplorer's first frame; ten quick
    slider moves over unvisited layers; every layer visited (first visits), then every layer
    again (revisits); a new filter selection of the same bucket against a revisited one."""
    fe, first_frame, imported = _new_explorer_first_frame(model, steps)
    import jax

    from cnnvis_widgets.compile_cache import programs_lowered
    from cnnvis_widgets.engine import ascent

    out: dict = dict(model=model, import_s=imported, devices=len(jax.devices()))
    out["new_explorer_first_frame_s"] = first_frame
    slider = fe.layer_slider
    names = slider.names
    start = names.index(slider.value)
    groups = ascent.layer_groups(fe.probe)
    out["groups"] = [list(g) for g in groups]

    # ten quick moves (arrow presses 0.1 s apart) down from the start, over layers never visited
    lowered = programs_lowered()
    path = [names[max(0, start - k)] for k in range(1, 11)]
    before_runs = fe.runner.finished
    t = time.perf_counter()
    for name in path[:-1]:
        slider.value = name
        time.sleep(0.1)
    last = first_frame_after(fe, lambda: setattr(slider, "value", path[-1]), optimized=True)
    out["ten_moves"] = dict(path=path, last_move_to_first_frame_s=last, total_s=time.perf_counter() - t,
                            programs_lowered=programs_lowered() - lowered,
                            groups_crossed=len({next(i for i, g in enumerate(groups) if n in g) for n in path}))
    _settle(fe)
    out["ten_moves"]["runs_finished_or_stopped"] = fe.runner.finished - before_runs

    visits = {}
    for sweep in ("first", "revisit"):
        for name in names:
            if slider.value == name:  # the slider must move: go through a layer visited already
                slider.value = names[start] if name != names[start] else path[-1]
                _settle(fe)
            lowered = programs_lowered()
            secs = first_frame_after(fe, lambda: setattr(slider, "value", name), optimized=True)
            visits.setdefault(name, {})[sweep] = secs
            visits[name][sweep + "_lowered"] = programs_lowered() - lowered
            _settle(fe)
            print(f"  {model} {sweep:8s} {name:20s} {secs:6.2f} s", file=sys.stderr, flush=True)
    out["visits"] = visits
    out["visited_before_sweep"] = sorted({names[start], path[-1]})  # not first visits in the sweep

    # one quick move between warm layers, against ten (both end on a warm layer)
    a, b = names[len(names) // 2], names[min(len(names) - 1, len(names) // 2 + 10)]
    slider.value = a
    _settle(fe)
    one = first_frame_after(fe, lambda: setattr(slider, "value", b), optimized=True)
    _settle(fe)
    slider.value = a
    _settle(fe)
    between = names[len(names) // 2 + 1 : len(names) // 2 + 10]
    for name in between:
        slider.value = name
        time.sleep(0.1)
    ten_last = first_frame_after(fe, lambda: setattr(slider, "value", b), optimized=True)
    _settle(fe)
    out["warm_moves"] = dict(one_move_s=one, ten_moves_last_to_first_frame_s=ten_last, ratio=ten_last / one)

    # filter selections on a layer with 32+ channels: new (same bucket) against a revisit
    layer = next(n for n in names[len(names) // 2 :] if fe.probe.layer(n).channels >= 32)
    slider.value = layer
    _settle(fe)
    picker = fe.filter_picker
    picker.value = "0:16"
    _settle(fe)
    new = first_frame_after(fe, lambda: setattr(picker, "value", "16:32"), optimized=True)
    _settle(fe)
    again = first_frame_after(fe, lambda: setattr(picker, "value", "0:16"), optimized=True)
    _settle(fe)
    lowered = programs_lowered()
    other_bucket = first_frame_after(fe, lambda: setattr(picker, "value", "3,5,9"), optimized=True)
    _settle(fe)
    out["selection"] = dict(layer=layer, new_same_bucket_s=new, revisit_s=again, ratio=new / again,
                            new_bucket_s=other_bucket, new_bucket_lowered=programs_lowered() - lowered)
    fe.close()
    print("RESULT " + json.dumps(out), flush=True)


def _fresh_child(mode: str, model: str, steps: int) -> dict:
    """Run ``--<mode> model`` in a fresh process with an empty compile cache; its RESULT."""
    with tempfile.TemporaryDirectory(prefix="cnnvis-jaxcache-") as cache:
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
        proc = subprocess.run(
            [sys.executable, __file__, f"--{mode}", model, "--steps", str(steps)],
            env=env, stdout=subprocess.PIPE, stderr=None, text=True, timeout=3600,
        )
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"{mode} for {model} failed ({proc.returncode})")
    return json.loads(line[-1][7:])


def bench_first_touch(models, steps: int, first_frame_rounds: int) -> list[dict]:
    rows = []
    for model in models:
        row = _fresh_child("first-touch-child", model, steps)
        row["new_explorer_first_frames_s"] = [row["new_explorer_first_frame_s"]] + [
            _fresh_child("first-frame-child", model, steps)["new_explorer_first_frame_s"]
            for _ in range(first_frame_rounds)
        ]
        rows.append(row)
    return rows


def report_first_touch(rows) -> list[str]:
    lines = []
    for r in rows:
        visits = r["visits"]
        ratios = [v["first"] / v["revisit"] for n, v in visits.items() if n not in r["visited_before_sweep"]]
        r["median_first_over_revisit"] = statistics.median(ratios)
        lines.append(f"{r['model']}: {len(visits)} layers in {len(r['groups'])} program groups "
                     f"({r['devices']} devices); import {r['import_s']:.1f} s")
        firsts = r["new_explorer_first_frames_s"]
        lines.append(f"  new FilterExplorer -> first optimized frame (fresh process, empty cache): median "
                     f"{statistics.median(firsts):.2f} s over {len(firsts)} processes "
                     f"({', '.join(f'{x:.2f}' for x in firsts)})")
        lines.append("  layer                 first s  revisit s  ratio  programs lowered on first visit")
        for name, v in visits.items():
            lines.append(f"  {name:20s} {v['first']:8.2f} {v['revisit']:10.2f} {v['first'] / v['revisit']:6.2f}"
                         f"  {v['first_lowered']}")
        lines.append(f"  median first/revisit over {len(ratios)} layers (not {', '.join(r['visited_before_sweep'])}: "
                     f"visited before the sweep): {r['median_first_over_revisit']:.2f} "
                     f"(mean first {statistics.mean(v['first'] for v in visits.values()):.2f} s, "
                     f"mean revisit {statistics.mean(v['revisit'] for v in visits.values()):.2f} s)")
        t = r["ten_moves"]
        lines.append(f"  ten quick moves over {t['groups_crossed']} unvisited groups ({t['path'][0]} .. "
                     f"{t['path'][-1]}): last move -> first frame {t['last_move_to_first_frame_s']:.2f} s, "
                     f"programs lowered {t['programs_lowered']}")
        w = r["warm_moves"]
        lines.append(f"  warm: one move {w['one_move_s']:.2f} s, ten quick moves (last -> first frame) "
                     f"{w['ten_moves_last_to_first_frame_s']:.2f} s, ratio {w['ratio']:.2f}")
        sel = r["selection"]
        lines.append(f"  selection on {sel['layer']}: new '16:32' {sel['new_same_bucket_s']:.2f} s vs revisit "
                     f"'0:16' {sel['revisit_s']:.2f} s, ratio {sel['ratio']:.2f}; a new bucket ('3,5,9') "
                     f"{sel['new_bucket_s']:.2f} s ({sel['new_bucket_lowered']} programs lowered)")
    return lines


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first-touch-child", help=argparse.SUPPRESS)
    ap.add_argument("--first-frame-child", help=argparse.SUPPRESS)
    ap.add_argument("--first-frame-rounds", type=int, default=4,
                    help="more fresh processes that measure only a new explorer's first frame")
    ap.add_argument("--first-touch", nargs="*", metavar="MODEL",
                    help="only section 4 (first touch) for these models (default digits-cnn efficientnet-lite0)")
    ap.add_argument("--snapshot-every", type=int, default=8)
    ap.add_argument("--steps", type=int, default=96)
    args = ap.parse_args()
    if args.child:
        child_main(args.snapshot_every, args.steps)
        return
    if args.first_touch_child:
        child_first_touch(args.first_touch_child, args.steps)
        return
    if args.first_frame_child:
        child_first_frame(args.first_frame_child, args.steps)
        return
    if args.first_touch is not None:
        models = args.first_touch or ["digits-cnn", "efficientnet-lite0"]
        rows = bench_first_touch(models, args.steps, args.first_frame_rounds)
        lines = report_first_touch(rows)
        print("\n".join(lines))
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        head = f"# bench_widgets --first-touch {' '.join(models)}  ({stamp}, {os.cpu_count()} cpus, machine as it was)"
        (HERE / "results" / "bench_first_touch.txt").write_text(head + "\n" + "\n".join(lines) + "\n")
        (HERE / "results" / "bench_first_touch.json").write_text(json.dumps(rows, indent=2))
        return

    install_capturing_comm()
    import jax

    import cnnvis_widgets as cw

    cw.use_all_cores()
    steps = 32 if args.quick else args.steps
    res: dict = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        python=platform.python_version(), jax=jax.__version__, devices=len(jax.devices()),
        cpus=os.cpu_count(), steps=steps,
    )
    print(f"# bench_widgets  jax {jax.__version__}, {len(jax.devices())} CPU devices, {os.cpu_count()} cpus, "
          f"digits-cnn conv4 (64 filters, 32x32), {steps} steps")

    g = res["grid"] = bench_grid(50 if args.quick else 300)
    print(f"\n[1] ImageGrid.update, 64 tiles 32x32 RGB, force=True, no browser ({g['frames']} frames)")
    print(f"    median {g['median_ms']:.2f} ms/frame (p90 {g['p90_ms']:.2f}); montage+uint8 alone "
          f"{g['montage_only_ms']:.2f} ms; montage {g['montage_shape']}; "
          f"binary buffer {g['buffer_bytes_per_frame'] / 1024:.1f} KiB/frame, "
          f"JSON {g['json_bytes_per_frame']:.0f} B/frame, {g['messages_per_frame']:.1f} comm msgs/frame")

    snaps = [4] if args.quick else [2, 4, 8]
    res["fps"] = bench_fps(snaps, steps, 1 if args.quick else 3)
    print(f"\n[2] FilterExplorer run, conv4, 64 filters, {steps} steps (median of runs, compiled first)")
    print(f"    (the 64 filters run as {res['fps'][0]['filter_chunks']} groups of "
          f"{64 // res['fps'][0]['filter_chunks']}, one after the other; callbacks = engine chunks handed to the grid)")
    print("    every  frames/s  frames  callbacks  callbacks/s  steps/s  wall s  update ms  update share")
    for r in res["fps"]:
        print(f"    {r['snapshot_every']:>5}  {r['fps']:8.1f}  {r['frames']:6d}  {r['callbacks']:9d}  "
              f"{r['callbacks_per_s']:11.1f}  {r['steps_per_s']:7.0f}  {r['wall_s']:6.2f}  "
              f"{(r['update_ms'] or 0):9.2f}  {r['update_share']:11.1%}")
    print(f"    (ImageGrid.max_fps = {res['fps'][0]['max_fps']}: frames beyond it are dropped unless forced)")

    every = 4 if args.quick else 8
    w = res["warm"] = bench_warm(every, steps, 3 if args.quick else 6)
    print(f"\n[3] slider change -> first frame (snapshot_every {every})")
    print(f"    warm (layer compiled in this process): median {w['warm_median_s']:.3f} s "
          f"({', '.join(f'{x:.3f}' for x in w['warm_s'])}); first visit of a layer in-process "
          f"{w['first_visit_of_layer_s']:.2f} s")
    if not args.quick:
        c = res["cold"] = bench_cold(every, steps)
        for name in ("empty_cache", "warm_cache"):
            r = c[name]
            print(f"    cold process, {name.replace('_', ' ')}: import->first frame {r['import_to_first_frame_s']:.2f} s "
                  f"(import {r['import_s']:.2f} s, build {r['build_explorer_s']:.2f} s); "
                  f"slider->first frame (new layer) {r['slider_to_first_frame_s']:.2f} s")

    fps_best = max(r["fps"] for r in res["fps"])
    targets = {
        "kernel <= 5 ms per frame": g["median_ms"] <= 5.0,
        ">= 10 frames/s (best snapshot_every)": fps_best >= 10.0,
        "first frame <= 0.3 s warm": w["warm_median_s"] <= 0.3,
    }
    if "cold" in res:
        fresh = res["cold"]["warm_cache"]["import_to_first_frame_s"]
        targets["fresh process with the compile cache: first frame <= 3 s after import"] = fresh <= 3.0
    res["targets"] = targets
    print("\nTargets")
    for k, ok in targets.items():
        print(f"    {'met    ' if ok else 'NOT met'}  {k}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
