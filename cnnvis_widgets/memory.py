"""Keep the process's memory within a teaching lab's (and Binder's 1 GB) budget.

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps
freed memory in them. XLA's thread pool, the kernel's threads and the widgets' workers
then hold hundreds of MB that nothing uses: the quickstart notebook's kernel peaked at
1258 MB with the default and at 820 MB with two arenas, no slower.
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
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
