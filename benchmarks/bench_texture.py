"""Texture synthesis and style transfer on EfficientNet-Lite0: which layers and recipe, measured.

For each candidate set of style layers (and a few recipes), ``texture.synthesize_texture`` makes
``--seeds`` textures of a source photo, and each is scored by its normalized Gram distance to the
source (``texture.gram_distances``: ||G(x) - G(source)||^2 / ||G(source)||^2, 0 = matched) at a
fixed set of evaluation layers, the same for every row, so sets are compared on the layers they
were not optimized for too. Two baselines at the same layers: uniform noise, and another photo
(what the distance is between two different pictures). ``ratio`` is the other photo's mean
distance over the texture's (how far below a different picture the texture is). The style
transfer rows make the cat photo in the source's style: ``content`` is the relative feature
distance to the cat at the content layer, ``style`` the mean Gram distance at the style layers.

Images go to ``--png-dir`` to be looked at; the table is printed (results/bench_texture.txt).

    .venv/bin/python benchmarks/bench_texture.py                 # run 1 of the table (~30 min, 2 cores)
    .venv/bin/python benchmarks/bench_texture.py --quick         # 64 px, 32 steps, two rows
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

import cnnvis_widgets as cw  # noqa: E402

cw.use_all_cores()
from cnnvis_widgets import export  # noqa: E402
from cnnvis_widgets.engine import objectives, recipes, texture  # noqa: E402

from machine import machine_info  # noqa: E402

# Candidate style layers: post-activation (ReLU6) layers, one per resolution as Gatys et al. took
# VGG's conv1_1 and pool1..pool4, shallower or deeper, and the blocks' linear outputs.
LAYER_SETS = {
    "gatys4": ("stem", "block1.expand", "block3.expand", "block5.expand"),
    "shallow3": ("stem", "block1.expand", "block3.expand"),
    "deep5": ("stem", "block1.expand", "block3.expand", "block5.expand", "block11.expand"),
    "deep5b": ("stem", "block1.expand", "block3.expand", "block5.expand", "block8.expand"),
    "depthwise5": ("stem", "block1.depthwise", "block3.depthwise", "block5.depthwise", "block11.depthwise"),
    "middle2": ("block3.expand", "block5.expand"),
    "blocks4": ("block0", "block2", "block4", "block10"),
}
# Where every row is scored: layers some sets optimize, and layers none does (block2, block4,
# block8's expand, block13's depthwise), so a set is not judged only where it was optimized.
EVAL_LAYERS = (
    "stem", "block1.expand", "block2.expand", "block3.expand", "block4.expand", "block5.expand",
    "block8.expand", "block11.expand", "block13.depthwise",
)  # fmt: skip
RECIPES = {
    "texture": recipes.TEXTURE,  # free pixels, no transforms, Adam 0.02, seen at 224 px
    "tex-0.05": recipes.TEXTURE.replace(name="tex-0.05", learning_rate=0.05),
    "imagenet": recipes.IMAGENET,  # the filters' recipe: Fourier, Lucid's transforms, 224 px
    "plain+up": recipes.PLAIN.replace(name="plain+up", upsample=True),  # Fourier, no transforms, 224 px
    "plain": recipes.PLAIN,  # Fourier, no transforms, seen at the image's own 128 px
    "mild+up": recipes.IMAGENET.replace(name="mild+up", transforms="mild"),
}


def petals() -> np.ndarray:
    """The dahlia's petals, cropped from scikit-learn's flower photo: a texture filling the frame."""
    return cw.data.photo("flower")[110:270, 210:370]


def synthesize_row(probe, source, other, set_name, recipe_name, args, png_dir: Path) -> dict:
    """Textures of ``source`` with one layer set and recipe, scored against noise and ``other``."""
    recipe = RECIPES[recipe_name]
    start = time.time()
    result = texture.synthesize_texture(
        probe, source, LAYER_SETS[set_name], seeds=args.seeds, steps=args.steps, size=args.size, recipe=recipe
    )
    seconds = time.time() - start
    dist = lambda images: texture.gram_distances(probe, images, source, EVAL_LAYERS, recipe)
    noise = np.random.default_rng(0).uniform(size=(args.seeds, args.size, args.size, 3)).astype(np.float32)
    photo = cw.data.fit_to(other, (args.size, args.size, 3))
    row = {
        "set": set_name,
        "recipe": recipe_name,
        "steps": args.steps,
        "size": args.size,
        "seconds": round(seconds, 1),
        "texture": dist(result.images).mean(0).tolist(),
        "noise": dist(noise).mean(0).tolist(),
        "other": dist(photo).mean(0).tolist(),
        "seeds_differ": float(np.abs(result.images[0] - result.images[-1]).mean()),
    }
    tiles = np.concatenate([cw.data.fit_to(source, (args.size, args.size, 3)), result.images])
    export.save_grid(tiles, png_dir / f"texture_{set_name}_{recipe_name}.png",
                     labels=["source"] + [f"seed {i}" for i in range(args.seeds)],
                     title=f"{set_name} · {recipe_name} · {args.steps} steps")  # fmt: skip
    return row


def transfer_row(probe, content, style, set_name, layer, weight, args, png_dir, from_content=True) -> dict:
    """The cat in the petals' style: ``set_name``'s style layers, ``layer`` as content, ``weight``."""
    start = time.time()
    layers = LAYER_SETS[set_name]
    result = texture.style_transfer(
        probe, content, style, content_layer=layer, style_layers=layers, style_weight=weight, seeds=1,
        steps=args.steps, size=args.size, from_content=from_content,
    )  # fmt: skip
    seconds = time.time() - start
    features = lambda image: probe.activations(probe.variables, cw.data.fit_to(image, probe), layer)
    feature = float(-objectives.content(layer, features(content))({layer: features(result.images[0])}, 0))
    gram = texture.gram_distances(probe, result.images, style, layers).mean()
    inputs = [cw.data.fit_to(x, (args.size, args.size, 3))[0] for x in (content, style)]
    tiles = np.stack(inputs + [result.images[0]])
    start_name = "content" if from_content else "noise"
    name = f"transfer_{set_name}_{layer}_w{weight:g}_{start_name}"
    export.save_grid(tiles, png_dir / f"{name}.png", labels=["content", "style", "result"],
                     title=f"{set_name} · {layer} · style_weight {weight:g} · from {start_name}")  # fmt: skip
    return {"set": set_name, "content_layer": layer, "style_weight": weight, "from": start_name,
            "steps": args.steps, "size": args.size, "seconds": round(seconds, 1), "content": feature,
            "style": float(gram)}  # fmt: skip


def print_tables(rows, transfers) -> None:
    print("# benchmarks/bench_texture.py: textures of the dahlia's petals (sklearn's flower photo, cropped)")
    print("# on EfficientNet-Lite0, each row's seeds in one call. Normalized Gram distance to the source,")
    print("# mean over seeds, at the evaluation layers (the same for every row); noise: uniform noise;")
    print("# other: the cat photo; ratio: other / texture, mean over the layers. Seconds include compiling.")
    short = [name.replace(".expand", ".e").replace(".depthwise", ".d") for name in EVAL_LAYERS]
    head = " ".join(f"{name:>8}" for name in short)
    lead = f"{'set':11} {'recipe':9} {'steps':>5} {'size':>4} {'s':>5}"
    print(f"{lead}  {'row':7} {head}  {'mean':>6} {'ratio':>6}")
    for r in rows:
        for kind in ("texture", "noise", "other"):
            values = " ".join(f"{v:8.4f}" for v in r[kind])
            ratio = np.mean(r["other"]) / max(np.mean(r["texture"]), 1e-12)
            lead = f"{r['set']:11} {r['recipe']:9} {r['steps']:5d} {r['size']:4d} {r['seconds']:5.0f}"
            lead = lead if kind == "texture" else " " * len(lead)
            tail = f" {ratio:6.1f}" if kind == "texture" else ""
            print(f"{lead}  {kind:7} {values}  {np.mean(r[kind]):6.4f}{tail}")
    if transfers:
        print()
        print("# style transfer: the cat (chelsea) in the petals' style; content: relative squared feature")
        print("# distance to the cat at the content layer; style: mean Gram distance at the set's layers.")
        print(f"{'set':11} {'content layer':15} {'weight':>6} {'from':8} {'steps':>5} {'size':>4} "
              f"{'s':>5} {'content':>8} {'style':>8}")  # fmt: skip
        for t in transfers:
            print(f"{t['set']:11} {t['content_layer']:15} {t['style_weight']:6g} {t['from']:8} "
                  f"{t['steps']:5d} {t['size']:4d} {t['seconds']:5.0f} {t['content']:8.4f} {t['style']:8.4f}")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--sets", default=",".join(LAYER_SETS))
    parser.add_argument("--recipes", default="texture", help=f"for every set; any of {', '.join(RECIPES)}")
    parser.add_argument("--recipe-set", default="deep5", help="the set the other recipes run with")
    parser.add_argument("--other-recipes", default="tex-0.05,imagenet,plain+up")
    parser.add_argument("--transfer-sets", default="deep5,gatys4", help="style sets of the transfer rows")
    parser.add_argument("--weights", default="1,10,100", help="style weights (the first transfer set's)")
    parser.add_argument("--content-layers", default="block5.expand,block3.expand,block8.expand",
                        help="content layers (first transfer set, weight 10; others: the first)")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="64 px, 32 steps, two rows")
    parser.add_argument("--png-dir", default="/tmp/bench_texture")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.sets, args.recipes, args.other_recipes, args.weights = "gatys4", "texture", "imagenet", "10"
        args.transfer_sets, args.content_layers = "gatys4", "block5.expand"
        args.steps, args.size = 32, 64
    png_dir = Path(args.png_dir)
    probe = cw.load("efficientnet-lite0")
    source, cat = petals(), cw.data.photo("chelsea")
    rows = []
    for set_name in args.sets.split(","):
        for recipe_name in args.recipes.split(","):
            rows.append(synthesize_row(probe, source, cat, set_name, recipe_name, args, png_dir))
    for recipe_name in filter(None, args.other_recipes.split(",")):
        rows.append(synthesize_row(probe, source, cat, args.recipe_set, recipe_name, args, png_dir))
    first, *others = args.transfer_sets.split(",")
    layer, *other_layers = args.content_layers.split(",")
    runs = [(first, layer, float(w), True) for w in args.weights.split(",")]
    runs += [(first, name, 10.0, True) for name in other_layers]
    runs += [(name, layer, 10.0, True) for name in others]
    runs += [] if args.quick else [(first, layer, 10.0, False)]  # from noise, as the paper
    transfers = [transfer_row(probe, cat, source, *run[:3], args, png_dir, run[3]) for run in runs]
    print_tables(rows, transfers)
    if args.json:
        record = {"machine": machine_info(), "rows": rows, "transfers": transfers}
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
