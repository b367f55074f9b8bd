"""JAX's persistent compilation cache in a per-user directory, so a new session starts warm.

The cache skips XLA's compiles, not JAX's tracing and lowering (the measurements:
benchmarks/results/why.md).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import jax


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnvis_widgets/jax`` (~/.cache/...)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cnnvis_widgets" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turn on the persistent cache for compiles over 0.1 s; returns its directory.

    Keeps a directory the user or a test already configured (and then still lowers JAX's 1 s
    threshold to 0.1 s).
    """
    # JAX keeps only compiles over 1 s by default; the renderer's init program compiles in less
    # and would cost that again in every new process (a threshold the user set is kept)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        return Path(current)
    target = Path(path) if path is not None else default_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(target))
    return target


class _Lowerings:
    """Counts the programs JAX lowers for XLA in this process (each one then compiles, or loads
    from the persistent cache): one listener, registered on first use."""

    count = 0
    _lock = threading.Lock()
    _listening = False

    @classmethod
    def _on_event(cls, event: str, _seconds: float, **_kw) -> None:
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            with cls._lock:
                cls.count += 1

    @classmethod
    def start(cls) -> None:
        with cls._lock:
            if not cls._listening:
                jax.monitoring.register_event_duration_secs_listener(cls._on_event)
                cls._listening = True


def programs_lowered() -> int:
    """How many programs this process has lowered for XLA so far (compiled or loaded from the
    persistent cache; counted from the first call): the difference over a piece of work says
    whether it compiled anything."""
    _Lowerings.start()
    return _Lowerings.count
