"""What every benchmark's JSON records about the machine it ran on."""

import datetime
import os
import platform


def machine_info() -> dict:
    import flax
    import jax
    import numpy as np
    import optax

    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "load_avg_1_5_15": os.getloadavg(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
