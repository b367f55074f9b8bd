"""digits-cnn: a small Flax CNN trained on scikit-learn's 1797 real 8x8 digits (upsampled to 32x32).

Its trained weights ship in ``weights/digits_cnn.msgpack``; ``train_digits_cnn``
retrains it in well under a minute on a laptop CPU.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import serialization

from cnnvis_widgets import data
from cnnvis_widgets import validation

INPUT_SHAPE = (32, 32, 1)
WEIGHTS = Path(__file__).parent / "weights" / "digits_cnn.msgpack"
# Mean and standard deviation of the 32x32 training images (digits_split()), like torchvision's constants.
MEAN, STD = 0.305, 0.324


def preprocess(x):
    """[0, 1] digit images → zero-mean, unit-ish variance inputs."""
    return (x - MEAN) / STD


_he = nn.initializers.he_normal()  # ReLU layers keep their scale: training starts without a plateau


class DigitsCNN(nn.Module):
    """conv1 → conv2 → pool1 → conv3 → pool2 → conv4 → pool3 (global) → fc1 → logits."""

    widths: tuple[int, int, int, int] = (16, 32, 48, 64)
    hidden: int = 64
    classes: int = 10

    # Submodules are named "<layer>_op": the plain names are the sown, post-activation layer outputs.
    @nn.compact
    def __call__(self, x):
        def conv(x, i):
            x = nn.relu(
                nn.Conv(self.widths[i], (3, 3), padding="SAME", kernel_init=_he, name=f"conv{i + 1}_op")(x)
            )
            self.sow("intermediates", f"conv{i + 1}", x)
            return x

        def pool(x, name, window=2):
            x = nn.max_pool(x, (window, window), strides=(window, window))
            self.sow("intermediates", name, x)
            return x

        x = conv(x, 0)
        x = conv(x, 1)
        x = pool(x, "pool1")
        x = conv(x, 2)
        x = pool(x, "pool2")
        x = conv(x, 3)
        x = x.mean(axis=(1, 2))
        self.sow("intermediates", "pool3", x)
        x = nn.relu(nn.Dense(self.hidden, kernel_init=_he, name="fc1_op")(x))
        self.sow("intermediates", "fc1", x)
        x = nn.Dense(self.classes, name="logits_op")(x)
        self.sow("intermediates", "logits", x)
        return x


class TrainResult(NamedTuple):
    variables: dict
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray


def init_variables(seed: int = 0) -> dict:
    """Fresh random variables of DigitsCNN."""
    init = jax.jit(DigitsCNN().init)
    return init(jax.random.key(seed), jnp.zeros((1, *INPUT_SHAPE)))


def accuracy(variables, dataset: data.Dataset, batch: int = 512) -> float:
    """Fraction of ``dataset`` that DigitsCNN with ``variables`` classifies right."""
    predict = _predict()
    preds = np.concatenate(
        [
            np.asarray(predict(variables, dataset.images[i : i + batch]))
            for i in range(0, len(dataset.labels), batch)
        ]
    )
    return float((preds == dataset.labels).mean())


@functools.lru_cache(maxsize=1)
def _predict():
    """One jitted classifier for every ``accuracy`` call (a fresh jit per call would recompile)."""
    return jax.jit(lambda v, x: DigitsCNN().apply(v, preprocess(x)).argmax(-1))


def _augment(key, images):
    """Random shifts of up to 2 px, so filters learn strokes rather than positions."""
    shifts = jax.random.randint(key, (2,), -2, 3)
    return jnp.roll(images, shifts, axis=(1, 2))


def train_digits_cnn(
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict, float], bool | None] | None = None,
    warmup: bool = True,
) -> TrainResult:
    """Train DigitsCNN with optax Adam on the fixed split of ``data.digits_split()``.

    ``callback(step, variables, loss)`` runs after every step; returning True stops.
    ``warmup=False`` starts at the full learning rate (cosine decay only), which with a
    large rate silences ReLU filters for good: the dead filters the TrainingMonitor shows.
    Returns the variables and the train/test accuracy.
    """
    train, test = data.digits_split()
    check_settings(epochs, batch_size, learning_rate)
    module = DigitsCNN()
    variables = init_variables(seed)
    total = epochs * (len(train.labels) // batch_size)
    if warmup:
        # Warm-up: large early Adam steps are what silence ReLU filters for good (dead filters).
        schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(100, total // 4), total)
    else:
        schedule = optax.cosine_decay_schedule(learning_rate, total)
    opt = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = opt.init(variables["params"])

    @jax.jit
    def step(params, opt_state, key, x, y):
        def loss_fn(p):
            logits = module.apply({"params": p}, preprocess(_augment(key, x)))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    params, losses = variables["params"], []
    steps_per_epoch = len(train.labels) // batch_size
    bar = _progress(epochs * steps_per_epoch, progress)
    stopped = False
    for _ in range(epochs):
        order = rng.permutation(len(train.labels))
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            key, sub = jax.random.split(key)
            params, opt_state, loss = step(params, opt_state, sub, train.images[idx], train.labels[idx])
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if callback is not None and callback(len(losses), {"params": params}, losses[-1]):
                stopped = True
                break
        if stopped:
            break
    bar.close()
    variables = {"params": params}
    return TrainResult(variables, accuracy(variables, train), accuracy(variables, test), np.asarray(losses))


def check_settings(epochs, batch_size, learning_rate) -> None:
    """Raise a readable ValueError for training settings that would crash or train nothing."""
    n_train = len(data.digits_split()[0].labels)
    validation.positive_int(epochs, "epochs")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or not 1 <= batch_size <= n_train
    ):
        raise ValueError(f"batch_size must be an integer in 1..{n_train}, got {batch_size!r}.")
    validation.positive_number(learning_rate, "learning_rate")


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training digits-cnn", disable=not enabled, leave=False)


def save_variables(variables: dict, path: str | Path = WEIGHTS) -> Path:
    path = Path(path)
    path.write_bytes(serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, _to_dict(variables))))
    return path


def _to_dict(tree):
    return {k: _to_dict(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


@functools.lru_cache(maxsize=1)
def load_variables() -> dict:
    """The bundled trained variables of digits-cnn."""
    if not WEIGHTS.is_file():
        raise FileNotFoundError(
            f"The bundled digits-cnn weights are missing at {WEIGHTS}; "
            "recreate them with `python -m cnnvis_widgets.models.digits`."
        )
    restored = serialization.msgpack_restore(WEIGHTS.read_bytes())
    return jax.device_put(restored)  # jnp.asarray compiles a program per array: 0.15 s more, first time


if __name__ == "__main__":  # python -m cnnvis_widgets.models.digits: retrain and save the bundled weights
    result = train_digits_cnn(progress=False)
    print(f"train accuracy {result.train_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}")
    print(f"saved {save_variables(result.variables)} ({WEIGHTS.stat().st_size} bytes)")
