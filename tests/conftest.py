"""Test-wide settings: JAX's persistent compilation cache, so repeated runs compile less."""

import os
from pathlib import Path

import jax

_CACHE = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR", Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
