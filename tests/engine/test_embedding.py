"""Embeddings: digits-cnn's features separate the digits; mosaics place real inputs; neighbours."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from sklearn.neighbors import KNeighborsClassifier

import cnnvis_widgets as cw
from cnnvis_widgets.engine import embedding as emb


@pytest.fixture(scope="module")
def probe():
    return cw.load("digits-cnn")


@pytest.fixture(scope="module")
def digits():
    return cw.data.digits()  # all 1797, upsampled to 32x32


@pytest.fixture(scope="module")
def feats(probe, digits):
    return emb.features(probe, digits.images, "fc1")


def split_indices(digits):
    """Indices of cw.data.digits_split()'s train and test images within cw.data.digits()."""
    train, test = cw.data.digits_split()
    flat = digits.images.reshape(len(digits.images), -1)
    where = {row.tobytes(): i for i, row in enumerate(flat)}
    find = lambda ds: np.array([where[row.tobytes()] for row in ds.images.reshape(len(ds.images), -1)])  # noqa: E731
    tr, te = find(train), find(test)
    np.testing.assert_array_equal(digits.labels[te], test.labels)
    return tr, te


# ---------------------------------------------------------------- features
def test_features_default_to_the_penultimate_layer(probe, digits, feats):
    assert emb.penultimate_layer(probe) == "fc1"  # the last layer before 'logits'
    x = digits.images[:300]
    np.testing.assert_allclose(emb.features(probe, x, batch_size=128), feats[:300], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        feats[:300], np.asarray(probe.activations(probe.variables, x, "fc1")), rtol=1e-5
    )
    conv = emb.features(probe, x[:10], "conv4")
    assert conv.shape == (10, 8 * 8 * 64)
    pooled = emb.features(probe, x[:10], "conv4", pool="mean")
    np.testing.assert_allclose(pooled, conv.reshape(10, 64, 64).mean(axis=1), rtol=1e-5, atol=1e-6)


def test_penultimate_layer_of_a_model_that_does_not_list_its_logits():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
            return x.mean(axis=(1, 2)) @ jnp.ones((4, 3))  # logits not from a Dense: not a listed layer

    variables = Net().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    p = cw.Probe(Net(), variables, input_shape=(8, 8, 1))
    assert p.layer_names == ["conv", "conv+act"] and emb.penultimate_layer(p) == "conv+act"  # after its ReLU


# ---------------------------------------------------------------- embeddings
def test_tsne_of_digit_features_separates_the_classes(digits, feats):
    """Fit t-SNE on all 1797; a 5-NN classifier trained on the 2-D points of the fixed train split."""
    start = time.perf_counter()
    coords = emb.embed(feats, "tsne", seed=0)  # scikit-learn's defaults: 1000 iterations
    seconds = time.perf_counter() - start
    assert coords.shape == (1797, 2) and coords.dtype == np.float32
    tr, te = split_indices(digits)
    accuracy = KNeighborsClassifier(5).fit(coords[tr], digits.labels[tr]).score(coords[te], digits.labels[te])
    print(f"5-NN accuracy on the 2-D t-SNE of fc1 features: {accuracy:.4f} (t-SNE {seconds:.1f} s)")
    assert accuracy >= 0.90


def test_pca_coordinates_are_the_top_principal_components(feats):
    coords = emb.embed(feats, "pca")
    var = coords.astype(np.float64).var(axis=0, ddof=1)
    top = np.linalg.eigvalsh(np.cov(feats.astype(np.float64), rowvar=False))[::-1][:2]
    assert var[0] >= var[1]
    np.testing.assert_allclose(var, top, rtol=1e-4)


def test_embed_errors(feats):
    with pytest.raises(ValueError, match="Unknown embedding method 'umap'; valid: tsne, pca"):
        emb.embed(feats, "umap")
    with pytest.raises(ValueError, match=r"features must have shape \(N, D\), got \(1797,\)"):
        emb.embed(feats[:, 0])
    small = emb.embed(feats[:12], "tsne", max_iter=250)  # perplexity adapts to few points
    assert small.shape == (12, 2)


# ---------------------------------------------------------------- mosaics
def test_mosaic_places_input_thumbnails_on_the_grid(digits, feats):
    coords = emb.embed(feats, "pca")
    layout = emb.mosaic_layout(coords, (20, 20))
    image = emb.mosaic(digits.images, coords, grid=(20, 20))
    assert layout.shape == (20, 20) and image.shape == (640, 640, 1)
    inputs = {img.tobytes() for img in digits.images}
    for r in range(20):
        for c in range(20):
            tile = np.ascontiguousarray(image[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32])
            if layout[r, c] < 0:
                np.testing.assert_array_equal(tile, 1.0)  # empty cells: background
            else:
                assert tile.tobytes() in inputs  # every placed thumbnail is one of the inputs...
                np.testing.assert_array_equal(
                    tile, digits.images[layout[r, c]]
                )  # ...the one the layout names
    assert (layout >= 0).sum() > 100
    assert len(np.unique(layout[layout >= 0])) == (layout >= 0).sum()  # each image in at most one cell
    filled = emb.mosaic_layout(coords, (20, 20), fill=True)
    assert (filled >= 0).all()
    assert emb.mosaic(digits.images, coords, (4, 5), tile=16).shape == (64, 80, 1)


def test_mosaic_layout_against_brute_force():
    """Each occupied cell holds the image nearest its centre among those inside it; y up, like a plot."""
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(60, 2))
    layout = emb.mosaic_layout(coords, (5, 7))
    unit = (coords - coords.min(0)) / (coords.max(0) - coords.min(0))
    row = np.minimum(((1 - unit[:, 1]) * 5).astype(int), 4)
    col = np.minimum((unit[:, 0] * 7).astype(int), 6)
    for r in range(5):
        for c in range(7):
            inside = np.flatnonzero((row == r) & (col == c))
            if inside.size == 0:
                assert layout[r, c] == -1
                continue
            d = np.hypot((1 - unit[inside, 1]) * 5 - (r + 0.5), unit[inside, 0] * 7 - (c + 0.5))
            assert layout[r, c] == inside[np.argmin(d)]
    assert row[np.argmax(coords[:, 1])] == 0  # the highest point lies in the top row
    assert layout[0].max() >= 0


def test_mosaic_errors(digits):
    with pytest.raises(ValueError, match="Got 10 images but 9 coordinates"):
        emb.mosaic(digits.images[:10], np.zeros((9, 2)))
    with pytest.raises(ValueError, match=r"coords must have shape \(N, 2\), got \(10, 3\)"):
        emb.mosaic_layout(np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"grid must be \(rows, cols\) of positive integers, got \(0, 3\)"):
        emb.mosaic_layout(np.zeros((10, 2)), (0, 3))


# --------------------------------------------------------------- neighbours
def test_feature_neighbours_share_labels_more_often_than_pixel_neighbours(digits, feats):
    everyone = np.arange(len(feats))
    agreement = {}
    for k in (5, 10):
        nf = emb.neighbours(feats, everyone, k=k)
        npx = emb.neighbours(digits.images, everyone, k=k, space="pixel")
        agreement[k] = [(digits.labels[n.indices] == digits.labels[:, None]).mean() for n in (nf, npx)]
        assert not (nf.indices == everyone[:, None]).any() and not (npx.indices == everyone[:, None]).any()
    print(
        "neighbours sharing the query's label, feature (fc1) vs pixel space: "
        + ", ".join(f"k={k}: {f:.4f} vs {p:.4f}" for k, (f, p) in agreement.items())
    )
    feature, pixel = agreement[5]
    assert feature > pixel


def test_neighbours_against_brute_force(feats):
    x = feats[:200].astype(np.float64)
    result = emb.neighbours(x, [0, 17, 199], k=4)
    for row, q in enumerate([0, 17, 199]):
        d = np.linalg.norm(x - x[q], axis=1)
        d[q] = np.inf
        np.testing.assert_array_equal(result.indices[row], np.argsort(d, kind="stable")[:4])
        np.testing.assert_allclose(result.distances[row], np.sort(d)[:4], rtol=1e-5)
    one = emb.neighbours(x, 17, k=4)
    assert one.indices.shape == (4,)
    np.testing.assert_array_equal(one.indices, result.indices[1])


def test_duplicates_never_return_the_query_itself():
    points = np.zeros((6, 3))  # all identical: the query may not come first among equals
    for q in range(6):
        idx = emb.neighbours(points, q, k=5).indices
        assert q not in idx and sorted(idx) == sorted(set(range(6)) - {q})


def test_neighbours_errors(digits, feats):
    with pytest.raises(
        ValueError, match=r"k=1797 is out of range: there are 1796 other points \(valid: 1..1796\)"
    ):
        emb.neighbours(feats, 0, k=1797)
    with pytest.raises(
        ValueError, match=r"query index 1797 is out of range for 1797 points \(valid: 0..1796\)"
    ):
        emb.neighbours(feats, 1797)
    with pytest.raises(ValueError, match=r"Unknown space 'pixels'; valid: feature, pixel"):
        emb.neighbours(feats, 0, space="pixels")
    with pytest.raises(
        ValueError, match=r"shape \(N, D\), got \(1797, 32, 32, 1\); for images use space='pixel'"
    ):
        emb.neighbours(digits.images, 0)
    with pytest.raises(TypeError, match="query must be point indices"):
        emb.neighbours(feats, 0.5)
