"""The offline model zoo: ``load(name)`` → a Probe with the model's weights and conventions."""

from __future__ import annotations

import difflib
import functools
from typing import Callable

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
    """A zoo model by name, as a Probe (weights come from installed packages, never the network)."""
    if not isinstance(name, str) or name not in MODELS:  # checked before the cache: a list is unhashable
        close = difflib.get_close_matches(str(name), MODELS, n=1) if isinstance(name, str) else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Models in the zoo: {', '.join(MODELS)}.")
    return _load(name)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Probe:
    return MODELS[name]()


load.cache_clear = _load.cache_clear  # as before, when load itself was cached
load.cache_info = _load.cache_info
