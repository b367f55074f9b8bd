"""The ``cnnvis`` command: figures without a notebook."""

from __future__ import annotations

import argparse
import sys
import time


def _parse_filters(text: str | None):
    """'0:16' → range, '3,5,9' → list, None → all."""
    if text is None:
        return None
    if ":" in text:
        lo, hi = text.split(":", 1)
        return list(range(int(lo or 0), int(hi)))
    return [int(t) for t in text.split(",") if t]


def cmd_layers(args) -> int:
    from cnnvis_widgets import load

    probe = load(args.model)
    for layer in probe.layers:
        print(layer)
    return 0


def cmd_filters(args) -> int:
    from cnnvis_widgets import export, load
    from cnnvis_widgets.engine.ascent import visualize_filters

    probe = load(args.model)
    layer = probe.layer(args.layer or _default_layer(probe)).name
    start = time.time()
    from cnnvis_widgets.engine.ascent import default_chunk

    filters = probe.check_units(layer, _parse_filters(args.filters))
    groups = -(-len(filters) // default_chunk(len(filters)))  # filter groups run one after another
    bar = _bar(args.steps * groups, f"{probe.name} {layer}")
    last = [0]

    def on_progress(progress) -> None:  # returns None: never stops the run
        bar.update(progress.step - last[0] if progress.step > last[0] else progress.step)
        last[0] = progress.step

    result = visualize_filters(
        probe, layer, filters, steps=args.steps, size=args.size, seed=args.seed,
        snapshot_every=max(1, args.steps // 8), callback=on_progress,
    )
    bar.close()
    path = export.save_grid(result.images, args.out, labels=[str(u) for u in result.units],
                            title=f"{probe.name} · {layer} · {result.steps_done} steps")
    print(f"wrote {path} ({len(result.units)} filters of {layer}, {time.time() - start:.1f} s)")
    return 0


def cmd_demo(args) -> int:
    args.model, args.layer, args.filters, args.steps, args.size, args.seed = "digits-cnn", "conv4", None, 128, None, 0
    code = cmd_filters(args)
    print("Next: open the quickstart with  .venv/bin/jupyter lab notebooks/  (or `make lab`).")
    return code


def _default_layer(probe) -> str:
    spatial = [layer.name for layer in probe.layers if layer.spatial]
    return spatial[len(spatial) // 2]


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnvis", description="See inside convolutional networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="render the filters of digits-cnn's conv4 to a PNG")
    p.add_argument("--out", default="out/digits-conv4.png")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("layers", help="list a model's layers")
    p.add_argument("--model", default="digits-cnn")
    p.set_defaults(fn=cmd_layers)
    p = sub.add_parser("filters", help="activation maximization of a layer's filters → PNG grid")
    p.add_argument("--model", default="digits-cnn")
    p.add_argument("--layer", help="layer name (see `cnnvis layers`); default a middle conv layer")
    p.add_argument("--filters", help="'0:16' or '3,5,9' (default all)")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--size", type=int, help="image size in pixels (default the model's, at most 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/filters.png")
    p.set_defaults(fn=cmd_filters)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from cnnvis_widgets.engine.sharding import use_all_cores

    use_all_cores()  # before JAX starts: one CPU device per core, the filter axis spread over them
    from cnnvis_widgets.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    try:
        return args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"cnnvis {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
