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


# ------------------------------------------------------------------------------ MACO
def _spectrum_of(images, decorrelate=True):
    """|rfft2| of the parameterization's space (logit, decorrelated), per image and channel."""
    x = np.clip(np.asarray(images, np.float64), 1e-4, 1 - 1e-4)
    t = np.log(x) - np.log1p(-x)
    if decorrelate:
        t = t @ np.linalg.inv(np.asarray(param._COLOR_MATRIX, np.float64)).T
    return np.abs(np.fft.rfft2(np.moveaxis(t, -1, 1), norm="ortho"))  # (B, C, H, W//2+1)


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 24, 40, 3), (1, 16, 16, 1)])
def test_maco_holds_the_magnitude_fixed_exactly(shape):
    """Whatever the phases (random, or after an optimizer moved them), the image's spectrum is the
    template resampled to its size, up to one scale per image (standardization) and the DC bins."""
    p = param.maco()
    template = param._magnitude_at(param.load_natural_spectrum(), shape[1], shape[2], shape[3])
    phases = p.init(jax.random.key(0), shape)
    moved = phases + jax.grad(lambda q: jnp.sum(p.to_image(q)[..., 0] ** 3))(phases) * 50.0
    for params in (phases, moved):
        spectrum = _spectrum_of(p.to_image(params), decorrelate=shape[-1] == 3)
        for b in range(shape[0]):
            ratio = spectrum[b] / template
            ratio[:, 0, 0] = np.nan  # the DC bins: the mean is removed over all channels
            scale = np.nanmedian(ratio)
            np.testing.assert_allclose(ratio[~np.isnan(ratio)], scale, rtol=2e-3)


def test_maco_from_image_keeps_phases():
    p = param.maco()
    params = p.init(jax.random.key(1), (1, 16, 16, 3))
    again = p.from_image(p.to_image(params))
    # the same angles up to multiples of 2 pi, once the columns of conjugate pairs are made odd
    # (to_image does that first); the DC bins lose their phase to the mean's removal
    expected = param._conjugate_symmetric(params, 16)
    diff = np.angle(np.exp(1j * (np.asarray(again) - np.asarray(expected))))
    diff[:, :, 0, 0] = 0.0
    assert np.abs(diff).max() < 1e-3


def test_natural_spectrum_is_the_bundled_photos_spectrum():
    """The shipped array is what natural_spectrum computes from the bundled photos, and it falls
    with frequency like a natural image's (about 1/f)."""
    from cnnvis_widgets import data

    shipped = param.load_natural_spectrum()
    computed = param.natural_spectrum([data.photo(name) for name in data.PHOTOS])
    np.testing.assert_allclose(shipped, computed, rtol=1e-4, atol=1e-5)
    freqs = param.rfft2d_freqs(128, 128)
    low, high = (freqs > 0) & (freqs < 0.05), freqs > 0.4
    assert shipped[:, low].mean() > 10 * shipped[:, high].mean()


def test_maco_errors():
    with pytest.raises(ValueError, match=r"\(3, n, n//2\+1\)"):
        param.maco(np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="square images or an even width"):
        param.maco().init(jax.random.key(0), (1, 8, 7, 3))
