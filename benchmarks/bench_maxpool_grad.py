"""Is max-pool's backward pass what slows activation maximization down? A side experiment.

Runs the engine's compiled call (``visualize_filters``, the workload of ``bench_ascent.py``)
on the same VGG-style CNN and weights twice, interleaved in rounds (medians reported):

  stock     ``nn.max_pool``: XLA:CPU computes its gradient with select-and-scatter, expanded
            into a variadic reduce-window over int32 iota arrays of the input's full size (one
            per dimension) plus a scatter, memory-bound work that grows with the batch.
  maskpool  the same 2x2 / stride-2 max-pool with a ``jax.custom_vjp`` whose backward is
            elementwise: the cotangent goes to the first maximum of each window (the gradient
            XLA computes too, ties included), one fused loop.

Both give the same images (checked). The gap is what a "fast max-pool" gradient rule in
``engine/gradient_rules.py`` (like its fast convolution) would gain for any user's model.

    .venv/bin/python benchmarks/bench_maxpool_grad.py [--filters 128 --steps 16 --rounds 3]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from bench_ascent import LAYER, Workload, timed


@jax.custom_vjp
def mask_pool(x):
    """2x2 max-pool, stride 2, of NHWC ``x`` (even H and W)."""
    return nn.max_pool(x, (2, 2), (2, 2))


def _mask_pool_fwd(x):
    y = mask_pool(x)
    return y, (x, y)


def _mask_pool_bwd(res, g):
    x, y = res
    n, h, w, c = x.shape
    hit = x.reshape(n, h // 2, 2, w // 2, 2, c) == y[:, :, None, :, None, :]
    hit = hit.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    first = hit & (jnp.cumsum(hit, axis=-1) == 1)  # ties: the first maximum in the window only
    first = first.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return ((first * g[:, :, None, :, None, :]).reshape(x.shape),)


mask_pool.defvjp(_mask_pool_fwd, _mask_pool_bwd)


class VGGishMaskPool(nn.Module):
    """``bench_ascent.VGGish`` (same parameter names and shapes) with ``mask_pool``."""

    @nn.compact
    def __call__(self, x):
        for i, (features, pool) in enumerate([(32, 0), (32, 1), (64, 0), (64, 1), (128, 0), (128, 0)]):
            x = nn.relu(nn.Conv(features, (3, 3), name=f"conv{i + 1}")(x))
            if pool:
                x = mask_pool(x)
        return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--filters", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    x = jnp.round(jax.random.uniform(jax.random.key(1), (2, 8, 8, 3)) * 3) / 3  # many ties
    g = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
    same = [jax.vjp(f, x)[1](g)[0] for f in (lambda x: nn.max_pool(x, (2, 2), (2, 2)), mask_pool)]
    print("mask_pool gradient == XLA's max-pool gradient (with ties):", bool(jnp.all(same[0] == same[1])))

    variants = {"stock": Workload(args.filters, args.steps, args.size),
                "maskpool": Workload(args.filters, args.steps, args.size, module=VGGishMaskPool())}
    finals = {name: w.engine() for name, w in variants.items()}  # warm-up (compiles)
    print("same images (final objectives, max |diff|):", float(np.max(np.abs(finals["stock"] - finals["maskpool"]))))
    runs = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in list(variants)[r % 2:] + list(variants)[: r % 2]:
            runs[name].append(timed(variants[name].engine)[:2])
    median = {n: float(np.median([x[0] for x in v])) for n, v in runs.items()}
    for n, v in runs.items():
        per_step = median[n] / args.steps * 1e3
        cores = sum(x[1] for x in v) / sum(x[0] for x in v)
        print(f"{n:<9} {median[n]:7.2f} s  {per_step:6.1f} ms/step  cores {cores:.2f}")
    print(f"{args.filters} filters of {LAYER}: maskpool is {median['stock'] / median['maskpool']:.2f}x faster")


if __name__ == "__main__":
    main()
