"""cnnvis_widgets: see inside convolutional networks, live, in Jupyter."""

from cnnvis_widgets import data, export
from cnnvis_widgets.engine import (
    AscentResult,
    deep_dream,
    invert_features,
    objectives,
    param,
    regularizers,
    transforms,
    visualize_classes,
    visualize_filters,
    visualize_neuron,
)
from cnnvis_widgets.models.probe import Layer, Probe
from cnnvis_widgets.models.zoo import MODELS, load

__version__ = "0.1.0"
__all__ = [
    "MODELS",
    "AscentResult",
    "Layer",
    "Probe",
    "data",
    "deep_dream",
    "export",
    "invert_features",
    "load",
    "objectives",
    "param",
    "regularizers",
    "transforms",
    "visualize_classes",
    "visualize_filters",
    "visualize_neuron",
]
