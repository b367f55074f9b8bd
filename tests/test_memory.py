"""The process-wide memory settings of memory.py: the trim after each long compile."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnvis_widgets  # noqa: F401 - importing the package turns the trim on
from cnnvis_widgets import memory


def test_a_long_compile_is_followed_by_a_trim_and_a_short_one_is_not(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1) or True)
    # a program no other test compiles (a fresh closure constant), so XLA really compiles it
    salt = float(np.random.default_rng().random())
    monkeypatch.setattr(memory, "TRIM_AFTER_COMPILE_S", float("inf"))
    jax.jit(lambda x: jnp.sin(x) * salt).lower(jnp.ones(3)).compile()
    assert calls == []
    monkeypatch.setattr(memory, "TRIM_AFTER_COMPILE_S", 0.0)
    jax.jit(lambda x: jnp.cos(x) * salt).lower(jnp.ones(3)).compile()
    assert calls == [1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_release_freed_memory_returns_pages_to_the_system():
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(800)]  # 50 MB below the mmap threshold: heap
    for b in blocks:
        ctypes.memset(b, 1, 64 * 1024)
    for b in blocks[:-1]:  # the last one keeps the heap's top in use, so free() alone cannot shrink it
        libc.free(b)
    before = _rss_mb()
    assert memory.release_freed_memory()
    assert _rss_mb() < before - 30, (before, _rss_mb())
    libc.free(blocks[-1])


def _rss_mb() -> float:
    import re

    return int(re.search(r"VmRSS:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
