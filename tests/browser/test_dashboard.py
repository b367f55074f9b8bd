"""Scenario 3: the ``explore()`` dashboard renders.

- As the Voila app (``cnnvis app``'s notebook, served the same way), at 1024 px: the tabs
  appear, the Filters tab's grid draws; clicking "Saliency" builds that view and its grid draws;
  then another digit is picked and, while it computes, the Training tab is opened, and every
  other tab after it: each tab lays out cleanly (nothing scrolls sideways or sticks out, labels
  inside their figures), and no console error appears (hidden tabs once logged negative sizes).
- Notebook 7 ("bring your own model", ``notebooks/07_*.ipynb``) run in JupyterLab: its
  dashboard renders. The notebook is part of the tutorials: if it is missing, this FAILS.
"""

from __future__ import annotations

import time
from importlib.resources import files

import pytest

from tests.browser.helpers import (
    ARTIFACTS,
    check_layout,
    T_CELLS,
    T_PAGE,
    T_RUN,
    T_SHOT,
    assert_console_clean,
    assert_drawn,
    cell_errors,
    drawn,
    open_notebook,
    run_all_cells,
    shot,
    wait_drawn,
    wait_html,
    wait_kernel_idle,
    write_report,
)
from tests.browser.jupyter_server import REPO, VoilaServer

pytestmark = pytest.mark.browser

APP = files("cnnvis_widgets") / "apps" / "explore.ipynb"
NOTEBOOK_7 = "07_*.ipynb"
SALIENCY_DONE = r"target .* · [0-9.]+ s$"  # "vanilla gradient · target 0 · 0.41 s"
# a visible grid in the tab panel on show (Lumino hides the other panels)
VISIBLE_FIGURE = ".bqplot.figure:visible"


@pytest.fixture(scope="module")
def voila(browser_requirements, request):
    server = VoilaServer(
        APP,
        env={"CNNVIS_MODEL": "digits-cnn"},
    )
    request.addfinalizer(server.cleanup)  # stops voila + its kernels by PID even on failure
    server.start()
    return server


def _tab_titles(tabs) -> list[str]:
    return [t.strip() for t in tabs.locator(".lm-TabBar-tab").all_inner_texts()]


def test_voila_app_renders_the_dashboard_and_builds_a_tab_on_click(voila, page_and_console):
    page, console = page_and_console
    page.set_viewport_size({"width": 1024, "height": 1000})
    report: dict = {}
    t0 = time.monotonic()
    page.goto(voila.url, wait_until="domcontentloaded", timeout=T_PAGE)
    tabs = page.locator(".widget-tab").first
    tabs.wait_for(state="visible", timeout=T_CELLS)
    report["tabs_visible_s"] = time.monotonic() - t0
    titles = _tab_titles(tabs)
    report["tabs"] = titles
    assert "Filters" in titles and "Saliency" in titles, titles

    # the Filters tab (shown first): its grid fills in, the run finishes
    figure = tabs.locator(VISIBLE_FIGURE).first
    figure.wait_for(state="visible", timeout=T_CELLS)
    status = wait_html(page, "steps in", T_RUN)
    report["filters_done_s"] = time.monotonic() - t0
    filters = shot(figure, "s3-voila-01-filters")
    assert_drawn(filters, "the Voila dashboard's Filters grid")
    report["filters"] = {"status": status, **drawn(filters)}

    # another tab: built on the click, its grid draws
    t1 = time.monotonic()
    tabs.locator(".lm-TabBar-tab", has_text="Saliency").click(timeout=T_SHOT)
    status = wait_html(page, "target", T_RUN, SALIENCY_DONE)
    figure = tabs.locator(VISIBLE_FIGURE).first
    figure.wait_for(state="visible", timeout=T_RUN)
    saliency = wait_drawn(figure, T_RUN)
    report["saliency_done_s"] = time.monotonic() - t1
    saliency = shot(figure, "s3-voila-02-saliency")
    assert_drawn(saliency, "the Voila dashboard's Saliency grid")
    report["saliency"] = {"status": status, **drawn(saliency)}

    check_layout(page, 0, "saliency tab", report, selector=".widget-tab")

    # another digit, and at once the Training tab (built while the Saliency job runs), then the rest
    t2 = time.monotonic()
    picker = tabs.locator(".widget-dropdown:visible", has=page.locator(".widget-label", has_text="image"))
    picker.locator("select").first.select_option(index=3, timeout=T_SHOT)
    for title in ("Training", "Weights", "Feature maps", "Embedding", "Filters"):
        tabs.locator(".lm-TabBar-tab", has_text=title).click(timeout=T_SHOT)
        tabs.locator(VISIBLE_FIGURE).first.wait_for(state="visible", timeout=T_RUN)
        time.sleep(1.0)  # the tab's first frames (a layout change after them would show here)
        # a layout that settles within 3 s more passes: one of three full runs (2026-12-06) measured the
        # Embedding scatter's two marks' 'Dot0' / 'Dot1' texts overlapping 1 s after its first frame
        for wait in (1.0, 2.0, None):
            try:
                check_layout(page, 0, f"{title} tab", report, selector=".widget-tab")
                break
            except AssertionError:
                if wait is None:
                    raise
                time.sleep(wait)
        tabs.screenshot(path=str(ARTIFACTS / f"s3-voila-tab-{title.split()[0].lower()}.png"), timeout=T_SHOT)
    report["tour_s"] = time.monotonic() - t2

    body = page.evaluate("() => document.body.innerText")
    assert "There was an error when executing cell" not in body, body[-2000:]
    page.screenshot(path=str(ARTIFACTS / "s3-voila-03-page.png"), timeout=T_SHOT)
    write_report("s3-voila-report", report)
    assert_console_clean(page, console)


def test_notebook_7_bring_your_own_model_renders_its_dashboard(lab, lab_page):
    found = sorted((REPO / "notebooks").glob(NOTEBOOK_7))
    if not found:  # a tutorial of the release: its absence is a failure, never a skip
        pytest.fail(f"no notebooks/{NOTEBOOK_7} (notebook 7, 'bring your own model') in {REPO / 'notebooks'}")
    notebook = f"notebooks/{found[0].name}"
    if not (lab.root / notebook).exists():
        pytest.fail(f"{notebook} appeared after the JupyterLab server copied the notebooks; run again")
    page, console = lab_page
    report: dict = {"notebook": notebook}
    t0 = time.monotonic()
    open_notebook(page, lab, notebook)
    run_all_cells(page)
    tabs = page.locator(".widget-tab").first
    tabs.wait_for(state="visible", timeout=T_CELLS)
    report["tabs_visible_s"] = time.monotonic() - t0
    report["tabs"] = _tab_titles(tabs)
    wait_kernel_idle(page, T_CELLS)
    report["all_cells_s"] = time.monotonic() - t0
    # bqplot lays a figure out only while it is on screen (an IntersectionObserver): one that got
    # its first tiles off screen (the notebook ran on below it) stays hidden until one scrolls to
    # it, as a reader does (measured: visibility 'hidden' 2900 px above the view, drawn once there)
    tabs.locator(".bqplot.figure").first.evaluate("f => f.scrollIntoView({block: 'center'})")
    figure = tabs.locator(VISIBLE_FIGURE).first
    figure.wait_for(state="visible", timeout=T_RUN)
    wait_drawn(figure, T_RUN)
    report["grid_drawn_s"] = time.monotonic() - t0
    errors = cell_errors(page)
    assert not errors, f"{notebook} raised: {errors}"
    figure.scroll_into_view_if_needed(timeout=T_SHOT)
    grid = shot(figure, "s3-nb07-01-dashboard-grid")
    assert_drawn(grid, f"the dashboard's grid in {notebook}")
    report["grid"] = drawn(grid)
    tabs.screenshot(path=str(ARTIFACTS / "s3-nb07-02-dashboard.png"), timeout=T_SHOT)
    write_report("s3-nb07-report", report)
    assert_console_clean(page, console)
