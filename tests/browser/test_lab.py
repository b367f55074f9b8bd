"""The quickstart in a real JupyterLab + headless Chromium: the FilterExplorer's grid draws,
right side up, and moving the layer slider changes the label and the pixels.

Needs Debian's chromium (/usr/bin/chromium) and the Python ``playwright`` package (never
``playwright install``); skipped without them. Screenshots go to ``test-artifacts/browser/``.

    .venv/bin/python -m pytest tests/browser -m browser -s
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser.jupyter_server import REPO, JupyterLabServer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "browser"
NOTEBOOK = "notebooks/01_quickstart.ipynb"

try:
    import playwright.sync_api  # noqa: F401

    _HAVE_PLAYWRIGHT = True
except ImportError:
    _HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"browser test needs Debian chromium at {CHROMIUM} (apt-get install chromium)",
    ),
    pytest.mark.skipif(
        not _HAVE_PLAYWRIGHT,
        reason="browser test needs the playwright Python package (pip install playwright; "
        "never `playwright install`)",
    ),
]

LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Hard limits (ms) on every wait: Lab loads in seconds, the first cell imports JAX (~3 s), the
# explorer compiles its first run (a few s, less with the persistent cache).
T_PAGE = 60_000
T_CELLS = 300_000
T_RUN = 180_000


# ---------------------------------------------------------------------------- fixtures
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


@pytest.fixture(scope="module")
def lab(request):
    server = JupyterLabServer()
    request.addfinalizer(server.cleanup)  # stops server + kernels by PID even on failure
    server.start()
    return server


@pytest.fixture(scope="module")
def browser(request):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    state = {"pids": []}

    def stop():
        try:
            if "browser" in state:
                state["browser"].close()
        except Exception:  # noqa: BLE001 - a dead browser must not hide the test's own error
            pass
        try:
            pw.stop()
        except Exception:  # noqa: BLE001
            pass
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


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(T_PAGE)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final-page.png"), timeout=15_000)
    except Exception:  # noqa: BLE001
        pass
    (ARTIFACTS / f"{request.node.name}-console.txt").write_text("\n".join(console))
    context.close()


# ---------------------------------------------------------------------------- helpers
def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)


def _shot(figure, name: str) -> np.ndarray:
    """Screenshot of the figure element, saved under test-artifacts/browser/, as float RGB."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = figure.screenshot(timeout=15_000, animations="disabled")
    (ARTIFACTS / f"{name}.png").write_bytes(png)
    return _rgb(png)


def _drawn(img: np.ndarray) -> dict:
    """Statistics of a screenshot: is there a picture, not a blank (white/black) box?"""
    grey = img.mean(axis=-1)
    return dict(
        std=float(grey.std()),
        white=float((grey > 250).mean()),
        black=float((grey < 5).mean()),
    )


def _assert_drawn(img: np.ndarray, what: str) -> None:
    s = _drawn(img)
    assert s["std"] > 10 and s["white"] < 0.9 and s["black"] < 0.9, f"{what} looks blank: {s}"


def _blocks(grey: np.ndarray, n: int = 16) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((n, n), Image.BOX), np.float32)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


def _kernel_exec(page, code: str, timeout_ms: int = 60_000) -> str:
    """Run code in the notebook's kernel (the page's own session); return its stdout/errors."""
    return page.evaluate(
        """async ([code, timeout]) => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            const future = kernel.requestExecute({code, store_history: false, silent: false});
            const out = [];
            future.onIOPub = (msg) => {
                const t = msg.header.msg_type;
                if (t === 'stream') out.push(msg.content.text);
                if (t === 'error') out.push('ERROR ' + msg.content.ename + ': ' + msg.content.evalue);
            };
            const timer = new Promise((_, rej) => setTimeout(() => rej(new Error('kernel exec timeout')), timeout));
            await Promise.race([future.done, timer]);
            return out.join('');
        }""",
        [code, timeout_ms],
    )


def _status_text(page) -> str:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.widget-html-content'))
               .map(e => e.textContent).filter(t => t.includes('steps')).join(' | ')"""
    )


def _layer_label(page) -> str:
    return page.evaluate(
        """() => {
            const s = Array.from(document.querySelectorAll('.widget-slider'))
              .find(e => (e.querySelector('.widget-label') || {}).textContent === 'layer');
            const box = s && s.parentElement;
            const html = box && box.querySelector('.widget-html-content');
            return html ? html.textContent : '';
        }"""
    )


def _wait_for_status(page, pattern: str, timeout_ms: int) -> None:
    """Wait until the explorer's status line reports a finished run of ``pattern``."""
    page.wait_for_function(
        """(p) => Array.from(document.querySelectorAll('.widget-html-content'))
               .some(e => e.textContent.includes(p) && e.textContent.includes('steps in'))""",
        arg=pattern,
        timeout=timeout_ms,
    )


def _wait_kernel_idle(page, timeout_ms: int) -> None:
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            const nb = w && w.content;
            if (!nb || !nb.widgets) return false;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            // every code cell has an execution count and the kernel is idle
            const pending = nb.widgets.filter(c => c.model.type === 'code' &&
                   (c.model.executionCount === null || c.promptNode?.textContent?.includes('*')));
            return k && k.status === 'idle' && pending.length === 0;
        }""",
        timeout=timeout_ms,
        polling=250,
    )


# ---------------------------------------------------------------------------- the test
def test_quickstart_filter_explorer_draws_and_follows_the_layer_slider(lab, page, tmp_path):
    report: dict = {}
    t0 = time.monotonic()
    page.goto(lab.lab_url(NOTEBOOK), wait_until="domcontentloaded", timeout=T_PAGE)
    page.wait_for_function(
        """() => {
            const app = window.jupyterapp;
            const w = app && app.shell && app.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return !!(w && w.content && w.content.widgets && w.content.widgets.length && k && k.status === 'idle');
        }""",
        timeout=T_PAGE,
        polling=250,
    )
    report["lab_ready_s"] = time.monotonic() - t0

    t1 = time.monotonic()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    figure = page.locator(".bqplot.figure").first
    figure.wait_for(state="visible", timeout=T_CELLS)
    report["figure_visible_s"] = time.monotonic() - t1
    figure.scroll_into_view_if_needed(timeout=15_000)

    # the explorer's first run (conv3) fills the grid
    _wait_for_status(page, "conv3", T_RUN)
    report["first_run_done_s"] = time.monotonic() - t1
    first = _shot(figure, "01-conv3-after-first-run")
    _assert_drawn(first, "the grid after the first run")
    report["conv3_stats"] = _drawn(first)

    # all cells done: the kernel is free for the slider's comm messages
    _wait_kernel_idle(page, T_CELLS)
    report["all_cells_s"] = time.monotonic() - t1
    figure.scroll_into_view_if_needed(timeout=15_000)
    before = _shot(figure, "02-conv3-before-slider")
    label_before = _layer_label(page)
    assert "conv3" in label_before, label_before

    # Right side up? Compare the browser's picture with what the kernel sent (row 0 = top).
    npy = tmp_path / "pixels.npy"
    out = _kernel_exec(page, f"import numpy as _np; _np.save({str(npy)!r}, explorer.grid.pixels); print('ok')")
    assert "ok" in out, out
    sent = np.load(npy).astype(np.float32).mean(axis=-1)
    shown = before.mean(axis=-1)
    shown = shown[4:-4, 4:-4]  # the figure's 4 px margins
    upright = _corr(_blocks(shown), _blocks(sent))
    flipped = _corr(_blocks(shown), _blocks(sent[::-1]))
    report["orientation_corr"] = {"upright": upright, "flipped": flipped}
    assert upright > 0.5 and upright > flipped + 0.2, (
        f"the grid is not shown right side up: corr upright {upright:.2f}, flipped {flipped:.2f}"
    )

    # move the layer slider one step right with the keyboard (conv3 -> pool2)
    handle = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="layer")).locator(
        ".noUi-handle"
    ).first
    handle.focus(timeout=15_000)
    t2 = time.monotonic()
    handle.press("ArrowRight", timeout=15_000)
    page.wait_for_function(
        "(before) => { const s = Array.from(document.querySelectorAll('.widget-slider'))"
        ".find(e => (e.querySelector('.widget-label') || {}).textContent === 'layer');"
        "const h = s && s.parentElement.querySelector('.widget-html-content');"
        "return h && h.textContent && h.textContent !== before; }",
        arg=label_before,
        timeout=30_000,
        polling=50,
    )
    report["label_changed_s"] = time.monotonic() - t2
    label_after = _layer_label(page)
    assert label_after != label_before and "pool2" in label_after, (label_before, label_after)

    # the first new frame: poll screenshots until the picture differs
    deadline = time.monotonic() + T_RUN / 1000
    diff = 0.0
    while time.monotonic() < deadline:
        now = _rgb(figure.screenshot(timeout=15_000, animations="disabled"))
        diff = float(np.abs(now - before).mean()) if now.shape == before.shape else 255.0
        if diff > 2.0:
            break
        time.sleep(0.05)
    report["first_new_frame_s"] = time.monotonic() - t2
    report["first_new_frame_diff"] = diff
    assert diff > 2.0, f"the grid did not change after the slider moved (mean abs diff {diff:.2f})"

    _wait_for_status(page, "pool2", T_RUN)
    report["pool2_run_done_s"] = time.monotonic() - t2
    after = _shot(figure, "03-pool2-after-slider")
    _assert_drawn(after, "the grid after the slider move")
    report["pool2_stats"] = _drawn(after)
    report["pool2_vs_conv3_diff"] = float(np.abs(after - before).mean()) if after.shape == before.shape else None
    report["labels"] = [label_before, label_after]
    report["status"] = _status_text(page)
    page.screenshot(path=str(ARTIFACTS / "04-page.png"), timeout=15_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
