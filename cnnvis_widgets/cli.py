"""The ``cnnvis`` command: figures without a notebook."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cnnvis_widgets import validation

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _figure_path(text: str) -> Path:
    """--out: a figure file to write (not a folder), its type from its suffix."""
    path = Path(text)
    if path.is_dir() or not path.name:
        example = str(path / "out.png")
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file in it, e.g. {example!r}")
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a file name ending in {', '.join(FIGURE_SUFFIXES)} (the figure's type)"
        )
    return path


def _colormap(name: str) -> str:
    """--cmap: a matplotlib colormap's name (``pixels.check_colormap``)."""
    from cnnvis_widgets import pixels

    try:
        return pixels.check_colormap(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _opacity(text: str) -> float:
    """--opacity: a number from 0 (the image alone) to 1 (the map alone)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"opacity must be a number from 0 to 1, got {text!r}")
    return value


def _positive(text: str) -> int:
    """--top-k, --patches: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    """--seed: an integer that fits in 64 bits."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed must fit in 64 bits (-2**63 <= seed < 2**63), got {text}")
    return value


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
    layer = probe.layer(args.layer or probe.default_layer).name
    start = time.time()

    filters = probe.check_units(layer, validation.parse_filters(args.filters, probe.layer(layer).channels))
    bar = _RunBar(f"{probe.name} {layer}")
    result = visualize_filters(probe, layer, filters, **_ascent_options(args, bar))
    bar.close()
    dead = _dead_filters(probe, layer)
    path = export.save_grid(
        result.images,
        args.out,
        labels=[f"{u} · dead" if dead[u] else str(u) for u in result.units],
        title=f"{probe.name} · {layer} · {result.steps_done} steps"
        + (f" · {int(dead[result.units].sum())} dead (never fire on a test digit)" if dead.any() else ""),
    )
    print(f"wrote {path} ({len(result.units)} filters of {layer}, {time.time() - start:.1f} s)")
    return 0


def _dead_filters(probe, layer: str) -> np.ndarray:
    """Which filters of ``layer`` never fire (ReLU output <= 0 everywhere) on the bundled test
    digits, for digits-cnn (the model trained on them); all False for other models."""
    if probe.name != "digits-cnn":
        return np.zeros(probe.layer(layer).channels, bool)
    from cnnvis_widgets import data
    from cnnvis_widgets.engine.activations import filter_stats

    return filter_stats(probe, data.digits_split()[1].images, layer).dead


def cmd_demo(args) -> int:
    args.model, args.layer, args.filters, args.steps, args.size, args.seed, args.recipe = (
        "digits-cnn",
        "conv4",
        None,
        128,
        None,
        0,
        None,
    )
    code = cmd_filters(args)
    print("Next: open the quickstart with  .venv/bin/jupyter lab notebooks/  (or `make lab`).")
    return code


def cmd_saliency(args) -> int:
    """Saliency maps of one image (one or more methods) → a PNG: the image, then one overlay per method."""
    from cnnvis_widgets import export, load
    from cnnvis_widgets import pixels as px
    from cnnvis_widgets.engine import saliency as sal

    probe = load(args.model)
    methods = [_method_name(m) for m in args.method.split(",") if m.strip()]
    if not methods:
        raise ValueError(
            f"--method {args.method!r} names no method; give one or more of {', '.join(sal.METHODS)}."
        )
    image, name = _input_image(args.image, probe)
    target = sal.parse_target(probe, args.target)
    probs = np.asarray(probe.probabilities(probe.variables, image[None]))[0]
    top = int(probs.argmax())
    tiles, labels = [px.to_rgb(image)], [f"{name}: {probe.class_name(top)} {probs[top]:.2f}"]
    bar = _bar(len(methods), f"{probe.name} saliency")
    for method in methods:
        result = sal.saliency(probe, image[None], method, target)
        heat = px.colorize(
            px.display_maps(result.maps, signed=method in sal.SIGNED_METHODS),
            "RdBu_r" if method in sal.SIGNED_METHODS else args.cmap,
        )
        tiles.append(px.overlay(image, heat[0], args.opacity))
        labels.append(f"{method} → {sal.target_label(probe, result)}")
        bar.update(1)
    bar.close()
    figure = export.grid_figure(np.stack(tiles), labels, ncols=len(tiles), tile_inches=2.4)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=150)
    predicted = f"predicted {probe.class_name(top)} p={probs[top]:.3f}"
    print(f"wrote {out} ({', '.join(methods)} on {name}; {predicted})")
    return 0


def cmd_concepts(args) -> int:
    """Concept relevance (CRP) of one image at one layer → a PNG, as the ConceptExplorer shows it: the
    image and the first concept's heatmap over it, then a card per concept (its feature visualization,
    its heatmap, its top patches over the reference images), ranked by relevance."""
    from cnnvis_widgets import data, export, load
    from cnnvis_widgets.engine import ascent
    from cnnvis_widgets.engine import concepts as crp
    from cnnvis_widgets.engine.saliency import parse_target

    probe = load(args.model)
    layer = probe.layer(args.layer or probe.default_layer).name
    image, name = _input_image(args.image, probe)
    options = dict(target=parse_target(probe, args.target), top_k=args.top_k, method=args.method)
    if args.decompose is None:
        result, path = crp.concepts(probe, image, layer=layer, **options), layer
    else:
        result = crp.decompose(probe, image, layer, args.decompose, **options)
        path = f"{layer}:{args.decompose} → {result.layer}"
    dataset, described = data.reference_dataset(probe)
    examples = crp.concept_examples(
        probe, dataset, result.layer, [int(c) for c in result.channels], result.resolved_target,
        k=min(args.patches, len(dataset)), method=args.method,
    )  # fmt: skip
    features = None
    if args.steps:
        size = ascent.default_size(probe)
        sizes, steps = ascent.progressive_stages(probe, size if probe.fixed_size else size[0], args.steps)
        bar = _RunBar(f"{probe.name} {result.layer} feature visualizations")
        features = ascent.progressive_filters(
            probe, result.layer, result.channels, sizes=sizes, steps=steps, share_layers=True, callback=bar
        ).images
        bar.close()
    main, main_labels = export.concept_main(probe, image, result, 0, args.opacity)
    cards, labels = export.concept_cards(image, result, examples, features, args.patches, args.opacity)
    rows = export.concept_rows(features is not None, args.patches)
    caption = export.concept_caption(path, name, described)
    title = export.concept_title(probe, result)
    figure = export.concepts_figure(main, main_labels, cards, labels, rows, title, caption)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=150)
    shares = ", ".join(f"{int(c)} {s:+.1%}" for c, s in zip(result.channels, result.shares))
    print(f"wrote {out} ({title} on {name}: {shares})")
    return 0


def _method_name(text: str) -> str:
    """'grad-cam', 'Grad_CAM', 'gradcam' → 'gradcam' (the engine's names, spelled loosely)."""
    from cnnvis_widgets.engine.saliency import METHODS, check_method

    squash = lambda s: s.lower().replace("-", "").replace("_", "").replace(" ", "")
    by_squash = {squash(m): m for m in METHODS}
    by_squash.update({"integratedgradient": "integrated_gradients", "ig": "integrated_gradients"})
    return by_squash.get(squash(text)) or check_method(text.strip())  # the engine's error


def cmd_maps(args) -> int:
    """Feature maps of one image at one layer → a PNG grid (one colormapped tile per filter)."""
    from cnnvis_widgets import export, load
    from cnnvis_widgets import pixels as px
    from cnnvis_widgets.engine.activations import feature_maps

    probe = load(args.model)
    layer = probe.layer(args.layer or probe.default_layer)
    if not layer.spatial:
        spatial = ", ".join(name for name in probe.layer_names if probe.layer(name).spatial)
        raise ValueError(
            f"Layer {layer.name!r} has no feature maps ({layer.kind}); spatial layers: {spatial}."
        )
    image, name = _input_image(args.image, probe)
    units = probe.check_units(layer.name, validation.parse_filters(args.filters, layer.channels))
    maps = feature_maps(probe, image, layer.name)[..., units]  # (H', W', n)
    tiles = px.normalize(np.moveaxis(maps, -1, 0)[..., None], axis=(1, 2, 3))
    path = export.save_grid(
        px.colorize(tiles, args.cmap),
        args.out,
        labels=[str(u) for u in units],
        title=f"{probe.name} · {layer.name} · {name}",
    )
    print(f"wrote {path} ({len(units)} feature maps of {layer.name}, {maps.shape[0]}x{maps.shape[1]} each)")
    return 0


def cmd_classes(args) -> int:
    """Class visualizations (maximize each class logit) → a PNG grid labelled with p(class)."""
    from cnnvis_widgets import export, load
    from cnnvis_widgets.engine.ascent import visualize_classes

    probe = load(args.model)
    classes = _class_indices(probe, args.classes)
    bar = _RunBar(f"{probe.name} classes")
    result = visualize_classes(probe, classes, **_ascent_options(args, bar))
    bar.close()
    labels = [f"{probe.class_name(c)} p={p:.2f}" for c, p in zip(result.units, result.scores)]
    path = export.save_grid(result.images, args.out, labels=labels, title=f"{probe.name} · classes")
    print(f"wrote {path} ({len(classes)} classes, min p(class) = {result.scores.min():.3f})")
    return 0


def cmd_texture(args) -> int:
    """Texture synthesis from --image (Gatys et al. 2015), or with --content a style transfer
    (Gatys et al. 2016: the content image in --image's style) → a PNG: the inputs, then each seed's."""
    from cnnvis_widgets import data, export, load
    from cnnvis_widgets.engine import texture

    probe = load(args.model)
    layers = texture.default_style_layers(probe) if args.layers is None else args.layers.split(",")
    style, style_name = _input_image(args.image, probe)
    bar = _RunBar(f"{probe.name} {'style' if args.content else 'texture'}")
    seeds = args.seeds if args.seeds is not None else 1 if args.content else 2
    options = dict(seeds=seeds, steps=args.steps, size=args.size, seed=args.seed, recipe=args.recipe,
                   snapshot_every=max(1, args.steps // 8), callback=bar)  # fmt: skip
    start = time.time()
    if args.content:
        content, content_name = _input_image(args.content, probe)
        result = texture.style_transfer(
            probe, content, style, style_layers=layers, style_weight=args.style_weight, **options
        )
        inputs, labels = [content, style], [f"content: {content_name}", f"style: {style_name}"]
        what = f"{content_name} in the style of {style_name}"
    else:
        result = texture.synthesize_texture(probe, style, layers, **options)
        inputs, labels = [style], [f"texture: {style_name}"]
        what = f"textures of {style_name}"
    bar.close()
    gram = texture.gram_distances(probe, result.images, style, layers, args.recipe).mean(axis=1)
    tiles = [data.fit_to(x, result.images.shape[1:])[0] for x in inputs] + list(result.images)
    path = export.save_grid(
        np.stack(tiles),
        args.out,
        labels=labels + [f"seed {i}: Gram distance {d:.3f}" for i, d in enumerate(gram)],
        title=f"{probe.name} · {what} · {result.steps_done} steps",
        ncols=len(tiles),
        tile_inches=2.4,
    )
    print(f"wrote {path} ({len(result.images)} {what}, mean Gram distance {gram.mean():.4f} at "
          f"{', '.join(layers)}; {time.time() - start:.1f} s)")  # fmt: skip
    return 0


def _input_image(text: str | None, probe):
    """A bundled photo name, 'digit:N' (a test digit) or an image file → (image fitted to the model, name)."""
    from cnnvis_widgets import data

    if text is None:
        text = "digit:0" if probe.input_shape[-1] == 1 else "chelsea"
    if text.startswith("digit:"):
        test = data.digits_split()[1]
        try:
            i = int(text.split(":", 1)[1])
            if i < 0:
                raise IndexError(i)  # not Python's count from the end
            image = test.images[i]
        except (ValueError, IndexError):
            raise ValueError(f"Image {text!r}: give digit:N with N in 0..{len(test.labels) - 1}.") from None
    elif text in data.PHOTOS:
        image = data.photo(text)
    else:
        import os

        if not os.path.exists(text):
            raise FileNotFoundError(
                f"Image {text!r} is neither a file nor a bundled image; bundled: {', '.join(data.PHOTOS)}, digit:N."
            )
        image = data.load_image(text)
    return data.fit_to(image, probe)[0], text


def _class_indices(probe, text: str | None) -> list[int]:
    """'0:10', '3,5' or class names 'tabby,espresso' → indices (default: the first 10 classes)."""
    n = probe.require_classes("cnnvis classes")
    if text is None:
        return list(range(min(n, 10)))
    names = probe.class_names or []
    out = []
    for part in (t.strip() for t in text.split(",") if t.strip()):
        if part in names:
            out.append(names.index(part))
        elif ":" in part or part.isdigit():
            out.extend(validation.parse_filters(part, n).tolist())
        else:
            hint = validation.did_you_mean(part, names)
            raise ValueError(f"Unknown class {part!r}.{hint} Give class names or indices 0..{n - 1}.")
    bad = [c for c in out if not 0 <= c < n]
    if bad or not out:
        raise ValueError(f"Classes {text!r}: indices must be in 0..{n - 1}, got {bad or 'none'}.")
    return out


def cmd_app(args) -> int:
    """Serve the explore() dashboard as a Voila app (blocks until interrupted)."""
    import importlib.util
    import os
    import subprocess
    from importlib.resources import files

    from cnnvis_widgets.models.zoo import MODELS, load

    model = args.model
    if model not in MODELS:  # your own: checked here, and found by the app's kernel from anywhere
        load(model)
        where, _, attr = model.rpartition(":")
        model = f"{Path(where).resolve()}:{attr}" if where.endswith(".py") else model
    if importlib.util.find_spec("voila") is None:
        raise ModuleNotFoundError("The app needs Voila: pip install 'cnnvis_widgets[notebook]'.")
    notebook = files("cnnvis_widgets") / "apps" / "explore.ipynb"
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={args.port}", f"--Voila.ip={args.ip}"]
    if not args.browser:
        command.append("--no-browser")
    print(f"serving the {args.model} dashboard on http://{args.ip}:{args.port}/ (Ctrl-C stops)")
    try:
        path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
        return subprocess.call(command, env={**os.environ, "CNNVIS_MODEL": model, "PYTHONPATH": path})
    except KeyboardInterrupt:
        return 0


def _ascent_options(args, bar: _RunBar) -> dict:
    """The optimization options of --steps/--size/--seed, with ``bar`` as the progress callback."""
    return dict(
        steps=args.steps,
        size=args.size,
        seed=args.seed,
        recipe=args.recipe,
        snapshot_every=max(1, args.steps // 8),
        callback=bar,
    )


class _RunBar:
    """A progress bar over a whole optimization run, made at its first report: its total is then
    known (every filter group's steps: never "0/128" growing to "/256"); says when XLA compiles."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, progress) -> None:  # returns None: never stops the run
        if self.bar is None:
            self.bar = _bar(progress.all_steps, self.desc)
        compiling = progress.compiling
        self.bar.set_description(f"{self.desc} (compiling…)" if compiling else self.desc, refresh=compiling)
        self.bar.update(progress.done_steps - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_warmup(args) -> int:
    from cnnvis_widgets.widgets import FilterExplorer

    explorer = FilterExplorer(args.model, filters=args.filters or "0:16", autorun=False)
    groups = len(explorer.layer_slider.names)
    print(f"compiling {explorer.probe.name}'s FilterExplorer programs ({groups} layers) into the cache")
    start = time.time()
    done = explorer.warmup(report=lambda layer, s: print(f"  {layer} and its group: {s:.1f} s", flush=True))
    explorer.close()
    print(f"warmed {len(done)} layer groups in {time.time() - start:.1f} s")
    return 0


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def _command(sub, name: str, fn, help: str, *groups: str) -> argparse.ArgumentParser:
    """A subcommand with --model and the shared option groups: image, layer, filters, optimization."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(fn=fn)
    p.add_argument(
        "--model",
        default="digits-cnn",
        help="a zoo model (digits-cnn, efficientnet-lite0, mobilenet-v2) or your own: "
        "'module:name' or 'file.py:name', a Probe or a function returning one",
    )
    if "image" in groups:
        p.add_argument("--image", help="a bundled photo (chelsea, coffee, …), digit:N, or an image file")
    if "layer" in groups:
        p.add_argument("--layer", help="layer name (see `cnnvis layers`); default a middle conv layer")
    if "filters" in groups:
        p.add_argument("--filters", help="'0:16' or '3,5,9' (default all)")
    if "optimization" in groups:
        p.add_argument("--steps", type=int, default=128)
        p.add_argument("--size", type=int, help="image size in pixels (default the model's, at most 128)")
        p.add_argument("--seed", type=_seed, default=0)
        p.add_argument(
            "--recipe",
            help="how to draw: imagenet, small, lucid, maco, classic, plain or texture (engine/recipes.py); "
            "default the model's own ('imagenet' for RGB ImageNet-size models, 'small' for the rest)",
        )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnvis", description="See inside convolutional networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="render the filters of digits-cnn's conv4 to a PNG")
    p.add_argument("--out", type=_figure_path, default="out/digits-conv4.png")
    p.set_defaults(fn=cmd_demo)
    _command(sub, "layers", cmd_layers, "list a model's layers")
    p = _command(
        sub,
        "filters",
        cmd_filters,
        "activation maximization of a layer's filters → PNG grid",
        "layer",
        "filters",
        "optimization",
    )
    p.add_argument("--out", type=_figure_path, default="out/filters.png")
    p = _command(
        sub,
        "saliency",
        cmd_saliency,
        "saliency maps of one image → PNG (image + one overlay per method)",
        "image",
    )
    p.add_argument(
        "--method",
        default="gradcam",
        help="one or more of the engine's methods, comma-separated "
        "(vanilla, grad_x_input, smoothgrad, integrated_gradients, guided_backprop, deconvnet, "
        "gradcam, gradcam_pp, scorecam, occlusion; 'grad-cam' works too)",
    )
    p.add_argument(
        "--target", help="a class name or index, or a layer unit like conv3:5 (default: the predicted class)"
    )
    p.add_argument("--opacity", type=_opacity, default=0.5, help="of the map over the image, 0 to 1")
    p.add_argument(
        "--cmap", type=_colormap, default="inferno",
        help="a matplotlib colormap for unsigned maps (sequential)",
    )
    p.add_argument("--out", type=_figure_path, default="out/saliency.png")
    p = _command(
        sub,
        "concepts",
        cmd_concepts,
        "the channels of a layer behind a prediction (concept relevance) → PNG: image, heatmap, cards",
        "image",
        "layer",
    )
    p.add_argument(
        "--target", help="a class name or index, or a layer unit like conv4:5 (default: the predicted class)"
    )
    p.add_argument("--top-k", type=_positive, default=6, help="concepts shown (the most relevant channels)")
    p.add_argument("--method", choices=("lrp", "grad_x_act"), default="lrp", help="how relevance flows back")
    p.add_argument(
        "--decompose", type=int, metavar="CHANNEL",
        help="split this channel of --layer into the channels of the layer below it",
    )  # fmt: skip
    p.add_argument("--patches", type=_positive, default=3, help="top patches per concept")
    p.add_argument("--steps", type=int, default=96, help="feature-visualization steps per concept (0: none)")
    p.add_argument("--opacity", type=_opacity, default=0.5, help="of the heatmaps over the image, 0 to 1")
    p.add_argument("--out", type=_figure_path, default="out/concepts.png")
    p = _command(
        sub, "maps", cmd_maps, "feature maps of one image at a layer → PNG grid", "image", "layer", "filters"
    )
    p.add_argument("--cmap", type=_colormap, default="magma", help="a matplotlib colormap name")
    p.add_argument("--out", type=_figure_path, default="out/maps.png")
    p = _command(
        sub, "classes", cmd_classes, "class visualizations (maximize class logits) → PNG grid", "optimization"
    )
    p.add_argument("--classes", help="'0:10', '3,5' or names 'tabby,espresso' (default the first 10)")
    p.add_argument("--out", type=_figure_path, default="out/classes.png")
    p = _command(
        sub,
        "texture",
        cmd_texture,
        "texture synthesis from --image, or with --content a style transfer (Gatys et al.) → PNG",
        "image",
        "optimization",
    )
    p.add_argument("--content", help="make this image (same forms as --image) in --image's style")
    p.add_argument(
        "--layers", help="style layers, comma-separated (default the model's own, engine/texture.py)"
    )
    p.add_argument(
        "--seeds", type=int, help="images to make, each from its own noise (default 2; with --content 1)"
    )
    p.add_argument("--style-weight", type=float, default=100.0, help="of the style against the content")
    p.add_argument("--out", type=_figure_path, default="out/texture.png")
    p = _command(
        sub,
        "warmup",
        cmd_warmup,
        "compile a model's FilterExplorer programs into JAX's persistent cache (Binder's postBuild)",
    )
    p.add_argument("--filters", help="the explorer's filter selection to warm (default '0:16')")
    p.add_argument(
        "--devices",
        type=int,
        help="JAX CPU devices to compile for (default one per core, as use_all_cores() in the tutorials)",
    )
    p = _command(sub, "app", cmd_app, "serve the explore() dashboard as a web app (Voila)")
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--ip", default="127.0.0.1")
    p.add_argument("--browser", action="store_true", help="open a browser tab")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from cnnvis_widgets.engine.sharding import use_all_cores

    # before JAX starts: one CPU device per core, the filter axis spread over them
    use_all_cores(getattr(args, "devices", None))
    from cnnvis_widgets.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as err:  # OSError: a file it cannot use
        print(f"cnnvis {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
