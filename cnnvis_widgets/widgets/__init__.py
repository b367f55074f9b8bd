"""ipywidgets + bqplot views and controls over the engine (no numerics beyond pixels)."""

from cnnvis_widgets.widgets.activations import ActivationExplorer
from cnnvis_widgets.widgets.concepts import ConceptExplorer
from cnnvis_widgets.widgets.controls import FilterPicker, ImagePicker, LayerSlider, RegularizerPanel
from cnnvis_widgets.widgets.dashboard import Dashboard, explore
from cnnvis_widgets.widgets.embedding import EmbeddingExplorer
from cnnvis_widgets.widgets.filters import FilterExplorer
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.runner import Runner
from cnnvis_widgets.widgets.saliency import SaliencyExplorer
from cnnvis_widgets.widgets.training import TrainingMonitor
from cnnvis_widgets.widgets.view import View
from cnnvis_widgets.widgets.weights import WeightsView

__all__ = [
    "ActivationExplorer",
    "ConceptExplorer",
    "Dashboard",
    "EmbeddingExplorer",
    "FilterExplorer",
    "FilterPicker",
    "ImageGrid",
    "ImagePicker",
    "LayerSlider",
    "RegularizerPanel",
    "Runner",
    "SaliencyExplorer",
    "TrainingMonitor",
    "View",
    "WeightsView",
    "explore",
]
