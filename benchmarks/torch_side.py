"""The PyTorch half of ``bench_vs_pytorch.py``: the same work, done the way PyTorch tools do it.

Runs ONLY in a separate environment with PyTorch (``bench_vs_pytorch.py --setup-torch``
creates it: ``pip install torch==2.13.0``); PyTorch is never a dependency of the package.
Talks to the JAX side through files: reads the workload (and the VGG weights) from an .npz,
prints one JSON line per measurement.

Work per model:
  ascent     Lucent's batch objective: one batch holding every filter's image (channels-last),
             objective sum_i mean(channel i of image i), a random jitter (roll) per step, L2 +
             total-variation penalties, Adam, clamp to [0, 1]; gradients w.r.t. the images only.
  smoothgrad Captum's NoiseTunnel(Saliency) with nt_type="smoothgrad": the batch repeated S
             times with Gaussian noise, one forward/backward of the whole (S*N) batch, the mean
             of the gradients (written out: captum itself is not installed, only torch).
  vanilla    one input gradient of the N-image batch (SmoothGrad's unit of cost).
  matmul     a float32 2048 x 2048 @ 2048 x 2048 matmul.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------ models
class VGGish(nn.Module):
    """conv 32-32-pool-64-64-pool-128-128 (3x3, ReLU), as the JAX side's VGGish."""

    def __init__(self):
        super().__init__()
        spec = [(3, 32, 0), (32, 32, 1), (32, 64, 0), (64, 64, 1), (64, 128, 0), (128, 128, 0)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o, _ in spec)
        self.pools = [p for _, _, p in spec]

    def forward(self, x):
        for conv, pool in zip(self.convs, self.pools):
            x = F.relu(conv(x))
            if pool:
                x = F.max_pool2d(x, 2)
        return x

    def load(self, weights):
        for i, conv in enumerate(self.convs):
            conv.weight.data = (
                torch.from_numpy(weights[f"conv{i + 1}.kernel"]).permute(3, 2, 0, 1).contiguous()
            )
            conv.bias.data = torch.from_numpy(weights[f"conv{i + 1}.bias"])


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3),
    ]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


# EfficientNet-B0 / Lite0 stages: (expand, kernel, stride, out, repeats)
STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


class EfficientNetLite0Trunk(nn.Module):
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6, BN eps 1e-3) up to ``block{last}.{stage}``.

    Random weights (timing only). Padding is symmetric (k-1)//2 where the JAX model pads
    TF-style; the FLOPs are the same.
    """

    def __init__(self, last: int, stage: str):
        super().__init__()
        blocks = [(e, k, s if r == 0 else 1, c) for e, k, s, c, n in STAGES for r in range(n)]
        self.stem = conv_bn(3, 32, 3, 2)
        self.blocks, cin = nn.ModuleList(), 32
        for i, (e, k, s, c) in enumerate(blocks[: last + 1]):
            hidden = cin * e
            parts = nn.ModuleDict()
            if e != 1:
                parts["expand"] = conv_bn(cin, hidden, 1)
            if i < last or stage in ("depthwise", "project", "out"):
                parts["depthwise"] = conv_bn(hidden, hidden, k, s, groups=hidden)
            if i < last or stage in ("project", "out"):
                parts["project"] = conv_bn(hidden, c, 1, act=False)
            self.blocks.append(parts)
            self.residual = s == 1 and cin == c
            cin = c
        self.last, self.stage = last, stage
        self.eval()

    def forward(self, x):
        x = self.stem(x)
        for i, parts in enumerate(self.blocks):
            h = x
            for name, part in parts.items():
                h = part(h)
            if "project" in parts and h.shape == x.shape:
                h = h + x
            x = h
        return x


# ------------------------------------------------------------------ work
def tv(x):
    return ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).mean() + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).mean()


def ascent(model, filters: int, size: int, steps: int, seed: int = 0) -> tuple[float, float]:
    """(seconds, mean final objective) of Lucent-style batch activation maximization."""
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.01 * torch.randn(filters, 3, size, size, generator=g)).contiguous(
        memory_format=torch.channels_last
    )
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    idx = torch.arange(filters)
    shifts = torch.randint(-4, 5, (steps, 2), generator=g).tolist()
    start = time.perf_counter()
    for dy, dx in shifts:
        opt.zero_grad(set_to_none=True)
        acts = model(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
        obj = acts[idx, idx].mean(dim=(1, 2))
        loss = -obj.sum() + 0.01 * (x**2).sum() / filters + tv(x) * filters
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return time.perf_counter() - start, float(obj.mean())


def input_gradient(model, x, classes):
    x = x.detach().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[torch.arange(len(x)), classes].sum(), x)
    return grad


def smoothgrad(model, images, samples: int, sigma: float = 0.15) -> float:
    """Seconds of Captum-style SmoothGrad: the batch expanded S times, one pass, mean |grad|."""
    classes = model(images).argmax(-1).repeat(samples)
    start = time.perf_counter()
    noisy = images.repeat(samples, 1, 1, 1)
    noisy = noisy + sigma * torch.randn_like(noisy)
    grads = input_gradient(model, noisy.contiguous(memory_format=torch.channels_last), classes)
    grads.reshape(samples, *images.shape).mean(0)
    return time.perf_counter() - start


def vanilla(model, images) -> float:
    classes = model(images).argmax(-1)
    start = time.perf_counter()
    input_gradient(model, images, classes)
    return time.perf_counter() - start


def matmul(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class Classifier(nn.Module):
    """A trunk plus global pooling and a dense layer: a class score for SmoothGrad."""

    def __init__(self, trunk, channels, classes=10):
        super().__init__()
        self.trunk, self.fc = trunk, nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.trunk(x).mean(dim=(2, 3)))


def build(model: str, layer: str, weights):
    if model == "vgg":
        m = VGGish()
        m.load(weights)
        return m.eval().to(memory_format=torch.channels_last)
    block, _, stage = layer.partition(".")
    return EfficientNetLite0Trunk(int(block.removeprefix("block")), stage or "out").to(
        memory_format=torch.channels_last
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True, help=".npz written by bench_vs_pytorch.py")
    parser.add_argument("--what", required=True, choices=["ascent", "smoothgrad", "vanilla", "matmul"])
    parser.add_argument("--model", default="vgg")
    parser.add_argument("--layer", default="conv6")
    parser.add_argument("--filters", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weights = dict(np.load(args.workload))
    cpu = time.process_time()
    wall = time.perf_counter()
    out = {
        "what": args.what,
        "model": args.model,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.what == "matmul":
        out["seconds"] = matmul()
    elif args.what == "ascent":
        for p in (model := build(args.model, args.layer, weights)).parameters():
            p.requires_grad_(False)
        ascent(model, args.filters, args.size, 2)  # warm-up: allocator, oneDNN primitives
        cpu, wall = time.process_time(), time.perf_counter()
        out["seconds"], out["objective"] = ascent(model, args.filters, args.size, args.steps)
    else:
        trunk = build(args.model, args.layer, weights)
        channels = trunk(torch.zeros(1, 3, args.size, args.size)).shape[1]
        model = Classifier(trunk, channels).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        images = torch.rand(args.images, 3, args.size, args.size).contiguous(
            memory_format=torch.channels_last
        )
        fn = (
            (lambda: smoothgrad(model, images, args.samples))
            if args.what == "smoothgrad"
            else (lambda: vanilla(model, images))
        )
        fn()  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        out["seconds"] = float(np.median([fn() for _ in range(3)]))
    out["cores"] = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
