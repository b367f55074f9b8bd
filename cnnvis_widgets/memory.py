"""Keep the process's memory within a teaching lab's (and Binder's 1 GB) budget.

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps
freed memory in them. XLA's thread pool, the kernel's threads and the widgets' workers
then hold hundreds of MB that nothing uses (two arenas: benchmarks/results/why.md).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (once, before threads start); True if applied.

    Does nothing off Linux/glibc or when the user set ``MALLOC_ARENA_MAX`` themselves.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return bool(_libc().mallopt(M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False


# A compile of this many seconds or more is followed by a trim: a layer's step program takes
# seconds, and the many small programs under this free little.
TRIM_AFTER_COMPILE_S = 0.25
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_trimming = False


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``); True if any were."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


def forget_compiled_programs() -> None:
    """Drop every compiled program (``jax.clear_caches``) and hand the memory they held back to the
    system: between the heavy cells of a notebook that must stay within Binder's 1 GB."""
    import gc

    import jax

    gc.collect()  # reference cycles can keep executables alive
    jax.clear_caches()
    release_freed_memory()


def trim_after_compiles() -> None:
    """After each XLA compile, hand its freed scratch back (once per process; see below).

    A compile frees hundreds of MB that glibc keeps, and the program's first run, or the next
    compile, then allocates on top of them (benchmarks/bench_memory.py --after-compile measures
    the difference; benchmarks/results/why.md).
    """
    global _trimming
    if not _trimming:
        import jax  # here, not at the top: the arena cap must come before JAX starts its threads

        jax.monitoring.register_event_duration_secs_listener(_after_event)
        _trimming = True


def _after_event(event: str, seconds: float, **_kw) -> None:
    if event == _COMPILE_EVENT and seconds >= TRIM_AFTER_COMPILE_S:
        release_freed_memory()


def _libc():
    """glibc, for its malloc tuning calls (OSError where it is absent, e.g. musl)."""
    return ctypes.CDLL("libc.so.6")
