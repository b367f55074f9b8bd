"""The `cnnvis` command: demo, layers, filters, and user errors without tracebacks."""

from PIL import Image

from cnnvis_widgets import cli


def test_layers_lists_the_model(capsys):
    assert cli.main(["layers", "--model", "digits-cnn"]) == 0
    out = capsys.readouterr().out
    assert "conv1 (conv, 32x32x16, rf 3, stride 1)" in out and "logits (dense, 10" in out


def test_filters_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli.main(["filters", "--layer", "conv2", "--filters", "0:4", "--steps", "8", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    assert "4 filters of conv2" in capsys.readouterr().out


def test_user_errors_exit_2_without_traceback(capsys):
    assert cli.main(["filters", "--layer", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "Unknown layer 'conv9'" in err and "Traceback" not in err
    assert cli.main(["layers", "--model", "resnet"]) == 2
    assert "Models in the zoo: digits-cnn" in capsys.readouterr().err
