"""A long lab session in minutes: random control events on a FilterExplorer and a SaliencyExplorer
from two threads, with the process's resident memory sampled as it goes (issue 19, item 12).

The red team's recipe: sizes from 8 to 512 px, learning rates, layers and filter selections
changed while runs are in flight. Each new size or filter count is a new program shape, so a
session that keeps every program it ever compiled grows without end; resident memory must level
off. Prints the curve (start, peak, end, and the last third's slope) and what the probe holds.

    .venv/bin/python benchmarks/soak_explorers.py --minutes 30
"""

from __future__ import annotations

import argparse
import gc
import threading
import time

import numpy as np
import psutil


def _events(fe, se, rng):
    """What a user does to the two explorers, as (name, action) pairs."""
    layers = list(range(len(fe.layer_slider.names)))
    pick = lambda values: values[rng.integers(len(values))]  # noqa: E731

    def setter(control, values, cast):
        return lambda: setattr(control, "value", cast(pick(values)))

    return [
        ("size", setter(fe.size, [8, 16, 24, 32, 48, 64, 96, 128, 256, 512], int)),
        ("learning rate", setter(fe.learning_rate, [0.01, 0.05, 0.1, 0.3], float)),
        ("layer", setter(fe.layer_slider.slider, layers, int)),
        ("filters", setter(fe.filter_picker, ["0:4", "0:8", "3,5,9", "0:16", "2:5"], str)),
        ("steps", setter(fe.steps, [8, 16, 32], int)),
        ("run", lambda: fe.run_button.click()),
        ("method", setter(se.method, ["vanilla", "gradcam", "smoothgrad"], str)),
        ("image", setter(se.image_picker, list(se.image_picker.names), str)),
        ("target", setter(se.target, ["predicted class", "3", "7"], str)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between memory samples")
    args = parser.parse_args()

    import cnnvis_widgets as cw
    from cnnvis_widgets.engine.renderer import Renderer
    from cnnvis_widgets.widgets import FilterExplorer, SaliencyExplorer

    cw.use_all_cores()
    probe = cw.load(args.model)
    fe = FilterExplorer(probe, filters="0:8", steps=16, autorun=False)
    se = SaliencyExplorer(probe, autorun=False)
    me = psutil.Process()
    stop = threading.Event()
    fired = [0, 0]
    errors: list[str] = []

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        events = _events(fe, se, rng)
        while not stop.is_set():
            name, action = events[rng.integers(len(events))]
            try:
                action()
            except (ValueError, TypeError) as err:  # a control's own refusal
                errors.append(f"{name}: {err}")
            fired[seed] += 1
            time.sleep(float(rng.uniform(0.05, 0.6)))

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(2)]
    start = time.monotonic()
    samples = [(0.0, me.memory_info().rss / 2**20)]
    for t in threads:
        t.start()
    end = start + 60 * args.minutes
    while time.monotonic() < end:
        time.sleep(min(args.every, max(0.0, end - time.monotonic())))
        samples.append((time.monotonic() - start, me.memory_info().rss / 2**20))
        alive = sum(isinstance(o, Renderer) for o in gc.get_objects())  # held anywhere, not by the probe only
        print(f"{samples[-1][0] / 60:6.1f} min  RSS {samples[-1][1]:7.0f} MB  events {sum(fired)}  "
              f"programs held {len(probe.programs)}  renderers alive {alive}", flush=True)  # fmt: skip
    stop.set()
    for t in threads:
        t.join()
    fe.wait(120)
    se.wait(120)
    fe.close()
    se.close()
    gc.collect()
    closed = me.memory_info().rss / 2**20
    # what is left: JAX's compiled programs and traces, or memory the allocator keeps
    import jax

    from cnnvis_widgets.memory import release_freed_memory

    held = len(probe.programs)
    probe.programs.clear()
    jax.clear_caches()
    gc.collect()
    release_freed_memory()
    cleared = me.memory_info().rss / 2**20
    rss = np.array([m for _, m in samples])
    last = samples[len(samples) * 2 // 3 :]
    slope = np.polyfit([t / 60 for t, _ in last], [m for _, m in last], 1)[0] if len(last) > 1 else 0.0
    print(
        f"\n{args.model}, {args.minutes:g} min, {sum(fired)} events from 2 threads "
        f"({len(errors)} refused): RSS start {rss[0]:.0f} MB, peak {rss.max():.0f} MB, "
        f"end {rss[-1]:.0f} MB, after close() {closed:.0f} MB; "
        f"last third's slope {slope:+.1f} MB/min; programs held at the end {held}; after dropping "
        f"them, jax.clear_caches() and malloc_trim {cleared:.0f} MB"
    )


if __name__ == "__main__":
    main()
