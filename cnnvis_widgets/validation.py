"""Checks of user input whose errors name what was given and what is valid.

The one place for the package's common checks (functions, widgets and the command line call
them): a positive integer, an integer, a finite positive number, and a name among known ones
with a "did you mean" hint. A check returns the value in its plain Python type, so callers use
what it returns.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Iterable

import numpy as np


def did_you_mean(value, names: Iterable, n: int = 3) -> str:
    """" Did you mean 'a', 'b'?" for the names closest to ``value`` (empty when none is close)."""
    close = difflib.get_close_matches(str(value), [str(name) for name in names], n=n)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def integer(value, name: str) -> int:
    """``value`` as an int if it is an integer (not a bool or a float), else a TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    return int(value)


def positive_int(value, name: str, most: int | None = None, what: str = "") -> int:
    """``value`` as an int if it is a positive integer (at most ``most``), else a ValueError naming
    it; ``what`` says what it counts, e.g. "steps between updates"."""
    meaning = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{meaning}, got {value!r}.")
    if most is not None and value > most:
        raise ValueError(f"{name} must be at most {most}{meaning}, got {value!r}.")
    return int(value)


def positive_number(value, name: str) -> float:
    """``value`` as a float if it is a finite number above 0, else a ValueError naming it."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def one_of(value, valid: Iterable, what: str) -> None:
    """A ValueError unless ``value`` is one of ``valid``: "Unknown <what> 'x'. Did you mean …?
    Valid: …"."""
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(
            f"Unknown {what} {value!r}.{did_you_mean(value, valid)} Valid: {', '.join(map(str, valid))}."
        )


def parse_filters(text: str, channels: int) -> np.ndarray:
    """Filters of a layer of ``channels`` from text (a widget's box, a command line): '0:16' →
    0..15 (a range is cut to the layer), '3, 5, 9' or '3 5 9' → [3, 5, 9], '' or 'all' → every
    channel; errors say what is valid (indices beyond the layer: ``Probe.check_units``)."""
    text = (text or "").strip()
    if text in ("", "all", ":"):
        return np.arange(channels)
    try:
        if ":" in text:
            lo, hi = (int(t) if t.strip() else None for t in text.split(":", 1))
            units = np.arange(channels)[slice(lo, hi)]
        else:
            units = np.array([int(t) for t in re.split(r"[,\s]+", text) if t])  # '3,5,9' or '3 5 9'
    except ValueError:
        raise ValueError(
            f"Filters {text!r}: give a range like 0:16, a list like 3,5,9, top16 (most active for the image), or 'all'."
        ) from None
    if units.size == 0:
        raise ValueError(
            f"Filters {text!r} select nothing; the layer has {channels} filters (0..{channels - 1})."
        )
    return units
