"""Scenario 4: the FilterExplorer on EfficientNet-Lite0 in JupyterLab. The grid shows draft tiles
first (half size, labelled "draft"), then the full-size pictures; clicking a tile opens its detail
view (the picture at full resolution beside its objective curve) inside the view's width.
The notebook is generated in the server's temporary root, never in the repository."""

from __future__ import annotations

import re
import time

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
    wait_drawn,
    wait_html,
    wait_kernel_idle,
    write_report,
)

pytestmark = pytest.mark.browser

CELLS = [
    "import cnnvis_widgets as cw\nfrom cnnvis_widgets.widgets import FilterExplorer\n\ncw.use_all_cores()",
    (
        'fe = FilterExplorer("efficientnet-lite0", layer="block6.expand", filters="0:4", steps=24, autorun=False)\n'
        "seen = []  # every status line and tile-label row the view showed\n"
        'fe.status.observe(lambda c: seen.append(c["new"]), "value")\n'
        'fe.grid.labels.observe(lambda c: seen.append("|".join(c["new"])), "text")\n'
        "fe.run()\n"
        "fe"
    ),
]
DRAFT = r"block6\.expand: step \d+/24 · draft 64 px \(1/2\)"  # one filter group: the draft is cheap
DONE = r"block6\.expand: 4 filters, 24 steps in [0-9.]+ s"


def test_filter_explorer_draws_a_draft_then_the_full_picture_and_a_detail_view(lab, lab_page):
    page, console = lab_page
    report: dict = {}
    notebook = lab.write_notebook("generated/filters_effnet.ipynb", CELLS)
    t0 = time.monotonic()
    open_notebook(page, lab, notebook)
    run_all_cells(page)
    figure = page.locator(".bqplot.figure").first
    figure.wait_for(state="visible", timeout=T_CELLS)
    figure.scroll_into_view_if_needed(timeout=T_SHOT)
    draft = wait_drawn(figure, T_RUN)  # the first frame the browser draws
    report["final_status"] = wait_html(page, "24 steps in", T_RUN, DONE)
    report["final_s"] = time.monotonic() - t0
    wait_kernel_idle(page, T_CELLS)
    assert not cell_errors(page), cell_errors(page)
    final = shot(figure, "s4-02-filters-full")
    assert_drawn(final, "the full-size grid")
    report["draft"], report["final"] = drawn(draft), drawn(final)
    labels = kernel_exec(page, "print('|'.join(fe.grid.labels.text), fe.result.images.shape)")
    assert labels.strip() == "0|1|2|3 (4, 128, 128, 3)", labels
    shown = kernel_exec(page, "print('\\n'.join(seen))").splitlines()
    report["shown"] = shown
    drafts = [i for i, line in enumerate(shown) if re.search(DRAFT, line)]
    assert drafts and "0 · draft|1 · draft|2 · draft|3 · draft" in shown, shown
    assert shown.index("0|1|2|3") > drafts[-1], shown  # the full tiles come after the draft

    # click the second tile (top right of the 2x2 grid): its detail view opens below the grid,
    # within the view's width
    box = figure.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.25)
    detail = page.locator("img.widget-image").last
    detail.wait_for(state="visible", timeout=T_RUN)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=detail.element_handle(), timeout=T_RUN)
    size = detail.evaluate("img => [img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().right]")
    view = page.locator(".jp-OutputArea-output", has=figure).first.bounding_box()  # the view's cell output
    report["detail"] = {"natural": size[:2], "right": size[2], "view_right": view["x"] + view["width"]}
    assert size[:2] == [960, 320], size
    assert size[2] <= view["x"] + view["width"] + 1, report["detail"]
    picked = kernel_exec(page, "print(fe.grid.selected)").strip()
    assert picked == "1", picked
    assert_drawn(shot(detail, "s4-03-filters-detail"), "the detail view")
    page.screenshot(path=str(ARTIFACTS / "s4-04-page.png"), timeout=T_SHOT)

    # a layer in another program group (a first visit: seconds of XLA): at once the old tiles fade
    # and the caption names the new layer; the status says it is compiling
    # (the debounce is stretched to 3 s here so that the faded frame stays long enough to be
    # photographed: with a warm compile cache the new layer's start images follow within ~0.5 s)
    kernel_exec(
        page,
        "import cnnvis_widgets.widgets.filters as f\n"
        "_debounce, f.DEBOUNCE_S = f.DEBOUNCE_S, 3.0\n"
        "fe.layer_slider.value = 'block9.expand'",
    )
    wait_html(page, "block9.expand", T_SHOT, r"block9\.expand · 4 filters · starting")
    stale = shot(figure, "s4-05-filters-stale-while-compiling", settle_ms=1500)
    kernel_exec(page, "f.DEBOUNCE_S = _debounce")
    report["stale"] = drawn(stale)
    assert stale.mean() > final.mean() + 25, (stale.mean(), final.mean())  # faded towards white
    report["compiling_status"] = wait_html(page, "compiling block9.expand (first visit", T_RUN)
    page.locator(".jp-OutputArea-output", has=figure).first.screenshot(
        path=str(ARTIFACTS / "s4-06-view-compiling.png"), timeout=T_SHOT
    )
    kernel_exec(page, "fe.stop()")
    write_report("s4-report", report)
    assert_console_clean(page, console)
