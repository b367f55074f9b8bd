"""The `cnnvis` command: demo, layers, filters, saliency, concepts, …, and user errors without tracebacks."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets import cli


def test_layers_lists_the_model(capsys):
    assert cli.main(["layers", "--model", "digits-cnn"]) == 0
    out = capsys.readouterr().out
    assert "conv1 (conv, 32x32x16, rf 3, stride 1)" in out and "logits (dense, 10" in out


def test_filters_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert (
        cli.main(["filters", "--layer", "conv2", "--filters", "0:4", "--steps", "8", "--out", str(out)]) == 0
    )
    assert Image.open(out).size[0] > 100
    assert "4 filters of conv2" in capsys.readouterr().out


def test_filters_marks_dead_filters_and_its_progress_bar_knows_its_total_from_the_start(
    tmp_path, capsys, monkeypatch
):
    from cnnvis_widgets import data, export, load

    class Bar:  # what the CLI asks of its tqdm bar, recorded
        def __init__(self, total, desc):
            self.total, self.n = total, 0

        def update(self, k):
            self.n += k

        def set_description(self, desc, refresh=True):
            pass

        def close(self):
            pass

    bars = []
    monkeypatch.setattr(cli, "_bar", lambda total, desc: bars.append(Bar(total, desc)) or bars[-1])
    saved = {}
    real_save = export.save_grid
    monkeypatch.setattr(export, "save_grid", lambda tiles, path, labels, title: saved.update(labels=labels, title=title)
                        or real_save(tiles, path, labels=labels, title=title))  # fmt: skip
    out = tmp_path / "conv4.png"
    assert cli.main(["filters", "--layer", "conv4", "--steps", "4", "--out", str(out)]) == 0
    assert len(bars) == 1 and bars[0].total == bars[0].n >= 4  # the total at creation is where it ends
    # dead = never positive on any of the 450 test digits, from the model's own forward pass
    probe = load("digits-cnn")
    acts = np.asarray(probe.forward(probe.variables, data.digits_split()[1].images)[1]["conv4"])
    dead = np.flatnonzero(acts.max(axis=(0, 1, 2)) <= 0)
    assert len(dead) > 0, "digits-cnn's conv4 has dead filters (the README's figure shows them)"
    assert [i for i, label in enumerate(saved["labels"]) if label.endswith("dead")] == list(dead)
    assert f"{len(dead)} dead" in saved["title"]


def test_recipe_option_draws_with_that_recipe_and_refuses_unknown_names(tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["filters", "--layer", "conv2", "--filters", "0:2", "--steps", "8", "--out", str(out)]
    assert cli.main(args + ["--recipe", "maco"]) == 0
    assert "2 filters of conv2" in capsys.readouterr().out
    assert cli.main(args + ["--recipe", "lucent"]) == 2
    err = capsys.readouterr().err
    assert "Unknown recipe 'lucent'" in err and "'imagenet'" in err and "Traceback" not in err


def test_user_errors_exit_2_without_traceback(capsys):
    assert cli.main(["filters", "--layer", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "Unknown layer 'conv9'" in err and "Traceback" not in err
    assert cli.main(["layers", "--model", "resnet"]) == 2
    assert "Models in the zoo: digits-cnn" in capsys.readouterr().err


def test_every_user_error_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    """Issue 19, item 13: each of these was a traceback, or accepted and silently wrong."""

    def code(argv):
        try:
            return cli.main(argv)
        except SystemExit as exit:  # argparse's own refusals
            return exit.code

    cases = {
        ("maps", "--cmap", "nope"): "Unknown colormap 'nope'",  # was KeyError
        ("maps", "--out", str(tmp_path)): "is a folder",  # was written to <folder>.png, exit 0
        ("maps", "--out", str(tmp_path / "maps.txt")): "ending in .png",
        ("saliency", "--method", ","): "names no method",  # an empty figure, exit 0
        ("saliency", "--opacity", "nan"): "from 0 to 1",
        ("saliency", "--opacity", "5"): "from 0 to 1",
        ("saliency", "--image", "digit:-1"): "digit:N with N in 0..",  # the last digit, exit 0
        ("filters", "--seed", str(2**70)): "fit in 64 bits",  # OverflowError from JAX
        ("concepts", "--layer", "conv9"): "Unknown layer 'conv9'",
        ("concepts", "--top-k", "0"): "positive integer",
        ("concepts", "--layer", "conv4", "--decompose", "99"): "valid: 0..63",
        ("concepts", "--layer", "conv1", "--decompose", "0"): "no layer below",
        ("concepts", "--target", "seven"): "Unknown target 'seven'",
    }
    for argv, says in cases.items():
        assert code([*argv, *(() if "--out" in argv else ("--out", str(tmp_path / "x.png")))]) == 2, argv
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # argparse's usage lines may come first
        assert last.startswith(f"cnnvis {argv[0]}: error:") and says in last and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / (tmp_path.name + ".png")).exists()


def test_maps_writes_one_tile_per_filter_of_the_chosen_image(tmp_path, capsys):
    out = tmp_path / "maps.png"
    assert cli.main(["maps", "--layer", "conv1", "--image", "digit:3", "--out", str(out)]) == 0
    assert "16 feature maps of conv1, 32x32 each" in capsys.readouterr().out
    assert Image.open(out).size[0] > 300


def test_maps_errors_name_what_is_valid(tmp_path, capsys):
    assert cli.main(["maps", "--layer", "fc1", "--out", str(tmp_path / "m.png")]) == 2
    assert "spatial layers: conv1, conv2" in capsys.readouterr().err
    assert cli.main(["maps", "--image", "no-such.jpg"]) == 2
    assert "bundled: chelsea" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert cli.main(["maps", "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Cannot read" in err and "Traceback" not in err
    assert cli.main(["maps", "--image", "digit:9999"]) == 2
    assert "digit:N with N in 0..449" in capsys.readouterr().err


def test_classes_grid_labels_show_the_class_probability(tmp_path, capsys):
    out = tmp_path / "classes.png"
    assert cli.main(["classes", "--classes", "3,7", "--steps", "48", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 classes" in text
    assert float(text.split("min p(class) = ")[1].split(")")[0]) > 0.5  # the digits really are 3 and 7
    assert cli.main(["classes", "--classes", "12"]) == 2
    assert "indices must be in 0..9" in capsys.readouterr().err
    assert cli.main(["classes", "--classes", "seven"]) == 2
    assert "Unknown class 'seven'" in capsys.readouterr().err


def test_texture_writes_the_source_then_one_texture_per_seed_and_a_style_transfer(tmp_path, capsys):
    out = tmp_path / "texture.png"
    assert cli.main(["texture", "--image", "coffee", "--seeds", "2", "--steps", "16", "--out", str(out)]) == 0
    assert "2 textures of coffee, mean Gram distance" in capsys.readouterr().out
    width, height = Image.open(out).size
    assert width > 1.5 * height  # three tiles in a row: the source and two textures
    args = ["texture", "--content", "digit:3", "--image", "coffee", "--seeds", "1", "--steps", "8"]
    assert cli.main(args + ["--out", str(out)]) == 0
    assert "1 digit:3 in the style of coffee" in capsys.readouterr().out
    refused = {
        ("--layers", "conv1,conv9"): "Unknown layer 'conv9'",
        ("--seeds", "0"): "seeds must be a positive integer, got 0",
        ("--layers", "fc1"): "'fc1' has no feature maps",
    }
    for bad, says in refused.items():
        assert cli.main(["texture", *bad, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_app_refuses_an_unknown_model_before_starting_a_server(capsys):
    assert cli.main(["app", "--model", "resnet"]) == 2
    assert "Models in the zoo: digits-cnn" in capsys.readouterr().err
    assert cli.main(["app", "--model", "no_such_module:make"]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err


OWN_MODELS = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from flax import linen as nn
    import cnnvis_widgets as cw

    class Vgg(nn.Module):  # a dense head on the flattened maps: it takes 144x144 images only
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
            x = nn.max_pool(x, (4, 4), strides=(4, 4))
            x = nn.relu(nn.Conv(4, (3, 3), name="conv2")(x))
            x = nn.max_pool(x, (4, 4), strides=(4, 4))
            return nn.Dense(3, name="fc")(x.reshape((x.shape[0], -1)))

    class Backbone(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))

    def make_probe():
        variables = Vgg().init(jax.random.key(0), jnp.zeros((1, 144, 144, 3)))
        return cw.Probe(Vgg(), variables, input_shape=(144, 144, 3), class_names=["a", "b", "c"])

    backbone = cw.Probe(Backbone(), Backbone().init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))),
                        input_shape=(16, 16, 3))
    not_a_probe = 3
    """
)


def test_own_models_from_a_file_or_a_module_work_in_every_command(tmp_path, capsys, monkeypatch):
    (tmp_path / "mymodels.py").write_text(OWN_MODELS)
    spec = str(tmp_path / "mymodels.py") + ":make_probe"
    assert cli.main(["layers", "--model", spec]) == 0
    out = capsys.readouterr().out
    assert "conv2 (conv, 36x36x4" in out and "conv2+act (conv, 36x36x4" in out
    png = tmp_path / "f.png"
    assert cli.main(["filters", "--model", spec, "--layer", "conv2+act", "--filters", "0:2", "--steps", "4",
                     "--out", str(png)]) == 0  # fmt: skip
    assert "2 filters of conv2+act" in capsys.readouterr().out and png.exists()
    assert cli.main(["filters", "--model", spec, "--size", "64", "--steps", "4"]) == 2  # its one size
    assert "takes only 144x144" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # as a module, found from the working directory
    assert cli.main(["saliency", "--model", "mymodels:make_probe", "--out", str(tmp_path / "s.png")]) == 0
    assert "gradcam on chelsea; predicted" in capsys.readouterr().out
    assert cli.main(["maps", "--model", "mymodels:backbone", "--layer", "conv1+act", "--out", "m.png"]) == 0
    assert cli.main(["classes", "--model", "mymodels:backbone"]) == 2
    assert "no class scores" in capsys.readouterr().err
    for spec, says in (
        ("mymodels:make_prob", "no 'make_prob'. Did you mean 'make_probe'?"),
        ("mymodels:not_a_probe", "gave a int; it must be a Probe or return one"),
        ("nofile.py:make", "no file 'nofile.py'"),
    ):
        assert cli.main(["layers", "--model", spec]) == 2
        assert says in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
    import pytest

    for command in ["demo", "layers", "filters", "saliency", "concepts", "maps", "classes", "texture", "app"]:
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage: cnnvis " + command in capsys.readouterr().out


def test_saliency_writes_the_image_and_one_overlay_per_method(tmp_path, capsys):
    out = tmp_path / "sal.png"
    args = ["saliency", "--image", "digit:2", "--method", "grad-cam,Vanilla", "--out", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "gradcam, vanilla on digit:2" in text and "predicted 8" in text  # test digit 2 is an 8
    width, height = Image.open(out).size
    assert width > 2.5 * height  # three tiles side by side: the digit and two overlays


def test_saliency_errors_name_what_is_valid(capsys):
    assert cli.main(["saliency", "--method", "gradcamm"]) == 2
    assert "methods: vanilla, grad_x_input" in capsys.readouterr().err
    assert cli.main(["saliency", "--target", "conv3:99"]) == 2
    assert "valid: 0..47" in capsys.readouterr().err
    assert cli.main(["saliency", "--target", "conv9:1"]) == 2
    err = capsys.readouterr().err
    assert "conv9" in err and "conv4" in err and "Traceback" not in err


def _concepts_of_digit_2(layer: str, **options):
    import cnnvis_widgets as cw
    from cnnvis_widgets import data

    probe = cw.load("digits-cnn")
    image = data.fit_image(data.digits_split()[1].images[2], probe)
    return cw.concepts(probe, image, layer=layer, **options)


def _red_share(path) -> float:
    """The share of a figure's pixels in the red half of RdBu_r (where a heatmap raises the score)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return float(((rgb[..., 0] > 150) & (rgb[..., 0] - rgb[..., 2] > 60)).mean())


def test_concepts_writes_the_image_and_a_card_per_concept_as_the_engine_ranks_them(tmp_path, capsys):
    out = tmp_path / "concepts.png"
    args = ["concepts", "--image", "digit:2", "--layer", "conv4", "--top-k", "4", "--steps", "0"]
    assert cli.main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    expected = _concepts_of_digit_2("conv4", top_k=4)
    shares = ", ".join(f"{c} {s:+.1%}" for c, s in zip(expected.channels, expected.shares))
    assert f"conv4: 4 concepts for class 8 (LRP) on digit:2: {shares}" in text  # test digit 2 is an 8
    width, height = Image.open(out).size
    assert width >= 900 and height >= 900  # the image and its overlay above 4 cards of 4 rows
    assert _red_share(out) > 0.01  # the signed heatmaps are drawn
    grad = tmp_path / "grad.png"
    assert cli.main([*args, "--method", "grad_x_act", "--opacity", "0", "--out", str(grad)]) == 0
    assert "(gradient × activation)" in capsys.readouterr().out
    assert _red_share(grad) < _red_share(out) / 4  # opacity 0: the images without their heatmaps


def test_concepts_decompose_splits_a_channel_into_the_layer_below(tmp_path, capsys):
    out = tmp_path / "decomposed.png"
    channel = int(_concepts_of_digit_2("conv4", top_k=1).channels[0])
    args = ["concepts", "--image", "digit:2", "--layer", "conv4", "--decompose", str(channel), "--top-k", "3"]
    assert cli.main([*args, "--steps", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    expected = _concepts_of_digit_2("conv3", top_k=3, within=("conv4", channel))
    shares = ", ".join(f"{c} {s:+.1%}" for c, s in zip(expected.channels, expected.shares))
    assert f"conv3 inside conv4:{channel}: 3 concepts for class 8 (LRP) on digit:2: {shares}" in text
    assert Image.open(out).size[1] > 1000  # five rows of cards: the feature visualizations too


@pytest.mark.slow
def test_warmup_fills_the_cache_so_a_fresh_explorer_compiles_nothing_big(tmp_path):
    """`cnnvis warmup` in one process; then a fresh process's FilterExplorer, on a layer warmup only
    reached through its group, loads its programs from the persistent cache (an empty cache: compiles)."""
    script = textwrap.dedent("""
        import cnnvis_widgets as cw
        cw.use_all_cores()  # as the tutorials and the cnnvis command do: the same programs
        import jax
        longest = [0.0]
        jax.monitoring.register_event_duration_secs_listener(
            lambda e, s, **k: longest.__setitem__(0, max(longest[0], s))
            if e == "/jax/core/compile/backend_compile_duration" else None)
        from cnnvis_widgets.widgets import FilterExplorer
        fe = FilterExplorer("digits-cnn", layer="conv4", filters="0:16")
        assert fe.wait(300) and fe.result.layer == "conv4"
        print(f"LONGEST {longest[0]:.2f}")
    """)

    def longest_compile(cache):
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return float(out.stdout.split("LONGEST")[1])

    warm = tmp_path / "warm"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(warm)}
    out = subprocess.run(
        [sys.executable, "-m", "cnnvis_widgets.cli", "warmup", "--model", "digits-cnn"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "conv1 and its group" in out.stdout and "conv2 and its group" in out.stdout
    assert longest_compile(tmp_path / "empty") > 1.0  # the step program, compiled
    assert longest_compile(warm) < 0.5  # loaded instead; only small programs compile
