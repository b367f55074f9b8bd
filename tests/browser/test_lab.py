"""Scenario 1: the quickstart in a real JupyterLab + headless Chromium. The FilterExplorer's
grid draws, right side up, and moving the layer slider changes the label and the pixels.

Needs Debian's chromium (/usr/bin/chromium) and the Python ``playwright`` package (never
``playwright install``); see conftest.py for when it skips and when it fails. Screenshots go to
``test-artifacts/browser/``.

    .venv/bin/python -m pytest tests/browser -m browser -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.browser.helpers import (
    ARTIFACTS,
    T_CELLS,
    T_RUN,
    T_SHOT,
    assert_console_clean,
    assert_drawn,
    blocks,
    cell_errors,
    corr,
    drawn,
    kernel_exec,
    open_notebook,
    run_all_cells,
    shot,
    wait_changed,
    wait_kernel_idle,
    write_report,
)

pytestmark = pytest.mark.browser

NOTEBOOK = "notebooks/01_quickstart.ipynb"


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
        polling=250,
    )


# ---------------------------------------------------------------------------- the test
def test_quickstart_filter_explorer_draws_and_follows_the_layer_slider(lab, lab_page, tmp_path):
    page, console = lab_page
    report: dict = {}
    t0 = time.monotonic()
    open_notebook(page, lab, NOTEBOOK)
    report["lab_ready_s"] = time.monotonic() - t0

    t1 = time.monotonic()
    run_all_cells(page)
    figure = page.locator(".bqplot.figure").first
    figure.wait_for(state="visible", timeout=T_CELLS)
    report["figure_visible_s"] = time.monotonic() - t1
    figure.scroll_into_view_if_needed(timeout=T_SHOT)

    # the explorer's first run (conv3) fills the grid
    _wait_for_status(page, "conv3", T_RUN)
    report["first_run_done_s"] = time.monotonic() - t1
    first = shot(figure, "s1-01-conv3-after-first-run")
    assert_drawn(first, "the grid after the first run")
    report["conv3_stats"] = drawn(first)

    # all cells done: the kernel is free for the slider's comm messages
    wait_kernel_idle(page, T_CELLS)
    report["all_cells_s"] = time.monotonic() - t1
    assert not cell_errors(page), cell_errors(page)
    figure.scroll_into_view_if_needed(timeout=T_SHOT)
    before = shot(figure, "s1-02-conv3-before-slider")
    label_before = _layer_label(page)
    assert "conv3" in label_before, label_before

    # Right side up? Compare the browser's picture with what the kernel sent (row 0 = top).
    npy = tmp_path / "pixels.npy"
    out = kernel_exec(page, f"import numpy as _np; _np.save({str(npy)!r}, explorer.grid.pixels); print('ok')")
    assert "ok" in out, out
    sent = np.load(npy).astype(np.float32).mean(axis=-1)
    shown = before.mean(axis=-1)
    shown = shown[4:-4, 4:-4]  # the figure's 4 px margins
    upright = corr(blocks(shown), blocks(sent))
    flipped = corr(blocks(shown), blocks(sent[::-1]))
    report["orientation_corr"] = {"upright": upright, "flipped": flipped}
    assert upright > 0.5 and upright > flipped + 0.2, (
        f"the grid is not shown right side up: corr upright {upright:.2f}, flipped {flipped:.2f}"
    )

    # move the layer slider one step right with the keyboard (conv3 -> pool2)
    handle = (
        page.locator(".widget-slider", has=page.locator(".widget-label", has_text="layer"))
        .locator(".noUi-handle")
        .first
    )
    handle.focus(timeout=T_SHOT)
    t2 = time.monotonic()
    handle.press("ArrowRight", timeout=T_SHOT)
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
    _, diff = wait_changed(figure, before, T_RUN)
    report["first_new_frame_s"] = time.monotonic() - t2
    report["first_new_frame_diff"] = diff
    assert diff > 2.0, f"the grid did not change after the slider moved (mean abs diff {diff:.2f})"

    _wait_for_status(page, "pool2", T_RUN)
    report["pool2_run_done_s"] = time.monotonic() - t2
    after = shot(figure, "s1-03-pool2-after-slider")
    assert_drawn(after, "the grid after the slider move")
    report["pool2_stats"] = drawn(after)
    report["pool2_vs_conv3_diff"] = (
        float(np.abs(after - before).mean()) if after.shape == before.shape else None
    )
    report["labels"] = [label_before, label_after]
    report["status"] = _status_text(page)
    page.screenshot(path=str(ARTIFACTS / "s1-04-page.png"), timeout=T_SHOT)
    write_report("s1-report", report)
    assert_console_clean(page, console)
