"""One worker thread per widget that runs only the newest request.

Widgets submit jobs; a job submitted while another waits replaces it, and a job
that is running sees ``cancelled()`` turn True as soon as a newer one arrives (the
engine's callback checks it between compiled calls). A generation counter tells stale
results from current ones. Errors never kill the thread: they go to ``on_error``.
A job submitted with a ``delay`` starts only if no newer job arrives within it (debouncing: a
slider arrowed over ten layers compiles and runs only the layer it rests on).
A thread, not asyncio tasks: tasks created from a cell can stall after the cell
ends (ipykernel #1510, ipywidgets #4012).
"""

from __future__ import annotations

import threading
import traceback
from typing import Callable

from cnnvis_widgets.memory import release_freed_memory

Job = Callable[[Callable[[], bool]], None]


class Runner:
    """Runs submitted jobs one at a time on a single daemon thread, newest first."""

    def __init__(
        self, name: str = "cnnvis-runner", on_error: Callable[[BaseException, str], None] | None = None
    ):
        self.name = name
        self.on_error = on_error
        self._cond = threading.Condition()
        self._pending: tuple[int, Job, float] | None = None
        self._generation = 0
        self._running = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.finished = 0  # jobs that ran to completion (not cancelled, no error)

    @property
    def generation(self) -> int:
        return self._generation

    def submit(self, job: Job, delay: float = 0.0) -> int:
        """Queue ``job(cancelled)``, replacing any queued one; returns its generation. With a
        ``delay`` (seconds), the job starts only if no newer one is submitted meanwhile."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"Runner {self.name!r} is closed.")
            self._generation += 1
            self._pending = (self._generation, job, float(delay))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._generation

    def cancel(self) -> None:
        """Drop the queued job and ask the running one to stop at its next check."""
        with self._cond:
            self._generation += 1
            self._pending = None
            self._cond.notify_all()

    def is_current(self, generation: int) -> bool:
        return generation == self._generation

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._running, timeout)

    @property
    def busy(self) -> bool:
        return self._pending is not None or self._running

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._generation += 1
            self._pending = None
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                generation, job, delay = self._pending
                self._pending = None
                self._running = True
                if delay > 0:  # debounce: a newer submission (or cancel) within the delay replaces it
                    self._cond.wait_for(lambda: generation != self._generation, timeout=delay)
                    if generation != self._generation:
                        self._running = False
                        self._cond.notify_all()
                        continue
            try:
                job(lambda: generation != self._generation)
                if generation == self._generation:
                    self.finished += 1
            except BaseException as err:  # noqa: BLE001 - reported, the thread lives on
                if self.on_error is not None:
                    try:
                        self.on_error(err, traceback.format_exc())
                    except Exception:  # an error handler failing must not kill the worker
                        traceback.print_exc()
            finally:
                with self._cond:
                    self._running = False
                    idle = self._pending is None
                    self._cond.notify_all()
                if idle:  # a run frees its arrays (hundreds of MB at 512 px): give them back
                    release_freed_memory()
