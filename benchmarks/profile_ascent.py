"""Where a compiled activation-maximization call spends its time, from XLA:CPU's own trace.

The same work as ``bench_vs_pytorch.py`` (model, layer, pixel images, jitter 4 + L2 + TV,
Adam 0.05), one group of filters, run under ``jax.profiler``. Every XLA operation (thunk)
of the compiled program is timed by the runtime; the script sums each one's time over the
calls and both devices and joins it with the compiled HLO:

- convolutions, split into dense / depthwise (``feature_group_count`` > 1) and forward /
  input-gradient, with their FLOPs and the GFLOP/s they reached;
- everything else (XLA fusions of elementwise work, copies, pads, reductions, ...) with the
  bytes its operands and results hold and the GB/s that means.

Ceilings are measured in the same run: a float32 2048^2 matmul (GFLOP/s) and a streaming
``a + b`` over 3 x 256 MB (GB/s), both on one device; rates are per device (the device's
thunk time), so compare them with the one-device ceilings.

    .venv/bin/python benchmarks/profile_ascent.py --model vgg
    .venv/bin/python benchmarks/profile_ascent.py --model effnet --steps 8
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import bench_vs_pytorch as bench  # calls cw.use_all_cores(): two CPU devices
import jax
import jax.numpy as jnp
import numpy as np
from machine import machine_info

import cnnvis_widgets as cw
from cnnvis_widgets.engine import ascent, regularizers, renderer

HERE = Path(__file__).resolve().parent
MODELS = {"vgg": "conv6", "effnet": "block5.expand"}
CONTAINERS = {"while", "conditional", "call", "tuple", "get-tuple-element", "parameter", "constant"}
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64)\[([\d,]*)\]")
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
          "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}  # fmt: skip


def shape_bytes(text: str) -> int:
    return sum(
        _BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
        for t, dims in _SHAPE.findall(text)
    )


def first_dims(text: str) -> list[int]:
    m = _SHAPE.search(text)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def parse_hlo(text: str) -> dict[str, dict]:
    """Instruction name → kind, FLOPs (convolutions, dots; also inside library fusions such as
    XLA:CPU's ``ynn_fusion``), bytes of its operands and result, source (the JAX op it came from)."""
    defs, computations, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY\s+)?%([\w.\-]+) .*\{\s*$", line)
        if head:
            current = head.group(1)
            continue
        m = _DEF.match(line)
        if m:
            name, shape, opcode, rest = m.groups()
            defs[name] = dict(shape=shape, opcode=opcode, rest=rest)
            computations[current].append(name)
    ops = {}
    for name, d in defs.items():
        if d["opcode"] in CONTAINERS:
            continue
        args = d["rest"].split("),")[0]
        operands = [o for o in re.findall(r"%([\w.\-]+)", args) if o in defs]
        nbytes = shape_bytes(d["shape"]) + sum(shape_bytes(defs[o]["shape"]) for o in operands)
        meta = re.search(r'op_name="([^"]*)"', d["rest"])
        source = meta.group(1) if meta else ""
        op = dict(opcode=d["opcode"], bytes=nbytes, flops=0.0, kind=d["opcode"], shape=first_dims(d["shape"]))
        op["source"] = ("backward " if "transpose(" in source else "") + source.rsplit("/", 1)[-1]
        inner = [name]
        if d["opcode"] == "fusion":
            kind = re.search(r"kind=(k\w+)", d["rest"])
            op["kind"] = f"fusion ({kind.group(1)[1:].lower() if kind else '?'})"
            called = re.search(r"calls=%([\w.\-]+)", d["rest"])
            inner = computations.get(called.group(1), []) if called else []
        for sub in inner:
            flops, kind = _compute(defs[sub], defs)
            if flops:
                op["flops"] += flops
                op["kind"] = kind + (" (library fusion)" if sub != name else "")
        ops[name] = op
    return ops


def _compute(d, defs) -> tuple[float, str]:
    """FLOPs and kind of a convolution or dot instruction (0 for anything else)."""
    args = d["rest"].split("),")[0]
    operands = [o for o in re.findall(r"%([\w.\-]+)", args) if o in defs]
    if d["opcode"] == "convolution" and len(operands) >= 2:
        labels = re.search(r"dim_labels=\w+_(\w+)->", d["rest"]).group(1)
        kernel = first_dims(defs[operands[1]]["shape"])
        groups = re.search(r"feature_group_count=(\d+)", d["rest"])
        flops = 2.0 * np.prod(first_dims(d["shape"])) * np.prod(kernel) / kernel[labels.index("o")]
        dilate = re.search(r"lhs_dilate=([\dx]+)", d["rest"])  # a strided conv's input-gradient:
        if dilate:  # only 1 in prod(dilation) of the window's taps meets a non-zero input
            flops /= np.prod([int(v) for v in dilate.group(1).split("x")])
        meta = re.search(r'op_name="([^"]*)"', d["rest"])
        backward = bool(meta and "transpose(" in meta.group(1))
        depthwise = bool(groups and int(groups.group(1)) > 1)
        return (
            flops,
            f"conv {'depthwise' if depthwise else 'dense'} {'input-grad' if backward else 'forward'}",
        )
    if d["opcode"] == "dot" and operands:
        return 2.0 * np.prod(first_dims(d["shape"])) * _contracted(d, defs, operands), "dot"
    return 0.0, ""


def _contracted(d, defs, operands) -> int:
    dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", d["rest"])
    lhs = first_dims(defs[operands[0]]["shape"])
    return int(np.prod([lhs[int(i)] for i in dims.group(1).split(",") if i])) if dims else 1


def thunk_times(trace_dir: Path) -> tuple[collections.Counter, collections.Counter]:
    """Seconds and executions per event name (each device's thread logs its own)."""
    path = sorted(trace_dir.rglob("*.trace.json.gz"))[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    times, counts = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            times[e["name"]] += e["dur"] * 1e-6
            counts[e["name"]] += 1
    return times, counts


def stream_gbs(n: int = 64 * 2**20) -> float:
    f = jax.jit(lambda a, b: a + b)
    a = jnp.ones(n, jnp.float32)
    f(a, a).block_until_ready()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 3 * 4 * n / np.median(times) / 1e9


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="vgg")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16, help="steps per compiled call (the scan length)")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    probe = bench.vgg_probe(args.size)[0] if args.model == "vgg" else cw.load("efficientnet-lite0")
    layer = MODELS[args.model]
    info = probe.layer(layer)
    settings = bench.ascent_settings(args.steps, args.size)
    shape = (1, args.size, args.size, probe.input_shape[-1])
    chunk = ascent.default_chunk(info.channels, ascent.activation_bytes(probe, layer, shape))
    setup = ascent._setup(
        probe, info, "channel", (args.size, args.size), settings["param"], settings["transforms"],
        settings["regularizers"], settings["optimizer"], "redirected", settings["recipe"],
    )  # fmt: skip
    parts = (setup.objective, setup.param, setup.transform, setup.regs, setup.optimizer, setup.relu_rule)
    engine = renderer.Renderer(probe, renderer.Setup((info.name,), *parts, shape, chunk, args.steps))
    units = np.arange(chunk, dtype=np.int32)
    weights = regularizers.default_weights(setup.regs)
    rate = np.float32(0.05)  # not used: the compared work gives its own optimizer
    fresh = lambda: engine.init(jax.random.key(0), units, None, rate)[0]  # noqa: E731
    call_args = lambda state: (state, units, np.int32(0), np.int32(args.steps), probe.variables, weights)  # noqa: E731
    compiled = engine._step.lower(*call_args(fresh())).compile()  # the engine's own step program
    ops = parse_hlo(compiled.as_text())
    jax.block_until_ready(compiled(*call_args(fresh())))  # warm

    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(args.calls):
                state = fresh()
                jax.block_until_ready(state)
                start = time.perf_counter()
                jax.block_until_ready(compiled(*call_args(state)))
                walls.append(time.perf_counter() - start)
        times, counts = thunk_times(Path(tmp))

    matmul = 2 * 2048**3 / bench.jax_matmul() / 1e9
    stream = stream_gbs()
    devices = jax.device_count()
    per_device = chunk // devices
    total = sum(times[name] for name in ops)
    wall = float(np.sum(walls))
    rows = collections.defaultdict(lambda: dict(seconds=0.0, flops=0.0, bytes=0.0, ops=0))
    for name, op in ops.items():
        if times[name]:  # FLOPs and bytes are one device's per execution; counts cover all devices
            row = rows[op["kind"]]
            row["seconds"] += times[name]
            row["flops"] += op["flops"] * counts[name]
            row["bytes"] += op["bytes"] * counts[name]
            row["ops"] += 1
    lines = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    report = dict(
        machine=machine_info(), model=args.model, layer=layer, size=args.size, steps=args.steps,
        calls=args.calls, filters=chunk, devices=devices, wall_s=wall, thunk_s=total,
        matmul_gflops=matmul, stream_gbs=stream, kinds=dict(rows),
    )  # fmt: skip
    say(
        f"{args.model} {layer}: {chunk} filters ({per_device} per device), {args.size}x{args.size}, "
        f"{args.steps} steps x {args.calls} calls; wall {wall:.2f} s; XLA ops busy {total:.2f} s over "
        f"{devices} devices ({total / (wall * devices):.0%} of wall x devices)"
    )
    say(f"ceilings on one device: matmul {matmul:.0f} GFLOP/s, streaming add {stream:.1f} GB/s")
    say(f"{'kind':44} {'share':>6} {'GFLOP':>8} {'GFLOP/s':>8} {'GB':>8} {'GB/s':>6}  ops")
    for kind, r in sorted(rows.items(), key=lambda kv: -kv[1]["seconds"]):
        rate = r["flops"] / r["seconds"] / 1e9 if r["flops"] else float("nan")
        gbs = r["bytes"] / r["seconds"] / 1e9
        say(
            f"{kind:44} {r['seconds'] / total:6.1%} {r['flops'] / 1e9:8.1f} {rate:8.1f} "
            f"{r['bytes'] / 1e9:8.1f} {gbs:6.1f}  {r['ops']}"
        )
    say(f"top {args.top} operations:")
    for name in sorted(ops, key=lambda n: -times[n])[: args.top]:
        op, t, n = ops[name], times[name], counts[name]
        extra = (
            f"{op['flops'] * n / t / 1e9:.1f} GFLOP/s"
            if op["flops"]
            else f"{op['bytes'] * n / t / 1e9:.1f} GB/s"
        )
        shape = "x".join(map(str, op["shape"]))
        say(f"  {t / total:6.1%}  {name:28} {op['kind']:36} {extra:>16}  {shape:>16}  {op['source']}")
    out = HERE / "results" / f"profile_ascent_{args.model}.json"
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)} (and .txt)")


if __name__ == "__main__":
    main()
