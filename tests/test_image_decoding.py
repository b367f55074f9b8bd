"""Reading users' images (issue 19): a pixel limit checked on the header before decoding, every
PIL mode read by what its values mean, user strings shown as text in the widgets' HTML, and
uploads that never replace an image. Every input is made here, small."""

from __future__ import annotations

import io
import struct
import types
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets import cli, data
from cnnvis_widgets.widgets.controls import ImagePicker, LayerSlider

MARKUP = "<img src=x onerror=alert(document.domain)>"


def _png_header(width: int, height: int) -> bytes:
    """A grayscale PNG declaring width x height that holds one row of pixels: the header is
    valid, decoding fails (truncated). A loader that decodes before checking the size says so."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    stream = zlib.compressobj()
    rows = stream.compress(bytes(width + 1)) + stream.flush(zlib.Z_SYNC_FLUSH)  # one row, stream unended
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _picker(**images) -> ImagePicker:
    """An ImagePicker over ``images`` for a stand-in model taking 8x8 RGB (no model needed)."""
    return ImagePicker(types.SimpleNamespace(input_shape=(8, 8, 3)), images=images)


def _upload(picker: ImagePicker, name: str, content: bytes) -> None:
    """What the browser sends when a file is chosen (ipywidgets 8's FileUpload state)."""
    item = dict(name=name, type="image/png", size=len(content), content=memoryview(content), last_modified=0)
    picker.upload.set_state({"value": [item]})


# ------------------------------------------------------------------ 6: size limit before decoding
@pytest.mark.parametrize(
    "width, height, size",
    [
        (8000, 8000, "8000x8000 pixels (64 megapixels)"),  # under Pillow's limits: only ours
        (12000, 12000, "12000x12000 pixels (144 megapixels)"),  # Pillow warns (DecompressionBombWarning)
        (20000, 20000, "400 megapixels"),  # Pillow refuses in Image.open (DecompressionBombError)
    ],
)
def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path, width, height, size):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's bomb warning must not escape either
        for read in (lambda: data.load_image(path), lambda: data.decode_image(path.read_bytes(), "big.png")):
            with pytest.raises(ValueError, match="limit of 50 megapixels") as err:
                read()
            assert size in str(err.value) and "big.png" in str(err.value)


def test_the_limit_holds_for_uploads_and_the_command_line(tmp_path, capsys):
    picker = _picker(chelsea=np.zeros((8, 8, 3)))
    _upload(picker, "big.png", _png_header(12000, 12000))
    assert "12000x12000 pixels" in picker.message.value and "limit of 50 megapixels" in picker.message.value
    assert picker.names == ["chelsea"] and picker.value == "chelsea"
    for width, size in ((12000, "12000x12000 pixels"), (20000, "400 megapixels")):
        path = tmp_path / f"big{width}.png"
        path.write_bytes(_png_header(width, width))
        assert cli.main(["maps", "--image", str(path), "--out", str(tmp_path / "maps.png")]) == 2
        err = capsys.readouterr().err
        assert size in err and "limit of 50 megapixels" in err and "Traceback" not in err


def test_the_limit_is_one_number_for_files_bytes_and_pil_images(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 12)
    at_limit, over = Image.new("L", (4, 3), 128), Image.new("L", (4, 4), 128)
    (tmp_path / "ok.png").write_bytes(_encoded(at_limit))
    (tmp_path / "over.png").write_bytes(_encoded(over))
    assert data.load_image(tmp_path / "ok.png").shape == (3, 4, 3)
    with pytest.raises(ValueError, match=r"Cannot read 'head.png' as an image \(image file is truncated"):
        data.decode_image(_png_header(4, 3), "head.png")  # within the limit, so decoded: it fails there
    for read in (
        lambda: data.load_image(tmp_path / "over.png"),
        lambda: data.decode_image(_encoded(over)),
        lambda: data.to_float_image(over),
    ):
        with pytest.raises(ValueError, match=r"4x4 pixels \(1.6e-05 megapixels\), over the limit of 1.2e-05"):
            read()


# ------------------------------------------------------------------ 7: modes read by their meaning
def test_16_bit_images_are_scaled_by_65535(tmp_path):
    ramp = np.linspace(0, 65535, 8).astype(np.uint16)[None].repeat(2, axis=0)
    (tmp_path / "ramp.png").write_bytes(_encoded(Image.fromarray(ramp)))  # mode I;16
    img = data.load_image(tmp_path / "ramp.png")
    assert img.shape == (2, 8, 3)
    np.testing.assert_allclose(img[0, :, 0], ramp[0] / 65535, atol=1e-6)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    # 32-bit integer ('I'): as 16-bit within 0..65535, else stretched from its own range
    within = Image.fromarray(np.array([[0, 30000, 65535]], np.int32))
    np.testing.assert_allclose(data.decode_image(_encoded(within, "TIFF"))[0, :, 0], [0, 30000 / 65535, 1])
    beyond = Image.fromarray(np.array([[-100, 0, 299900]], np.int32))
    np.testing.assert_allclose(data.decode_image(_encoded(beyond, "TIFF"))[0, :, 0], [0, 1 / 3000, 1])


def test_float_images_are_taken_as_is_in_unit_range_else_stretched(tmp_path):
    unit = np.linspace(0, 1, 5, dtype=np.float32)[None]
    (tmp_path / "unit.tif").write_bytes(_encoded(Image.fromarray(unit), "TIFF"))  # mode F
    np.testing.assert_allclose(data.load_image(tmp_path / "unit.tif")[0, :, 0], unit[0], atol=1e-7)
    half = (unit * 0.5 + 0.25).astype(np.float32)  # in [0, 1]: not stretched
    np.testing.assert_allclose(data.decode_image(_encoded(Image.fromarray(half), "TIFF"))[0, :, 0], half[0])
    wide = Image.fromarray(np.array([[-2.0, 0.0, 6.0]], np.float32))
    np.testing.assert_allclose(data.decode_image(_encoded(wide, "TIFF"))[0, :, 0], [0, 0.25, 1])
    with pytest.raises(ValueError, match="nan.tif: image contains NaN"):
        data.decode_image(_encoded(Image.fromarray(np.array([[0, np.nan]], np.float32)), "TIFF"), "nan.tif")


def test_palette_images_are_read_through_their_palette(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
    colours = np.array([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]], np.float32)
    np.testing.assert_array_equal(data.to_float_image(im), colours)  # a PIL image, not its indices
    np.testing.assert_array_equal(data.fit_to(im, (2, 2, 3), crop=False)[0], colours)
    im.info["transparency"] = bytes([0, 0, 255, 255])  # two see-through entries: alpha dropped
    (tmp_path / "p.png").write_bytes(_encoded(im))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when such a palette goes straight to RGB
        np.testing.assert_array_equal(data.load_image(tmp_path / "p.png"), colours)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: shown rotated 90° clockwise
    content = _encoded(Image.fromarray(pixels), exif=exif)
    (tmp_path / "phone.png").write_bytes(content)
    upright = np.rot90(pixels, k=-1) / 255
    np.testing.assert_allclose(data.load_image(tmp_path / "phone.png"), upright, atol=1e-7)
    np.testing.assert_allclose(data.decode_image(content), upright, atol=1e-7)


def test_alpha_is_dropped_as_for_arrays(tmp_path):
    rgba = np.array([[[200, 100, 50, 0], [10, 20, 30, 255]]], np.uint8)
    (tmp_path / "a.png").write_bytes(_encoded(Image.fromarray(rgba)))
    np.testing.assert_allclose(data.load_image(tmp_path / "a.png"), rgba[..., :3] / 255, atol=1e-7)
    np.testing.assert_allclose(data.to_float_image(rgba), rgba[..., :3] / 255, atol=1e-7)


def test_masked_arrays_with_masked_pixels_are_refused():
    values = np.full((4, 4, 3), 0.5)
    masked = np.ma.masked_array(values, mask=values * 0)
    masked[1, 2] = np.ma.masked
    for read in (lambda: data.to_float_image(masked), lambda: data.fit_to(masked, (4, 4, 3))):
        with pytest.raises(ValueError, match=r"masked array with 3 masked values; fill them first"):
            read()
    nothing_masked = np.ma.masked_array(values, mask=False)
    np.testing.assert_array_equal(data.to_float_image(nothing_masked), values.astype(np.float32))


# ------------------------------------------------------------------ 10: user strings as text
def test_upload_errors_show_the_file_name_as_text():
    picker = _picker(chelsea=np.zeros((8, 8, 3)))
    _upload(picker, f"{MARKUP}.png", b"not an image")
    shown = picker.message.value
    assert "Cannot read" in shown and "&lt;img src=x onerror=alert(document.domain)&gt;.png" in shown, shown
    assert "<img" not in shown


def test_layer_names_from_a_users_model_are_shown_as_text():
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    import cnnvis_widgets as cw
    from cnnvis_widgets.widgets.filters import FilterExplorer
    from cnnvis_widgets.widgets.weights import WeightsView

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(2, (3, 3), name=MARKUP)(x))
            return nn.Dense(2)(x.mean((1, 2)))

    probe = cw.Probe(Net(), Net().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), input_shape=(8, 8, 3))
    shown = [LayerSlider(probe, value=MARKUP).label.value]
    views = [
        WeightsView(probe, autorun=False),
        FilterExplorer(probe, layer=MARKUP, filters="0:2", steps=2, autorun=False),
    ]
    try:
        for view in views:
            view.status.observe(lambda change: shown.append(change["new"]), "value")
            view.run()
            assert view.wait(60)
    finally:
        for view in views:
            view.close()
    assert len(shown) >= 4 and all("&lt;img src=x" in text and "<img" not in text for text in shown), shown


# ------------------------------------------------------------------ 11: uploads keep their own names
def test_uploads_never_replace_an_image_and_unnamed_ones_get_a_name():
    picker = _picker(chelsea=np.zeros((8, 8, 3)))
    white, grey = (_encoded(Image.new("RGB", (8, 8), (v, v, v))) for v in (255, 128))
    _upload(picker, "chelsea", white)
    _upload(picker, "chelsea", grey)
    _upload(picker, "", white)
    _upload(picker, "  ", grey)
    assert picker.names == ["chelsea", "chelsea (upload)", "chelsea (upload 2)", "upload 1", "upload 2"]
    assert picker.value == "upload 2" and picker.message.value == ""
    images = picker.images
    assert images["chelsea"].max() == 0  # the bundled image is still there, untouched
    assert images["chelsea (upload)"].min() == 1 and np.allclose(images["chelsea (upload 2)"], 128 / 255)
