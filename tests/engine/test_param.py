import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnvis_widgets.engine import param

PARAMS = {
    "pixel": param.pixel(),
    "pixel_decorrelated": param.pixel(decorrelate=True),
    "fourier": param.fourier(),
    "fourier_plain": param.fourier(decorrelate=False),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_shapes_range_and_inverse(name):
    p = PARAMS[name]

    @jax.jit
    def run(key, target):
        images = p.to_image(p.init(key, target.shape))
        return images, p.to_image(p.from_image(images)), p.to_image(p.from_image(target))

    # grayscale, non-square here; RGB in test_jit_and_vmap; odd sizes where they are allowed
    for shape in [(2, 8, 6, 1)] + ([(1, 7, 7, 3)] if "fourier" in name else [(1, 5, 7, 3)]):
        target = np.random.default_rng(1).uniform(0.05, 0.95, shape).astype(np.float32)
        images, images_again, target_again = run(jax.random.key(0), target)
        assert images.shape == shape and images.dtype == jnp.float32
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        np.testing.assert_allclose(images_again, images, atol=1e-4)
        np.testing.assert_allclose(target_again, target, atol=1e-4)


def test_pixel_clips_values_but_passes_gradients():
    p = param.pixel()
    params = jnp.array([-0.5, 0.3, 1.7]).reshape(1, 1, 3, 1)
    np.testing.assert_allclose(p.to_image(params).ravel(), [0.0, 0.3, 1.0])
    grad = jax.grad(lambda q: jnp.sum(p.to_image(q) * jnp.arange(1.0, 4.0).reshape(1, 1, 3, 1)))
    np.testing.assert_allclose(grad(params).ravel(), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(p.from_image(p.to_image(params)).ravel(), [0.0, 0.3, 1.0])


def _low_frequency_fraction(images):
    x = np.asarray(images[0, ..., 0], np.float64)
    power = np.abs(np.fft.fft2(x - x.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1]), indexing="ij"))
    return power[f < 0.25].sum() / power.sum()


def test_fourier_init_has_most_energy_in_low_frequencies():
    shape = (1, 32, 32, 1)
    fourier = param.fourier()
    pixel = param.pixel()
    spectral, white = jax.jit(
        lambda k: (fourier.to_image(fourier.init(k, shape)), pixel.to_image(pixel.init(k, shape)))
    )(jax.random.key(0))
    assert _low_frequency_fraction(spectral) > 0.6
    assert _low_frequency_fraction(white) < 0.4
    assert abs(float(white.mean()) - 0.5) < 0.005 and 0.005 < float(white.std()) < 0.02


def test_fourier_rejects_ambiguous_width():
    with pytest.raises(ValueError, match="even width"):
        param.fourier().init(jax.random.key(0), (1, 8, 7, 3))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        param.pixel().init(jax.random.key(0), (8, 8, 3))


def test_color_decorrelation_round_trip():
    t = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(param.rgb_to_decorrelated(param.decorrelated_to_rgb(t)), t, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_jit_and_vmap(name):
    p = PARAMS[name]
    shape = (1, 8, 8, 3)

    @jax.jit
    def run(keys):
        params = jax.vmap(lambda k: p.init(k, shape))(keys)
        images = jax.vmap(p.to_image)(params)
        again = jax.vmap(p.to_image)(jax.vmap(p.from_image)(images))
        grads = jax.grad(lambda q: jnp.sum(jax.vmap(p.to_image)(q) ** 2))(params)
        return images, again, grads

    images, again, grads = run(jax.random.split(jax.random.key(0), 4))
    assert images.shape == (4,) + shape
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert not np.allclose(images[0], images[1])  # each key its own draw
    np.testing.assert_allclose(again, images, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(grads)))
