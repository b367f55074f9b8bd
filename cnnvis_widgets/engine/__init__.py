"""Pure JAX numerics: arrays in, arrays out. Never imports widgets, never prints or touches files."""

from cnnvis_widgets.engine import objectives, param, quality, recipes, regularizers, transforms
from cnnvis_widgets.engine.ascent import (
    AscentResult,
    Progress,
    visualize_classes,
    visualize_filters,
    visualize_neuron,
)
from cnnvis_widgets.engine.inversion import deep_dream, invert_features
from cnnvis_widgets.engine.texture import style_transfer, synthesize_texture

__all__ = [
    "AscentResult",
    "Progress",
    "deep_dream",
    "invert_features",
    "objectives",
    "param",
    "quality",
    "recipes",
    "regularizers",
    "style_transfer",
    "synthesize_texture",
    "transforms",
    "visualize_classes",
    "visualize_filters",
    "visualize_neuron",
]
