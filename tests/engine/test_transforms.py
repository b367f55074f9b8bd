import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnvis_widgets.engine import transforms as T

PATTERN = jnp.arange(2 * 9 * 9 * 3, dtype=jnp.float32).reshape(2, 9, 9, 3) / (2 * 9 * 9 * 3)


def test_identities():
    key = jax.random.key(0)
    for t in [
        T.identity(),
        T.jitter(0),
        T.random_scale((1.0,)),
        T.random_rotate((0.0,)),
        T.compose(),
        T.compose(T.pad(2), T.center_crop(9)),
    ]:
        np.testing.assert_allclose(t(key, PATTERN), PATTERN, atol=1e-6)


def test_jitter_is_an_integer_shift_of_the_reflect_padded_image():
    d = 2
    padded = np.pad(np.asarray(PATTERN), ((0, 0), (d, d), (d, d), (0, 0)), mode="reflect")
    windows = {
        (oy, ox): padded[:, oy : oy + 9, ox : ox + 9] for oy in range(2 * d + 1) for ox in range(2 * d + 1)
    }
    t = jax.jit(T.jitter(d))
    seen = set()
    for key in jax.random.split(jax.random.key(1), 12):
        out = np.asarray(t(key, PATTERN))
        for b in range(2):  # one draw per image
            match = [o for o, w in windows.items() if np.array_equal(w[b], out[b])]
            assert len(match) == 1
            seen.add(match[0])
            sy, sx = d - match[0][0], d - match[0][1]  # the shift, as np.roll sees it
            rolled = np.roll(np.asarray(PATTERN[b]), (sy, sx), axis=(0, 1))
            rows, cols = slice(max(sy, 0), 9 + min(sy, 0)), slice(max(sx, 0), 9 + min(sx, 0))
            np.testing.assert_array_equal(out[b][rows, cols], rolled[rows, cols])
    assert len(seen) > 5  # many different offsets across keys and images


def test_draws_are_uniform_over_the_offsets_and_the_choices():
    # one uniform number per image and draw, mapped to an index: every offset of a jitter and
    # every zoom and angle of an affine comes up equally often (counted on 6000 images)
    d, n = 2, 6000
    column = jnp.broadcast_to(jnp.arange(9.0)[None, None, :, None], (n, 9, 9, 1))  # value = column
    shifted = np.asarray(jax.jit(T.jitter(d))(jax.random.key(3), column))
    # reflect padding by d, then a window at offset ox: output column 2 reads input column ox
    counts = np.bincount(shifted[:, 4, 2, 0].astype(int), minlength=2 * d + 1)[: 2 * d + 1]
    assert counts.sum() == n and np.all(np.abs(counts / (n / (2 * d + 1)) - 1) < 0.1), counts
    dot = jnp.zeros((n, 9, 9, 1)).at[:, 4, 6, 0].set(1.0)
    rotated = np.asarray(jax.jit(T.random_rotate((0.0, 90.0, 180.0)))(jax.random.key(4), dot))
    where = np.stack([rotated[:, 4, 6, 0], rotated[:, 6, 4, 0], rotated[:, 4, 2, 0]], 1) > 0.999
    assert np.all(where.sum(1) == 1)  # each image is turned by exactly one of the angles
    assert np.all(np.abs(where.sum(0) / (n / 3) - 1) < 0.1), where.sum(0)


def test_pad_and_center_crop():
    out = T.pad(3, 0.5)(None, PATTERN)
    assert out.shape == (2, 15, 15, 3)
    assert float(out[:, :3].min()) == 0.5 and float(out[:, :, -3:].max()) == 0.5
    np.testing.assert_array_equal(T.center_crop((9, 9))(None, out), PATTERN)
    reflected = T.pad(1)(None, PATTERN)
    np.testing.assert_array_equal(reflected[:, 0, 1:-1], PATTERN[:, 1])
    with pytest.raises(ValueError, match="needs larger images"):
        T.center_crop(12)(None, PATTERN)


def test_scale_and_rotate_known_values():
    image = jnp.zeros((1, 9, 9, 1)).at[0, 4, 6, 0].set(1.0)
    # (rotate by 90 degrees, zoom by 2) in one compiled call
    rotated, zoomed = jax.jit(lambda k, x: (T.random_rotate((90.0,))(k, x), T.random_scale((2.0,))(k, x)))(
        jax.random.key(0), image
    )
    # rotating by 90 degrees moves the dot to another quarter position, exactly
    np.testing.assert_allclose(float(rotated.sum()), 1.0, atol=1e-5)
    assert float(rotated[0, 4, 6, 0]) < 1e-5 and float(rotated.max()) > 0.999
    # zoom x2 about the centre (4, 4): the dot at column 6 appears spread around column 8
    np.testing.assert_allclose(zoomed[0, 4, :, 0], [0, 0, 0, 0, 0, 0, 0, 0.5, 1.0], atol=1e-6)


def test_affine_is_one_resampling_of_scale_then_rotate():
    """A smooth ramp survives bilinear sampling exactly: random_affine(s, a) samples it where a
    zoom by s then a rotation by a would, computed independently with numpy."""
    yy, xx = np.meshgrid(np.arange(17.0), np.arange(17.0), indexing="ij")
    ramp = (0.02 * yy + 0.03 * xx)[None, :, :, None].astype(np.float32)
    out = np.asarray(T.random_affine((1.25,), (30.0,))(jax.random.key(0), jnp.asarray(ramp)))
    a, s, c = np.deg2rad(30.0), 1.25, 8.0
    # output pixel p samples the input at R(a) (p - c) / s + c
    src_y = (np.cos(a) * (yy - c) - np.sin(a) * (xx - c)) / s + c
    src_x = (np.sin(a) * (yy - c) + np.cos(a) * (xx - c)) / s + c
    expected = 0.02 * src_y + 0.03 * src_x
    inside = (src_y >= 0) & (src_y <= 16) & (src_x >= 0) & (src_x <= 16)
    assert inside.sum() > 150
    np.testing.assert_allclose(out[0, ..., 0][inside], expected[inside], atol=1e-5)
    # and it equals the two-step version up to the second resampling's blur (~0 on a ramp)
    two_step = T.compose(T.random_scale((1.25,)), T.random_rotate((30.0,)))(
        jax.random.key(0), jnp.asarray(ramp)
    )
    core = np.zeros_like(inside)
    core[5:12, 5:12] = True
    np.testing.assert_allclose(out[0, ..., 0][core], np.asarray(two_step)[0, ..., 0][core], atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: T.jitter(2),
        lambda: T.random_scale((0.9, 1.1, 1.2)),
        lambda: T.random_rotate((-10.0, 10.0, 20.0)),
        lambda: T.random_affine((0.9, 1.1), (-10.0, 10.0)),
        lambda: T.standard_transforms(9),
    ],
)
def test_keys_shapes_vmap_jit(make):
    t = make()
    keys = jax.random.split(jax.random.key(0), 8)
    run = jax.jit(jax.vmap(t, in_axes=(0, None)))
    outs = run(keys, PATTERN)
    assert outs.shape == (8,) + PATTERN.shape
    distinct = {np.asarray(o).tobytes() for o in outs}
    assert len(distinct) > 1  # each vmapped element draws with its own key
    np.testing.assert_array_equal(run(keys[::-1], PATTERN)[-1], outs[0])  # reproducible


def test_standard_transforms_keep_a_non_square_shape():
    x = jnp.full((2, 20, 30, 3), 0.25)  # non-square; square 9x9 is tested above
    out = jax.jit(T.standard_transforms((20, 30)))(jax.random.key(3), x)
    assert out.shape == x.shape
    assert 0.0 <= float(out.min()) and float(out.max()) <= 0.5  # grey padding may show


def test_errors():
    with pytest.raises(ValueError, match="jitter needs d >= 0"):
        T.jitter(-1)
    with pytest.raises(ValueError, match="positive scales"):
        T.random_scale((1.0, 0.0))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        T.jitter(1)(jax.random.key(0), PATTERN[0])


def _linear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Bilinear (half-pixel centres, edge-clamped) interpolation as an (n_out, n_in) matrix, in numpy."""
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        lo = int(np.floor(x))
        hi = min(lo + 1, n_in - 1)
        a[i, lo] += 1 - (x - lo)
        a[i, hi] += x - lo
    return a


def test_resize_upsamples_bilinearly_and_its_gradient_is_the_transpose():
    """resize(x) = A_h x A_w^T per channel with A the interpolation matrix built above, so the
    gradient of <w, resize(x)> is A_h^T w A_w: both checked against numpy."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 6, 8, 3)).astype(np.float32)
    w = rng.normal(size=(2, 15, 20, 3)).astype(np.float32)
    t = T.resize((15, 20))
    a_h, a_w = _linear_matrix(15, 6), _linear_matrix(20, 8)
    expected = np.einsum("ij,bjkc,lk->bilc", a_h, x, a_w)
    np.testing.assert_allclose(np.asarray(t(jax.random.key(0), jnp.asarray(x))), expected, atol=1e-5)
    grad = jax.grad(lambda v: jnp.sum(t(jax.random.key(0), v) * w))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(grad), np.einsum("ij,bilc,lk->bjkc", a_h, w, a_w), atol=1e-4)
    np.testing.assert_array_equal(T.resize(6)(None, x[:, :6, :6]), x[:, :6, :6])  # same size: unchanged
    with pytest.raises(ValueError, match="positive size"):
        T.resize(0)


def test_lucid_ranges_are_lucids():
    """Lucid/Lucent's standard transforms: zooms 0.9..1.1 in steps of 0.02, rotations -10..10 with 0 likelier."""
    np.testing.assert_allclose(T.LUCID_ZOOMS, np.round(np.arange(0.9, 1.1001, 0.02), 6), atol=1e-9)
    assert sorted(set(T.LUCID_ANGLES)) == list(range(-10, 11)) and T.LUCID_ANGLES.count(0) == 6


def test_affine_shifts_move_by_whole_pixels_within_their_range_with_grey_beyond():
    """Without zoom or rotation, ``shifts=(d1, d2)`` moves each image by a whole number of pixels
    in [-(d1 + d2), d1 + d2] per axis, filling with ``cval``: checked against numpy shifts."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0.0, 0.4, (1, 9, 11, 2)).astype(np.float32)
    t = jax.jit(T.random_affine((1.0,), (0.0,), "constant", shifts=(2, 1), cval=0.5))

    def shifted(dy, dx):
        padded = np.pad(image[0], ((3, 3), (3, 3), (0, 0)), constant_values=0.5)
        return padded[3 + dy : 3 + dy + 9, 3 + dx : 3 + dx + 11]

    offsets = set()
    for seed in range(60):
        out = np.asarray(t(jax.random.key(seed), jnp.asarray(image)))[0]
        match = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if np.allclose(out, shifted(dy, dx), atol=1e-6)]
        assert match, f"seed {seed}: not a whole-pixel shift within 3 pixels"
        offsets.add(match[0])
    ys, xs = {o[0] for o in offsets}, {o[1] for o in offsets}
    assert min(ys) < 0 < max(ys) and min(xs) < 0 < max(xs), offsets


def test_standard_transforms_is_one_resampling_with_a_grey_border():
    """A smooth ramp is sampled exactly where one zoom/rotation plus whole-pixel shifts puts it:
    every output pixel inside the image equals the ramp at an affine map of its position (so a
    plane fit has no residual), and pixels mapped outside are grey."""
    yy, xx = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="ij")
    ramp = (0.1 + 0.01 * yy + 0.012 * xx)[None, :, :, None].astype(np.float32)
    t = jax.jit(T.standard_transforms(32, zooms=(0.8,), angles=(20.0,)))
    for seed in range(4):
        out = np.asarray(t(jax.random.key(seed), jnp.asarray(ramp)))[0, ..., 0]
        grey = np.isclose(out, 0.5, atol=1e-6)
        assert grey[0].any() or grey[-1].any() or grey[:, 0].any()  # zoomed out 0.8: border shows
        core = np.zeros_like(grey)
        core[8:24, 8:24] = True  # far from the border: ramp values only
        design = np.stack([yy[core], xx[core], np.ones(core.sum())], axis=1)
        coef, *_ = np.linalg.lstsq(design, out[core], rcond=None)
        np.testing.assert_allclose(design @ coef, out[core], atol=1e-5)
        # the plane's slope is the ramp's, rotated by 20 degrees and scaled by 1 / 0.8
        assert np.isclose(np.hypot(coef[0], coef[1]), np.hypot(0.01, 0.012) / 0.8, rtol=1e-3)
