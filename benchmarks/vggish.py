"""The small VGG-style network the benchmarks share (no side effects on import: each script sets
up JAX's devices itself). torch_side.py mirrors it in PyTorch, which cannot import this."""

from flax import linen as nn


class VGGish(nn.Module):
    """conv 32-32-pool-64-64-pool-128-128 (3x3, ReLU); ``head=True`` adds pool + dense(10)."""

    head: bool = False

    @nn.compact
    def __call__(self, x):
        for i, (features, pool) in enumerate([(32, 0), (32, 1), (64, 0), (64, 1), (128, 0), (128, 0)]):
            x = nn.relu(nn.Conv(features, (3, 3), name=f"conv{i + 1}")(x))
            if pool:
                x = nn.max_pool(x, (2, 2), (2, 2))
        if self.head:
            x = nn.Dense(10, name="fc")(x.mean(axis=(1, 2)))
        return x
