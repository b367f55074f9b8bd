"""View: what every explorer shares — a worker, a status line, waiting, closing, saving.

A view is a VBox of controls and displays: a subclass calls ``super().__init__(name=...)``
first, builds its controls, then sets ``self.children``. Heavy work goes to ``self.runner`` (one
thread, newest request only); errors, from a control or from the worker, show in
``self.status`` instead of a traceback. Subclasses give ``to_figure()``; ``save()``
writes it as PNG.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as widgets
import traitlets

from cnnvis_widgets.widgets.runner import Runner


class View(widgets.VBox):
    """Base of the explorers: ``runner``, ``status``, ``wait()``, ``close()``, ``save()``.

    ``shown``: whether the view is on screen; a dashboard sets it False on its hidden tabs. A view
    whose figures have axes holds their updates meanwhile: bqplot lays a hidden figure out at
    width 0, and its plot area (0 minus the axes' margins) is refused by the browser ('<rect>
    attribute width: A negative value').
    """

    shown = traitlets.Bool(True)

    def __init__(self, name: str = "cnnvis-runner", **kwargs):
        super().__init__(**kwargs)
        self.status = widgets.HTML()
        self.runner = Runner(name=name, on_error=self.show_error)

    def show_error(self, err: BaseException, _trace: str = "") -> None:
        """Show ``err`` in the status line (the worker and the controls both report here)."""
        text = html.escape(f"{type(err).__name__}: {err}")
        self.status.value = f"<span style='color:#b00'>⚠ {text}</span>"

    def show_status(self, text: str) -> None:
        self.status.value = html.escape(text)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current work ends (for scripts and tests); False on timeout."""
        return self.runner.wait(timeout)

    def close(self):
        self.runner.close()
        super().close()

    def to_figure(self):
        """A matplotlib figure of what the view shows now."""
        raise NotImplementedError(f"{type(self).__name__} has no static figure.")

    def save(self, path: str | os.PathLike, dpi: int = 150) -> Path:
        """Save ``to_figure()`` as PNG; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_figure().savefig(path, dpi=dpi)
        return path


def as_probe(probe):
    """A Probe, or a zoo name ("digits-cnn") loaded into one."""
    from cnnvis_widgets.models.probe import require_probe

    if isinstance(probe, str):
        from cnnvis_widgets.models.zoo import load

        return load(probe)
    return require_probe(probe, "A view")
