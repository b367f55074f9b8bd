"""cnnvis_widgets: see inside convolutional networks, live, in Jupyter."""

from cnnvis_widgets import data
from cnnvis_widgets.models.probe import Layer, Probe
from cnnvis_widgets.models.zoo import MODELS, load

__version__ = "0.1.0"
__all__ = ["Layer", "MODELS", "Probe", "data", "load"]
