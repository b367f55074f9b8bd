"""explore(model): every view in one set of tabs, sharing the model and the selected image.

Tabs are built when first opened, so the dashboard appears at once and a view computes
only when someone looks at it. Views that show an input image each have an
``ImagePicker``; the dashboard keeps them on the same image (an image uploaded in one
view appears in all of them).
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from cnnvis_widgets.widgets.view import as_probe


def _filters(probe, images, dataset):
    from cnnvis_widgets.widgets.filters import FilterExplorer

    return FilterExplorer(probe)


def _saliency(probe, images, dataset):
    from cnnvis_widgets.widgets.saliency import SaliencyExplorer

    return SaliencyExplorer(probe, images)


def _concepts(probe, images, dataset):
    from cnnvis_widgets.widgets.concepts import ConceptExplorer

    return ConceptExplorer(probe, images, dataset=dataset)


def _activations(probe, images, dataset):
    from cnnvis_widgets.widgets.activations import ActivationExplorer

    return ActivationExplorer(probe, dataset=dataset)


def _weights(probe, images, dataset):
    from cnnvis_widgets.widgets.weights import WeightsView

    return WeightsView(probe)


def _embedding(probe, images, dataset):
    from cnnvis_widgets.widgets.embedding import EmbeddingExplorer

    return EmbeddingExplorer(probe, dataset)


def _training(probe, images, dataset):
    from cnnvis_widgets.widgets.training import TrainingMonitor

    return TrainingMonitor()


# (key, tab title, factory): the order of the tabs
VIEWS = (
    ("filters", "Filters", _filters),
    ("saliency", "Saliency", _saliency),
    ("concepts", "Concepts", _concepts),
    ("activations", "Feature maps", _activations),
    ("weights", "Weights", _weights),
    ("embedding", "Embedding", _embedding),
    ("training", "Training (digits)", _training),
)


class Dashboard(widgets.VBox):
    """All views of one model in tabs; ``views`` holds the ones built so far, by key."""

    def __init__(self, probe, images=None, dataset=None, views=None, start: str | None = None):
        probe = as_probe(probe)
        known = [key for key, _, _ in VIEWS]
        chosen = list(views) if views is not None else known
        unknown = [v for v in chosen if v not in known]
        if unknown or not chosen:
            raise ValueError(f"Unknown views {unknown or chosen!r}; choose from: {', '.join(known)}.")
        if start is not None and start not in chosen:
            raise ValueError(f"start={start!r} is not one of the dashboard's views: {', '.join(chosen)}.")
        self.probe, self.images, self.dataset = probe, images, dataset
        self.view_keys = chosen
        self.views: dict[str, widgets.Widget] = {}
        self._factories = {key: factory for key, _, factory in VIEWS}
        titles = {key: title for key, title, _ in VIEWS}
        self.tabs = widgets.Tab(
            [widgets.HTML(f"<i>opening {titles[k].lower()}…</i>") for k in chosen],
            titles=[titles[k] for k in chosen],
        )
        header = widgets.HTML(
            f"<b>{html.escape(probe.name)}</b> · input {'×'.join(map(str, probe.input_shape))} · "
            f"{len(probe.layers)} layers"
        )
        super().__init__([header, self.tabs])
        self.tabs.observe(lambda change: self.open_view(self.view_keys[change["new"]]), "selected_index")
        self.tabs.selected_index = chosen.index(start) if start else 0
        self.open_view(self.view_keys[self.tabs.selected_index])

    def open_view(self, key: str):
        """Build (once) and show the view ``key``; returns it."""
        if key not in self.view_keys:
            raise ValueError(f"No view {key!r} in this dashboard; it has: {', '.join(self.view_keys)}.")
        if key not in self.views:
            i = self.view_keys.index(key)
            try:
                view = self._factories[key](self.probe, self.images, self.dataset)
            except Exception as err:  # noqa: BLE001 - a view that cannot start says why in its tab
                view = widgets.HTML(
                    f"<span style='color:#b00'>⚠ {html.escape(type(err).__name__)}: {html.escape(str(err))}</span>"
                )
            self.views[key] = view
            self._sync_shown()
            children = list(self.tabs.children)
            children[i] = view
            self.tabs.children = children
            self._share_image(view)
        if self.tabs.selected_index != self.view_keys.index(key):
            self.tabs.selected_index = self.view_keys.index(key)
        self._sync_shown()
        return self.views[key]

    def _sync_shown(self) -> None:
        """Tell each built view whether its tab is the one on screen (``View.shown``)."""
        on_screen = self.view_keys[self.tabs.selected_index]
        for key, view in self.views.items():
            if hasattr(view, "shown"):
                view.shown = key == on_screen

    # ------------------------------------------------------------ shared image
    def _pickers(self):
        return [v.image_picker for v in self.views.values() if hasattr(v, "image_picker")]

    def _share_image(self, view) -> None:
        picker = getattr(view, "image_picker", None)
        if picker is None:
            return
        others = [p for p in self._pickers() if p is not picker]
        if others:  # a new view starts on the image the others show
            self._copy(others[0], picker)
        picker.observe(lambda change: self._broadcast(picker), "value")

    def _broadcast(self, source) -> None:
        for picker in self._pickers():
            if picker is not source:
                self._copy(source, picker)

    @staticmethod
    def _copy(source, target) -> None:
        if source.value not in target.names:
            target.add(source.value, source.image, select=False)
        if target.value != source.value:
            target.value = source.value

    @property
    def image(self):
        """The selected image shared by the views (fitted to the model), or None."""
        pickers = self._pickers()
        return pickers[0].image if pickers else None

    def close(self):
        for view in getattr(self, "views", {}).values():  # also when __init__ failed
            view.close()
        super().close()


def explore(model="digits-cnn", images=None, dataset=None, views=None, start: str | None = None) -> Dashboard:
    """One dashboard over ``model`` (a Probe or a zoo name) with every view in a tab."""
    return Dashboard(model, images=images, dataset=dataset, views=views, start=start)
