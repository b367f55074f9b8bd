"""Recipes: how to draw a model's features, chosen per model by measurement.

A `Recipe` is a plain, hashable description of an activation-maximization run's parts (Lucid's
split): the parameterization, the robustness transforms, whether the image is upsampled to the
model's native input size inside the loss, the image priors and the optimizer. Built parts are
cached by the recipe's value, so two equal recipes share one compiled optimization.

``for_probe(probe)`` picks the recipe a probe is drawn with: ``probe.recipe`` when the user set
one, else ``IMAGENET`` for RGB models with inputs of 96 px or more and ``SMALL`` for the rest.
The figures that chose them are in ``benchmarks/results/bench_quality.txt`` (made by
``benchmarks/bench_quality.py``).

References: Olah et al. 2017, "Feature Visualization" (Distill; Lucid's ``optvis``);
Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
Optimization" (MACO).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import optax

from cnnvis_widgets.engine import param as param_lib
from cnnvis_widgets.engine import regularizers as reg_lib
from cnnvis_widgets.engine import transforms as transforms_lib

PARAMS = ("fourier", "maco", "pixel")
TRANSFORMS = ("lucid", "mild", "none")
# The priors a recipe can name, each made with its weight: ``(name, weight)``.
PRIORS: dict[str, Callable[[float], reg_lib.Regularizer]] = {
    "l2_decay": reg_lib.l2_decay,
    "total_variation": reg_lib.total_variation,
    "gaussian_blur": lambda w: reg_lib.gaussian_blur(weight=w),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The parts of an activation-maximization run, by value.

    Attributes:
      name: a short name for tables and messages.
      param: "fourier" (Lucid's spectral image, colour-decorrelated for RGB), "maco" (Fel et al.
        2023: natural magnitude, optimized phase) or "pixel".
      transforms: "lucid" (pad 12, jitter 8, zoom 0.9-1.1, rotate -10..10 degrees, jitter 4, in
        pixels of the rendered image, as Lucid and Lucent do), "mild" (zoom 0.95-1.05, rotate
        -5..5, pixel amounts scaled to the image as if it were 224 px) or "none".
      upsample: resample the image to the model's native input size before the forward pass
        when it is smaller (the network sees its features at the scale it learnt them).
      priors: ``(name, weight)`` pairs from ``PRIORS`` (L2 decay, total variation, blur).
      learning_rate: Adam's step size.
    """

    name: str
    param: str = "fourier"
    transforms: str = "lucid"
    upsample: bool = True
    priors: tuple[tuple[str, float], ...] = ()
    learning_rate: float = 0.05

    def __post_init__(self):
        if self.param not in PARAMS:
            raise ValueError(f"Recipe param must be one of {PARAMS}, got {self.param!r}.")
        if self.transforms not in TRANSFORMS:
            raise ValueError(f"Recipe transforms must be one of {TRANSFORMS}, got {self.transforms!r}.")
        unknown = [name for name, _ in self.priors if name not in PRIORS]
        if unknown:
            raise ValueError(f"Unknown prior(s) {unknown}; a recipe can name {sorted(PRIORS)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"Recipe learning_rate must be positive, got {self.learning_rate!r}.")

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


# Lucid's and Lucent's defaults, in this engine: the baseline of bench_quality.py.
LUCID = Recipe("lucid")
# RGB ImageNet-scale models (EfficientNet-Lite0, MobileNetV2, a user's ResNet): Lucid's parts at
# twice Lucid's learning rate, chosen by benchmarks/bench_quality.py (results/bench_quality.txt).
IMAGENET = Recipe("imagenet", learning_rate=0.1)
# Small grayscale models (digits-cnn): the first wave's priors, which measured best for them.
SMALL = Recipe(
    "small",
    transforms="mild",
    upsample=False,
    priors=tuple((r.name, r.weight) for r in reg_lib.default_regularizers()),  # the literature's priors
)
MACO = Recipe("maco", param="maco")
# The parts exactly as given, at the size given: no transforms, priors or upsampling. For
# objectives tied to one image size (feature inversion, DeepDream) and for speed comparisons.
PLAIN = Recipe("plain", transforms="none", upsample=False)
# The first wave's defaults for every model (pale on ImageNet models; kept for comparison).
CLASSIC = SMALL.replace(name="classic")
# Textures and style transfer (engine/texture.py): Gatys et al.'s free pixels, no transforms or
# priors, seen at the native size, Adam at 0.02. Fourier images grew saturated blobs that Gram
# matching does not remove, and Lucid's grey padding drew them to the edges (chosen by
# benchmarks/bench_texture.py: results/bench_texture.txt).
TEXTURE = Recipe("texture", param="pixel", transforms="none", learning_rate=0.02)
RECIPES = {r.name: r for r in (IMAGENET, SMALL, LUCID, MACO, CLASSIC, PLAIN, TEXTURE)}


def for_probe(probe) -> Recipe:
    """The recipe ``probe`` is drawn with: ``probe.recipe`` if set, else by its input."""
    own = getattr(probe, "recipe", None)
    if own is not None:
        return named(own)
    h, w, c = probe.input_shape
    return IMAGENET if c == 3 and max(h, w) >= 96 else SMALL


def named(recipe: Recipe | str) -> Recipe:
    """``recipe`` itself, or the recipe of that name (``RECIPES``)."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str) and recipe in RECIPES:
        return RECIPES[recipe]
    raise ValueError(f"Unknown recipe {recipe!r}; give a Recipe or one of {sorted(RECIPES)}.")


# -------------------------------------------------------------- parts, cached by value
@functools.lru_cache(maxsize=None)
def build_param(kind: str, channels: int) -> param_lib.Param:
    """The parameterization called ``kind`` (``PARAMS``; Fourier is colour-decorrelated for RGB)."""
    if kind == "maco":
        return param_lib.maco()
    if kind == "pixel":
        return param_lib.pixel()
    if kind == "fourier":
        return param_lib.fourier(decorrelate=channels == 3)
    raise ValueError(f"Unknown parameterization {kind!r}; give one of {PARAMS}.")


@functools.lru_cache(maxsize=64)
def build_transforms(recipe: Recipe, size: tuple[int, int]) -> Callable:
    """The recipe's robustness transforms for images of ``size`` (the upsampling to the native size,
    which depends on the model, is appended by ``ascent``: see ``ascent.seen_size``)."""
    if recipe.transforms == "lucid":
        return transforms_lib.standard_transforms(
            size, transforms_lib.LUCID_ZOOMS, transforms_lib.LUCID_ANGLES, reference=128
        )
    if recipe.transforms == "mild":
        return transforms_lib.standard_transforms(size)
    return transforms_lib.identity()


@functools.lru_cache(maxsize=None)
def build_priors(recipe: Recipe) -> tuple[reg_lib.Regularizer, ...]:
    """The recipe's image priors with their weights."""
    return tuple(PRIORS[name](weight) for name, weight in recipe.priors)


@functools.lru_cache(maxsize=None)
def build_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """Adam with ``learning_rate`` (one object per value, so its compiled run is reused)."""
    return optax.adam(learning_rate)
