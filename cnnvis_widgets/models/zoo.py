"""The offline model zoo: ``load(name)`` → a Probe with the model's weights and conventions."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

from cnnvis_widgets import validation
from cnnvis_widgets.models.probe import Probe


def _digits_cnn() -> Probe:
    from cnnvis_widgets.models import digits

    return Probe(
        digits.DigitsCNN(),
        digits.load_variables(),
        input_shape=digits.INPUT_SHAPE,
        preprocess=digits.preprocess,
        class_names=[str(i) for i in range(10)],
        layers="sown",  # the layers it names (its submodules are the same values before activation)
        name="digits-cnn",
    )


def _efficientnet_lite0() -> Probe:
    from cnnvis_widgets.models import efficientnet_lite as eff

    module = eff.EfficientNetLite0(folded_bn=True)
    return Probe(
        module,
        eff.load_variables(folded_bn=True),
        input_shape=eff.INPUT_SHAPE,
        preprocess=eff.PREPROCESS,
        class_names=eff.class_names(),
        layers="sown",
        name="efficientnet-lite0",
    )


def _mobilenet_v2() -> Probe:
    from cnnvis_widgets.models import mobilenet_v2 as mob

    module = mob.MobileNetV2(folded_bn=True)
    return Probe(
        module,
        mob.load_variables(folded_bn=True),
        input_shape=mob.INPUT_SHAPE,
        preprocess=mob.PREPROCESS,
        class_names=mob.class_names(),
        layers="sown",
        name="mobilenet-v2",
    )


MODELS: dict[str, Callable[[], Probe]] = {
    "digits-cnn": _digits_cnn,
    "efficientnet-lite0": _efficientnet_lite0,
    "mobilenet-v2": _mobilenet_v2,
}


def load(name: str = "digits-cnn") -> Probe:
    """A zoo model by name, as a Probe (weights come from installed packages, never the network);
    or your own, as ``"package.module:name"`` or ``"path/to/file.py:name"`` naming a Probe or a
    function that returns one (what the command line's ``--model`` and the app take)."""
    if isinstance(name, str) and ":" in name:
        return _imported(name)
    if not isinstance(name, str) or name not in MODELS:  # checked before the cache: a list is unhashable
        hint = validation.did_you_mean(name, MODELS, n=1) if isinstance(name, str) else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Models in the zoo: {', '.join(MODELS)}; "
            f"or your own as 'module:function' or 'file.py:function' returning a Probe."
        )
    return _load(name)


def _imported(spec: str) -> Probe:
    """The Probe that ``"module:name"`` or ``"file.py:name"`` names: the object itself, or what it
    returns when called with no arguments. A module is looked for from the working directory too."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise ValueError(
            f"Model {spec!r}: give 'module:name' or 'file.py:name' (name: a Probe or a function)."
        )
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"Model {spec!r}: no file {where!r}.")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.parent))  # its own imports of modules beside it
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            raise ValueError(f"Model {spec!r}: cannot import {where!r} ({err}).") from err
    found = getattr(module, attr, None)
    if found is None:
        names = [n for n, v in vars(module).items() if isinstance(v, Probe) or inspect.isfunction(v)]
        hint = validation.did_you_mean(attr, names, n=1)
        raise ValueError(
            f"Model {spec!r}: {where} has no {attr!r}.{hint} It defines: {', '.join(names) or 'none'}."
        )
    probe = found() if callable(found) and not isinstance(found, Probe) else found
    if not isinstance(probe, Probe):
        raise TypeError(f"Model {spec!r} gave a {type(probe).__name__}; it must be a Probe or return one.")
    return probe


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Probe:
    """One Probe per zoo name for the process (keyed by the name, a value): every view of a model
    shares its weights and its compiled programs (``Probe.programs``)."""
    return MODELS[name]()
