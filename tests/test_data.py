"""Bundled data and image fitting."""

import numpy as np
import pytest
from PIL import Image

import cnnvis_widgets as cw
from cnnvis_widgets import data


@pytest.mark.parametrize("name", list(data.PHOTOS))
def test_photos_are_float_rgb_in_unit_range(name):
    img = data.photo(name)
    assert img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05


def test_unknown_photo_lists_bundled():
    with pytest.raises(ValueError, match="Unknown photo 'dog'. Bundled photos: chelsea, coffee"):
        data.photo("dog")


def test_digits_upsampled_keep_the_8x8_content():
    d = data.digits(32)
    assert d.images.shape == (1797, 32, 32, 1) and d.labels.shape == (1797,)
    from sklearn.datasets import load_digits

    raw = load_digits().images / 16.0
    # averaging each 4x4 block of the 32x32 image gives back (close to) the 8x8 original
    back = d.images[:, :, :, 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.corrcoef(back.ravel(), raw.ravel())[0, 1] > 0.95


def test_fit_to_crops_resizes_and_converts_channels():
    probe = cw.load("digits-cnn")
    out = data.fit_to(data.photo("coffee"), probe)
    assert out.shape == (1, 32, 32, 1)
    out = data.fit_to([np.zeros((10, 20)), np.ones((40, 20, 3))], (16, 16, 3))
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)


def test_center_crop_takes_the_middle():
    img = np.arange(6 * 10).reshape(6, 10, 1).astype(np.float32)
    crop = data.center_crop(img, 1.0)
    assert crop.shape == (6, 6, 1) and crop[0, 0, 0] == 2


def test_load_image_and_folder(tmp_path):
    arr = (np.random.default_rng(0).random((12, 9, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr[..., 0]).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    img = data.load_image(tmp_path / "a.png")
    np.testing.assert_allclose(img, arr / 255.0, atol=1e-6)
    images, names = data.load_folder(tmp_path)
    assert names == ["a.png", "b.png"] and images[1].shape == (12, 9, 3)


def test_unreadable_images_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match="Cannot read .*bad.jpg.* as an image"):
        data.load_image(bad)
    with pytest.raises(FileNotFoundError, match="No image file"):
        data.load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="NaN"):
        data.to_float_image(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"expected an image of shape"):
        data.to_float_image(np.zeros((4, 4, 5)))
