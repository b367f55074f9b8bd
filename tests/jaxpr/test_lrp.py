"""LRP as gradient rules: relevance conserved layer by layer (ε = 0, no biases), z⁺ never negative,
and the digits model's relevance equal to a hand-written numpy LRP (Bach et al. 2015; Montavon et al.
2019)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import cnnvis_widgets as cw
from cnnvis_widgets.engine.saliency import method_options
from cnnvis_widgets.jaxpr import lrp

RNG = np.random.default_rng(0)
K1 = RNG.normal(size=(3, 3, 2, 4)).astype(np.float32)
K2 = RNG.normal(size=(3, 3, 4, 5)).astype(np.float32)
W = RNG.normal(size=(5 * 3 * 3, 3)).astype(np.float32)
X = jnp.asarray(RNG.uniform(size=(1, 6, 6, 2)).astype(np.float32))  # positive, like pixels in [0, 1]


def _conv(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _net(x, tap1=0.0, tap2=0.0):
    """conv → relu → conv → relu → max-pool → dense, no biases; ``tap*`` are added after each ReLU
    (their gradient is the cotangent there, so the relevance there is the activation times it)."""
    a1 = jax.nn.relu(_conv(x, K1)) + tap1
    a2 = jax.nn.relu(_conv(a1, K2)) + tap2
    pooled = lax.reduce_window(a2, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return (pooled.reshape(1, -1) @ W)[0, 1]


def _layer_relevances(pick):
    """(score, relevance summed at the input, after ReLU 1, after ReLU 2) of ``_net`` under ``pick``."""
    f = lrp.lrp(_net, pick)
    zeros1, zeros2 = jnp.zeros((1, 6, 6, 4)), jnp.zeros((1, 6, 6, 5))
    r, g1, g2 = jax.grad(f, argnums=(0, 1, 2))(X, zeros1, zeros2)
    a1 = jax.nn.relu(_conv(X, K1))
    a2 = jax.nn.relu(_conv(a1, K2))
    return float(f(X, zeros1, zeros2)), r, float((a1 * g1).sum()), float((a2 * g2).sum())


def test_relevance_is_conserved_layer_by_layer_by_lrp_0():
    zero = lrp.epsilon_rule(0.0)
    score, r, at1, at2 = _layer_relevances(lrp.by_kind(zero, zero))
    assert score == pytest.approx(float(_net(X)), rel=1e-6)  # the forward value is the model's
    assert score > 1  # a logit the relevance can be told apart from
    for total in (float(r.sum()), at1, at2):
        assert total == pytest.approx(score, rel=1e-5)
    # ε = 0 without biases is gradient x input (Montavon et al. 2019, section 10.2.1)
    np.testing.assert_allclose(r, X * jax.grad(_net)(X), rtol=1e-4, atol=1e-5)


def test_zplus_relevance_is_never_negative_and_conserved():
    plus = lrp.zplus_rule()
    score, r, at1, at2 = _layer_relevances(lrp.by_kind(plus, plus))
    assert r.min() >= 0 and (r > 0).mean() > 0.5
    for total in (float(r.sum()), at1, at2):
        assert total == pytest.approx(score, rel=1e-5)
    signed = jax.grad(lrp.lrp(_net, lrp.by_kind(plus, plus)))(X - 0.5)  # inputs of both signs
    assert signed.min() >= 0 and float(signed.sum()) == pytest.approx(float(_net(X - 0.5)), rel=1e-5)


def test_gamma_rule_equals_its_definition_for_inputs_and_outputs_of_both_signs():
    x, w, b, g = (RNG.normal(size=shape).astype(np.float32) for shape in ((6,), (6, 5), (5,), (5,)))
    gamma = 0.5
    r = jax.grad(lrp.lrp(lambda x: ((x @ w + b) * g).sum(), lrp.by_kind(*[lrp.gamma_rule(gamma)] * 2)))(x)
    z = x @ w + b
    up, down = w + gamma * np.maximum(w, 0), w + gamma * np.minimum(w, 0)
    xp, xn = np.maximum(x, 0)[:, None], np.minimum(x, 0)[:, None]
    contrib = np.where(z > 0, xp * up + xn * down, xp * down + xn * up)  # (6, 5)
    den = contrib.sum(0) + b + gamma * np.where(z > 0, np.maximum(b, 0), np.minimum(b, 0))
    np.testing.assert_allclose(r, (contrib / den * z * g).sum(1), rtol=1e-4, atol=1e-6)
    assert (z > 0).any() and (z < 0).any() and (x > 0).any() and (x < 0).any()


def test_flat_rule_is_for_the_first_layer_only():
    flat = lrp.flat_rule()
    with pytest.raises(ValueError, match="flat rule gives relevance, not a gradient"):
        jax.grad(lrp.lrp(_net, lrp.by_kind(flat, flat)))(X)
    score, r, _, _ = _layer_relevances(lrp.by_kind(lrp.epsilon_rule(0.0), lrp.epsilon_rule(0.0), flat))
    assert float(r.sum()) == pytest.approx(score, rel=1e-5)  # flat ignores biases too
    with pytest.raises(ValueError, match="LRP found no linear layer reading the image"):
        lrp.lrp(lambda x: jax.nn.relu(x).sum())(X)


def test_relu6_passes_relevance_unchanged():
    w = jnp.asarray(RNG.normal(size=(4, 3)).astype(np.float32))
    f = lambda x: (jax.nn.relu6(x @ (3 * K1[0, 0])) @ w)[1]  # noqa: E731 - some units saturate at 6
    x = jnp.asarray(RNG.uniform(size=(2,)).astype(np.float32)) + 1
    zero = lrp.epsilon_rule(0.0)
    assert float(jax.nn.relu6(x @ (3 * K1[0, 0])).max()) == 6.0
    r = jax.grad(lrp.lrp(f, lrp.by_kind(zero, zero)))(x)
    assert float(r.sum()) == pytest.approx(float(f(x)), rel=1e-5)


# ------------------------------------------------------------ the digits model by hand (numpy)
def _patches(x):
    """(H, W, 9 C) 3x3 patches of x (H, W, C), zero padded ("SAME")."""
    h, w, c = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    return np.concatenate([xp[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=-1)


def _unpatch(rp, c):
    """The inverse bookkeeping: relevance of each patch entry (H, W, 9 C) summed onto its pixel."""
    h, w = rp.shape[:2]
    out = np.zeros((h + 2, w + 2, c))
    for t in range(9):
        i, j = divmod(t, 3)
        out[i : i + h, j : j + w] += rp[..., t * c : (t + 1) * c]
    return out[1:-1, 1:-1]


def _shares(contrib, den, r):
    """sum_j contrib_ij / den_j r_j, over the last axis (0 where den is 0)."""
    return (contrib * np.where(den == 0, 0, r / np.where(den == 0, 1, den))[..., None, :]).sum(-1)


def _by_rule(rule, a, w, b, r, eps):
    """Relevance of the inputs ``a`` (..., I) of ``z = a w + b`` (..., O) given ``r`` at z."""
    z = a @ w + b
    if rule == "epsilon":
        return _shares(a[..., :, None] * w, z + eps * np.where(z >= 0, 1, -1), r)
    if rule == "zplus":
        contrib = a[..., :, None] * np.maximum(w, 0)
        return _shares(contrib, contrib.sum(-2), r)
    assert rule == "flat"
    contrib = (a != 0)[..., :, None] * np.ones_like(w)  # a: the patches of an all-ones image
    return _shares(contrib, contrib.sum(-2), r)


def _hand_lrp(params, image, target, conv_rule, first_rule, eps, at=None):
    """LRP of digits-cnn (models/digits.py) in float64 numpy, layer by layer; ``at`` (a dict), if
    given, gets the relevance (H, W, C) at each conv layer's output."""
    at = {} if at is None else at
    p = {k: (np.float64(v["kernel"]), np.float64(v["bias"])) for k, v in params.items()}
    x = (np.float64(image) - cw.models.digits.MEAN) / cw.models.digits.STD
    acts, a = [], x
    for name, pool in (("conv1_op", 0), ("conv2_op", 1), ("conv3_op", 1), ("conv4_op", 0)):
        k, b = p[name]
        acts.append(a)
        a = np.maximum(_patches(a) @ k.reshape(-1, k.shape[-1]) + b, 0)
        if pool:
            acts.append(a)
            a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, -1).max(axis=(1, 3))
    a4 = a
    pooled = a4.mean(axis=(0, 1))
    h = np.maximum(pooled @ p["fc1_op"][0] + p["fc1_op"][1], 0)
    logits = h @ p["logits_op"][0] + p["logits_op"][1]
    r = np.eye(10)[target] * logits[target]
    r = _by_rule("epsilon", h, *p["logits_op"], r, eps)
    r = _by_rule("epsilon", pooled, *p["fc1_op"], r, eps)
    total = a4.sum(axis=(0, 1))
    r = a4 * np.where(total == 0, 0, r / np.where(total == 0, 1, total))  # mean pool: shares by value
    for name, pool in (("conv4_op", 0), ("conv3_op", 1), ("conv2_op", 1), ("conv1_op", 0)):
        k, b = p[name]
        if pool:  # max-pool: winner takes all (the first maximum of each window)
            before = acts.pop()
            hh, ww, c = before.shape
            windows = before.reshape(hh // 2, 2, ww // 2, 2, c).transpose(0, 2, 4, 1, 3)
            windows = windows.reshape(hh // 2, ww // 2, c, 4)
            win = np.eye(4)[windows.argmax(-1)] * r[..., None]
            r = win.reshape(hh // 2, ww // 2, c, 2, 2).transpose(0, 3, 1, 4, 2).reshape(hh, ww, c)
        at[name[:-3]] = r  # the relevance at the conv layer's output
        a = acts.pop()
        rule = first_rule if name == "conv1_op" else conv_rule
        patches = _patches(np.ones_like(a) if rule == "flat" else a)
        r = _unpatch(_by_rule(rule, patches, k.reshape(-1, k.shape[-1]), b, r, eps), a.shape[-1])
    return r, logits[target]


@pytest.fixture(scope="module")
def digits():
    data = cw.data.digits()
    return cw.load("digits-cnn"), data.images[:2], data.labels[:2]


@pytest.mark.parametrize(
    "composite, conv_rule, first_rule, eps",
    [("epsilon", "epsilon", "epsilon", 0.01), ("epsilon-plus-flat", "zplus", "flat", 1e-6)],
)
def test_digits_relevance_equals_a_hand_written_lrp(digits, composite, conv_rule, first_rule, eps):
    probe, images, labels = digits
    result = cw.saliency(probe, images, "lrp", labels, composite=composite, epsilon=eps)
    params = jax.tree_util.tree_map(np.asarray, probe.variables["params"])
    for i, label in enumerate(labels):
        expected, logit = _hand_lrp(params, images[i], label, conv_rule, first_rule, eps)
        assert result.scores[i] == pytest.approx(logit, rel=1e-5)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(result.attributions[i], expected, atol=1e-5 * scale)
        np.testing.assert_allclose(result.maps[i], expected.sum(-1), atol=1e-5 * scale)


def test_saliency_lrp_maps_and_errors(digits):
    probe, images, labels = digits
    for composite in lrp.COMPOSITES:
        result = cw.saliency(probe, images, "lrp", composite=composite)
        assert result.maps.shape == (2, 32, 32) and result.attributions.shape == (2, 32, 32, 1)
        assert np.isfinite(result.maps).all() and result.method == "lrp"
    unit = cw.saliency(probe, images, "lrp", ("conv3", 5))  # z⁺ and flat ignore biases: conserved
    np.testing.assert_allclose(unit.maps.sum((1, 2)), unit.scores, rtol=1e-4)
    with pytest.raises(ValueError, match="Unknown LRP composite 'plus'; valid: epsilon, epsilon-plus-flat"):
        cw.saliency(probe, images, "lrp", composite="plus")
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        cw.saliency(probe, images, "lrp", epsilon=-1)
    assert "lrp" in cw.SALIENCY_METHODS and method_options("lrp") == ["composite", "epsilon", "gamma"]


def test_a_jitted_block_called_twice_is_the_first_layer_once():
    k = jnp.asarray(RNG.normal(size=(3, 3, 2, 2)).astype(np.float32))
    block = jax.jit(lambda x: jax.nn.relu(_conv(x, k)))  # one jaxpr for both calls
    f = lambda x: block(block(x)).sum()  # noqa: E731
    bodies = [e.params["jaxpr"] for e in jax.make_jaxpr(f)(X).eqns if e.primitive.name in ("pjit", "jit")]
    assert len(bodies) == 2 and bodies[0] is bodies[1]
    zero = lrp.epsilon_rule(0.0)
    r = jax.grad(lrp.lrp(f, lrp.by_kind(zero, zero, lrp.flat_rule())))(X)
    assert float(r.sum()) == pytest.approx(float(f(X)), rel=1e-5)
