"""Scenario 7: the ConceptExplorer in JupyterLab at 1024 px. Its cards render and lay out cleanly
(measured in the page: nothing scrolls sideways or sticks out, labels inside their figures), a click
on a card in the browser overlays that concept's heatmap on the image (the overlay's pixels change
and the kernel's selection is that card), and "decompose" splits it into the layer below (the
path shows it). No console error. The notebook is generated in the server's temporary root."""

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
    check_layout,
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
    "import cnnvis_widgets as cw\nfrom cnnvis_widgets.widgets import ConceptExplorer\n\n"
    "_ = cw.use_all_cores()",
    'ce = ConceptExplorer("digits-cnn", layer="conv4", steps=32)\nce',
]
DONE = r"concepts for .* · [0-9.]+ s$"  # a finished job's status line: "conv4: 6 concepts … · 1.23 s"
SELECTED_RGB = np.array([255, 140, 0], np.float32)  # widgets/grid.py


def _tile_centre(page, figure, tile: int) -> dict:
    """Where tile ``tile`` of ``ce.cards`` is in its figure, in the figure's screen pixels."""
    code = f"print(*ce.cards.tile_box({tile}), *ce.cards.pixels.shape[:2])"
    top, left, th, tw, h, w = (int(v) for v in kernel_exec(page, code).split())
    box = figure.bounding_box()
    return {"x": (left + tw / 2) * box["width"] / w, "y": (top + th / 2) * box["height"] / h}


def test_concept_explorer_cards_render_and_a_click_overlays_that_concept(lab, lab_page):
    page, console = lab_page
    page.set_viewport_size({"width": 1024, "height": 1400})
    report: dict = {}
    notebook = lab.write_notebook("generated/concepts.ipynb", CELLS)
    t0 = time.monotonic()
    open_notebook(page, lab, notebook)
    run_all_cells(page)
    status = wait_html(page, "conv4: 6 concepts", T_RUN, DONE)
    wait_kernel_idle(page, T_CELLS)
    report["ready_s"] = time.monotonic() - t0
    assert not cell_errors(page), cell_errors(page)
    output = page.locator(".jp-OutputArea-output").nth(0)
    main, cards = output.locator(".bqplot.figure").nth(0), output.locator(".bqplot.figure").nth(1)

    # the cards are drawn, visible, and the view lays out cleanly at 1024 px
    m = check_layout(page, 0, "concepts", report)
    assert len(m["figures"]) == 2, f"expected the main figure and the cards, got {m['figures']}"
    left, top, right, bottom = m["figures"][1]["box"]
    report["cards_box"] = [left, top, right, bottom]
    assert right - left > 400 and bottom - top > 300, f"the cards are drawn small: {m['figures'][1]['box']}"
    labels = [text for *_, text in m["figures"][1]["labels"]]
    assert len(labels) == 6 and all("%" in t for t in labels), labels
    output.scroll_into_view_if_needed(timeout=T_SHOT)
    shot(output, "s7-01-concepts-view")
    cards_img = shot(cards, "s7-02-concepts-cards")
    assert_drawn(cards_img, "the concept cards")
    before = shot(main, "s7-03-concepts-main-first")
    assert_drawn(before, "the image and the first concept's heatmap")
    report["first"] = {"status": status, **drawn(before)}

    # a click on the third card's heatmap (second row) in the browser selects it
    t1 = time.monotonic()
    cards.click(position=_tile_centre(page, cards, 6 + 2))
    after, diff = wait_changed(main, before, T_RUN, threshold=1.0)
    report["click_s"] = time.monotonic() - t1
    half = after.shape[1] // 2
    assert after.shape == before.shape, f"the main figure changed size: {before.shape} → {after.shape}"
    overlay_diff = float(np.abs(after[:, half:] - before[:, half:]).mean())
    image_diff = float(np.abs(after[:, :half] - before[:, :half]).mean())
    report["click"] = {"diff": diff, "overlay_diff": overlay_diff, "image_diff": image_diff}
    assert overlay_diff > 2.0 and image_diff < 1.0, (
        f"the click did not change the overlay alone: overlay {overlay_diff:.2f}, image {image_diff:.2f}"
    )
    shot(main, "s7-04-concepts-main-third")
    out = kernel_exec(page, "print(ce.selected, ce.channel, int(ce.result.channels[2]), ce.cards.selected)")
    selected, channel, third, framed = (int(v) for v in out.split())
    report["kernel_selection"] = out.strip()
    assert selected == 2 and channel == third and framed == 2, f"the kernel says {out!r}"
    framed_img = shot(cards, "s7-05-concepts-cards-selected")
    orange = int(np.all(np.abs(framed_img - SELECTED_RGB) < 40, axis=-1).sum())
    report["orange_px"] = orange
    assert orange > 100, "the selected card is not framed"
    assert f"conv4:{channel}" in output.inner_text(timeout=T_SHOT)

    # decompose it into conv3 in the browser, then back up
    t2 = time.monotonic()
    output.locator("button", has_text="decompose").click(timeout=T_SHOT)
    status = wait_html(page, f"conv3 inside conv4:{channel}", T_RUN, DONE)
    report["decompose"] = {"status": status, "s": time.monotonic() - t2}
    wait_html(page, f"conv4:{channel} → conv3", T_SHOT)  # the path
    check_layout(page, 0, "decomposed", report)
    shot(output, "s7-06-concepts-decomposed")
    output.locator("button", has_text="back up").click(timeout=T_SHOT)
    wait_html(page, "conv4: 6 concepts", T_RUN, DONE)
    out = kernel_exec(page, "print(ce.layer_slider.value, ce.channel, len(ce.path))")
    assert out.split() == ["conv4", str(channel), "0"], f"the kernel says {out!r}"
    page.screenshot(path=str(ARTIFACTS / "s7-07-page.png"), timeout=T_SHOT)
    write_report("s7-report", report)
    assert_console_clean(page, console)
