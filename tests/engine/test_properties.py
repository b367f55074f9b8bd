"""Property-based tests (hypothesis) over the shapes and arguments the engine accepts (issue #10).

Each property holds for every generated input: a valid input gives a result of the documented
shape and range, an invalid one a ValueError/TypeError that names the argument, never another
exception or a silently wrong result. Few examples and small shapes: the engine compiles per shape.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnnvis_widgets as cw
from cnnvis_widgets import data
from cnnvis_widgets.engine import ascent, embedding, param, saliency

SETTINGS = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
FEW = settings(max_examples=12, **SETTINGS)
SOME = settings(max_examples=40, **SETTINGS)


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


# ---------------------------------------------------------------- images given to the Probe
@FEW
@given(
    n=st.integers(0, 3),
    h=st.integers(0, 40),
    w=st.integers(0, 40),
    c=st.integers(1, 4),
    ndim=st.sampled_from([2, 3, 4, 5]),
    dtype=st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "complex64"]),
    fill=st.sampled_from([0.0, 0.5, 1.0, 2.0, 255.0, -1.0, np.nan, np.inf]),
)
def test_check_images_accepts_exactly_valid_batches(probe, n, h, w, c, ndim, dtype, fill):
    shape = {2: (h, w), 3: (h, w, c), 4: (n, h, w, c), 5: (n, h, w, c, 1)}[ndim]
    with np.errstate(invalid="ignore"):
        images = np.full(shape, fill).astype(dtype)
    valid_dtype = dtype in ("uint8", "float32", "float64", "int64")
    scaled = np.asarray(images.real if dtype == "complex64" else images, np.float64) / (
        255.0 if dtype == "uint8" else 1.0
    )
    valid = (
        valid_dtype
        and ndim == 4
        and c == 1
        and n > 0
        and min(h, w) > 0
        and bool(np.all(np.isfinite(scaled)))
        and 0 <= scaled.min() <= scaled.max() <= 1
    )
    if valid:
        out = np.asarray(probe.check_images(images))
        assert out.dtype == np.float32 and out.shape == shape
        np.testing.assert_allclose(out, scaled, rtol=1e-6)
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            probe.check_images(images)
        assert any(k in str(info.value) for k in ("Images", "images", "channel", "NaN", "[0, 1]")), info.value


@SOME
@given(st.lists(st.integers(-(10**12), 10**12), max_size=6))
def test_check_units_returns_the_units_or_names_the_valid_range(probe, units):
    channels = probe.layer("conv2").channels
    if units and all(0 <= u < channels for u in units):
        np.testing.assert_array_equal(probe.check_units("conv2", units), units)
    else:
        with pytest.raises(ValueError, match=r"0\.\.31"):
            probe.check_units("conv2", units)


# ---------------------------------------------------------------- arguments of visualize_filters
BAD_COUNTS = st.one_of(
    st.integers(-(10**15), 0),
    st.integers(ascent.MAX_STEPS + 1, 10**15),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
)


@SOME
@given(name=st.sampled_from(["steps", "batch", "snapshot_every", "chunk"]), value=BAD_COUNTS)
def test_bad_counts_of_visualize_filters_name_the_argument(probe, name, value):
    if name in ("snapshot_every", "chunk"):  # None is their default, and any positive count is valid
        assume(
            value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0)
        )
    with pytest.raises((ValueError, TypeError)) as info:
        cw.visualize_filters(probe, "conv1", [0], **{name: value})
    assert name in str(info.value) and repr(value)[:20] in str(info.value)


@SOME
@given(
    size=st.one_of(st.integers(-100, 7), st.tuples(st.integers(-5, 7), st.integers(-5, 7)), st.floats(0, 64))
)
def test_too_small_or_non_integer_sizes_are_refused(probe, size):
    with pytest.raises(ValueError, match="size"):
        cw.visualize_filters(probe, "conv1", [0], size=size)


# ---------------------------------------------------------------- saliency arguments and geometry
@SOME
@given(size=st.integers(1, 64), patch=st.integers(1, 64), stride=st.integers(1, 64))
def test_occlusion_patches_end_at_the_border_and_cover_the_image_unless_strided_apart(size, patch, stride):
    assume(patch <= size)
    starts = saliency._starts(size, patch, stride)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + patch] = True
    assert starts[0] == 0 and starts[-1] == size - patch  # the last patch is aligned with the border
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= stride)
    assert covered.all() == (stride <= patch or size == patch or np.all(np.diff(starts) <= patch))


@SOME
@given(
    method=st.sampled_from(list(cw.SALIENCY_METHODS)),
    option=st.sampled_from(["n_samples", "steps", "patch", "stride", "chunk", "noise", "fill"]),
    value=st.one_of(
        st.integers(-(10**12), 0), st.integers(10**7, 10**12), st.floats(allow_nan=True), st.text(max_size=3)
    ),
)
def test_bad_saliency_options_name_the_option_or_the_valid_ones(probe, method, option, value):
    x = np.full((1, 32, 32, 1), 0.5, np.float32)
    if option not in saliency.method_options(method):
        with pytest.raises(TypeError, match=f"unknown option.*{option}.*its options"):
            cw.saliency(probe, x, method, **{option: value})
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    count = isinstance(value, int) and not isinstance(value, bool)
    valid = {
        "n_samples": count and 1 <= value <= saliency.MAX_LOOP,
        "steps": count and 1 <= value <= saliency.MAX_LOOP,
        "patch": count and 1 <= value <= 32,
        "stride": count and value >= 1,
        "chunk": count and value >= 1,
        "noise": number and np.isfinite(value) and value >= 0,
        "fill": number and 0 <= value <= 1,
    }[option]
    assume(not valid)  # valid values run the method: not what this property is about
    match = "larger than the 32x32 images" if option == "patch" and count and value > 32 else option
    with pytest.raises((ValueError, TypeError), match=match):
        cw.saliency(probe, x, method, **{option: value})


@SOME
@given(
    target=st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(max_size=4),
        st.tuples(st.sampled_from(["conv1", "conv4", "fc1", "nope"]), st.integers(-5, 80)),
    )
)
def test_any_target_resolves_to_valid_units_or_an_error_naming_the_valid_ones(probe, target):
    try:
        spec, units = saliency._resolve_target(probe, target, 2)
    except (ValueError, TypeError) as err:
        assert any(k in str(err) for k in ("valid", "Valid", "Give", "integer", "Unknown")), err
        return
    assert units.shape == (2,) and units.dtype == np.int32
    limit = saliency.num_classes(probe) if spec.layer is None else probe.layer(spec.layer).channels
    assert np.all((units >= -1) & (units < limit))


@SOME
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=4, max_size=4 * 5 * 5).filter(
        lambda v: len(v) % 4 == 0
    )
)
def test_normalized_maps_are_in_0_1_and_constant_maps_are_zero(values):
    maps = np.asarray(values, np.float32).reshape(-1, 2, 2)
    out = saliency.normalize_maps(maps)
    assert out.shape == maps.shape and np.all((out >= 0) & (out <= 1)) and np.isfinite(out).all()
    for m, o in zip(maps, out):
        if m.max() == m.min():
            assert (o == 0).all()


# ---------------------------------------------------------------- parameterizations, data
@settings(max_examples=6, **SETTINGS)  # each new shape compiles the FFTs: ~1 s an example here
@given(
    b=st.just(1),
    h=st.integers(2, 9),
    half_w=st.integers(1, 5),
    c=st.sampled_from([1, 3]),
    kind=st.sampled_from(["pixel", "fourier"]),
)
def test_parameterizations_give_images_of_the_asked_shape_in_0_1_and_invert(b, h, half_w, c, kind):
    import jax

    w = 2 * half_w  # Fourier needs square images or an even width
    par = param.pixel() if kind == "pixel" else param.fourier()
    if kind == "fourier" and h % 2 and w == h - 1:  # same spectrum shape as h x h: refused, not h x h
        with pytest.raises(ValueError, match=f"cannot tell a {h}x{w} image from a {h}x{h} one"):
            par.init(jax.random.key(0), (b, h, w, c))
        return
    params = par.init(jax.random.key(0), (b, h, w, c))
    images = np.asarray(par.to_image(params))
    assert images.shape == (b, h, w, c) and np.all((images >= 0) & (images <= 1))
    again = np.asarray(par.to_image(par.from_image(images)))
    np.testing.assert_allclose(again, images, atol=1e-3)


@FEW
@given(
    h=st.integers(1, 48),
    w=st.integers(1, 48),
    channels=st.sampled_from([None, 1, 3, 4]),
    as_uint8=st.booleans(),
)
def test_fit_to_makes_any_image_a_model_input(probe, h, w, channels, as_uint8):
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(h * 100 + w)
    image = rng.integers(0, 256, shape).astype(np.uint8) if as_uint8 else rng.random(shape).astype(np.float32)
    out = data.fit_to(image, probe)
    assert out.shape == (1, *probe.input_shape) and out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))
    probe.check_images(out)  # and the Probe takes it


# ---------------------------------------------------------------- embeddings
@SOME
@given(
    n=st.integers(1, 30),
    rows=st.integers(1, 8),
    cols=st.integers(1, 8),
    fill=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mosaic_layout_places_each_image_at_most_once_unless_filling(n, rows, cols, fill, seed):
    coords = np.random.default_rng(seed).normal(size=(n, 2))
    layout = embedding.mosaic_layout(coords, (rows, cols), fill=fill)
    assert layout.shape == (rows, cols) and np.all((layout >= -1) & (layout < n))
    if fill:
        assert (layout >= 0).all()
    else:
        placed = layout[layout >= 0]
        assert len(placed) == len(np.unique(placed)) and len(placed) >= 1


@SOME
@given(n=st.integers(2, 25), d=st.integers(1, 6), k=st.integers(-2, 30), seed=st.integers(0, 2**16))
def test_neighbours_exclude_the_query_and_are_nearest_first(n, d, k, seed):
    points = np.random.default_rng(seed).normal(size=(n, d))
    query = seed % n
    if not 1 <= k <= n - 1:
        with pytest.raises(ValueError, match=rf"k={k} is out of range.*valid: 1\.\.{n - 1}"):
            embedding.neighbours(points, query, k=k)
        return
    found = embedding.neighbours(points, query, k=k)
    assert found.indices.shape == (k,) and query not in found.indices
    assert np.all(np.diff(found.distances) >= -1e-6)
    others = np.delete(np.arange(n), query)
    expected = np.sort(np.linalg.norm(points[others] - points[query], axis=1))[:k]
    np.testing.assert_allclose(found.distances, expected, rtol=1e-5, atol=1e-5)
