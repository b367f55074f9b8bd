"""Fixtures of the browser scenarios: ONE JupyterLab server and ONE headless Chromium for the
whole session (starting them costs seconds each), a fresh browser context per test whose
console is recorded, and cleanup of every process started here by its PID, even on failure.

Without Debian's chromium, the playwright package, JupyterLab or Voila the scenarios are
skipped with the reason; with ``CNNVIS_REQUIRE_BROWSER=1`` (``.ci/run`` sets it) they fail
instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.browser.helpers import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, OFFLINE_URL, T_PAGE, T_SHOT
from tests.browser.jupyter_server import JupyterLabServer

REQUIRE = os.environ.get("CNNVIS_REQUIRE_BROWSER") == "1"


def _missing() -> list[str]:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"Debian chromium at {CHROMIUM} (apt-get install chromium chromium-driver)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright Python package (pip install -e '.[test]'; never `playwright install`)")
    for module, extra in (("jupyterlab", "notebook"), ("voila", "notebook")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (pip install -e '.[{extra}]')")
    return missing


@pytest.fixture(scope="session")
def browser_requirements():
    missing = _missing()
    if missing:
        reason = "browser tests need " + "; ".join(missing)
        if REQUIRE:
            pytest.fail(f"{reason} (CNNVIS_REQUIRE_BROWSER=1: not skipping)", pytrace=False)
        pytest.skip(reason)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------- processes
def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _is_chromium(pid: int) -> bool:
    try:
        return "chromium" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture(scope="session")
def lab(browser_requirements, request):
    # CNNVIS_FAST: the notebooks' quick mode, as in tests/test_notebooks.py
    server = JupyterLabServer(env={"CNNVIS_FAST": "1"})
    request.addfinalizer(server.cleanup)  # stops server + kernels by PID even on failure
    server.start()
    return server


@pytest.fixture(scope="session")
def browser(browser_requirements, request):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    state = {"pids": []}

    def stop():
        # a dead browser must not hide the test's own error
        if "browser" in state:
            with suppress(Exception):
                state["browser"].close()
        with suppress(Exception):
            pw.stop()
        for pid in state["pids"]:  # whatever chromium process survived, by its PID
            if _is_chromium(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    request.addfinalizer(stop)
    state["browser"] = pw.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS, timeout=T_PAGE
    )
    state["pids"] = [p for p in _descendants(os.getpid()) if _is_chromium(p)]
    return state["browser"]


# ---------------------------------------------------------------------------- pages
@contextmanager
def opened_page(browser, name: str):
    """A fresh context and page; yields (page, console). Requests leaving the machine are
    aborted (recorded in the console list as "blocked"). Afterwards: a screenshot of the whole
    page and the console, saved as test-artifacts/browser/<name>-final-page.png / -console.txt."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(T_PAGE)
    console: list[dict] = []

    def on_console(m):
        console.append({"type": m.type, "text": m.text, "url": (m.location or {}).get("url", "")})

    def block(route):
        console.append({"type": "blocked", "text": route.request.url, "url": route.request.url})
        route.abort("internetdisconnected")

    context.route(OFFLINE_URL, block)
    page = context.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda e: console.append({"type": "pageerror", "text": str(e), "url": ""}))
    try:
        yield page, console
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with suppress(Exception):  # the screenshot is a help, not the test
            page.screenshot(path=str(ARTIFACTS / f"{name}-final-page.png"), timeout=T_SHOT)
        (ARTIFACTS / f"{name}-console.txt").write_text(
            "\n".join(f"{m['type']}: {m['text']}" + (f"  [{m['url']}]" if m["url"] else "") for m in console)
        )
        with suppress(Exception):
            context.close()


@pytest.fixture
def lab_page(lab, browser, request):
    """(page, console) for a JupyterLab scenario; its kernels are shut down afterwards."""
    try:
        with opened_page(browser, request.node.name) as opened:
            yield opened
    finally:
        lab.shutdown_kernels()


@pytest.fixture
def page_and_console(browser, request):
    """(page, console) for any other server (Voila)."""
    with opened_page(browser, request.node.name) as opened:
        yield opened
