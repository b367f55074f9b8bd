"""ipywidgets + bqplot views and controls over the engine (no numerics beyond pixels)."""

from cnnvis_widgets.widgets.controls import FilterPicker, ImagePicker, LayerSlider, RegularizerPanel
from cnnvis_widgets.widgets.filters import FilterExplorer
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.runner import Runner
from cnnvis_widgets.widgets.view import View

__all__ = [
    "FilterExplorer",
    "FilterPicker",
    "ImagePicker",
    "ImageGrid",
    "LayerSlider",
    "RegularizerPanel",
    "Runner",
    "View",
]
