"""Scenario 2: the SaliencyExplorer in JupyterLab. Picking another method in the browser
recomputes the map: the grid's pixels change, and the kernel's ``result.method`` is the new
method. The notebook is generated in the server's temporary root, never in the repository."""

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
    cell_errors,
    drawn,
    kernel_exec,
    open_notebook,
    run_all_cells,
    shot,
    wait_changed,
    wait_html,
    wait_kernel_idle,
    write_report,
)

pytestmark = pytest.mark.browser

CELLS = [
    (
        "import cnnvis_widgets as cw\n"
        "from cnnvis_widgets.widgets.saliency import SaliencyExplorer\n"
        "\n"
        "cw.use_all_cores()"
    ),
    'sal = SaliencyExplorer("digits-cnn")\nsal',
]
DONE = r" · [0-9.]+ s$"  # the status line of a finished job: "<method> · target <t> · 0.41 s"


def test_saliency_explorer_follows_the_method_dropdown(lab, lab_page):
    page, console = lab_page
    report: dict = {}
    notebook = lab.write_notebook("generated/saliency.ipynb", CELLS)
    t0 = time.monotonic()
    open_notebook(page, lab, notebook)
    run_all_cells(page)
    figure = page.locator(".bqplot.figure").first
    figure.wait_for(state="visible", timeout=T_CELLS)
    status = wait_html(page, "vanilla gradient ·", T_RUN, DONE)
    wait_kernel_idle(page, T_CELLS)
    report["first_map_s"] = time.monotonic() - t0
    assert not cell_errors(page), cell_errors(page)
    figure.scroll_into_view_if_needed(timeout=T_SHOT)
    before = shot(figure, "s2-01-saliency-vanilla")
    assert_drawn(before, "the saliency grid (vanilla gradient)")
    report["vanilla"] = {"status": status, **drawn(before)}

    # pick Grad-CAM in the browser's method dropdown
    select = page.locator(".widget-dropdown", has=page.locator(".widget-label", has_text="method")).locator(
        "select"
    )
    t1 = time.monotonic()
    select.select_option(label="Grad-CAM", timeout=T_SHOT)
    status = wait_html(page, "Grad-CAM ·", T_RUN, DONE)
    report["gradcam_status_s"] = time.monotonic() - t1
    _, diff = wait_changed(figure, before, T_RUN, threshold=2.0)
    report["gradcam_frame_s"] = time.monotonic() - t1
    after = shot(figure, "s2-02-saliency-gradcam")
    assert_drawn(after, "the saliency grid (Grad-CAM)")
    # the right tile is the map over the image; the left one (the image itself) stays
    w = after.shape[1] // 2
    map_diff = float(np.abs(after[:, w:] - before[:, w:]).mean()) if after.shape == before.shape else 255.0
    report["gradcam"] = {"status": status, "diff": diff, "map_tile_diff": map_diff, **drawn(after)}
    assert diff > 2.0 and map_diff > 5.0, (
        f"the map did not change in the browser after picking Grad-CAM: mean abs diff {diff:.2f}, "
        f"map tile {map_diff:.2f}"
    )

    out = kernel_exec(page, "print(sal.method.value, sal.result.method)")
    report["kernel"] = out.strip()
    assert out.split() == ["gradcam", "gradcam"], f"the kernel says {out!r}"
    page.screenshot(path=str(ARTIFACTS / "s2-03-page.png"), timeout=T_SHOT)
    write_report("s2-report", report)
    assert_console_clean(page, console)
