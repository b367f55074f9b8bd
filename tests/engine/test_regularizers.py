import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnvis_widgets.engine import regularizers as R

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)  # two 4x4 RGB images
G = RNG.normal(size=X.shape).astype(np.float32)
STEP = jnp.int32(0)


def test_total_variation():
    tv = R.total_variation().penalty
    assert float(tv(jnp.full((1, 4, 4, 1), 0.3))) == 0.0
    # a horizontal ramp 0, 1, 2, 3 (scaled by 0.1): dx = 0.1 everywhere, dy = 0
    ramp = jnp.tile(0.1 * jnp.arange(4.0), (4, 1)).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(tv(ramp), 0.01, rtol=1e-5)
    np.testing.assert_allclose(R.total_variation(beta=1.0).penalty(ramp), 0.1, rtol=1e-5)
    # a single bright pixel at (1, 1) of a 4x4 image, by hand: terms at (0,1), (1,0): 1;
    # at (1,1): dx^2 + dy^2 = 2; all other 6 of the 9 positions 0
    dot = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(1.0)
    np.testing.assert_allclose(tv(dot), (1 + 1 + 2) / 9, rtol=1e-6)
    np.testing.assert_allclose(R.total_variation(beta=1.0).penalty(dot), (1 + 1 + 2**0.5) / 9, rtol=1e-6)
    # against numpy on random data
    x = X.astype(np.float64)
    s = (x[:, :-1, 1:] - x[:, :-1, :-1]) ** 2 + (x[:, 1:, :-1] - x[:, :-1, :-1]) ** 2
    np.testing.assert_allclose(R.total_variation(beta=3.0).penalty(X), np.mean(s**1.5), rtol=1e-5)
    # finite gradient at a flat image even for beta < 2
    g = jax.grad(R.total_variation(beta=1.0).penalty)(jnp.full((1, 4, 4, 1), 0.5))
    assert np.all(np.isfinite(np.asarray(g)))


def test_alpha_norm_lp_bounded_range():
    d = X.astype(np.float64) - 0.5
    np.testing.assert_allclose(R.alpha_norm(alpha=6).penalty(X), np.mean(np.abs(2 * d) ** 6), rtol=1e-5)
    np.testing.assert_allclose(R.lp(p=1).penalty(X), np.mean(np.abs(d)), rtol=1e-5)
    np.testing.assert_allclose(R.lp(p=3).penalty(X), np.mean(np.abs(d) ** 3), rtol=1e-5)
    rms = np.sqrt(np.mean(d**2, axis=-1))
    np.testing.assert_allclose(
        R.bounded_range(bound=0.2).penalty(X), np.mean(np.maximum(rms - 0.2, 0) ** 2), rtol=1e-4
    )
    assert float(R.bounded_range(bound=0.4).penalty(jnp.full((1, 4, 4, 3), 0.8))) == 0.0
    # one pixel fully white in a grey image: r = 0.5, (0.5 - 0.4)^2 / 16 pixels
    white = jnp.full((1, 4, 4, 3), 0.5).at[0, 2, 2].set(1.0)
    np.testing.assert_allclose(R.bounded_range(bound=0.4).penalty(white), 0.01 / 16, rtol=1e-4)
    assert R.lp(p=1).name == "l1"


def test_l2_decay_moves_toward_grey_by_the_factor():
    out = R.l2_decay(0.1).project(X, G, STEP, 0.1)
    np.testing.assert_allclose(out - 0.5, 0.9 * (X - 0.5), atol=1e-6)
    np.testing.assert_allclose(R.l2_decay().project(X, G, STEP, 0.0), X)


def test_gaussian_blur_keeps_mean_reduces_variance_and_waits_for_its_step():
    reg = R.gaussian_blur(sigma=1.0, every=4)
    out = reg.project(X, G, jnp.int32(8), 1.0)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), X.mean(axis=(1, 2)), atol=1e-5)
    assert np.all(np.asarray(out.var(axis=(1, 2))) < X.var(axis=(1, 2)))
    np.testing.assert_array_equal(reg.project(X, G, jnp.int32(5), 1.0), X)
    half = reg.project(X, G, jnp.int32(4), 0.5)
    np.testing.assert_allclose(half, 0.5 * (X + out), atol=1e-6)
    # the separable blur against an independent 2-D convolution with symmetric padding
    k = R.gaussian_kernel(1.0)
    r = len(k) // 2
    p = np.pad(X, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
    ref = sum(k[i] * k[j] * p[:, i : i + 4, j : j + 4] for i in range(len(k)) for j in range(len(k)))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_clip_norm_greys_exactly_the_smallest_pixels():
    reg = R.clip_norm(25)
    assert reg.weight == 0.25
    out = np.asarray(reg.project(X, G, STEP, reg.weight))
    for b in range(2):
        norms = np.linalg.norm(X[b] - 0.5, axis=-1)
        small = norms <= np.sort(norms.ravel())[3]  # the 4 = 25% of 16 smallest
        assert small.sum() == 4
        np.testing.assert_array_equal(out[b][small], 0.5)
        np.testing.assert_array_equal(out[b][~small], X[b][~small])
    np.testing.assert_array_equal(reg.project(X, G, STEP, 0.0), X)
    assert np.all(np.asarray(reg.project(X, G, STEP, 1.0)) == 0.5)


def test_clip_contribution_greys_the_lowest_abs_x_dot_grad():
    reg = R.clip_contribution(50)
    out = np.asarray(reg.project(X, G, STEP, 0.5))
    for b in range(2):
        contribution = np.abs(np.sum((X[b] - 0.5) * G[b], axis=-1))
        small = contribution <= np.sort(contribution.ravel())[7]
        assert small.sum() == 8
        np.testing.assert_array_equal(out[b][small], 0.5)
        np.testing.assert_array_equal(out[b][~small], X[b][~small])


def test_combinators_jit_and_vmap_with_traced_weights():
    regs = [
        R.l2_decay(0.1),
        R.total_variation(2.0),
        R.gaussian_blur(0.7, every=2),
        R.clip_norm(10),
        R.clip_contribution(10),
        R.alpha_norm(0.5),
        R.bounded_range(1.0),
        R.lp(0.3),
    ]
    weights = R.default_weights(regs)
    penalty = jax.jit(lambda w, x: R.apply_penalties(regs, w, x))
    expected = sum(r.weight * float(r.penalty(X)) for r in regs if r.penalty is not None)
    np.testing.assert_allclose(penalty(weights, X), expected, rtol=1e-5)
    assert float(penalty(jnp.zeros(len(regs)), X)) == 0.0  # same compiled function
    project = jax.jit(lambda w, x, g, s: R.apply_projections(regs, w, x, g, s))
    np.testing.assert_array_equal(project(jnp.zeros(len(regs)), X, G, STEP), X)
    batch = jnp.stack([X, 1 - X, X * 0.5])  # vmap over three optimization elements

    @jax.jit
    def batched(w, xs, gs, s):
        out = jax.vmap(lambda x, g: R.apply_projections(regs, w, x, g, s))(xs, gs)
        return out, jax.vmap(jax.grad(lambda x: R.apply_penalties(regs, w, x)))(xs)

    out, grads = batched(weights, batch, jnp.stack([G] * 3), jnp.int32(2))
    assert out.shape == batch.shape
    np.testing.assert_allclose(out[1], project(weights, batch[1], G, jnp.int32(2)), atol=1e-6)
    assert np.all(np.isfinite(np.asarray(grads)))


def test_defaults_and_errors():
    assert [r.name for r in R.default_regularizers(1)] == [r.name for r in R.default_regularizers(3)]
    with pytest.raises(ValueError, match=r"channels in \{1, 3\}, got 4"):
        R.default_regularizers(4)
    with pytest.raises(ValueError, match="sigma > 0"):
        R.gaussian_blur(sigma=0.0)
    with pytest.raises(ValueError, match="every >= 1"):
        R.gaussian_blur(every=0)
