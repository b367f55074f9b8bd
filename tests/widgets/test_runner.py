"""Runner: newest request only, one thread, errors reported and survived."""

import threading
import time

from cnnvis_widgets.widgets.runner import Runner


def test_only_the_newest_queued_job_runs():
    ran, gate = [], threading.Event()
    runner = Runner(name="t-newest")

    def job(i):
        def run(cancelled):
            if i == 0:
                gate.wait(5)
            ran.append((i, cancelled()))

        return run

    runner.submit(job(0))
    time.sleep(0.05)
    for i in range(1, 10):
        runner.submit(job(i))
    gate.set()
    assert runner.wait(10)
    assert ran == [(0, True), (9, False)]  # job 0 saw it was superseded; 1..8 never ran
    assert runner.finished == 1
    assert sum(t.name == "t-newest" for t in threading.enumerate()) == 1
    runner.close()


def test_errors_are_reported_and_the_worker_lives_on():
    errors = []
    runner = Runner(name="t-errors", on_error=lambda err, trace: errors.append((err, trace)))
    runner.submit(lambda cancelled: 1 / 0)
    assert runner.wait(5)
    done = []
    runner.submit(lambda cancelled: done.append(True))
    assert runner.wait(5)
    assert isinstance(errors[0][0], ZeroDivisionError) and "ZeroDivisionError" in errors[0][1]
    assert done == [True]
    runner.close()
    assert not any(t.name == "t-errors" and t.is_alive() for t in threading.enumerate())


def test_a_delayed_job_superseded_within_its_delay_never_starts():
    ran = []
    runner = Runner(name="t-debounce")
    for i in range(10):  # ten quick slider moves, 20 ms apart, each debounced by 0.2 s
        runner.submit(lambda cancelled, i=i: ran.append(i), delay=0.2)
        time.sleep(0.02)
    assert runner.busy
    assert runner.wait(5)
    assert ran == [9]  # none of the nine skipped ones started, not even the first
    t = time.monotonic()
    runner.submit(lambda cancelled: ran.append("late"), delay=0.2)
    runner.cancel()  # a cancel within the delay drops it too
    assert runner.wait(5) and time.monotonic() - t < 1
    assert ran == [9]
    runner.close()
