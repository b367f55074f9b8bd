"""engine.sharding: the filter axis padded and split over devices, use_all_cores' device count and
its refusals, and the lock that keeps multi-device programs one at a time."""

import os
import re
import subprocess
import sys
import textwrap
import threading
import warnings

import jax
import numpy as np
import pytest

from cnnvis_widgets.engine import sharding


@pytest.mark.parametrize(
    "n, devices, expected",
    [
        (10, 4, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9]),
        (8, 4, [0, 1, 2, 3, 4, 5, 6, 7]),
        (1, 3, [0, 0, 0]),
        (3, 1, [0, 1, 2]),
        (5, 2, [0, 1, 2, 3, 4, 4]),
    ],
)
def test_padded_indices_repeat_the_last_filter_up_to_a_multiple_of_the_devices(n, devices, expected):
    """0..n-1, then the last index again until the count divides by the device count."""
    np.testing.assert_array_equal(sharding.padded_indices(n, devices), expected)


def test_use_all_cores_asks_jax_for_one_device_per_usable_core(monkeypatch):
    """No count: the cores this process may run on (its affinity), else os.cpu_count()."""
    asked = []
    monkeypatch.setattr(jax.config, "update", lambda name, value: asked.append((name, value)))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    sharding.use_all_cores()
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    sharding.use_all_cores()
    sharding.use_all_cores(np.int64(2))  # a numpy integer is a count too
    assert asked == [("jax_num_cpu_devices", 3), ("jax_num_cpu_devices", 6), ("jax_num_cpu_devices", 2)]


@pytest.mark.parametrize("count", [True, -1, 2.0, [2]])
def test_use_all_cores_refuses_what_is_not_a_positive_count(count):
    """A bool, a negative, a float or a list is refused, the message showing what was given."""
    with pytest.raises(ValueError, match=rf"positive integer .* got {re.escape(repr(count))}\."):
        sharding.use_all_cores(count)


def test_use_all_cores_after_jax_started_warns_at_the_callers_line_and_keeps_the_devices():
    """Too late (JAX's backend is up): a warning pointing at the caller, and the devices unchanged."""
    before = len(jax.devices())  # the backend is up from here on
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sharding.use_all_cores(before + 3) == before
    (warning,) = caught
    assert "use_all_cores() came too late, JAX has started" in str(warning.message)
    assert warning.filename == __file__
    assert len(jax.devices()) == before


def test_device_lock_is_reentrant_and_excludes_other_threads():
    """The thread holding it may take it again (nested sharded calls); another thread must wait."""
    got = []
    with sharding.device_lock:
        with sharding.device_lock:
            other = threading.Thread(target=lambda: got.append(sharding.device_lock.acquire(timeout=0.05)))
            other.start()
            other.join()
    assert got == [False]
    assert sharding.device_lock.acquire(timeout=1)
    sharding.device_lock.release()


def test_filter_sharding_splits_the_filter_axis_over_all_cpu_devices():
    """With use_all_cores(3) before JAX starts: three devices, and filter_sharding() places rows
    0-2, 3-5 and 6-8 of a padded 7-filter array on devices 0, 1 and 2 (one subprocess: the device
    count is fixed once JAX starts)."""
    script = textwrap.dedent("""
        import cnnvis_widgets as cw
        from cnnvis_widgets.engine import sharding
        assert cw.use_all_cores(3) == 3
        import jax, numpy as np
        spread = sharding.filter_sharding()
        print("axes", spread.mesh.axis_names, tuple(spread.spec))
        print("devices", [d.id for d in spread.mesh.devices.flat] == [d.id for d in jax.devices()])
        x = jax.device_put(sharding.padded_indices(7, 3), spread)
        for shard in sorted(x.addressable_shards, key=lambda s: s.device.id):
            print("shard", shard.device.id, np.asarray(shard.data).tolist())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "axes ('filters',) ('filters',)",
        "devices True",
        "shard 0 [0, 1, 2]",
        "shard 1 [3, 4, 5]",
        "shard 2 [6, 6, 6]",
    ]


def test_filter_sharding_is_none_with_one_device(monkeypatch):
    """One device: no placement at all (None), so jit's out_shardings are left to JAX."""
    monkeypatch.setattr(jax, "devices", lambda: jax.local_devices()[:1])
    assert sharding.filter_sharding() is None
