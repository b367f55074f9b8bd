"""cnnvis_widgets: see inside convolutional networks, live, in Jupyter."""

from cnnvis_widgets.memory import limit_malloc_arenas, trim_after_compiles

limit_malloc_arenas()  # before JAX starts its threads: see memory.py
trim_after_compiles()

from cnnvis_widgets import data, export, pixels
from cnnvis_widgets.engine import (
    AscentResult,
    deep_dream,
    invert_features,
    objectives,
    param,
    quality,
    recipes,
    regularizers,
    style_transfer,
    synthesize_texture,
    transforms,
    visualize_classes,
    visualize_filters,
    visualize_neuron,
)
from cnnvis_widgets.engine.activations import (
    feature_maps,
    filter_stats,
    kernels_as_images,
    most_activated,
    receptive_patches,
    top_images,
)
from cnnvis_widgets.engine.concepts import concept_examples, concepts, decompose
from cnnvis_widgets.engine.embedding import embed, features, mosaic, neighbours
from cnnvis_widgets.engine.faithfulness import FaithfulnessResult, curves_of_maps, faithfulness
from cnnvis_widgets.engine.saliency import METHODS as SALIENCY_METHODS
from cnnvis_widgets.engine.saliency import saliency
from cnnvis_widgets.engine.sanity import randomization_cascade, regularizer_ablation
from cnnvis_widgets.engine.sharding import use_all_cores
from cnnvis_widgets.models.probe import Layer, Probe
from cnnvis_widgets.models.zoo import MODELS, load

__version__ = "0.1.0"


def explore(model="digits-cnn", images=None, dataset=None, views=None, start=None):
    """Every view of ``model`` (a Probe or a zoo name) in one tabbed dashboard (see widgets.dashboard)."""
    from cnnvis_widgets.widgets.dashboard import explore as _explore

    return _explore(model, images=images, dataset=dataset, views=views, start=start)


__all__ = [
    "MODELS",
    "SALIENCY_METHODS",
    "concept_examples",
    "concepts",
    "curves_of_maps",
    "decompose",
    "embed",
    "explore",
    "faithfulness",
    "feature_maps",
    "features",
    "filter_stats",
    "kernels_as_images",
    "most_activated",
    "mosaic",
    "neighbours",
    "randomization_cascade",
    "receptive_patches",
    "regularizer_ablation",
    "saliency",
    "top_images",
    "use_all_cores",
    "AscentResult",
    "FaithfulnessResult",
    "Layer",
    "Probe",
    "data",
    "deep_dream",
    "export",
    "invert_features",
    "load",
    "objectives",
    "param",
    "pixels",
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
