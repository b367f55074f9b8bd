"""What the browser scenarios share: hard time limits, screenshots and their statistics, the
console check, and small drivers for JupyterLab pages (run all cells, wait for the kernel,
run code in the page's kernel)."""

from __future__ import annotations

import io
import json
import re
import time
from urllib.parse import urlparse

import numpy as np

from tests.browser.jupyter_server import REPO

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "browser"

# Hard limits (ms) on every wait: Lab loads in seconds, the first cell imports JAX (~3 s), an
# explorer compiles its first run (a few s, less with the persistent cache). The machine may be
# shared and busy, hence the margins; the suite as a whole takes well under 3 minutes.
T_PAGE = 60_000
T_CELLS = 300_000
T_RUN = 180_000
T_SHOT = 15_000

# Screenshots cost CPU (SwiftShader renders, Chromium encodes a PNG) that the kernel under test
# needs on 2 cores: poll them a few times a second, not in a tight loop.
POLL_S = 0.25

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

# ----------------------------------------------------------------------------- the console
# Widget errors as @jupyter-widgets (base, base-manager, jupyterlab-manager, html-manager)
# writes them to the console, and the texts it puts in the page instead of a widget.
WIDGET_ERRORS = re.compile(
    r"model not found|failed to load (model |view )?class|could not create a view|could not create view"
    r"|could not create a model|could not instantiate widget|class \S+ not found in module"
    r"|error displaying widget",
    re.IGNORECASE,
)
# Requests that leave the machine are aborted (the tests are offline everywhere, CI included).
# Known harmless: Voila's lab template and base page link Font Awesome from jsDelivr
# (cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free, .../font-awesome@4.5.0): without them a
# few icons are missing, no widget depends on them. Google Fonts are listed for other templates.
HARMLESS_OFFLINE_HOSTS = ("cdn.jsdelivr.net", "fonts.googleapis.com", "fonts.gstatic.com")
# Known harmless console errors that are not widget errors, with why: none left. (A bqplot figure
# laid out while hidden used to log '<rect> attribute width: A negative value ("-8")'; the
# SaliencyExplorer now adds its sanity row only when it is shown.)
HARMLESS_ERRORS = re.compile(r"(?!)")  # matches nothing
OFFLINE_URL = re.compile(r"^(https?|wss?)://(?!(127\.0\.0\.1|localhost)(:\d+)?/)")


def console_problems(console: list[dict]) -> list[str]:
    """The console entries that fail a scenario: uncaught page errors, widget errors anywhere,
    and any other console error except failed loads from the harmless offline hosts and the
    known harmless errors above."""
    bad = []
    for m in console:
        line = f"{m['type']}: {m['text']}" + (f" ({m['url']})" if m.get("url") else "")
        if m["type"] == "pageerror" or WIDGET_ERRORS.search(m["text"]):
            bad.append(line)
        elif m["type"] == "error":
            host = urlparse(m.get("url") or "").hostname or ""
            if m["text"].startswith("Failed to load resource") and host in HARMLESS_OFFLINE_HOSTS:
                continue
            if HARMLESS_ERRORS.search(m["text"]):
                continue
            bad.append(line)
    return bad


def assert_console_clean(page, console: list[dict]) -> None:
    """No widget errors in the console nor in the page's text, no uncaught page errors."""
    text = page.evaluate("() => document.body ? document.body.innerText : ''")
    in_page = sorted({m.group(0) for m in WIDGET_ERRORS.finditer(text)})
    bad = console_problems(console)
    assert not bad and not in_page, "the browser reported errors:\n  " + "\n  ".join(
        bad + [f"in the page: {t!r}" for t in in_page]
    )


# ----------------------------------------------------------------------------- pixels
def rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)


def shot(element, name: str, settle_ms: int = T_SHOT) -> np.ndarray:
    """Screenshot of an element once its picture has settled (two screenshots in a row agree: a
    frame can take a few animation frames to show, e.g. the texture before the new scales),
    saved as test-artifacts/browser/<name>.png; returned as float RGB."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + settle_ms / 1000
    png = element.screenshot(timeout=T_SHOT, animations="disabled")
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        again = element.screenshot(timeout=T_SHOT, animations="disabled")
        a, b = rgb(png), rgb(again)
        png = again
        if a.shape == b.shape and float(np.abs(a - b).mean()) < 0.5:
            break
    (ARTIFACTS / f"{name}.png").write_bytes(png)
    return rgb(png)


# ImageGrid's figures have 4 px white margins: judged without them, a blank grid (black, with
# only its labels) is ~96% black, a drawn one a few % to ~30% white or black.
MARGIN = 4
BLANK = 0.85


def drawn(img: np.ndarray) -> dict:
    """Statistics of a screenshot inside the figure's margins: a picture, or a blank box?"""
    if min(img.shape[:2]) > 4 * MARGIN:
        img = img[MARGIN:-MARGIN, MARGIN:-MARGIN]
    grey = img.mean(axis=-1)
    return {"std": float(grey.std()), "white": float((grey > 250).mean()), "black": float((grey < 5).mean())}


def is_drawn(img: np.ndarray) -> bool:
    s = drawn(img)
    return s["std"] > 10 and s["white"] < BLANK and s["black"] < BLANK


def assert_drawn(img: np.ndarray, what: str) -> None:
    assert is_drawn(img), f"{what} looks blank: {drawn(img)}"


def wait_drawn(element, timeout_ms: int) -> np.ndarray:
    """Poll screenshots of ``element`` until it shows a picture; the last one (drawn or not)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        img = rgb(element.screenshot(timeout=T_SHOT, animations="disabled"))
        if is_drawn(img) or time.monotonic() > deadline:
            return img
        time.sleep(POLL_S)


def wait_changed(
    element, before: np.ndarray, timeout_ms: int, threshold: float = 2.0
) -> tuple[np.ndarray, float]:
    """Poll screenshots until the picture differs from ``before``; (the last one, mean abs diff)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        now = rgb(element.screenshot(timeout=T_SHOT, animations="disabled"))
        diff = float(np.abs(now - before).mean()) if now.shape == before.shape else 255.0
        if diff > threshold or time.monotonic() > deadline:
            return now, diff
        time.sleep(POLL_S)


def blocks(grey: np.ndarray, n: int = 16) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((n, n), Image.BOX), np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


# ----------------------------------------------------------------------------- widgets
def wait_html(page, needle: str, timeout_ms: int, pattern: str = "") -> str:
    """Wait until an HTML widget's text contains ``needle`` (and matches the regex ``pattern``);
    returns that text."""
    page.wait_for_function(
        """([needle, pattern]) => Array.from(document.querySelectorAll('.widget-html-content'))
               .some(e => e.textContent.includes(needle) && (!pattern || new RegExp(pattern).test(e.textContent)))""",
        arg=[needle, pattern],
        timeout=timeout_ms,
        polling=250,
    )
    return page.evaluate(
        """([needle, pattern]) => Array.from(document.querySelectorAll('.widget-html-content'))
               .map(e => e.textContent)
               .find(t => t.includes(needle) && (!pattern || new RegExp(pattern).test(t)))""",
        [needle, pattern],
    )


# ----------------------------------------------------------------------------- JupyterLab
def open_notebook(page, lab, notebook: str) -> None:
    """Open ``notebook`` in a fresh Lab workspace; wait for its kernel to be idle."""
    page.goto(lab.lab_url(notebook), wait_until="domcontentloaded", timeout=T_PAGE)
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


def run_all_cells(page) -> None:
    """Start running every cell. Returns at once: the command's promise resolves only when the
    last cell is done, and ``page.evaluate`` has no timeout; the waits that follow have one."""
    page.evaluate(
        """() => { window.jupyterapp.commands.execute('notebook:run-all-cells')
                     .catch(e => console.error('notebook:run-all-cells failed: ' + e)); }"""
    )


def wait_kernel_idle(page, timeout_ms: int) -> None:
    """Every code cell ran (has an execution count, no [*]) and the kernel is idle."""
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            const nb = w && w.content;
            if (!nb || !nb.widgets) return false;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            const pending = nb.widgets.filter(c => c.model.type === 'code' &&
                   (c.model.executionCount === null || c.promptNode?.textContent?.includes('*')));
            return k && k.status === 'idle' && pending.length === 0;
        }""",
        timeout=timeout_ms,
        polling=250,
    )


def cell_errors(page) -> list[str]:
    """Tracebacks shown in the notebook's outputs (ename: evalue, first line)."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll(
                 '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'))
               .map(e => e.textContent.trim().split('\\n').filter(l => l.trim()).slice(-1)[0] || '')"""
    )


def kernel_exec(page, code: str, timeout_ms: int = 60_000) -> str:
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


def write_report(name: str, report: dict) -> None:
    """Timings and statistics of a scenario, as test-artifacts/browser/<name>.json (and printed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


# ----------------------------------------------------------------------------- layout
# In the index-th element matching a selector: what scrolls sideways, how far the content
# reaches past the element's right edge (px), and the grid figures' boxes with their labels'
# text boxes (page px). Only what is shown counts (Lumino hides the other tabs' panels).
MEASURE = """([selector, index]) => {
    const out = document.querySelectorAll(selector)[index];
    const over = [];
    const shown = e => e.offsetParent !== null || e === out;
    for (const e of [out, ...out.querySelectorAll('.widget-box, .widget-html-content')].filter(shown)) {
        const excess = e.scrollWidth - e.clientWidth;
        if (excess > 1 && getComputedStyle(e).overflowX !== 'visible') over.push([e.className, excess]);
    }
    const outBox = out.getBoundingClientRect();
    const reach = Math.max(...Array.from(out.querySelectorAll('*')).filter(shown)
        .map(e => e.getBoundingClientRect().right));
    const figures = Array.from(out.querySelectorAll('.bqplot.figure')).filter(shown).map(f => {
        const b = f.getBoundingClientRect();
        const labels = Array.from(f.querySelectorAll('text.object_label, .label text, text'))
            .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
            .map(t => { const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, t.textContent]; });
        return {box: [b.left, b.top, b.right, b.bottom], labels};
    });
    return {over, width: outBox.width, right: outBox.right, reach, figures};
}"""


def check_layout(page, index: int, what: str, report: dict, selector: str = ".jp-OutputArea-output") -> dict:
    """Assert that the ``index``-th ``selector`` lays out cleanly: nothing in it scrolls sideways or
    reaches past its right edge, and its grids' labels stay inside their figure and apart.
    Records the measures in ``report[what]``; returns them."""
    m = page.evaluate(MEASURE, [selector, index])
    report[what] = {"over": m["over"], "width": m["width"], "reach_past": m["reach"] - m["right"]}
    assert not m["over"], f"{what}: content scrolls sideways inside {m['over']}"
    assert m["reach"] <= m["right"] + 1, f"{what}: something reaches {m['reach'] - m['right']:.0f} px past the output"
    for fig in m["figures"]:
        left, top, right, bottom = fig["box"]
        boxes = fig["labels"]
        for x0, y0, x1, y1, text in boxes:
            assert x0 >= left - 1 and x1 <= right + 1 and y0 >= top - 1 and y1 <= bottom + 1, (
                f"{what}: label {text!r} at {[x0, y0, x1, y1]} leaves its figure {fig['box']}"
            )
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                overlap_y = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_x <= 1 or overlap_y <= 1, f"{what}: labels {a[4]!r} and {b[4]!r} overlap"
    return m
