"""Spreading the filter axis over devices: all GPUs of a host, or all CPU cores.

XLA:CPU runs one device's program on ~1.3 of 2 cores here; the same compiled call on
two host devices (one per core) used 1.94 cores and ran 1.69x faster
(benchmarks/bench_ascent.py). ``use_all_cores()`` asks JAX for one CPU device per core;
it must run before JAX starts its backend (first array op), e.g. first thing in a notebook.
"""

from __future__ import annotations

import os
import threading
import warnings

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# One multi-device program at a time in this process. Two threads each running a program
# sharded over the host devices (a widget's worker and the notebook's main thread) can
# deadlock XLA:CPU's collectives: after 40 s its rendezvous aborts the whole process
# ("rendezvous.cc ... Expected 2 threads"), killing the kernel.
device_lock = threading.RLock()


def use_all_cores(count: int | None = None) -> int:
    """Make JAX expose one CPU device per core (or ``count``); returns the device count.

    A no-op with a warning once JAX has started (its device list is then fixed), and a
    no-op on GPU/TPU hosts, where the accelerators are the devices.
    """
    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(
            f"count must be a positive integer (CPU devices) or None for every core, got {count!r}."
        )
    try:
        jax.config.update("jax_num_cpu_devices", int(count))
    except RuntimeError as err:  # backend already initialized
        warnings.warn(f"use_all_cores() came too late, JAX has started: {err}", stacklevel=2)
    return len(jax.devices())


def padded_indices(n: int, devices: int) -> np.ndarray:
    """0..n-1, padded by repeating the last index so the count divides evenly over devices."""
    idx = np.arange(n)
    return np.concatenate([idx, np.repeat(idx[-1:], (-n) % devices)])


def filter_sharding() -> NamedSharding | None:
    """Arrays leading with the filter axis split over all devices (None with one device: no placement).

    For a jitted function's ``out_shardings``: its outputs are then placed where the next
    sharded call wants them, with no separate transfer program.
    """
    devices = jax.devices()
    if len(devices) == 1:
        return None
    return NamedSharding(Mesh(np.array(devices), ("filters",)), PartitionSpec("filters"))
