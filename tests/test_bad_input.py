"""Bad input, everywhere (issue #10): a catalogue of wrong calls of every public function and
widget constructor, each with the fragments its error must contain (what was given, what is
valid), raised by the package itself rather than from deep inside JAX, Flax or NumPy.

Then NaN/Inf during optimization: detected per filter, reported in the result and in the
FilterExplorer (status line and tile labels), and the other filters' images are kept.
"""

from __future__ import annotations

import numpy as np
import pytest
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets import data, export
from cnnvis_widgets.engine import recipes
from cnnvis_widgets.models.probe import Probe
from cnnvis_widgets.widgets import (
    ActivationExplorer,
    ConceptExplorer,
    EmbeddingExplorer,
    FilterExplorer,
    SaliencyExplorer,
    TrainingMonitor,
    WeightsView,
)

IMAGES = np.full((2, 32, 32, 1), 0.5, np.float32)
ONE = IMAGES[0]
NAN = np.full((1, 32, 32, 1), np.nan, np.float32)
LAYERS = "Valid layers: conv1, conv2, pool1, conv3, pool2, conv4, pool3, fc1, logits"
ALL_METHODS = "vanilla, grad_x_input, smoothgrad, integrated_gradients"
ZOO = "Models in the zoo: digits-cnn, efficientnet-lite0, mobilenet-v2"


def case(name, call, error, *fragments):
    """``call(probe, tmp_path)`` must raise ``error`` whose message holds every fragment."""
    return pytest.param(call, error, fragments, id=name)


def _regs():
    return recipes.build_priors(recipes.SMALL)  # the priors digits-cnn is drawn with


CASES = [
    # ------------------------------------------------------------------ models: the zoo, Probe
    case("load/unknown", lambda p, t: cw.load("resnet50"), ValueError, "Unknown model 'resnet50'", ZOO),
    case("load/typo", lambda p, t: cw.load("digits"), ValueError, "Did you mean 'digits-cnn'?", ZOO),
    case("load/list", lambda p, t: cw.load(["digits-cnn"]), ValueError, "Unknown model ['digits-cnn']", ZOO),
    case("load/None", lambda p, t: cw.load(None), ValueError, "Unknown model None", ZOO),
    case(
        "Probe/not-flax",
        lambda p, t: Probe(object(), input_shape=(32, 32, 1)),
        TypeError,
        "flax.linen.Module or flax.nnx.Module, got object",
    ),
    case(
        "Probe/function",
        lambda p, t: Probe(lambda x: x, input_shape=(32, 32, 1)),
        TypeError,
        "got function",
    ),
    case(
        "Probe/input_shape-2d",
        lambda p, t: Probe(p.module, p.variables, input_shape=(32, 32)),
        ValueError,
        "input_shape must be (H, W, C) of positive integers, got (32, 32)",
    ),
    case(
        "Probe/input_shape-negative",
        lambda p, t: Probe(p.module, p.variables, input_shape=(32, -32, 1)),
        ValueError,
        "got (32, -32, 1)",
    ),
    case(
        "Probe/input_shape-text",
        lambda p, t: Probe(p.module, p.variables, input_shape="32x32"),
        ValueError,
        "got '32x32'",
    ),
    case(
        "Probe/wrong-channels",
        lambda p, t: Probe(p.module, p.variables, input_shape=(32, 32, 3)),
        ValueError,
        "Could not run DigitsCNN on a (1, 32, 32, 3) image",
        "Check input_shape (H, W, C)",
    ),
    case(
        "Probe/empty-variables",
        lambda p, t: Probe(p.module, {"params": {}}, input_shape=(32, 32, 1)),
        ValueError,
        "Could not run DigitsCNN",
        "collection is empty",
    ),
    case(
        "Probe/variables-list",
        lambda p, t: Probe(p.module, [1, 2], input_shape=(32, 32, 1)),
        TypeError,
        "variables are a dict like {'params': ...}",
        "got list",
    ),
    case(
        "Probe/linen-without-variables",
        lambda p, t: Probe(p.module, input_shape=(32, 32, 1)),
        ValueError,
        "needs its variables",
    ),
    # ------------------------------------------------------------------ images given to the Probe
    case(
        "images/one-image-not-a-batch",
        lambda p, t: p.activations(p.variables, ONE, "conv1"),
        ValueError,
        "(N, H, W, C) = (N, 32, 32, 1)",
        "got shape (32, 32, 1)",
    ),
    case(
        "images/rgb-for-grayscale",
        lambda p, t: p.logits(p.variables, np.zeros((1, 32, 32, 3))),
        ValueError,
        "grayscale images with 1 channel",
        "got 3 channels",
    ),
    case("images/nan", lambda p, t: p.logits(p.variables, NAN), ValueError, "1024 NaN or Inf", "[0, 1]"),
    case(
        "images/inf",
        lambda p, t: p.logits(p.variables, np.full((1, 32, 32, 1), np.inf)),
        ValueError,
        "NaN or Inf",
    ),
    case(
        "images/0-255-floats",
        lambda p, t: p.logits(p.variables, np.full((1, 32, 32, 1), 200.0)),
        ValueError,
        "values in [0, 1], got range [200, 200]",
        "divide by 255",
    ),
    case(
        "images/negative",
        lambda p, t: p.logits(p.variables, np.full((1, 32, 32, 1), -0.5)),
        ValueError,
        "got range [-0.5, -0.5]",
    ),
    case(
        "images/a-path",
        lambda p, t: p.logits(p.variables, "cat.png"),
        TypeError,
        "numeric arrays, got dtype <U7",
    ),
    case(
        "images/None", lambda p, t: p.logits(p.variables, None), TypeError, "numeric arrays, got dtype object"
    ),
    case(
        "images/bool",
        lambda p, t: p.logits(p.variables, np.zeros((1, 32, 32, 1), bool)),
        TypeError,
        "got dtype bool",
    ),
    case(
        "images/complex",
        lambda p, t: p.logits(p.variables, np.zeros((1, 32, 32, 1), complex)),
        TypeError,
        "got dtype complex128",
    ),
    case(
        "images/ragged-list",
        lambda p, t: p.logits(p.variables, [np.zeros((32, 32, 1)), np.zeros((16, 16, 1))]),
        ValueError,
        "different shapes [(16, 16, 1), (32, 32, 1)]",
        "fit_to",
    ),
    case(
        "images/empty-batch",
        lambda p, t: p.logits(p.variables, np.zeros((0, 32, 32, 1))),
        ValueError,
        "No images: got shape (0, 32, 32, 1)",
        "32x32x1",
    ),
    case(
        "Probe.activations/unknown-layer",
        lambda p, t: p.activations(p.variables, IMAGES, "conv9"),
        ValueError,
        "Unknown layer 'conv9'",
        "Did you mean 'conv4'",
        LAYERS,
    ),
    case(
        "Probe.logits/foreign-variables",
        lambda p, t: p.logits({"params": {}}, IMAGES),
        ValueError,
        "variables do not match digits-cnn's",
        "missing ['params']['conv1_op']['bias']",
    ),
    case(
        "Probe.logits/wrong-shaped-variables",
        lambda p, t: p.logits(
            {"params": {k: {n: w[..., :1] for n, w in v.items()} for k, v in p.variables["params"].items()}},
            IMAGES,
        ),
        ValueError,
        "wrong shape ['params']['conv1_op']['bias']: (1,) (expected (16,))",
    ),
    # ------------------------------------------------------------------ activation maximization
    case(
        "visualize_filters/not-a-probe-name",
        lambda p, t: cw.visualize_filters("digits-cnn", "conv1", [0]),
        TypeError,
        "visualize_filters needs a Probe, got str 'digits-cnn'",
        "cnnvis_widgets.load('digits-cnn')",
    ),
    case(
        "visualize_filters/flax-module",
        lambda p, t: cw.visualize_filters(p.module, "conv1", [0]),
        TypeError,
        "needs a Probe, got DigitsCNN",
        "Probe(module, variables, input_shape=(H, W, C))",
    ),
    case(
        "visualize_filters/None",
        lambda p, t: cw.visualize_filters(None, "conv1"),
        TypeError,
        "got NoneType None",
    ),
    case(
        "visualize_filters/unknown-layer",
        lambda p, t: cw.visualize_filters(p, "conv9", [0]),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "visualize_filters/layer-index",
        lambda p, t: cw.visualize_filters(p, 3, [0]),
        TypeError,
        "A layer is given by its name (a str), got int 3",
        LAYERS,
    ),
    case(
        "visualize_filters/empty-filters",
        lambda p, t: cw.visualize_filters(p, "conv1", []),
        ValueError,
        "Empty list of filters for layer 'conv1'",
        "0..15",
    ),
    case(
        "visualize_filters/empty-range",
        lambda p, t: cw.visualize_filters(p, "conv1", range(0)),
        ValueError,
        "Empty list of filters",
    ),
    case(
        "visualize_filters/filter-out-of-range",
        lambda p, t: cw.visualize_filters(p, "conv1", [99]),
        ValueError,
        "Filter 99 is out of range for layer 'conv1' with 16 channels (valid: 0..15)",
    ),
    case(
        "visualize_filters/negative-filter",
        lambda p, t: cw.visualize_filters(p, "conv1", [-1]),
        ValueError,
        "Filter -1 is out of range",
        "valid: 0..15",
    ),
    case(
        "visualize_filters/float-filter",
        lambda p, t: cw.visualize_filters(p, "conv1", [0.5]),
        TypeError,
        "Filter indices must be integers, got float64 values [0.5]",
    ),
    case(
        "visualize_filters/range-text",
        lambda p, t: cw.visualize_filters(p, "conv1", "0:4"),
        TypeError,
        "must be integers",
        "['0:4']",
    ),
    case(
        "visualize_filters/zero-steps",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], steps=0),
        ValueError,
        "steps must be a positive integer, got 0",
    ),
    case(
        "visualize_filters/negative-steps",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], steps=-5),
        ValueError,
        "got -5",
    ),
    case(
        "visualize_filters/huge-steps",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], steps=10**12),
        ValueError,
        "steps must be at most 100000, got 1000000000000",
    ),
    case(
        "visualize_filters/float-steps",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], steps=2.5),
        ValueError,
        "positive integer, got 2.5",
    ),
    case(
        "visualize_filters/text-steps",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], steps="10"),
        ValueError,
        "got '10'",
    ),
    case(
        "visualize_filters/snapshots-too-many",
        lambda p, t: cw.visualize_filters(p, "conv1", None, steps=100000, snapshot_every=1, size=128),
        ValueError,
        "keeps 100000 snapshots of 16 images",
        "snapshot_every of at least",
    ),
    case(
        "visualize_filters/size-too-small",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], size=2),
        ValueError,
        "size (2, 2) is too small for digits-cnn: use at least 8x8",
    ),
    case(
        "visualize_filters/negative-size",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], size=-32),
        ValueError,
        "(-32, -32) is too small",
    ),
    case(
        "visualize_filters/size-3-tuple",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], size=(32, 32, 1)),
        ValueError,
        "size must be an int or (H, W), got (32, 32, 1)",
    ),
    case(
        "visualize_filters/zero-batch",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], batch=0),
        ValueError,
        "batch must be a positive integer, got 0",
    ),
    case(
        "visualize_filters/huge-batch",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], batch=10**9),
        ValueError,
        "batch must be at most 256, got 1000000000",
    ),
    case(
        "visualize_filters/size-fourier-cannot-represent",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], size=(17, 16)),
        ValueError,
        "fourier cannot tell a 17x16 image from a 17x17 one",
        "use 17x17, 18x16 or 17x18",
    ),
    case(
        "visualize_filters/snapshot_every-0",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], snapshot_every=0),
        ValueError,
        "snapshot_every must be a positive integer, got 0",
    ),
    case(
        "visualize_filters/chunk-0",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], chunk=0),
        ValueError,
        "chunk must be a positive integer, got 0",
    ),
    case(
        "visualize_filters/text-seed",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], seed="a"),
        TypeError,
        "seed must be an integer, got str 'a'",
    ),
    case(
        "visualize_filters/float-seed",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], seed=1.5),
        TypeError,
        "got float 1.5",
    ),
    case(
        "visualize_filters/unknown-objective",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], objective="mean"),
        ValueError,
        "Unknown objective 'mean'; give one of ['channel', ",
        "'neuron'] or an Objective",
    ),
    case(
        "visualize_filters/objective-int",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], objective=3),
        TypeError,
        "objective must be a name or an Objective, got int",
    ),
    case(
        "visualize_filters/neuron-of-dense-layer",
        lambda p, t: cw.visualize_filters(p, "fc1", [0], objective="neuron"),
        ValueError,
        "needs a spatial layer; 'fc1' has shape (64,)",
    ),
    case(
        "visualize_filters/weights-count",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], weights=[1.0]),
        ValueError,
        "one value per regularizer (3: ['l2_decay', 'total_variation', 'gaussian_blur']), got shape (1,)",
    ),
    case(
        "visualize_filters/nan-weights",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], weights=[np.nan] * 3),
        ValueError,
        "weights must be finite numbers",
        "got [nan, nan, nan]",
    ),
    case(
        "visualize_filters/text-weights",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], weights=["a", "b", "c"]),
        ValueError,
        "weights must be finite numbers",
    ),
    case(
        "visualize_filters/unknown-relu-rule",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], relu_rule="leaky"),
        ValueError,
        "Unknown ReLU rule 'leaky'; valid: ['deconvnet', 'guided', 'redirected'] or None",
    ),
    case(
        "visualize_filters/optimizer-name",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], optimizer="adam"),
        TypeError,
        "optimizer must be an optax optimizer such as optax.adam(0.05), got 'adam'",
    ),
    case(
        "visualize_filters/param-name",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], param="fourier"),
        TypeError,
        "param must be a Param such as param.fourier() or param.pixel(), got 'fourier'",
    ),
    case(
        "visualize_filters/regularizer-names",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], regularizers=["tv"]),
        TypeError,
        "regularizers must be a list of Regularizers",
        "got ['tv']",
    ),
    case(
        "visualize_filters/transform-name",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], transforms="jitter"),
        TypeError,
        "transforms must be a transform such as transforms.jitter(4)",
        "got 'jitter'",
    ),
    case(
        "visualize_filters/nan-init-images",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], init_images=NAN[0]),
        ValueError,
        "NaN or Inf",
    ),
    case(
        "visualize_filters/init-images-count",
        lambda p, t: cw.visualize_filters(p, "conv1", [0, 1], init_images=np.zeros((3, 32, 32, 1))),
        ValueError,
        "init_images must hold 1 or 2 images (one per filter), got 3",
    ),
    case(
        "visualize_filters/foreign-variables",
        lambda p, t: cw.visualize_filters(p, "conv1", [0], variables={"params": {}}),
        ValueError,
        "variables do not match digits-cnn's",
    ),
    case(
        "visualize_classes/class-out-of-range",
        lambda p, t: cw.visualize_classes(p, [10]),
        ValueError,
        "Filter 10 is out of range for layer 'logits' with 10 channels (valid: 0..9)",
    ),
    case(
        "visualize_classes/not-a-probe",
        lambda p, t: cw.visualize_classes("digits-cnn"),
        TypeError,
        "visualize_classes needs a Probe",
    ),
    case(
        "visualize_neuron/position-outside",
        lambda p, t: cw.visualize_neuron(p, "conv1", [0], y=100),
        ValueError,
        "position (100, 16) is outside the layer's 32x32 grid",
    ),
    case(
        "invert_features/unknown-layer",
        lambda p, t: cw.invert_features(p, ONE, "conv9"),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "invert_features/a-batch",
        lambda p, t: cw.invert_features(p, IMAGES, "conv1"),
        ValueError,
        "Give one image (H, W, C), got a batch of 2",
    ),
    case(
        "invert_features/a-name-not-an-image",
        lambda p, t: cw.invert_features(p, "cat", "conv1"),
        ValueError,
        "Give one image, an array (H, W) or (H, W, C)",
        "got str of shape ()",
    ),
    case(
        "invert_features/1d",
        lambda p, t: cw.invert_features(p, np.zeros(32), "conv1"),
        ValueError,
        "got ndarray of shape (32,)",
    ),
    case(
        "invert_features/nan", lambda p, t: cw.invert_features(p, NAN[0], "conv1"), ValueError, "NaN or Inf"
    ),
    case(
        "deep_dream/nan-learning-rate",
        lambda p, t: cw.deep_dream(p, ONE, "conv1", learning_rate=float("nan")),
        ValueError,
        "learning_rate must be a positive finite number, got nan",
    ),
    case(
        "deep_dream/negative-learning-rate",
        lambda p, t: cw.deep_dream(p, ONE, "conv1", learning_rate=-1),
        ValueError,
        "got -1",
    ),
    case(
        "deep_dream/not-a-probe",
        lambda p, t: cw.deep_dream(object(), ONE, "conv1"),
        TypeError,
        "needs a Probe, got object",
    ),
    case(
        "synthesize_texture/unknown-layer",
        lambda p, t: cw.synthesize_texture(p, ONE, ["conv1", "conv9"]),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "synthesize_texture/dense-layer",
        lambda p, t: cw.synthesize_texture(p, ONE, "fc1"),
        ValueError,
        "layers: 'fc1' has no feature maps (dense); spatial layers: conv1, conv2",
    ),
    case(
        "synthesize_texture/a-batch",
        lambda p, t: cw.synthesize_texture(p, IMAGES),
        ValueError,
        "Give one image (H, W, C), got a batch of 2",
    ),
    case(
        "synthesize_texture/no-seeds",
        lambda p, t: cw.synthesize_texture(p, ONE, seeds=0),
        ValueError,
        "seeds must be a positive integer, got 0",
    ),
    case(
        "synthesize_texture/no-layers",
        lambda p, t: cw.synthesize_texture(p, ONE, []),
        ValueError,
        "layers: give at least one layer, e.g. ['conv1', 'conv3', 'conv4']",
    ),
    case(
        "style_transfer/negative-style-weight",
        lambda p, t: cw.style_transfer(p, ONE, ONE, style_weight=-2.0),
        ValueError,
        "style_weight must be a finite number >= 0, got -2.0",
    ),
    case(
        "style_transfer/1d-style",
        lambda p, t: cw.style_transfer(p, ONE, np.zeros(32)),
        ValueError,
        "got ndarray of shape (32,)",
    ),
    case(
        "style_transfer/no-steps",
        lambda p, t: cw.style_transfer(p, ONE, ONE, steps=0),
        ValueError,
        "steps must be a positive integer, got 0",
    ),
    # ------------------------------------------------------------------ saliency
    case(
        "saliency/unknown-method",
        lambda p, t: cw.saliency(p, IMAGES, "gradient"),
        ValueError,
        "Unknown saliency method 'gradient'",
        "Did you mean 'grad_x_input'",
        ALL_METHODS,
    ),
    case(
        "saliency/method-None",
        lambda p, t: cw.saliency(p, IMAGES, None),
        ValueError,
        "Unknown saliency method None",
        ALL_METHODS,
    ),
    case(
        "saliency/method-list",
        lambda p, t: cw.saliency(p, IMAGES, ["vanilla"]),
        ValueError,
        "Unknown saliency method ['vanilla']",
        ALL_METHODS,
    ),
    case(
        "saliency/option-of-another-method",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", n_samples=3),
        TypeError,
        "Method 'vanilla' got unknown option(s) n_samples; its options: none",
    ),
    case(
        "saliency/not-a-probe",
        lambda p, t: cw.saliency(None, IMAGES),
        TypeError,
        "saliency needs a Probe, got NoneType",
    ),
    case("saliency/nan-images", lambda p, t: cw.saliency(p, NAN), ValueError, "NaN or Inf"),
    case(
        "saliency/one-image",
        lambda p, t: cw.saliency(p, ONE),
        ValueError,
        "(N, 32, 32, 1)",
        "got shape (32, 32, 1)",
    ),
    case("saliency/rgb", lambda p, t: cw.saliency(p, np.zeros((1, 32, 32, 3))), ValueError, "got 3 channels"),
    case(
        "saliency/empty",
        lambda p, t: cw.saliency(p, np.zeros((0, 32, 32, 1))),
        ValueError,
        "No images: got shape (0, 32, 32, 1)",
    ),
    case(
        "saliency/class-out-of-range",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", 10),
        ValueError,
        "Class 10 is out of range for digits-cnn with 10 classes (valid: 0..9)",
    ),
    case(
        "saliency/negative-class",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", -1),
        ValueError,
        "Class -1",
        "valid: 0..9",
    ),
    case(
        "saliency/float-class",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", 1.5),
        TypeError,
        "class target must be an integer or an array of integers, got 1.5",
    ),
    case("saliency/bool-class", lambda p, t: cw.saliency(p, IMAGES, "vanilla", True), TypeError, "got True"),
    case(
        "saliency/unknown-class-name",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", "cat"),
        ValueError,
        "Unknown class name 'cat' for digits-cnn",
        "class index 0..9",
    ),
    case(
        "saliency/unit-of-unknown-layer",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", ("conv9", 0)),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "saliency/unit-out-of-range",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", ("conv1", 99)),
        ValueError,
        "Filter 99 is out of range for layer 'conv1'",
        "valid: 0..15",
    ),
    case(
        "saliency/target-3-tuple",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", ("conv1", 0, 1)),
        ValueError,
        "(layer_name, unit or None), e.g. ('conv3', 5); got ('conv1', 0, 1)",
    ),
    case(
        "saliency/targets-count",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", [1, 2, 3]),
        ValueError,
        "one per image: 2 class targets expected, got 3",
    ),
    case(
        "saliency/smoothgrad-0-samples",
        lambda p, t: cw.saliency(p, IMAGES, "smoothgrad", n_samples=0),
        ValueError,
        "n_samples must be a positive integer, got 0",
    ),
    case(
        "saliency/smoothgrad-huge-samples",
        lambda p, t: cw.saliency(p, IMAGES, "smoothgrad", n_samples=10**9),
        ValueError,
        "n_samples must be at most 10000",
        "got 1000000000",
    ),
    case(
        "saliency/smoothgrad-negative-noise",
        lambda p, t: cw.saliency(p, IMAGES, "smoothgrad", noise=-1),
        ValueError,
        "noise must be a finite number >= 0, got -1.0",
    ),
    case(
        "saliency/smoothgrad-nan-noise",
        lambda p, t: cw.saliency(p, IMAGES, "smoothgrad", noise=float("nan")),
        ValueError,
        "got nan",
    ),
    case(
        "saliency/smoothgrad-text-noise",
        lambda p, t: cw.saliency(p, IMAGES, "smoothgrad", noise="a"),
        TypeError,
        "noise must be a number, got str 'a'",
    ),
    case(
        "saliency/smoothgrad-text-seed",
        lambda p, t: cw.saliency(p, IMAGES, "smoothgrad", seed="a"),
        TypeError,
        "seed must be an integer, got str 'a'",
    ),
    case(
        "saliency/integrated-0-steps",
        lambda p, t: cw.saliency(p, IMAGES, "integrated_gradients", steps=0),
        ValueError,
        "steps must be a positive integer, got 0",
    ),
    case(
        "saliency/integrated-huge-steps",
        lambda p, t: cw.saliency(p, IMAGES, "integrated_gradients", steps=10**9),
        ValueError,
        "steps must be at most 10000",
    ),
    case(
        "saliency/baseline-shape",
        lambda p, t: cw.saliency(p, IMAGES, "integrated_gradients", baseline=np.zeros((5, 5))),
        ValueError,
        "one image (32, 32, 1) or one per image (2, 32, 32, 1); got shape (5, 5)",
    ),
    case(
        "saliency/nan-baseline",
        lambda p, t: cw.saliency(p, IMAGES, "integrated_gradients", baseline=np.nan),
        ValueError,
        "baseline contains NaN",
    ),
    case(
        "saliency/baseline-out-of-range",
        lambda p, t: cw.saliency(p, IMAGES, "integrated_gradients", baseline=7.0),
        ValueError,
        "baseline must hold values in [0, 1]",
        "got range [7, 7]",
    ),
    case(
        "saliency/gradcam-dense-layer",
        lambda p, t: cw.saliency(p, IMAGES, "gradcam", layer="fc1"),
        ValueError,
        "'fc1' has shape (64,). Spatial layers: conv1, conv2, pool1, conv3, pool2, conv4",
    ),
    case(
        "saliency/gradcam-unknown-layer",
        lambda p, t: cw.saliency(p, IMAGES, "gradcam", layer="conv9"),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "saliency/gradcam-after-its-target",
        lambda p, t: cw.saliency(p, IMAGES, "gradcam", ("conv1", 0), layer="conv4"),
        ValueError,
        "target layer 'conv1' comes before it",
    ),
    case(
        "saliency/occlusion-patch-too-big",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", patch=100),
        ValueError,
        "patch 100x100 is larger than the 32x32 images",
    ),
    case(
        "saliency/occlusion-patch-0",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", patch=0),
        ValueError,
        "patch must be a positive integer, got 0",
    ),
    case(
        "saliency/occlusion-negative-patch",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", patch=-4),
        ValueError,
        "got -4",
    ),
    case(
        "saliency/occlusion-stride-0",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", stride=0),
        ValueError,
        "stride must be a positive integer, got 0",
    ),
    case(
        "saliency/occlusion-3d-patch",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", patch=(1, 2, 3)),
        ValueError,
        "patch must be an int or (height, width), got (1, 2, 3)",
    ),
    case(
        "saliency/occlusion-nan-fill",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", fill=np.nan),
        ValueError,
        "fill must be a finite number >= 0, got nan",
    ),
    case(
        "saliency/occlusion-text-fill",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", fill="grey"),
        TypeError,
        "fill must be a number, got str 'grey'",
    ),
    case(
        "saliency/occlusion-fill-above-1",
        lambda p, t: cw.saliency(p, IMAGES, "occlusion", fill=2.0),
        ValueError,
        "fill must be a value in [0, 1]",
        "got 2.0",
    ),
    case(
        "saliency/scorecam-chunk-0",
        lambda p, t: cw.saliency(p, IMAGES, "scorecam", chunk=0),
        ValueError,
        "chunk must be a positive integer, got 0",
    ),
    case(
        "saliency/foreign-variables",
        lambda p, t: cw.saliency(p, IMAGES, "vanilla", variables={"params": {}}),
        ValueError,
        "variables do not match digits-cnn's",
    ),
    # ------------------------------------------------------------------ activations
    case(
        "feature_maps/unknown-layer",
        lambda p, t: cw.feature_maps(p, ONE, "conv9"),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "feature_maps/a-batch",
        lambda p, t: cw.feature_maps(p, IMAGES, "conv1"),
        ValueError,
        "feature_maps takes one image, (H, W, C) or (1, H, W, C); got shape (2, 32, 32, 1)",
    ),
    case(
        "feature_maps/2d",
        lambda p, t: cw.feature_maps(p, np.zeros((32, 32)), "conv1"),
        ValueError,
        "got shape (32, 32)",
    ),
    case("feature_maps/nan", lambda p, t: cw.feature_maps(p, NAN[0], "conv1"), ValueError, "NaN or Inf"),
    case(
        "feature_maps/a-path",
        lambda p, t: cw.feature_maps(p, "x.png", "conv1"),
        TypeError,
        "numeric arrays, got dtype <U5",
    ),
    case(
        "feature_maps/not-a-probe",
        lambda p, t: cw.feature_maps("digits-cnn", ONE, "conv1"),
        TypeError,
        "feature_maps needs a Probe",
    ),
    case(
        "filter_stats/empty",
        lambda p, t: cw.filter_stats(p, np.zeros((0, 32, 32, 1)), "conv1"),
        ValueError,
        "No images given: the dataset is empty",
    ),
    case(
        "filter_stats/batch_size-0",
        lambda p, t: cw.filter_stats(p, IMAGES, "conv1", batch_size=0),
        ValueError,
        "batch_size must be a positive integer, got 0",
    ),
    case(
        "filter_stats/unknown-layer",
        lambda p, t: cw.filter_stats(p, IMAGES, "convX"),
        ValueError,
        "Unknown layer 'convX'",
        LAYERS,
    ),
    case(
        "filter_stats/nan",
        lambda p, t: cw.filter_stats(p, np.full((3, 32, 32, 1), np.nan), "conv1"),
        ValueError,
        "3072 NaN or Inf",
    ),
    case(
        "filter_stats/not-a-probe",
        lambda p, t: cw.filter_stats(42, IMAGES, "conv1"),
        TypeError,
        "filter_stats needs a Probe, got int 42",
    ),
    case(
        "most_activated/n-0",
        lambda p, t: cw.most_activated(p, ONE, "conv1", n=0),
        ValueError,
        "n=0 is out of range: there are 16 channels in layer 'conv1' (valid: 1..16)",
    ),
    case(
        "most_activated/n-too-big",
        lambda p, t: cw.most_activated(p, ONE, "conv1", n=100),
        ValueError,
        "n=100",
        "valid: 1..16",
    ),
    case(
        "most_activated/float-n",
        lambda p, t: cw.most_activated(p, ONE, "conv1", n=2.0),
        TypeError,
        "n must be an integer, got 2.0",
    ),
    case(
        "top_images/k-0",
        lambda p, t: cw.top_images(p, IMAGES, "conv1", 0, k=0),
        ValueError,
        "k=0 is out of range: there are 2 images given (valid: 1..2)",
    ),
    case(
        "top_images/k-too-big",
        lambda p, t: cw.top_images(p, IMAGES, "conv1", 0, k=5),
        ValueError,
        "k=5",
        "valid: 1..2",
    ),
    case(
        "top_images/unit-out-of-range",
        lambda p, t: cw.top_images(p, IMAGES, "conv1", 16, k=1),
        ValueError,
        "Filter 16 is out of range",
        "valid: 0..15",
    ),
    case(
        "top_images/float-unit",
        lambda p, t: cw.top_images(p, IMAGES, "conv1", 1.5, k=1),
        TypeError,
        "must be integers, got float64 values [1.5]",
    ),
    case(
        "receptive_patches/dense-layer",
        lambda p, t: cw.receptive_patches(p, IMAGES, "fc1", 0, k=1),
        ValueError,
        "'fc1' is a dense layer (shape (64,))",
        "Spatial layers: conv1, conv2, pool1, conv3, pool2, conv4",
    ),
    case(
        "kernels_as_images/dense-layer",
        lambda p, t: cw.kernels_as_images(p, "fc1"),
        ValueError,
        "no convolution kernel",
        "Conv layers of digits-cnn: conv1, conv2, conv3, conv4",
    ),
    case(
        "kernels_as_images/pool-layer",
        lambda p, t: cw.kernels_as_images(p, "pool1"),
        ValueError,
        "'pool1' (pool)",
        "Conv layers of digits-cnn",
    ),
    case(
        "kernels_as_images/unknown-layer",
        lambda p, t: cw.kernels_as_images(p, "conv9"),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "kernels_as_images/rgb-of-grayscale",
        lambda p, t: cw.kernels_as_images(p, "conv1", "rgb"),
        ValueError,
        "needs a kernel over 3 input channels; layer 'conv1' reads 1",
    ),
    case(
        "kernels_as_images/unknown-mode",
        lambda p, t: cw.kernels_as_images(p, "conv1", "hsv"),
        ValueError,
        "'auto', 'rgb', 'all', 'mean' or a list of channel indices, got 'hsv'",
    ),
    case(
        "kernels_as_images/channel-out-of-range",
        lambda p, t: cw.kernels_as_images(p, "conv2", [99]),
        ValueError,
        "indices in 0..15 for layer 'conv2', got [99]",
    ),
    case(
        "kernels_as_images/unknown-scale",
        lambda p, t: cw.kernels_as_images(p, "conv1", scale="global"),
        ValueError,
        "'layer' or 'filter', got 'global'",
    ),
    case(
        "kernels_as_images/not-a-probe",
        lambda p, t: cw.kernels_as_images("digits-cnn", "conv1"),
        TypeError,
        "kernels_as_images needs a Probe",
    ),
    # ------------------------------------------------------------------ embeddings
    case(
        "features/unknown-layer",
        lambda p, t: cw.features(p, IMAGES, "conv9"),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "features/unknown-pool",
        lambda p, t: cw.features(p, IMAGES, pool="max"),
        ValueError,
        "pool must be 'flatten' or 'mean', got 'max'",
    ),
    case(
        "features/nan", lambda p, t: cw.features(p, np.full((3, 32, 32, 1), np.nan)), ValueError, "NaN or Inf"
    ),
    case("features/not-a-probe", lambda p, t: cw.features(None, IMAGES), TypeError, "features needs a Probe"),
    case(
        "embed/2-points",
        lambda p, t: cw.embed(np.zeros((2, 4))),
        ValueError,
        "embed needs at least 3 points, got 2",
    ),
    case(
        "embed/unknown-method",
        lambda p, t: cw.embed(np.random.rand(10, 4), "umap"),
        ValueError,
        "Unknown embedding method 'umap'; valid: tsne, pca",
    ),
    case(
        "embed/nan",
        lambda p, t: cw.embed(np.full((10, 4), np.nan), "pca"),
        ValueError,
        "features contain NaN or Inf",
    ),
    case(
        "embed/1d",
        lambda p, t: cw.embed(np.zeros(10), "pca"),
        ValueError,
        "features must have shape (N, D), got (10,)",
    ),
    case("embed/3d", lambda p, t: cw.embed(np.zeros((10, 4, 4)), "pca"), ValueError, "got (10, 4, 4)"),
    case(
        "embed/text",
        lambda p, t: cw.embed("abc", "pca"),
        TypeError,
        "features must be a numeric array (N, D), got str 'abc'",
    ),
    case(
        "mosaic/count-mismatch",
        lambda p, t: cw.mosaic(np.zeros((3, 8, 8, 1)), np.zeros((4, 2))),
        ValueError,
        "Got 3 images but 4 coordinates",
    ),
    case(
        "mosaic/one-image",
        lambda p, t: cw.mosaic(np.zeros((8, 8, 1)), np.zeros((4, 2))),
        ValueError,
        "images must have shape (N, H, W, C), got (8, 8, 1)",
    ),
    case(
        "mosaic/3-column-coords",
        lambda p, t: cw.mosaic(np.zeros((4, 8, 8, 1)), np.zeros((4, 3))),
        ValueError,
        "coords must have shape (N, 2), got (4, 3)",
    ),
    case(
        "mosaic/empty-grid",
        lambda p, t: cw.mosaic(np.zeros((4, 8, 8, 1)), np.random.rand(4, 2), grid=(0, 3)),
        ValueError,
        "grid must be (rows, cols) of positive integers",
        "got (0, 3)",
    ),
    case(
        "mosaic/huge-grid",
        lambda p, t: cw.mosaic(np.zeros((4, 8, 8, 1)), np.random.rand(4, 2), grid=(100000, 100000)),
        ValueError,
        "got (100000, 100000) (at most 1000 each)",
    ),
    case(
        "mosaic/huge-tiles",
        lambda p, t: cw.mosaic(np.zeros((4, 8, 8, 1)), np.random.rand(4, 2), grid=(100, 100), tile=1000),
        ValueError,
        "would be 100000x100000 pixels",
    ),
    case(
        "mosaic/tile-0",
        lambda p, t: cw.mosaic(np.zeros((4, 8, 8, 1)), np.random.rand(4, 2), tile=0),
        ValueError,
        "tile must be a positive int or (h, w), got 0",
    ),
    case(
        "mosaic/nan-images",
        lambda p, t: cw.mosaic(np.full((4, 8, 8, 1), np.nan), np.random.rand(4, 2)),
        ValueError,
        "finite numbers in [0, 1]",
    ),
    case(
        "mosaic/0-255-floats",
        lambda p, t: cw.mosaic(np.full((4, 8, 8, 1), 200.0), np.random.rand(4, 2)),
        ValueError,
        "values in [0, 1] (or be uint8), got range [200, 200]",
    ),
    case(
        "neighbours/unknown-space",
        lambda p, t: cw.neighbours(np.zeros((5, 3)), 0, space="latent"),
        ValueError,
        "Unknown space 'latent'; valid: feature, pixel",
    ),
    case(
        "neighbours/query-out-of-range",
        lambda p, t: cw.neighbours(np.random.rand(5, 3), 5),
        ValueError,
        "query index 5 is out of range for 5 points (valid: 0..4)",
    ),
    case(
        "neighbours/float-query",
        lambda p, t: cw.neighbours(np.random.rand(5, 3), 1.5),
        TypeError,
        "query must be point indices (integers), got 1.5",
    ),
    case(
        "neighbours/empty-query",
        lambda p, t: cw.neighbours(np.random.rand(5, 3), [], k=2),
        TypeError,
        "got []",
    ),
    case(
        "neighbours/k-too-big",
        lambda p, t: cw.neighbours(np.random.rand(5, 3), 0, k=5),
        ValueError,
        "k=5 is out of range: there are 4 other points (valid: 1..4)",
    ),
    case(
        "neighbours/k-0",
        lambda p, t: cw.neighbours(np.random.rand(5, 3), 0, k=0),
        ValueError,
        "k=0",
        "valid: 1..4",
    ),
    case(
        "neighbours/images-as-features",
        lambda p, t: cw.neighbours(np.random.rand(5, 3, 3, 1), 0, k=2),
        ValueError,
        "(N, D), got (5, 3, 3, 1); for images use space='pixel'",
    ),
    # ------------------------------------------------------------------ sanity checks
    case(
        "randomization_cascade/unknown-method",
        lambda p, t: cw.randomization_cascade(p, IMAGES[:1], ("foo",)),
        ValueError,
        "methods must be one or more saliency methods, got ['foo'] ('foo' unknown)",
        ALL_METHODS,
    ),
    case(
        "randomization_cascade/no-methods",
        lambda p, t: cw.randomization_cascade(p, IMAGES[:1], ()),
        ValueError,
        "got []",
        ALL_METHODS,
    ),
    case(
        "randomization_cascade/negative-max_steps",
        lambda p, t: cw.randomization_cascade(p, IMAGES[:1], ("vanilla",), max_steps=-1),
        ValueError,
        "max_steps must be a positive integer (modules to randomize) or None, got -1",
    ),
    case(
        "randomization_cascade/max_steps-0",
        lambda p, t: cw.randomization_cascade(p, IMAGES[:1], ("vanilla",), max_steps=0),
        ValueError,
        "got 0",
    ),
    case(
        "randomization_cascade/nan", lambda p, t: cw.randomization_cascade(p, NAN), ValueError, "NaN or Inf"
    ),
    case(
        "randomization_cascade/not-a-probe",
        lambda p, t: cw.randomization_cascade("digits-cnn", IMAGES),
        TypeError,
        "randomization_cascade needs a Probe",
    ),
    case(
        "regularizer_ablation/unknown-layer",
        lambda p, t: cw.regularizer_ablation(p, "conv9", [0], steps=1),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "regularizer_ablation/empty-filters",
        lambda p, t: cw.regularizer_ablation(p, "conv1", [], steps=1),
        ValueError,
        "Empty list of filters",
    ),
    case(
        "regularizer_ablation/not-a-probe",
        lambda p, t: cw.regularizer_ablation(None, "conv1"),
        TypeError,
        "regularizer_ablation needs a Probe",
    ),
    case(
        "concepts/unknown-method",
        lambda p, t: cw.concepts(p, IMAGES[0], method="lpr"),
        ValueError,
        "Unknown concept relevance method 'lpr'",
        "Did you mean 'lrp'",
        "lrp, grad_x_act",
    ),
    case(
        "concepts/a-batch",
        lambda p, t: cw.concepts(p, IMAGES),
        ValueError,
        "concepts explains one image",
        "(2, 32, 32, 1)",
    ),
    case("concepts/nan", lambda p, t: cw.concepts(p, NAN[0]), ValueError, "NaN or Inf"),
    case("concepts/top_k-0", lambda p, t: cw.concepts(p, IMAGES[0], top_k=0), ValueError, "top_k", "0"),
    case(
        "concepts/channel-out-of-range",
        lambda p, t: cw.concepts(p, IMAGES[0], layer="conv3", channels=[48]),
        ValueError,
        "48",
        "conv3",
    ),
    case(
        "concepts/within-below",
        lambda p, t: cw.concepts(p, IMAGES[0], layer="conv4", within=("conv3", 1)),
        ValueError,
        "must name a layer above 'conv4'",
        "conv1, conv2",
    ),
    case(
        "concepts/not-a-probe",
        lambda p, t: cw.concepts("digits-cnn", IMAGES[0]),
        TypeError,
        "concepts needs a Probe",
    ),
    case(
        "decompose/first-layer",
        lambda p, t: cw.decompose(p, IMAGES[0], "conv1", 0),
        ValueError,
        "'conv1'",
        "no layer below",
    ),
    case(
        "decompose/unknown-layer",
        lambda p, t: cw.decompose(p, IMAGES[0], "conv9", 0),
        ValueError,
        "Unknown layer 'conv9'",
        "Valid layers",
    ),
    case(
        "concept_examples/by",
        lambda p, t: cw.concept_examples(p, IMAGES, "conv3", 0, by="gradient"),
        ValueError,
        "Unknown by 'gradient'",
        "relevance, activation",
    ),
    case(
        "concept_examples/k-too-big",
        lambda p, t: cw.concept_examples(p, IMAGES, "conv3", 0, k=5),
        ValueError,
        "k=5 is out of range",
        "valid: 1..2",
    ),
    case(
        "faithfulness/unknown-method",
        lambda p, t: cw.faithfulness(p, IMAGES, ["gradcamm"]),
        ValueError,
        "Unknown saliency method 'gradcamm'",
        "Did you mean 'gradcam'",
        ALL_METHODS,
    ),
    case(
        "faithfulness/too-many-steps",
        lambda p, t: cw.faithfulness(p, IMAGES, ["vanilla"], steps=2000),
        ValueError,
        "steps must be at most 1024",
        "got 2000",
    ),
    case(
        "faithfulness/layer-unit",
        lambda p, t: cw.faithfulness(p, IMAGES, ["vanilla"], ("conv3", 5)),
        ValueError,
        "('conv3', 5)",
        "a class index or name",
    ),
    case(
        "faithfulness/baseline",
        lambda p, t: cw.faithfulness(p, IMAGES, ["vanilla"], deletion_baseline="grey"),
        ValueError,
        "'grey'",
        "Valid: blur",
    ),
    case("faithfulness/nan", lambda p, t: cw.faithfulness(p, NAN, ["vanilla"]), ValueError, "NaN or Inf"),
    case(
        "faithfulness/not-a-probe",
        lambda p, t: cw.faithfulness("digits-cnn", IMAGES),
        TypeError,
        "faithfulness needs a Probe",
    ),
    case(
        "curves_of_maps/map-shape",
        lambda p, t: cw.curves_of_maps(p, IMAGES, np.zeros((2, 16, 16))),
        ValueError,
        "shape (2, 32, 32)",
        "got shape (2, 16, 16)",
    ),
    case(
        "curves_of_maps/class",
        lambda p, t: cw.curves_of_maps(p, IMAGES, np.zeros((2, 32, 32)), 10),
        ValueError,
        "each in 0..9",
        "got 10",
    ),
    # ------------------------------------------------------------------ data, export, devices
    case(
        "photo/unknown",
        lambda p, t: data.photo("dog"),
        ValueError,
        "Unknown photo 'dog'. Bundled photos: chelsea, coffee",
    ),
    case(
        "digits/size-0",
        lambda p, t: data.digits(0),
        ValueError,
        "size must be an integer in 1..1024 (pixels a side), got 0",
    ),
    case("digits/negative-size", lambda p, t: data.digits(-3), ValueError, "got -3"),
    case("digits/text-size", lambda p, t: data.digits("32"), ValueError, "got '32'"),
    case(
        "load_image/missing",
        lambda p, t: data.load_image(t / "missing.png"),
        FileNotFoundError,
        "No image file at",
        "missing.png",
    ),
    case(
        "load_image/not-an-image",
        lambda p, t: data.load_image(_write(t / "notes.png", b"not a png")),
        ValueError,
        "as an image",
        "readable formats include .png, .jpg",
    ),
    case(
        "fit_to/nan",
        lambda p, t: data.fit_to(np.full((10, 10, 3), np.nan), p),
        ValueError,
        "image 0: image contains NaN or Inf",
    ),
    case(
        "fit_to/5-channels",
        lambda p, t: data.fit_to(np.zeros((10, 10, 5)), p),
        ValueError,
        "(H, W), (H, W, 1|3|4), got (10, 10, 5)",
    ),
    case("fit_to/1d", lambda p, t: data.fit_to(np.zeros(10), p), ValueError, "got (10,)"),
    case(
        "fit_to/bad-target",
        lambda p, t: data.fit_to(np.zeros((10, 10, 3)), (10, 10)),
        ValueError,
        "fit_to needs a Probe or an input shape (H, W, C) with C in (1, 3), got (10, 10)",
    ),
    case(
        "fit_to/a-path",
        lambda p, t: data.fit_to("cat.png", p),
        TypeError,
        "expected a numeric image array, got dtype <U7",
    ),
    case("fit_to/no-images", lambda p, t: data.fit_to([], p), ValueError, "fit_to got no images"),
    case(
        "fit_to/zero-size-image",
        lambda p, t: data.fit_to(np.zeros((0, 10, 3)), p),
        ValueError,
        "the image is empty (shape (0, 10, 3))",
    ),
    case(
        "to_float_image/out-of-range",
        lambda p, t: data.to_float_image(np.full((4, 4), 2.0)),
        ValueError,
        "float images must be in [0, 1], got range [2, 2]",
    ),
    case(
        "resize/negative-size",
        lambda p, t: data.resize(np.zeros((4, 4, 1)), (-1, 4)),
        ValueError,
        "size must be (height, width) of positive integers, got (-1, 4)",
    ),
    case(
        "save_png/5-channels",
        lambda p, t: export.save_png(np.zeros((4, 4, 5)), t / "x.png"),
        ValueError,
        "(H, W) or (H, W, 1|3|4), got shape (4, 4, 5)",
    ),
    case(
        "save_png/nan",
        lambda p, t: export.save_png(np.full((4, 4, 3), np.nan), t / "x.png"),
        ValueError,
        "NaN or Inf",
    ),
    case(
        "save_grid/one-tile-not-a-batch",
        lambda p, t: export.save_grid(np.zeros((4, 4, 3)), t / "x.png"),
        ValueError,
        "tiles (N, H, W, 1|3|4) with N >= 1, got shape (4, 4, 3)",
    ),
    case(
        "save_grid/too-few-labels",
        lambda p, t: export.save_grid(np.zeros((2, 4, 4, 3)), t / "x.png", labels=["a"]),
        ValueError,
        "Got 2 tiles but 1 labels",
    ),
    case(
        "use_all_cores/0",
        lambda p, t: cw.use_all_cores(0),
        ValueError,
        "count must be a positive integer (CPU devices) or None for every core, got 0",
    ),
    case("use_all_cores/text", lambda p, t: cw.use_all_cores("all"), ValueError, "got 'all'"),
    # ------------------------------------------------------------------ widget constructors
    case(
        "FilterExplorer/unknown-model",
        lambda p, t: FilterExplorer("resnet", autorun=False),
        ValueError,
        "Unknown model 'resnet'",
        ZOO,
    ),
    case(
        "FilterExplorer/not-a-probe",
        lambda p, t: FilterExplorer(object(), autorun=False),
        TypeError,
        "A view needs a Probe, got object",
        "cnnvis_widgets.load(name)",
    ),
    case(
        "FilterExplorer/flax-module",
        lambda p, t: FilterExplorer(p.module, autorun=False),
        TypeError,
        "got DigitsCNN",
        "Wrap the Flax model first",
    ),
    case(
        "FilterExplorer/unknown-layer",
        lambda p, t: FilterExplorer(p, layer="conv9", autorun=False),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "FilterExplorer/dense-layer",
        lambda p, t: FilterExplorer(p, layer="fc1", autorun=False),
        ValueError,
        "Layer 'fc1' (dense, shape (64,)) cannot be chosen here: choose one of conv1, conv2, pool1, conv3, pool2, conv4",
    ),
    case(
        "FilterExplorer/filters-text",
        lambda p, t: FilterExplorer(p, filters="a:b", autorun=False),
        ValueError,
        "Filters 'a:b': give a range like 0:16, a list like 3,5,9, top16",
    ),
    case(
        "FilterExplorer/empty-filters",
        lambda p, t: FilterExplorer(p, filters="5:5", autorun=False),
        ValueError,
        "Filters '5:5' select nothing; the layer has 48 filters (0..47)",
    ),
    case(
        "FilterExplorer/filter-out-of-range",
        lambda p, t: FilterExplorer(p, layer="conv1", filters="3,99", autorun=False),
        ValueError,
        "Filter 99 is out of range for layer 'conv1' with 16 channels (valid: 0..15)",
    ),
    case(
        "FilterExplorer/filters-list",
        lambda p, t: FilterExplorer(p, filters=[1, 2], autorun=False),
        TypeError,
        "filters must be text like '0:16'",
        "got [1, 2]",
    ),
    case(
        "FilterExplorer/steps-0",
        lambda p, t: FilterExplorer(p, steps=0, autorun=False),
        ValueError,
        "steps must be an integer in 1..10000, got 0",
    ),
    case(
        "FilterExplorer/huge-steps",
        lambda p, t: FilterExplorer(p, steps=10**9, autorun=False),
        ValueError,
        "1..10000, got 1000000000",
    ),
    case(
        "FilterExplorer/size-2",
        lambda p, t: FilterExplorer(p, size=2, autorun=False),
        ValueError,
        "size must be an integer in 8..512 (pixels) or None, got 2",
    ),
    case(
        "FilterExplorer/learning-rate-0",
        lambda p, t: FilterExplorer(p, learning_rate=0, autorun=False),
        ValueError,
        "learning_rate must be a number in [1e-05, 10], got 0",
    ),
    case(
        "FilterExplorer/nan-learning-rate",
        lambda p, t: FilterExplorer(p, learning_rate=float("nan"), autorun=False),
        ValueError,
        "got nan",
    ),
    case(
        "FilterExplorer/huge-learning-rate",
        lambda p, t: FilterExplorer(p, learning_rate=1e9, autorun=False),
        ValueError,
        "[1e-05, 10], got 1000000000.0",
    ),
    case(
        "FilterExplorer/text-seed",
        lambda p, t: FilterExplorer(p, seed="a", autorun=False),
        TypeError,
        "seed must be an integer, got 'a'",
    ),
    case(
        "FilterExplorer/snapshot_every-0",
        lambda p, t: FilterExplorer(p, snapshot_every=0, autorun=False),
        ValueError,
        "snapshot_every must be a positive integer (steps per frame), got 0",
    ),
    case(
        "FilterExplorer/image-a-name",
        lambda p, t: FilterExplorer(p, image="cat", autorun=False),
        TypeError,
        "expected a numeric image array, got dtype <U3",
    ),
    case(
        "FilterExplorer/nan-image",
        lambda p, t: FilterExplorer(p, image=NAN[0], autorun=False),
        ValueError,
        "image contains NaN or Inf",
    ),
    case(
        "SaliencyExplorer/unknown-method",
        lambda p, t: SaliencyExplorer(p, method="grad", autorun=False),
        ValueError,
        "Unknown saliency method 'grad'",
        "Did you mean 'gradcam'",
        ALL_METHODS,
    ),
    case(
        "SaliencyExplorer/unknown-mode",
        lambda p, t: SaliencyExplorer(p, mode="all", autorun=False),
        ValueError,
        "Unknown mode 'all'; valid modes: single, batch, compare",
    ),
    case(
        "SaliencyExplorer/class-out-of-range",
        lambda p, t: SaliencyExplorer(p, target=99, autorun=False),
        ValueError,
        "Class 99 is out of range for digits-cnn (valid: 0..9)",
    ),
    case(
        "SaliencyExplorer/unknown-target",
        lambda p, t: SaliencyExplorer(p, target="cat", autorun=False),
        ValueError,
        "Unknown target 'cat' for digits-cnn",
        "a class index 0..9, 'predicted class', or a layer unit like conv1:0",
    ),
    case(
        "SaliencyExplorer/float-target",
        lambda p, t: SaliencyExplorer(p, target=1.5, autorun=False),
        TypeError,
        "A target is None, a class index or name, or (layer, unit); got 1.5",
    ),
    case(
        "SaliencyExplorer/nan-images",
        lambda p, t: SaliencyExplorer(p, images=np.full((2, 32, 32, 1), np.nan), autorun=False),
        ValueError,
        "image 'image 0': image contains NaN or Inf",
    ),
    case(
        "SaliencyExplorer/images-a-name",
        lambda p, t: SaliencyExplorer(p, images="cat", autorun=False),
        TypeError,
        "expected a numeric image array",
    ),
    case(
        "SaliencyExplorer/no-images",
        lambda p, t: SaliencyExplorer(p, images=[], autorun=False),
        ValueError,
        "No images given",
    ),
    case(
        "SaliencyExplorer/5-channel-images",
        lambda p, t: SaliencyExplorer(p, images=np.zeros((2, 8, 8, 5)), autorun=False),
        ValueError,
        "(H, W), (H, W, 1|3|4), got (8, 8, 5)",
    ),
    case(
        "SaliencyExplorer/opacity-2",
        lambda p, t: SaliencyExplorer(p, opacity=2.0, autorun=False),
        ValueError,
        "opacity must be a number in [0, 1], got 2.0",
    ),
    case(
        "SaliencyExplorer/negative-batch",
        lambda p, t: SaliencyExplorer(p, batch_size=-1, autorun=False),
        ValueError,
        "batch_size must be an integer >= 0 (0: all images), got -1",
    ),
    case(
        "SaliencyExplorer/options-unknown-method",
        lambda p, t: SaliencyExplorer(p, options={"foo": {}}, autorun=False),
        ValueError,
        "Options for unknown method 'foo'",
        ALL_METHODS,
    ),
    case(
        "SaliencyExplorer/options-unknown-option",
        lambda p, t: SaliencyExplorer(p, options={"vanilla": {"x": 1}}, autorun=False),
        TypeError,
        "Method 'vanilla' got unknown option(s) x; its options: none",  # the engine's one message
    ),
    case(
        "SaliencyExplorer/options-not-a-dict",
        lambda p, t: SaliencyExplorer(p, options=[1], autorun=False),
        TypeError,
        "options must be a dict method -> dict",
        "got [1]",
    ),
    case(
        "SaliencyExplorer/unknown-cmap",
        lambda p, t: SaliencyExplorer(p, cmap="nocmap", autorun=False),
        ValueError,
        "Unknown cmap 'nocmap'",
        "matplotlib colormap",
    ),
    case(
        "SaliencyExplorer/negative-cascade",
        lambda p, t: SaliencyExplorer(p, cascade_steps=-1, autorun=False),
        ValueError,
        "cascade_steps must be a positive integer or None (all), got -1",
    ),
    case(
        "SaliencyExplorer/not-a-probe",
        lambda p, t: SaliencyExplorer(None, autorun=False),
        TypeError,
        "A view needs a Probe, got NoneType",
    ),
    case(
        "ActivationExplorer/unknown-layer",
        lambda p, t: ActivationExplorer(p, layer="conv9", autorun=False),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "ActivationExplorer/dense-layer",
        lambda p, t: ActivationExplorer(p, layer="fc1", autorun=False),
        ValueError,
        "'fc1' is a dense layer with shape (64,): it has no feature maps",
        "Spatial layers of digits-cnn: conv1",
    ),
    case(
        "ActivationExplorer/unknown-image-name",
        lambda p, t: ActivationExplorer(p, image="dog", autorun=False),
        ValueError,
        "Unknown image 'dog'; choose one of: test image #0 — label",
    ),
    case(
        "ActivationExplorer/nan-image",
        lambda p, t: ActivationExplorer(p, image=np.full((32, 32), np.nan), autorun=False),
        ValueError,
        "image contains NaN or Inf",
    ),
    case(
        "ActivationExplorer/1d-image",
        lambda p, t: ActivationExplorer(p, image=np.zeros(5), autorun=False),
        ValueError,
        "got (5,)",
    ),
    case(
        "ActivationExplorer/top_k-0",
        lambda p, t: ActivationExplorer(p, top_k=0, autorun=False),
        ValueError,
        "top_k must be a positive integer, got 0",
    ),
    case(
        "ActivationExplorer/negative-steps",
        lambda p, t: ActivationExplorer(p, steps=-1, autorun=False),
        ValueError,
        "steps must be a positive integer, got -1",
    ),
    case(
        "ActivationExplorer/huge-steps",
        lambda p, t: ActivationExplorer(p, steps=10**9, autorun=False),
        ValueError,
        "steps must be at most 100000, got 1000000000",
    ),
    case(
        "ActivationExplorer/empty-dataset",
        lambda p, t: ActivationExplorer(p, dataset=np.zeros((0, 32, 32, 1)), autorun=False),
        ValueError,
        "The dataset is empty",
    ),
    case(
        "ConceptExplorer/unknown-method",
        lambda p, t: ConceptExplorer(p, method="gradient", autorun=False),
        ValueError,
        "Unknown concept relevance method 'gradient'",
        "lrp, grad_x_act",
    ),
    case(
        "ConceptExplorer/unknown-composite",
        lambda p, t: ConceptExplorer(p, composite="plus", autorun=False),
        ValueError,
        "Unknown LRP composite 'plus'",
        "epsilon-plus-flat",
    ),
    case(
        "ConceptExplorer/top_k-0",
        lambda p, t: ConceptExplorer(p, top_k=0, autorun=False),
        ValueError,
        "top_k",
    ),
    case(
        "ConceptExplorer/opacity",
        lambda p, t: ConceptExplorer(p, opacity=2, autorun=False),
        ValueError,
        "opacity must be a number in [0, 1], got 2",
    ),
    case(
        "ConceptExplorer/not-a-probe",
        lambda p, t: ConceptExplorer(object(), autorun=False),
        TypeError,
        "A view needs a Probe",
    ),
    case(
        "ActivationExplorer/not-a-probe",
        lambda p, t: ActivationExplorer(object(), autorun=False),
        TypeError,
        "A view needs a Probe",
    ),
    case(
        "WeightsView/unknown-layer",
        lambda p, t: WeightsView(p, layer="conv9", autorun=False),
        ValueError,
        "Unknown layer 'conv9'",
        "Conv layers of digits-cnn: conv1, conv2, conv3, conv4",
    ),
    case(
        "WeightsView/pool-layer",
        lambda p, t: WeightsView(p, layer="pool1", autorun=False),
        ValueError,
        "'pool1' (pool, shape (16, 16, 32)) has no convolution kernel to show",
    ),
    case(
        "WeightsView/unknown-mode",
        lambda p, t: WeightsView(p, mode="hsv", autorun=False),
        ValueError,
        "Unknown mode 'hsv'; valid: auto, rgb, all, mean, channel",
    ),
    case(
        "WeightsView/unknown-scale",
        lambda p, t: WeightsView(p, scale="global", autorun=False),
        ValueError,
        "Unknown scale 'global'; valid: layer, filter",
    ),
    case(
        "WeightsView/not-a-probe",
        lambda p, t: WeightsView(object(), autorun=False),
        TypeError,
        "A view needs a Probe",
    ),
    case(
        "EmbeddingExplorer/unknown-method",
        lambda p, t: EmbeddingExplorer(p, method="umap", autorun=False),
        ValueError,
        "Unknown embedding method 'umap'; valid: tsne, pca",
    ),
    case(
        "EmbeddingExplorer/unknown-pool",
        lambda p, t: EmbeddingExplorer(p, pool="max", autorun=False),
        ValueError,
        "pool must be 'flatten' or 'mean', got 'max'",
    ),
    case(
        "EmbeddingExplorer/limit-2",
        lambda p, t: EmbeddingExplorer(p, limit=2, autorun=False),
        ValueError,
        "limit must be an integer of at least 3, got 2",
    ),
    case(
        "EmbeddingExplorer/k-0",
        lambda p, t: EmbeddingExplorer(p, k=0, autorun=False),
        ValueError,
        "k must be a positive integer (neighbours shown), got 0",
    ),
    case(
        "EmbeddingExplorer/text-seed",
        lambda p, t: EmbeddingExplorer(p, seed="a", autorun=False),
        TypeError,
        "seed must be an integer, got 'a'",
    ),
    case(
        "EmbeddingExplorer/unknown-layer",
        lambda p, t: EmbeddingExplorer(p, layer="conv9", autorun=False),
        ValueError,
        "Unknown layer 'conv9'",
        LAYERS,
    ),
    case(
        "EmbeddingExplorer/2-images",
        lambda p, t: EmbeddingExplorer(p, np.zeros((2, 32, 32, 1)), autorun=False),
        ValueError,
        "An embedding needs at least 3 images, got 2",
    ),
    case(
        "EmbeddingExplorer/nan-images",
        lambda p, t: EmbeddingExplorer(p, np.full((5, 32, 32, 1), np.nan), autorun=False),
        ValueError,
        "5120 NaN or Inf",
    ),
    case(
        "EmbeddingExplorer/rgb-images",
        lambda p, t: EmbeddingExplorer(p, np.zeros((5, 32, 32, 3)), autorun=False),
        ValueError,
        "grayscale images with 1 channel(s); got 3 channels",
    ),
    case(
        "EmbeddingExplorer/dataset-a-name",
        lambda p, t: EmbeddingExplorer(p, "digits", autorun=False),
        TypeError,
        "numeric arrays, got dtype <U6",
    ),
    case(
        "EmbeddingExplorer/labels-count",
        lambda p, t: EmbeddingExplorer(p, (np.zeros((5, 32, 32, 1)), np.zeros(4)), autorun=False),
        ValueError,
        "Got 5 images but labels of shape (4,); give one label per image",
    ),
    case(
        "EmbeddingExplorer/not-a-probe",
        lambda p, t: EmbeddingExplorer(object(), autorun=False),
        TypeError,
        "A view needs a Probe",
    ),
    case(
        "TrainingMonitor/epochs-0",
        lambda p, t: TrainingMonitor(epochs=0),
        ValueError,
        "epochs must be a positive integer, got 0",
    ),
    case(
        "TrainingMonitor/negative-learning-rate",
        lambda p, t: TrainingMonitor(learning_rate=-1),
        ValueError,
        "learning_rate must be a positive finite number, got -1",
    ),
    case(
        "TrainingMonitor/nan-learning-rate",
        lambda p, t: TrainingMonitor(learning_rate=float("nan")),
        ValueError,
        "got nan",
    ),
    case(
        "TrainingMonitor/batch_size-0",
        lambda p, t: TrainingMonitor(batch_size=0),
        ValueError,
        "batch_size must be an integer in 1..1347, got 0",
    ),
    case(
        "TrainingMonitor/every-0",
        lambda p, t: TrainingMonitor(every=0),
        ValueError,
        "every must be a positive integer (steps between updates), got 0",
    ),
    case(
        "TrainingMonitor/image_index-too-big",
        lambda p, t: TrainingMonitor(image_index=1000),
        ValueError,
        "image_index must be in 0..449 (a test digit), got 1000",
    ),
    case(
        "TrainingMonitor/float-image_index",
        lambda p, t: TrainingMonitor(image_index=1.5),
        ValueError,
        "got 1.5",
    ),
    case(
        "explore/unknown-model", lambda p, t: cw.explore("resnet"), ValueError, "Unknown model 'resnet'", ZOO
    ),
    case(
        "explore/unknown-view",
        lambda p, t: cw.explore(p, views=["foo"]),
        ValueError,
        "Unknown views ['foo']; choose from: filters, saliency, concepts, activations, weights, embedding, training",
    ),
    case(
        "explore/no-views", lambda p, t: cw.explore(p, views=[]), ValueError, "Unknown views []; choose from"
    ),
    case(
        "explore/start-not-among-views",
        lambda p, t: cw.explore(p, views=["weights"], start="filters"),
        ValueError,
        "start='filters' is not one of the dashboard's views: weights",
    ),
    case(
        "explore/not-a-probe",
        lambda p, t: cw.explore(object()),
        TypeError,
        "A view needs a Probe, got object",
    ),
]


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


@pytest.mark.parametrize("call, error, fragments", CASES)
def test_bad_input_gets_an_error_naming_what_was_given_and_what_is_valid(
    call, error, fragments, probe, tmp_path
):
    with pytest.raises(error) as info:
        call(probe, tmp_path)
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{type(info.value).__name__}: {message!r} lacks {missing}"
    # raised by the package's own checks, not from deep inside JAX, Flax or NumPy
    raised_in = str(info.traceback[-1].path)
    assert "cnnvis_widgets" in raised_in and "site-packages" not in raised_in, (raised_in, message)


def test_the_catalogue_covers_every_public_function_and_view():
    """Every name of the public API that takes input, and every view, has at least one case."""
    ids = {param.id.split("/")[0] for param in CASES}
    public = {
        "load", "visualize_filters", "visualize_classes", "visualize_neuron", "invert_features", "deep_dream",
        "synthesize_texture", "style_transfer",
        "saliency", "feature_maps", "filter_stats", "most_activated", "top_images", "receptive_patches",
        "kernels_as_images", "features", "embed", "mosaic", "neighbours", "randomization_cascade",
        "regularizer_ablation", "faithfulness", "curves_of_maps", "concepts", "decompose", "concept_examples",
        "use_all_cores", "explore", "Probe", "Probe.activations", "Probe.logits",
        "FilterExplorer", "SaliencyExplorer", "ActivationExplorer", "ConceptExplorer", "WeightsView", "EmbeddingExplorer",
        "TrainingMonitor", "photo", "digits", "load_image", "fit_to", "resize", "save_png", "save_grid",
    }  # fmt: skip
    assert public <= ids, sorted(public - ids)


# ---------------------------------------------------------------- NaN / Inf during optimization
def _exploding_objective(layer: str, bad_units=(0, 1)):
    """The channel mean, scaled by 1e30 for ``bad_units``: a huge effective step for those filters."""
    import jax.numpy as jnp

    from cnnvis_widgets.engine.objectives import Objective

    bad = jnp.asarray(bad_units)

    def fn(acts, unit):
        scale = jnp.where(jnp.any(unit == bad), 1e30, 1.0)
        return jnp.mean(acts[layer][..., unit]) * scale

    return Objective(fn, [layer], f"exploding({layer!r})")


def test_divergence_is_detected_per_filter_and_the_other_filters_are_kept(probe):
    import optax

    objective, optimizer = _exploding_objective("conv1"), optax.sgd(1e10)  # plain SGD with a huge rate
    common = {"objective": objective, "optimizer": optimizer, "steps": 4, "snapshot_every": 2, "chunk": 2}
    mixed = cw.visualize_filters(probe, "conv1", [0, 1, 2, 3], size=16, **common)
    np.testing.assert_array_equal(mixed.finite, [False, False, True, True])
    assert np.isfinite(mixed.images).all() and np.isfinite(mixed.snapshots).all()
    np.testing.assert_array_equal(mixed.images[:2], 0.5)  # the diverged ones are grey, flagged
    assert not np.isfinite(mixed.objective[:2]).all() and np.isfinite(mixed.objective[2:]).all()
    # the healthy filters' images are exactly those of a run without the diverging ones
    alone = cw.visualize_filters(probe, "conv1", [2, 3], size=16, **common)
    assert alone.finite.all()
    np.testing.assert_array_equal(mixed.images[2:], alone.images)
    assert mixed.images[2:].std() > 0.01  # real pictures, not grey


class _PartlyNaN(nn.Module):
    """A tiny user model whose odd filters give NaN (a log of negative values) on every image."""

    @nn.compact
    def __call__(self, x):
        import jax.numpy as jnp

        h = nn.Conv(4, (3, 3), name="conv_op")(x)
        odd = jnp.arange(4) % 2 == 1
        h = jnp.where(odd, jnp.log(nn.relu(h) - 1.0), nn.relu(h))
        self.sow("intermediates", "conv", h)
        return nn.Dense(2, name="out")(h.mean(axis=(1, 2)))


def test_the_filter_explorer_marks_diverged_filters_and_keeps_the_others():
    import jax

    module = _PartlyNaN()
    variables = module.init(jax.random.key(0), np.zeros((1, 16, 16, 1), np.float32))
    probe = Probe(module, variables, input_shape=(16, 16, 1), name="partly-nan")
    fe = FilterExplorer(probe, layer="conv", filters="all", steps=4, size=16, snapshot_every=2)
    try:
        assert fe.wait(120)
        result = fe.result
        assert result is not None, fe.status.value
        np.testing.assert_array_equal(result.finite, [True, False, True, False])
        assert "2 diverged (NaN/Inf, shown grey): filter(s) 1, 3" in fe.status.value
        assert list(fe.grid.labels.text) == ["0", "1 ✗NaN", "2", "3 ✗NaN"]
        np.testing.assert_array_equal(result.images[[1, 3]], 0.5)
        assert result.images[[0, 2]].std() > 0.01 and np.isfinite(result.images).all()
        assert fe.runner._thread.is_alive()
    finally:
        fe.close()
