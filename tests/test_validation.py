"""validation: the package's common input checks say what was given and what is valid."""

import numpy as np
import pytest

from cnnvis_widgets import pixels as px
from cnnvis_widgets import validation


def test_did_you_mean_names_the_closest_and_nothing_when_none_is_close():
    hint = validation.did_you_mean("conv", ["conv1", "conv2", "dense"])
    assert hint in (" Did you mean 'conv1', 'conv2'?", " Did you mean 'conv2', 'conv1'?")
    assert validation.did_you_mean("xyz", ["conv1", "dense"]) == ""
    assert validation.did_you_mean(3, [3, 4], n=1) == " Did you mean '3'?"  # non-strings are compared as text


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(200)])
def test_positive_int_returns_a_python_int(value):
    out = validation.positive_int(value, "steps")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "steps must be a positive integer (steps per frame), got 0."),
        (-2, "steps must be a positive integer (steps per frame), got -2."),
        (2.0, "steps must be a positive integer (steps per frame), got 2.0."),
        (True, "steps must be a positive integer (steps per frame), got True."),
        ("3", "steps must be a positive integer (steps per frame), got '3'."),
        (11, "steps must be at most 10 (steps per frame), got 11."),
    ],
)
def test_positive_int_errors_name_the_value_and_the_rule(value, message):
    with pytest.raises(ValueError) as err:
        validation.positive_int(value, "steps", 10, what="steps per frame")
    assert str(err.value) == message


def test_integer_refuses_bools_and_floats():
    assert validation.integer(np.int32(-4), "seed") == -4
    for bad in (True, 1.5, "1"):
        with pytest.raises(TypeError, match="seed must be an integer, got"):
            validation.integer(bad, "seed")


def test_positive_number():
    assert validation.positive_number(np.float32(0.5), "learning_rate") == 0.5
    for bad in (0, -1.0, float("nan"), float("inf"), True, "0.1", None):
        with pytest.raises(ValueError, match=r"learning_rate must be a positive finite number, got"):
            validation.positive_number(bad, "learning_rate")


def test_one_of_lists_the_valid_ones_with_a_hint():
    validation.one_of("tsne", ["tsne", "umap"], "embedding method")
    with pytest.raises(ValueError) as err:
        validation.one_of("umpa", ["tsne", "umap"], "embedding method")
    assert str(err.value) == "Unknown embedding method 'umpa'. Did you mean 'umap'? Valid: tsne, umap."


def test_check_colormap():
    assert px.check_colormap("viridis") == "viridis"
    with pytest.raises(ValueError, match=r"Unknown cmap 'viridsi'\. Did you mean 'viridis'"):
        px.check_colormap("viridsi", "cmap")


# ------------------------------------------------------------------ parse_filters
@pytest.mark.parametrize(
    "text, channels, expected",
    [
        ("0:4", 16, [0, 1, 2, 3]),
        (":3", 16, [0, 1, 2]),
        ("13:", 16, [13, 14, 15]),
        ("-2:", 16, [14, 15]),  # Python's slice: the last two
        ("6:99", 8, [6, 7]),  # a range past the end stops at the last filter
        ("3,5,9", 16, [3, 5, 9]),
        (" 3, 5 ,9 ", 16, [3, 5, 9]),
        ("3,5,9,", 16, [3, 5, 9]),
        ("7", 16, [7]),
        ("", 4, [0, 1, 2, 3]),
        ("all", 4, [0, 1, 2, 3]),
        (" all ", 4, [0, 1, 2, 3]),
        (":", 4, [0, 1, 2, 3]),
        (None, 3, [0, 1, 2]),
    ],
)
def test_parse_filters_reads_ranges_lists_and_all(text, channels, expected):
    """Ranges as Python slices of 0..channels-1, comma lists as given, '' / 'all' / ':' as every one."""
    got = validation.parse_filters(text, channels)
    assert np.issubdtype(got.dtype, np.integer) and got.tolist() == expected


@pytest.mark.parametrize("text", ["1.5", "0:16:2", "3;5", "top"])
def test_parse_filters_names_the_text_and_the_forms_it_takes(text):
    """Unreadable text: the message quotes it and lists the accepted forms."""
    with pytest.raises(ValueError) as err:
        validation.parse_filters(text, 16)
    assert str(err.value) == (
        f"Filters {text!r}: give a range like 0:16, a list like 3,5,9, "
        "top16 (most active for the image), or 'all'."
    )


@pytest.mark.parametrize("text", ["10:12", ",", "5:2"])
def test_parse_filters_refuses_an_empty_selection_saying_what_exists(text):
    """A selection of nothing (a range past the end, a bare comma, a backward range)."""
    with pytest.raises(ValueError) as err:
        validation.parse_filters(text, 8)
    assert str(err.value) == f"Filters {text!r} select nothing; the layer has 8 filters (0..7)."


def test_parse_filters_does_not_glue_space_separated_numbers():
    """'3 5 9' is the filters 3, 5 and 9, not filter 359."""
    assert validation.parse_filters("3 5 9", 400).tolist() == [3, 5, 9]
