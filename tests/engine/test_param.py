import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnvis_widgets.engine import param

PARAMS = {
    'pixel': param.pixel(),
    'pixel_decorrelated': param.pixel(decorrelate=True),
    'fourier': param.fourier(),
    'fourier_plain': param.fourier(decorrelate=False),
}


@pytest.mark.parametrize('name', sorted(PARAMS))
@pytest.mark.parametrize('shape', [(1, 8, 8, 1), (2, 8, 6, 3), (1, 7, 7, 3)])
def test_shapes_and_range(name, shape):
  p = PARAMS[name]
  images = p.to_image(p.init(jax.random.key(0), shape))
  assert images.shape == shape and images.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


@pytest.mark.parametrize('name', sorted(PARAMS))
@pytest.mark.parametrize('channels', [1, 3])
def test_from_image_inverts_to_image(name, channels):
  p = PARAMS[name]
  target = jax.random.uniform(jax.random.key(1), (2, 8, 8, channels), minval=0.05, maxval=0.95)
  np.testing.assert_allclose(p.to_image(p.from_image(target)), target, atol=1e-4)
  images = p.to_image(p.init(jax.random.key(2), (2, 8, 8, channels)))
  np.testing.assert_allclose(p.to_image(p.from_image(images)), images, atol=1e-4)


def test_pixel_clips_values_but_passes_gradients():
  p = param.pixel()
  params = jnp.array([-0.5, 0.3, 1.7]).reshape(1, 1, 3, 1)
  np.testing.assert_allclose(p.to_image(params).ravel(), [0.0, 0.3, 1.0])
  grad = jax.grad(lambda q: jnp.sum(p.to_image(q) * jnp.arange(1.0, 4.0).reshape(1, 1, 3, 1)))
  np.testing.assert_allclose(grad(params).ravel(), [1.0, 2.0, 3.0])
  np.testing.assert_allclose(p.from_image(p.to_image(params)).ravel(), [0.0, 0.3, 1.0])


def test_pixel_init_is_grey_plus_noise():
  images = param.pixel(sd=0.01).to_image(param.pixel(sd=0.01).init(jax.random.key(0),
                                                                    (1, 16, 16, 3)))
  assert abs(float(images.mean()) - 0.5) < 0.005 and 0.005 < float(images.std()) < 0.02


def _low_frequency_fraction(images):
  x = np.asarray(images[0, ..., 0], np.float64)
  power = np.abs(np.fft.fft2(x - x.mean())) ** 2
  f = np.hypot(*np.meshgrid(np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1]),
                            indexing='ij'))
  return power[f < 0.25].sum() / power.sum()


def test_fourier_init_has_most_energy_in_low_frequencies():
  shape = (1, 32, 32, 1)
  fourier = param.fourier()
  spectral = fourier.to_image(fourier.init(jax.random.key(0), shape))
  white = param.pixel().to_image(param.pixel().init(jax.random.key(0), shape))
  assert _low_frequency_fraction(spectral) > 0.6
  assert _low_frequency_fraction(white) < 0.4


def test_fourier_rejects_ambiguous_width():
  with pytest.raises(ValueError, match='even width'):
    param.fourier().init(jax.random.key(0), (1, 8, 7, 3))
  with pytest.raises(ValueError, match=r'\(B, H, W, C\)'):
    param.pixel().init(jax.random.key(0), (8, 8, 3))


def test_color_decorrelation_round_trip():
  t = jax.random.normal(jax.random.key(0), (5, 3))
  np.testing.assert_allclose(param.rgb_to_decorrelated(param.decorrelated_to_rgb(t)), t,
                             atol=1e-5)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_jit_and_vmap(name):
  p = PARAMS[name]
  shape = (1, 8, 8, 3)
  keys = jax.random.split(jax.random.key(0), 4)
  init = jax.jit(jax.vmap(lambda k: p.init(k, shape)))
  params = init(keys)
  images = jax.jit(jax.vmap(p.to_image))(params)
  assert images.shape == (4,) + shape
  assert not np.allclose(images[0], images[1])  # each key its own draw
  back = jax.jit(jax.vmap(p.from_image))(images)
  np.testing.assert_allclose(jax.vmap(p.to_image)(back), images, atol=1e-4)
  loss = lambda q: jnp.sum(jax.vmap(p.to_image)(q) ** 2)
  assert np.all(np.isfinite(np.asarray(jax.tree.leaves(jax.jit(jax.grad(loss))(params))[0])))
