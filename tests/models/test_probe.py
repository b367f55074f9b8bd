"""Probe: linen and nnx models give the activations of calling the model directly; clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import cnnvis_widgets as cw


# ------------------------------------------------------------ tiny models
class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(6, (3, 3), name="inner")(x)) + x[..., :1]


class LinenNet(nn.Module):
    """A user model that sows nothing: the Probe captures convs, dense layers and blocks."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), name="conv_a")(x))
        x = LinenBlock(name="block")(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(5, name="head")(x)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv_a = nnx.Conv(3, 4, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.conv_b = nnx.Conv(4, 6, (3, 3), rngs=rngs)
        self.head = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv_a(x)))
        x = nnx.relu(self.conv_b(x))
        return self.head(x.mean(axis=(1, 2)))


class NnxSown(NnxNet):
    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv_a(x)))
        self.sow(nnx.Intermediate, "first", x)
        x = nnx.relu(self.conv_b(x))
        self.sow(nnx.Intermediate, "second", x)
        return self.head(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))


@pytest.fixture(scope="module")
def linen_probe():
    module = LinenNet()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return cw.Probe(module, variables, input_shape=(16, 16, 3), preprocess=lambda x: 2 * x - 1)


def test_linen_capture_matches_direct_calls(linen_probe, images):
    p = linen_probe
    assert p.layer_names == ["conv_a", "conv_a+act", "block.inner", "block.inner+act", "block", "head"]
    assert [layer.kind for layer in p.layers] == ["conv", "conv", "conv", "conv", "block", "dense"]
    assert p.layer("conv_a+act").after == "conv_a"
    params = p.variables["params"]
    x = 2 * images - 1  # the probe's preprocessing, applied by hand
    conv_a = (
        jax.lax.conv_general_dilated(
            x, params["conv_a"]["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + params["conv_a"]["bias"]
    )
    acts = p.activations(p.variables, images)
    np.testing.assert_allclose(acts["conv_a"], conv_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["conv_a+act"], jax.nn.relu(conv_a), rtol=1e-5, atol=1e-5)
    block = LinenBlock().apply({"params": params["block"]}, jax.nn.relu(conv_a))
    np.testing.assert_allclose(acts["block"], block, rtol=1e-5, atol=1e-5)
    # the inner conv's ReLU comes before the block's residual sum, which ends it
    inner = nn.Conv(6, (3, 3)).apply({"params": params["block"]["inner"]}, jax.nn.relu(conv_a))
    np.testing.assert_allclose(acts["block.inner+act"], jax.nn.relu(inner), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        p.logits(p.variables, images), LinenNet().apply(p.variables, x), rtol=1e-5, atol=1e-5
    )


def test_probabilities_and_a_probe_over_other_variables(linen_probe, images):
    """``probabilities`` is the softmax of the model's output (numpy); ``with_variables`` gives a
    Probe whose output is the module applied with the new variables, leaving the original's
    output and compiled programs alone."""
    out = np.asarray(LinenNet().apply(linen_probe.variables, 2 * images - 1), np.float64)
    expected = np.exp(out - out.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(linen_probe.probabilities(linen_probe.variables, images), expected, atol=1e-6)
    other = LinenNet().init(jax.random.key(7), jnp.zeros((1, 16, 16, 3)))
    twin = linen_probe.with_variables(other, "retrained")
    np.testing.assert_allclose(
        twin.logits(twin.variables, images), LinenNet().apply(other, 2 * images - 1), atol=1e-5
    )
    np.testing.assert_allclose(linen_probe.logits(linen_probe.variables, images), out, atol=1e-5)
    assert twin.name == "retrained" and twin.layer_names == linen_probe.layer_names
    assert twin.programs is not linen_probe.programs
    with pytest.raises(ValueError):
        linen_probe.with_variables({"params": {}})  # not this model's variables


def test_geometry_of_a_user_model(linen_probe):
    """3x3 stride-2 conv, then a 3x3 conv inside a block: rf 3 then 3 + 2*2, stride 2; dense sees all."""
    p = linen_probe
    for name, (rf, stride) in {"conv_a": (3, 2), "block.inner": (7, 2), "block": (7, 2)}.items():
        assert (p.layer(name).receptive_field, p.layer(name).stride) == (rf, stride), p.layer(name)
    assert p.layer("head").receptive_field == 16


def test_receptive_field_against_linear_network():
    """A purely linear conv/pool stack: the gradient support is exactly the receptive field."""

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(3, (5, 5), strides=(2, 2), padding="SAME")(x)
            x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            x = nn.Conv(3, (3, 3), kernel_dilation=(2, 2), padding="SAME")(x)
            return x.mean(axis=(1, 2))

    module = Linear()
    variables = module.init(jax.random.key(3), jnp.zeros((1, 64, 64, 1)))
    p = cw.Probe(module, variables, input_shape=(64, 64, 1))
    assert p.layer_names == ["Conv_0", "Conv_1"]
    last = p.layer("Conv_1")  # the dilated conv, after the pool
    assert last.stride == 4
    g = jax.grad(lambda x: p.activations(p.variables, x, last.name)[0, 8, 8].sum())(
        jnp.full((1, 64, 64, 1), 0.5)
    )
    rows = np.nonzero(np.abs(np.asarray(g[0, :, :, 0])).sum(axis=1) > 1e-9)[0]
    assert last.receptive_field == rows.max() - rows.min() + 1 == 5 + 2 * 2 + 2 * 2 * 4


def test_nnx_capture_matches_direct_calls(images):
    model = NnxNet(nnx.Rngs(0))
    model.eval()
    p = cw.Probe(model, input_shape=(16, 16, 3))
    assert p.layer_names == ["conv_a", "conv_a+act", "conv_b", "conv_b+act", "head"]
    acts = p.activations(p.variables, images)
    np.testing.assert_allclose(acts["conv_a"], model.conv_a(images), rtol=1e-5, atol=1e-5)
    first = nnx.relu(model.bn(model.conv_a(images)))  # the conv after its BatchNorm and ReLU
    np.testing.assert_allclose(acts["conv_a+act"], first, rtol=1e-5, atol=1e-5)
    second = model.conv_b(first)
    np.testing.assert_allclose(acts["conv_b"], second, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["conv_b+act"], nnx.relu(second), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.logits(p.variables, images), model(images), rtol=1e-5, atol=1e-5)


def test_nnx_sown_layers(images):
    model = NnxSown(nnx.Rngs(0))
    model.eval()
    p = cw.Probe(model, input_shape=(16, 16, 3), layers="sown")
    assert p.layer_names == ["first", "second"]
    # by default the sown values add to the automatic layers (issue 18: sowing hid the convs)
    every = cw.Probe(model, input_shape=(16, 16, 3)).layer_names
    assert every == ["conv_a", "first", "conv_b", "second", "head"]
    expected = nnx.relu(model.conv_b(nnx.relu(model.bn(model.conv_a(images)))))
    np.testing.assert_allclose(p.activations(p.variables, images, "second"), expected, rtol=1e-5, atol=1e-5)


def test_linen_and_nnx_probes_agree(images):
    """The same weights in a linen and an nnx model give the same activations through the Probe."""
    nmodel = NnxNet(nnx.Rngs(0))
    nmodel.eval()
    kernel, bias = nmodel.conv_a.kernel[...], nmodel.conv_a.bias[...]

    class One(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(4, (3, 3), strides=(2, 2), name="conv_a")(x).mean(axis=(1, 2))

    lp = cw.Probe(One(), {"params": {"conv_a": {"kernel": kernel, "bias": bias}}}, input_shape=(16, 16, 3))
    npb = cw.Probe(nmodel, input_shape=(16, 16, 3))
    np.testing.assert_allclose(
        lp.activations(lp.variables, images, "conv_a"),
        npb.activations(npb.variables, images, "conv_a"),
        rtol=1e-6,
    )


def test_activations_are_jittable_and_differentiable(linen_probe, images):
    p = linen_probe
    f = jax.jit(lambda v, x: p.activations(v, x, "block")[..., 2].mean())
    g = jax.grad(f, argnums=1)(p.variables, images)
    assert g.shape == images.shape and float(jnp.abs(g).sum()) > 0


def test_digits_probe_layers_and_fixed_size():
    p = cw.load("digits-cnn")
    assert p.layer_names == ["conv1", "conv2", "pool1", "conv3", "pool2", "conv4", "pool3", "fc1", "logits"]
    assert p.layer("conv3").channels == 48 and p.layer("conv3").stride == 2
    assert p.layer("conv4").receptive_field == 20  # 3x3 convs and 2x2 pools: 3,5,6,10,12,20
    assert not p.fixed_size  # global average pooling takes any size


# ----------------------------------------------------------------- errors
def test_unknown_layer_lists_valid_names():
    p = cw.load("digits-cnn")
    with pytest.raises(ValueError, match=r"Unknown layer 'conv9'.*Valid layers: conv1, conv2, pool1"):
        p.layer("conv9")
    with pytest.raises(ValueError, match="Unknown layer"):
        p.activations(p.variables, np.zeros((1, 32, 32, 1)), ["conv1", "nope"])


@pytest.mark.parametrize(
    "units, message",
    [
        ([16], r"Filter 16 is out of range for layer 'conv1' with 16 channels \(valid: 0..15\)"),
        ([-1], "Filter -1 is out of range"),
        ([], "Empty list of filters"),
        ([0.5], "must be integers"),
    ],
)
def test_bad_filter_indices(units, message):
    p = cw.load("digits-cnn")
    with pytest.raises((ValueError, TypeError), match=message):
        p.check_units("conv1", units)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((32, 32, 1), r"shape \(N, H, W, C\) = \(N, 32, 32, 1\).*got shape \(32, 32, 1\)"),
        ((2, 32, 32, 3), "grayscale images with 1 channel.*got 3 channels"),
    ],
)
def test_bad_image_shapes(shape, message):
    p = cw.load("digits-cnn")
    with pytest.raises(ValueError, match=message):
        p.activations(p.variables, np.zeros(shape, np.float32), "conv1")


def test_nan_and_range_errors():
    p = cw.load("digits-cnn")
    x = np.zeros((2, 32, 32, 1), np.float32)
    x[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or Inf"):
        p.logits(p.variables, x)
    with pytest.raises(ValueError, match=r"range \[255, 255\].*divide by 255"):
        p.logits(p.variables, np.full((1, 32, 32, 1), 255.0))


def test_uint8_images_are_scaled():
    p = cw.load("digits-cnn")
    x = (np.random.default_rng(0).random((1, 32, 32, 1)) * 255).astype(np.uint8)
    np.testing.assert_allclose(
        p.logits(p.variables, x), p.logits(p.variables, x.astype(np.float32) / 255), rtol=1e-6
    )


def test_fixed_size_model_reports_expected_size():
    class Flat(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(2, (3, 3))(x)
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    v = Flat().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    p = cw.Probe(Flat(), v, input_shape=(8, 8, 1))
    assert p.fixed_size
    with pytest.raises(ValueError, match="takes 8x8 images; got 10x10"):
        p.logits(p.variables, np.zeros((1, 10, 10, 1)))


def test_non_flax_model_is_refused():
    with pytest.raises(TypeError, match="needs a flax.linen.Module or flax.nnx.Module, got function"):
        cw.Probe(lambda x: x, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        cw.Probe(LinenNet(), {}, input_shape=(8, 8))
    with pytest.raises(ValueError, match="needs its variables"):
        cw.Probe(LinenNet(), input_shape=(8, 8, 3))
