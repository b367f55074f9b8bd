"""layer_kernel: the kernel found by tracing is the very parameter array, for any model; clear refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import cnnvis_widgets as cw
from cnnvis_widgets.models.kernels import layer_conv, layer_kernel


@pytest.fixture(scope="module")
def digits():
    return cw.load("digits-cnn")


def test_digits_kernels_are_the_parameters(digits):
    params = digits.variables["params"]
    for name in ("conv1", "conv2", "conv3", "conv4"):  # each: conv → + bias → ReLU → sow
        k = layer_kernel(digits, name)
        np.testing.assert_array_equal(k, np.asarray(params[f"{name}_op"]["kernel"]))
    assert layer_kernel(digits, "conv1").shape == (3, 3, 1, 16)
    conv = layer_conv(digits, "conv3")
    assert (conv.groups, conv.strides, conv.padding, conv.dilation) == (1, (1, 1), ((1, 1), (1, 1)), (1, 1))


def test_other_variables_give_their_kernel(digits):
    """Variables passed in (e.g. during training) are the ones read, not the probe's own."""
    variables = jax.tree_util.tree_map(lambda a: a * 2.0, digits.variables)
    np.testing.assert_allclose(
        layer_kernel(digits, "conv2", variables),
        2 * np.asarray(digits.variables["params"]["conv2_op"]["kernel"]),
    )


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv_a = nnx.Conv(3, 4, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.conv_b = nnx.Conv(4, 6, (5, 5), kernel_dilation=(2, 2), rngs=rngs)
        self.head = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv_a(x)))
        x = nnx.relu(self.conv_b(x))
        return self.head(x.mean(axis=(1, 2)))


def test_nnx_model_kernels():
    model = NnxNet(nnx.Rngs(0))
    probe = cw.Probe(model, input_shape=(16, 16, 3))
    np.testing.assert_array_equal(layer_kernel(probe, "conv_a"), np.asarray(model.conv_a.kernel[...]))
    np.testing.assert_array_equal(layer_kernel(probe, "conv_b"), np.asarray(model.conv_b.kernel[...]))
    assert layer_conv(probe, "conv_b").dilation == (2, 2)
    assert layer_conv(probe, "conv_a").strides == (2, 2)
    conv_layers = r"Conv layers of NnxNet: conv_a, conv_a\+act, conv_b, conv_b\+act"
    with pytest.raises(ValueError, match=r"'head' is a dense layer.*" + conv_layers):
        layer_kernel(probe, "head")


class Standardized(nn.Module):
    """A conv whose kernel is computed from its parameter (weight standardization)."""

    features: int

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        w = (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


class UserNet(nn.Module):
    """A user's model: auto-named convs, batch norm, swish, a squeeze-excite gate, a residual, a pool."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(8, (3, 3))(x)))
        self.sow("intermediates", "bn_relu", h)
        h = nn.Conv(8, (3, 3), feature_group_count=8)(h)  # depthwise
        h = nn.swish(h)
        gate = nn.sigmoid(nn.Dense(8)(h.mean(axis=(1, 2))))[:, None, None, :]
        h = h * gate
        self.sow("intermediates", "gated", h)
        r = h + nn.relu(nn.Conv(8, (1, 1))(h))
        self.sow("intermediates", "residual", r)
        s = Standardized(6)(r)
        self.sow("intermediates", "standardized", s)
        p = nn.max_pool(s, (2, 2), strides=(2, 2))
        self.sow("intermediates", "pool", p)
        return nn.Dense(3)(p.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def user_probe():
    module = UserNet()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))
    variables = jax.tree_util.tree_map(lambda a: a + 0.1, variables)  # non-trivial batch-norm statistics
    return cw.Probe(module, variables, input_shape=(12, 12, 3))


def test_user_linen_model_kernels(user_probe):
    params = user_probe.variables["params"]
    np.testing.assert_array_equal(layer_kernel(user_probe, "bn_relu"), np.asarray(params["Conv_0"]["kernel"]))
    # the squeeze-excite gate is broadcast over positions: a modulation, like a bias
    depthwise = layer_conv(user_probe, "gated")
    np.testing.assert_array_equal(depthwise.kernel, np.asarray(params["Conv_1"]["kernel"]))
    assert depthwise.groups == 8 and depthwise.kernel.shape == (3, 3, 1, 8)
    w = np.asarray(params["Standardized_0"]["w"])
    expected = (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(layer_kernel(user_probe, "standardized"), expected, rtol=1e-5, atol=1e-6)


def test_auto_captured_conv_of_a_user_model():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (5, 5), strides=(2, 2))(x))
            return nn.Dense(2)(x.mean(axis=(1, 2)))

    variables = Plain().init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)))
    probe = cw.Probe(Plain(), variables, input_shape=(16, 16, 3))
    assert probe.layer_names == ["Conv_0", "Conv_0+act", "Dense_0"]
    for name in ("Conv_0", "Conv_0+act"):  # the conv after its ReLU has the conv's kernel
        np.testing.assert_array_equal(
            layer_kernel(probe, name), np.asarray(variables["params"]["Conv_0"]["kernel"])
        )


# ----------------------------------------------------------------- refusals
def test_errors(digits, user_probe):
    with pytest.raises(ValueError, match="Unknown layer 'conv9'.*Valid layers: conv1"):
        layer_kernel(digits, "conv9")
    with pytest.raises(ValueError, match=r"'fc1' is a dense layer with output shape \(64,\).*conv1, conv2"):
        layer_kernel(digits, "fc1")
    with pytest.raises(
        ValueError, match="'pool1' \\(pool\\) is produced by 'reduce_window_max', not by a conv"
    ):
        layer_kernel(digits, "pool1")
    with pytest.raises(ValueError, match="'pool' \\(.*\\) is produced by 'reduce_window_max'"):
        layer_kernel(user_probe, "pool")
    with pytest.raises(ValueError, match="'residual' adds the outputs of 2 image paths.*no single kernel"):
        layer_kernel(user_probe, "residual")


@pytest.mark.slow
def test_efficientnet_depthwise_and_residual_blocks():
    probe = cw.load("efficientnet-lite0")
    params = probe.variables["params"]
    conv = layer_conv(probe, "block3.depthwise")  # conv → batch norm → ReLU6
    np.testing.assert_array_equal(
        conv.kernel, np.asarray(params["blocks_3"]["depthwise_conv"]["conv"]["kernel"])
    )
    assert conv.groups == 144 and conv.kernel.shape == (5, 5, 1, 144) and conv.strides == (2, 2)
    # a block without a residual is its project conv; one with a residual is refused, naming its parts
    np.testing.assert_array_equal(
        layer_kernel(probe, "block1"), np.asarray(params["blocks_1"]["project_conv"]["conv"]["kernel"])
    )
    with pytest.raises(ValueError, match="'block2' adds.*Its conv parts: block2.expand, block2.depthwise"):
        layer_kernel(probe, "block2")
