"""Own models as their authors write them (issue 18): tuple and dict outputs, `train` and
`deterministic` flags, BatchNorm and Dropout, fixed-size heads, headless models, sown values
beside the automatic layers, normalization layers under the ReLU rules, bfloat16.

Each model is written the way Flax's own examples write it; every number is checked against the
model called directly (``module.apply``) or against an independent computation."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import cnnvis_widgets as cw
from cnnvis_widgets.engine import ascent, saliency

# ------------------------------------------------------------------ the models


class ResNetBlock(nn.Module):
    """Flax's ImageNet example's block (examples/imagenet/models.py), smaller."""

    filters: int
    norm: functools.partial
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)
        y = self.norm()(y)
        y = nn.relu(y)
        y = nn.Conv(self.filters, (3, 3), use_bias=False)(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = nn.Conv(self.filters, (1, 1), self.strides, use_bias=False, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """As in Flax's ImageNet example: ``train`` with no default, BatchNorm over axis 'batch'."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name="batch"
        )
        x = nn.Conv(8, (3, 3), use_bias=False, name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        x = ResNetBlock(8, norm)(x)
        x = ResNetBlock(16, norm, strides=(2, 2))(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


class DropoutNet(nn.Module):
    """A classifier with Dropout switched by ``deterministic`` (no default)."""

    @nn.compact
    def __call__(self, x, deterministic: bool):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.Dropout(0.5)(x, deterministic=deterministic)
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


class TrainDefaultNet(nn.Module):
    """``train: bool = True``: called plainly it would run in training mode."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


class HardTrainingNet(nn.Module):
    """BatchNorm in training mode with no flag to turn it off."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=False)(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


class TwoHeads(nn.Module):
    """Returns (logits, features), as contrastive or multi-task code does."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), name="conv2")(x))
        features = x.mean(axis=(1, 2))
        return nn.Dense(10, name="head")(features), features


class DictHeads(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        features = x.mean(axis=(1, 2))
        return {"features": features, "logits": nn.Dense(10, name="head")(features)}


class Wrapper(nn.Module):
    """The obvious fix a user writes for TwoHeads: a parent that keeps the logits."""

    @nn.compact
    def __call__(self, x):
        return TwoHeads(name="inner")(x)[0]


class Headless(nn.Module):
    """A backbone: its output is a feature map, not class scores."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        return nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), name="conv2")(x))


class GeluGroupNorm(nn.Module):
    """gelu and GroupNorm: no ReLU anywhere (GroupNorm's variance has a max(0, …) inside)."""

    dtype: Any = jnp.float32  # the computation's (parameters stay float32, as in Flax's examples)

    @nn.compact
    def __call__(self, x):
        d = self.dtype
        x = nn.gelu(nn.GroupNorm(num_groups=4, dtype=d, name="gn1")(nn.Conv(8, (3, 3), dtype=d, name="conv1")(x)))
        x = nn.Conv(8, (3, 3), strides=(2, 2), dtype=d, name="conv2")(x)
        x = nn.gelu(nn.LayerNorm(dtype=d, name="ln2")(x))
        return nn.Dense(10, dtype=d, name="head")(x.mean(axis=(1, 2)))


class SowsOne(nn.Module):
    """Sows one value (an embedding) and has convs: both are layers."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), name="conv2")(x))
        embedding = x.mean(axis=(1, 2))
        self.sow("intermediates", "embedding", embedding)
        return nn.Dense(10, name="head")(embedding)


class FrozenBatchNorm(nn.Module):
    """A package's own normalization class (as flaxmodels and detection code define them)."""

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return x * scale


class OwnNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(FrozenBatchNorm(name="norm1")(nn.Conv(8, (3, 3), name="conv1")(x)))
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


class VggHead(nn.Module):
    """VGG's shape: convs, then Flatten → Dense at one input size (here 144 px, above 128)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (4, 4), strides=(4, 4))
        x = nn.relu(nn.Conv(4, (3, 3), name="conv2")(x))
        x = nn.max_pool(x, (4, 4), strides=(4, 4))
        return nn.Dense(10, name="fc")(x.reshape((x.shape[0], -1)))


SHAPE = (16, 16, 3)


def _init(module, shape=SHAPE, **kwargs):
    return module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.zeros((1, *shape)), **kwargs)


def _images(n=2, shape=SHAPE, seed=3):
    return np.asarray(jax.random.uniform(jax.random.key(seed), (n, *shape)))


def _input_gradient(fn, x, target):
    """d fn(x)[i, target_i] / dx, by jax.grad of the model called directly."""
    return jax.grad(lambda x: jnp.take_along_axis(fn(x), jnp.asarray(target)[:, None], 1).sum())(x)


# ------------------------------------------------------------ train / deterministic flags
def test_a_flax_example_resnet_runs_in_evaluation_mode_without_being_told():
    module = ResNet()
    variables = _init(module, train=False)
    probe = cw.Probe(module, variables, input_shape=SHAPE)  # failed: "unbound axis name: batch"
    assert probe.apply_kwargs == {"train": False}
    x = _images()
    expected = module.apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(probe.logits(None, x)), np.asarray(expected), atol=1e-5)
    # BatchNorm with its running statistics: the same answer for one image alone as in a batch
    np.testing.assert_allclose(np.asarray(probe.logits(None, x[:1])), np.asarray(expected[:1]), atol=1e-5)
    # the conv the Probe captured is the conv's own output, as the module computes it
    _, state = module.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    conv = state["intermediates"]["ResNetBlock_1"]["conv_proj"]["__call__"][0]
    np.testing.assert_allclose(
        np.asarray(probe.activations(None, x, "ResNetBlock_1.conv_proj")), np.asarray(conv), atol=1e-5
    )
    # and a gradient method agrees with jax.grad of the model called directly
    target = np.array([3, 7])
    result = saliency.vanilla_gradient(probe, x, target)
    grad = _input_gradient(lambda x: module.apply(variables, x, train=False), jnp.asarray(x), target)
    np.testing.assert_allclose(result.attributions, np.asarray(grad), atol=1e-5)


def test_a_training_flag_given_in_training_mode_is_refused_with_the_exact_fix():
    module = ResNet()
    variables = _init(module, train=False)
    with pytest.raises(ValueError, match=r"apply_kwargs=\{'train': False\}"):
        cw.Probe(module, variables, input_shape=SHAPE, apply_kwargs={"train": True})


def test_dropout_is_off_and_a_default_training_flag_is_turned_off():
    module = DropoutNet()
    variables = _init(module, deterministic=True)
    probe = cw.Probe(module, variables, input_shape=SHAPE)  # failed: Dropout needs PRNG "dropout"
    assert probe.apply_kwargs == {"deterministic": True}
    x = _images()
    np.testing.assert_allclose(
        np.asarray(probe.logits(None, x)), np.asarray(module.apply(variables, x, deterministic=True)), atol=1e-5
    )
    module = TrainDefaultNet()
    variables = _init(module, train=False)
    probe = cw.Probe(module, variables, input_shape=SHAPE)  # failed: "batch_stats" is immutable
    assert probe.apply_kwargs == {"train": False}
    np.testing.assert_allclose(
        np.asarray(probe.logits(None, x)), np.asarray(module.apply(variables, x, train=False)), atol=1e-5
    )


def test_a_model_stuck_in_training_mode_is_refused_at_construction_naming_the_cause():
    module = HardTrainingNet()
    variables = _init(module)
    with pytest.raises(ValueError, match=r"(?s)batch_stats.*use_running_average=True.*apply_kwargs"):
        cw.Probe(module, variables, input_shape=SHAPE)


# ------------------------------------------------------------ outputs
def test_a_tuple_output_needs_output_and_then_every_method_works():
    module = TwoHeads()
    variables = _init(module)
    with pytest.raises(ValueError, match=r"(?s)tuple of 2.*output=0"):
        cw.Probe(module, variables, input_shape=SHAPE)
    probe = cw.Probe(module, variables, input_shape=SHAPE, output=0)
    assert probe.num_classes == 10
    x = _images()
    logits = lambda x: module.apply(variables, x)[0]
    np.testing.assert_allclose(np.asarray(probe.logits(None, x)), np.asarray(logits(x)), atol=1e-5)
    target = np.array([1, 4])
    result = saliency.vanilla_gradient(probe, x, target)  # failed: 'tuple' has no attribute 'reshape'
    np.testing.assert_allclose(result.attributions, np.asarray(_input_gradient(logits, jnp.asarray(x), target)), atol=1e-5)
    cam = saliency.gradcam(probe, x, target, layer="conv2")
    assert cam.maps.shape == (2, 16, 16) and np.isfinite(cam.maps).all()
    # a function of the output does as well as an index
    by_function = cw.Probe(module, variables, input_shape=SHAPE, output=lambda out: out[0])
    np.testing.assert_allclose(np.asarray(by_function.logits(None, x)), np.asarray(logits(x)), atol=1e-6)


def test_a_dict_output_is_chosen_by_key_and_a_wrong_key_lists_the_keys():
    module = DictHeads()
    variables = _init(module)
    x = _images()
    probe = cw.Probe(module, variables, input_shape=SHAPE, output="logits")
    np.testing.assert_allclose(
        np.asarray(probe.logits(None, x)), np.asarray(module.apply(variables, x)["logits"]), atol=1e-6
    )
    with pytest.raises(ValueError, match=r"(?s)'logit'.*features.*logits"):
        cw.Probe(module, variables, input_shape=SHAPE, output="logit")


def test_a_parent_that_keeps_the_first_output_is_probed_through_its_child():
    module = Wrapper()
    variables = _init(module)
    probe = cw.Probe(module, variables, input_shape=SHAPE)  # failed in receptive_field.py
    assert {"inner.conv1", "inner.conv2", "inner.head"} <= set(probe.layer_names)
    assert "inner" not in probe.layer_names  # its output is a tuple, not an activation
    assert probe.layer("inner.conv2").receptive_field == 5
    x = _images()
    np.testing.assert_allclose(np.asarray(probe.logits(None, x)), np.asarray(module.apply(variables, x)), atol=1e-6)


def test_a_headless_model_is_recognised_and_class_targets_are_refused_with_a_way_out():
    module = Headless()
    variables = _init(module)
    probe = cw.Probe(module, variables, input_shape=SHAPE)
    assert probe.num_classes is None
    x = _images()
    with pytest.raises(ValueError, match=r"(?s)no class scores.*\(N, 8, 8, 16\).*target=\('conv2\+act'"):
        saliency.vanilla_gradient(probe, x)
    with pytest.raises(ValueError, match="no class scores"):
        ascent.visualize_classes(probe, [0], steps=2)
    # a unit of a layer is a target it has: d mean(conv2[..., 5]) / dx (the Conv module's own
    # output, as flax captures it), checked against jax.grad
    def conv2(x):
        _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]["conv2"]["__call__"][0]

    result = saliency.vanilla_gradient(probe, x, ("conv2", 5))
    grad = jax.grad(lambda x: conv2(x)[..., 5].mean(axis=(1, 2)).sum())(jnp.asarray(x))
    np.testing.assert_allclose(result.attributions, np.asarray(grad), atol=1e-5)


# ------------------------------------------------------------ layers
def test_sown_values_add_to_the_automatic_layers():
    module = SowsOne()
    probe = cw.Probe(module, _init(module), input_shape=SHAPE)  # sowing hid every conv
    assert {"conv1", "conv2", "head", "embedding"} <= set(probe.layer_names)
    x = _images()
    _, state = module.apply(_init(module), x, mutable=["intermediates"])
    np.testing.assert_allclose(
        np.asarray(probe.activations(None, x, "embedding")), np.asarray(state["intermediates"]["embedding"][0]),
        atol=1e-6,
    )


class ReadsTwice(nn.Module):
    """A conv whose output is read before and after its ReLU (a DenseNet-like concatenation)."""

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(8, (3, 3), name="conv1")(x)
        x = jnp.concatenate([nn.relu(y), y], axis=-1)
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


def test_each_conv_is_also_a_layer_after_the_norm_and_activation_that_follow_it():
    module = ResNet()
    variables = _init(module, train=False)
    probe = cw.Probe(module, variables, input_shape=SHAPE)
    x = _images()
    _, state = module.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    seen = state["intermediates"]
    expected = {  # relu of the BatchNorm module's own output, as flax computes it
        "conv_init+act": jax.nn.relu(seen["bn_init"]["__call__"][0]),
        "ResNetBlock_0.Conv_0+act": jax.nn.relu(seen["ResNetBlock_0"]["BatchNorm_0"]["__call__"][0]),
        "ResNetBlock_1.Conv_0+act": jax.nn.relu(seen["ResNetBlock_1"]["BatchNorm_0"]["__call__"][0]),
    }
    acts = probe.activations(None, x)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(acts[name]), np.asarray(value), atol=1e-5, err_msg=name)
        layer = probe.layer(name)
        source = probe.layer(layer.after)
        assert layer.kind == "conv" and (layer.shape, layer.receptive_field) == (source.shape, source.receptive_field)
    # a conv whose norm feeds the residual sum has none: the block's output is that value
    assert "ResNetBlock_0.Conv_1+act" not in probe.layer_names and "ResNetBlock_0" in probe.layer_names
    # what a captured conv means: before its norm, a third or more of its values are negative
    pre, post = np.asarray(acts["ResNetBlock_0.Conv_0"]), np.asarray(acts["ResNetBlock_0.Conv_0+act"])
    assert (pre < 0).mean() > 0.3 and (post < 0).sum() == 0
    # through GroupNorm and LayerNorm (reductions of the conv's own output) to gelu
    module = GeluGroupNorm()
    variables = _init(module)
    probe = cw.Probe(module, variables, input_shape=SHAPE)
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    seen = state["intermediates"]
    for name, norm in (("conv1+act", "gn1"), ("conv2+act", "ln2")):
        np.testing.assert_allclose(
            np.asarray(probe.activations(None, x, name)), np.asarray(nn.gelu(seen[norm]["__call__"][0])),
            atol=1e-5, err_msg=name,
        )
    assert probe.layer("conv2+act").receptive_field == 5
    # a conv also read before its activation has no single "after" value
    module = ReadsTwice()
    assert cw.Probe(module, _init(module), input_shape=SHAPE).layer_names == ["conv1", "head"]


def test_layers_and_layer_kinds_are_checked_against_the_model():
    module = SowsOne()
    variables = _init(module)
    with pytest.raises(ValueError, match=r"(?s)'conv_1'.*Did you mean 'conv1'"):
        cw.Probe(module, variables, input_shape=SHAPE, layer_kinds={"conv_1": "conv"})
    with pytest.raises(ValueError, match=r"(?s)'conv3'.*conv1, conv1\+act, conv2"):
        cw.Probe(module, variables, input_shape=SHAPE, layers=["conv3"])
    probe = cw.Probe(module, variables, input_shape=SHAPE, layers=["conv2", "conv1"])
    assert probe.layer_names == ["conv1", "conv2"]  # in the model's order


def test_normalization_layers_are_not_layers_and_rules_leave_their_insides_alone():
    module = GeluGroupNorm()
    variables = _init(module)
    probe = cw.Probe(module, variables, input_shape=SHAPE)
    assert not {"gn1", "ln2"} & set(probe.layer_names)
    own = OwnNorm()
    own_probe = cw.Probe(own, _init(own), input_shape=SHAPE)
    assert own_probe.layer_names == ["conv1", "conv1+act", "head"]  # not "norm1"
    # receptive fields through the norms: 3x3 then 3x3 with stride 2 -> 5 (was: the whole image)
    assert probe.layer("conv2").receptive_field == 5 and probe.layer("conv2").stride == 2
    # no ReLU in this model: guided backprop and deconvnet must equal the plain gradient
    # (they rewrote the max(0, variance) inside GroupNorm and LayerNorm: 41 % off)
    x = _images()
    target = np.array([2, 6])
    plain = saliency.vanilla_gradient(probe, x, target).attributions
    for method in (saliency.guided_backprop, saliency.deconvnet):
        np.testing.assert_allclose(method(probe, x, target).attributions, plain, atol=1e-6)


# ------------------------------------------------------------ sizes and dtypes
def test_a_fixed_size_model_above_128_px_is_drawn_at_its_own_size():
    module = VggHead()
    shape = (144, 144, 3)
    probe = cw.Probe(module, _init(module, shape), input_shape=shape)
    assert probe.fixed_size
    assert ascent.default_size(probe) == (144, 144)
    result = ascent.visualize_filters(probe, "conv2", [0, 1], steps=2)  # failed: "got size (128, 128)"
    assert result.images.shape[1:4] == (144, 144, 3)


def test_a_bfloat16_model_works_in_grad_cam_with_maps_in_float32():
    f32, bf16 = GeluGroupNorm(), GeluGroupNorm(dtype=jnp.bfloat16)
    variables = _init(f32)
    assert bf16.apply(variables, jnp.zeros((1, *SHAPE))).dtype == jnp.bfloat16
    probe32 = cw.Probe(f32, variables, input_shape=SHAPE)
    probe16 = cw.Probe(bf16, variables, input_shape=SHAPE)
    assert probe16.layer_names == probe32.layer_names  # in the model's order (the casts came last)
    x = _images()
    cam16 = saliency.gradcam(probe16, x, np.array([2, 6]), layer="conv2")  # failed: lax.gt dtypes
    cam32 = saliency.gradcam(probe32, x, np.array([2, 6]), layer="conv2")
    assert cam16.maps.dtype == np.float32 and np.isfinite(cam16.maps).all()
    for a, b in zip(cam16.maps, cam32.maps):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


# ------------------------------------------------------------ the views on these models
def test_the_explorers_run_on_these_models_or_refuse_at_construction():
    from cnnvis_widgets.widgets import FilterExplorer, SaliencyExplorer

    resnet = ResNet()
    resnet_probe = cw.Probe(resnet, _init(resnet, train=False), input_shape=SHAPE)
    fe = FilterExplorer(resnet_probe, layer="ResNetBlock_1.conv_proj", filters="0:4", steps=4, snapshot_every=2)
    assert fe.wait(300) and fe.result is not None and np.isfinite(fe.result.images).all()
    fe.close()
    two = TwoHeads()
    two_probe = cw.Probe(two, _init(two), input_shape=SHAPE, output=0)
    se = SaliencyExplorer(two_probe, images=_images(2))
    assert se.wait(300) and se.result is not None and se.result.maps.shape == (1, 16, 16)
    se.close()
    headless = Headless()
    headless_probe = cw.Probe(headless, _init(headless), input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"(?s)SaliencyExplorer.*no class scores"):
        SaliencyExplorer(headless_probe, images=_images(2))
    dashboard = cw.explore(headless_probe, images=_images(2), start="saliency")  # says so in its tab
    assert "no class scores" in dashboard.tabs.children[dashboard.view_keys.index("saliency")].value
    dashboard.close()
    vgg = VggHead()
    shape = (144, 144, 3)
    vgg_probe = cw.Probe(vgg, _init(vgg, shape), input_shape=shape)
    fe = FilterExplorer(vgg_probe, layer="conv2", filters="0:2", steps=2, snapshot_every=2)
    assert fe.size.value == 144 and fe.size.disabled
    # it runs at its one size (failed: "'<' not supported between 'tuple' and 'int'")
    assert fe.wait(300) and fe.result is not None and fe.result.images.shape == (2, 144, 144, 3)
    with pytest.raises(ValueError, match="takes only 144x144"):
        FilterExplorer(vgg_probe, size=64, autorun=False)
    fe.close()


# ------------------------------------------------------------ every public function on every style
def _styles():
    """(name, probe, a conv layer, class target or None) for each model style above."""
    def probe(module, shape=SHAPE, init_kwargs=None, **kwargs):
        return cw.Probe(module, _init(module, shape, **(init_kwargs or {})), input_shape=shape, **kwargs)

    return [
        ("resnet", probe(ResNet(), init_kwargs={"train": False}), "ResNetBlock_0.Conv_0+act", 3),
        ("dropout", probe(DropoutNet(), init_kwargs={"deterministic": True}), "Conv_1", 3),
        ("tuple", probe(TwoHeads(), output=0), "conv2", 3),
        ("dict", probe(DictHeads(), output="logits"), "conv1", 3),
        ("wrapper", probe(Wrapper()), "inner.conv2", 3),
        ("headless", probe(Headless()), "conv2+act", None),
        ("gelu-groupnorm", probe(GeluGroupNorm()), "conv2+act", 3),
        ("bfloat16", probe(GeluGroupNorm(dtype=jnp.bfloat16), init_kwargs=None), "conv2", 3),
        ("sown", probe(SowsOne()), "conv2", 3),
        ("fixed-144", probe(VggHead(), (144, 144, 3)), "conv2", 3),
    ]


@pytest.mark.slow
def test_every_public_function_works_on_every_model_style():
    failures = []
    # styles whose paths through the methods are another style's (a plain conv net, a picked output,
    # GroupNorm and GELU as bfloat16 has them) run one method of each kind: a gradient, a ReLU rule,
    # a CAM (CI time)
    alike = {"dropout", "dict", "tuple", "wrapper", "sown", "gelu-groupnorm"}
    for name, probe, layer, target in _styles():
        x = _images(1, probe.input_shape)
        methods = ("vanilla", "guided_backprop", "gradcam") if name in alike else cw.SALIENCY_METHODS
        calls = {
            f"saliency {method}": functools.partial(
                cw.saliency, probe, x, method, target if target is not None else (layer, 0),
                **({"n_samples": 2} if method == "smoothgrad" else {}),
                **({"steps": 4} if method == "integrated_gradients" else {}),
                **({"patch": 8, "stride": 8} if method == "occlusion" else {}),
            )
            for method in methods
        }
        calls["visualize_filters"] = lambda: cw.visualize_filters(probe, layer, [0, 1], steps=2)
        calls["feature_maps"] = lambda: cw.feature_maps(probe, x[0], layer)
        calls["filter_stats"] = lambda: cw.filter_stats(probe, _images(3, probe.input_shape), layer)
        calls["features"] = lambda: cw.features(probe, _images(3, probe.input_shape))
        unit = target if target is not None else (layer, 0)
        calls["concepts"] = lambda: cw.concepts(probe, x[0], unit, layer, top_k=2)
        if target is not None:
            calls["visualize_classes"] = lambda: cw.visualize_classes(probe, [target], steps=2)
            calls["faithfulness"] = lambda: cw.faithfulness(probe, x, ["vanilla"], target, steps=4)
        for what, call in calls.items():
            try:
                out = call()
            except Exception as err:  # noqa: BLE001 - collected, reported together
                failures.append(f"{name}: {what}: {type(err).__name__}: {str(err)[:200]}")
                continue
            fields = out._asdict().values() if hasattr(out, "_asdict") else getattr(out, "__dict__", {}).values()
            arrays = [out] if hasattr(out, "shape") else [a for a in fields if hasattr(a, "shape")]
            floats = [np.asarray(a) for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
            if not floats or not all(np.isfinite(a).all() for a in floats):
                failures.append(f"{name}: {what}: non-finite values")
    assert not failures, "\n".join(failures)
