"""ImageGrid: N tiles shown as ONE bqplot figure (a montage), updated in place.

Pixels travel as raw uint8 arrays over binary buffers (bqplot-image-gl's ``ImageGL``
mark: ~1 ms of kernel time per frame), never as PNG. Clicking a tile sets ``selected``, and
the selected tile is drawn framed. ``tile_px`` (a trait: a control can link to it) is the
tiles' size on screen; 0 fits the grid to ``FIT_WIDTH_PX``.
"""

from __future__ import annotations

import threading
import time

import bqplot
import ipywidgets as widgets
import numpy as np
import traitlets
from bqplot_image_gl import ImageGL
from bqplot_image_gl.interacts import MouseInteraction

from cnnvis_widgets import pixels as px


# a grid with tile_px=0 is this wide: JupyterLab at 1024 px with its file browser open leaves ~590 px
FIT_WIDTH_PX = 560
MAX_WIDTH_PX = 960
SELECTED_RGB = (255, 140, 0)  # the frame of the selected tile


def fitted_tile_px(n: int, ncols: int | None = None) -> int:
    """The tile size that makes ``n`` tiles ``FIT_WIDTH_PX`` wide (between 48 and 256 px)."""
    _, cols = px.grid_shape(n, ncols)
    return int(np.clip(FIT_WIDTH_PX // cols, 48, 256))


class ImageGrid(widgets.VBox):
    """A montage of tiles (N, H, W, C in [0, 1]) with labels; ``selected`` is the clicked tile."""

    selected = traitlets.Int(-1)
    frames = traitlets.Int(0)  # frames sent to the browser so far
    stale = traitlets.Bool(False)  # the tiles shown belong to an older request (``mark_stale``)
    tile_px = traitlets.Int(72)  # a tile's size on screen; 0: fit the grid to FIT_WIDTH_PX

    def __init__(
        self,
        tiles=None,
        labels=None,
        ncols: int | None = None,
        cmap: str = "gray",
        tile_px: int = 72,
        max_fps: float = 15.0,
        enlarge_tiny: bool = False,
        **kwargs,
    ):
        self.ncols, self.cmap, self.max_fps = ncols, cmap, max_fps
        # tiny tiles (3x3 kernels) drawn large are enlarged by an integer factor before the montage,
        # so its 1-pixel padding stays a thin line (images.pixel_zoom); off for the live views,
        # whose frames stay small
        self.enlarge_tiny = enlarge_tiny
        self._shape = None  # (n, h, w) of the tiles as drawn (enlarged by ``zoom``)
        self.zoom = 1  # the factor the last tiles were enlarged by
        self._montage = None  # the last montage sent, without the selection frame (uint8, row 0 on top)
        self._last = None  # (tiles, labels) of the last update: redrawn when tile_px changes
        self._relayout_due = False  # tile_px changed: the next frame lays out again
        self._next_send = 0.0
        # the worker (frames) and the kernel's event handlers may both draw: one at a time, or
        # ipywidgets' hold_sync bookkeeping races ("Set changed size during iteration", lost updates)
        self._lock = threading.RLock()
        self._x, self._y = bqplot.LinearScale(min=0, max=1), bqplot.LinearScale(min=0, max=1)
        self.mark = ImageGL(
            image=np.zeros((1, 1, 3), np.uint8),
            x=(0, 1),
            y=(0, 1),
            scales={"x": self._x, "y": self._y, "image": bqplot.ColorScale(min=0, max=1)},
        )
        # ImageGL marks send no element_click in the browser: a MouseInteraction reports clicks
        # in the scales' coordinates (x right, y up) instead
        self.mouse = MouseInteraction(x_scale=self._x, y_scale=self._y, events=["click"])
        self.mouse.on_msg(self._on_mouse)
        self.labels = bqplot.Label(
            x=[],
            y=[],
            text=[],
            scales={"x": self._x, "y": self._y},
            align="middle",
            default_size=10,
            colors=["#333333"],
        )
        self._gap = 0
        self._label_text: list[str] = []
        self.figure = bqplot.Figure(
            marks=[self.mark, self.labels],
            padding_x=0,
            padding_y=0,
            # no margins inside the figure: a figure laid out hidden (a dashboard's other tab) has
            # width 0, and bqplot's plot area would be 0 - margins, which the browser refuses
            # ('<rect> attribute width: A negative value'); the space around it is a CSS margin
            fig_margin=dict(top=0, bottom=0, left=0, right=0),
            interaction=self.mouse,
        )
        # what the tiles are, above them; says so when they are stale (``mark_stale``)
        self.caption = widgets.HTML(layout=widgets.Layout(margin="0 0 0 4px"))
        # no figure before the first tiles: an empty bqplot figure is a large black box
        self.figure.layout = widgets.Layout(display="none", margin="4px", overflow="hidden")
        super().__init__([self.caption, self.figure], **kwargs)
        self.tile_px = tile_px
        self.observe(self._relayout, "tile_px")
        self.observe(self._reframe, "selected")
        if tiles is not None:
            self.update(tiles, labels, force=True)

    @property
    def shown_tile_px(self) -> int:
        """The tiles' size on screen now (``tile_px``, or the fitted size when it is 0)."""
        if self.tile_px > 0:
            return self.tile_px
        return fitted_tile_px(self._shape[0] if self._shape else 1, self.ncols)

    @property
    def pixels(self) -> np.ndarray:
        """The montage as sent to the browser: (H, W, 3) uint8, row 0 at the top."""
        return np.asarray(self.mark.image)[::-1]

    def update(self, tiles, labels=None, force: bool = True, caption: str | None = None) -> bool:
        """Show new tiles (and ``caption`` above them, HTML); unless ``force``, skip frames beyond
        ``max_fps``. True if sent. Thread-safe."""
        with self._lock:
            sent = self._update(tiles, labels, force or self.stale, caption)
            if sent:
                self.stale = False
            return sent

    def mark_stale(self, caption: str) -> None:
        """Fade the tiles shown (they answer an older request) and say what is coming instead:
        at once, on the kernel thread, before the new request's first frame."""
        with self._lock:
            if self._shape is not None and not self.stale:
                self.selected = -1  # the selection belongs to the old tiles
                faded = np.asarray(self.mark.image).astype(np.uint16) * 2 // 5 + 153  # 40 % ink
                with self.mark.hold_sync():
                    self.mark.image = faded.astype(np.uint8)
                    if self._label_text:
                        self._place_labels(["…"] * len(self._label_text), self.mark.y[1])
            self.stale = True
            self.caption.value = caption

    def _update(self, tiles, labels, force: bool, caption: str | None = None) -> bool:
        now = time.monotonic()
        if not force and now < self._next_send:
            return False
        # a token bucket: frames go out at up to max_fps on average, bursts of one are not punished
        period = 1.0 / self.max_fps
        self._next_send = max(self._next_send, now - period) + period
        tiles = np.asarray(tiles, np.float32)
        if tiles.ndim != 4:
            raise ValueError(f"ImageGrid expects tiles of shape (N, H, W, C), got {tiles.shape}.")
        self._last = (tiles, labels)
        rgb = px.colorize(tiles, self.cmap) if tiles.shape[-1] == 1 else tiles[..., :3]
        self.zoom = px.pixel_zoom(tiles.shape[1:3], self.shown_tile_px) if self.enlarge_tiny else 1
        rgb = px.enlarge(rgb, self.zoom)
        shape = (len(tiles), *rgb.shape[1:3])  # the enlarged tiles'
        if self._shape is not None and self._shape != shape:
            self._montage = None  # so that clearing the selection redraws nothing old
            self.selected = -1  # other tiles: the selection is gone
        # laid out again for other tiles, a new tile size (``_relayout``), or labels come or go
        lay_out = self._shape != shape or self._relayout_due or (labels is not None) != (self._gap > 0)
        if lay_out:
            self._shape, self._relayout_due = shape, False
            # a band under each row for the labels: ~14 screen px, in tile pixels
            self._gap = int(np.ceil(14 * rgb.shape[1] / self.shown_tile_px)) if labels is not None else 0
        montage = px.to_uint8(px.montage(rgb, self.ncols, pad=1, pad_value=1.0, row_gap=self._gap))
        h, w = montage.shape[:2]
        with self.mark.hold_sync():  # not self.hold_sync(): `selected` is set by clicks, on the kernel thread
            if lay_out:
                self._resize_figure(len(tiles), h, w)
                self._lay_out_now()  # before the scales and the tiles reach the browser
                self.mark.x, self.mark.y = (0, w), (0, h)
                self._x.max, self._y.max = w, h
            self._montage = montage
            self.mark.image = self._framed(montage)[::-1]  # bqplot's y axis points up
            text = [str(label) for label in labels] if labels is not None else []
            if text != self._label_text:
                self._place_labels(text, h)
        if caption is not None:
            self.caption.value = caption  # before ``frames`` moves: an observer of frames sees both
        self.frames += 1
        return True

    def _resize_figure(self, n: int, h: int, w: int) -> None:
        """The figure's box for a montage of ``n`` tiles, ``h`` x ``w`` pixels: its width and height
        in one change of the one layout (a new Layout object reaches the browser a step later)."""
        _, cols = px.grid_shape(n, self.ncols)
        width = min(cols * self.shown_tile_px, MAX_WIDTH_PX)
        layout = self.figure.layout
        with layout.hold_sync():
            layout.width, layout.height = f"{width}px", f"{width * h / w:.0f}px"
            layout.display = None  # shown from the first tiles on

    def _lay_out_now(self) -> None:
        """Have bqplot lay the figure out for its new box now. It does so by itself only 300 ms
        after the box stops changing (a debounced ResizeObserver), and meanwhile draws the new
        montage and labels over the old box: stretched, labels outside the figure (issue 17,
        item 2). A title change makes it lay out on the next animation frame; the title is a
        blank that is never seen (the figure has no margin to show it in)."""
        self.figure.title = "" if self.figure.title else " "

    @property
    def tile_shape(self) -> tuple[int, int, int] | None:
        """(n, h, w) of the tiles last given to ``update`` (before ``zoom``); None before any."""
        if self._shape is None:
            return None
        n, h, w = self._shape
        return n, h // self.zoom, w // self.zoom

    def tile_box(self, i: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of tile ``i`` in ``pixels``."""
        n, th, tw = self._shape
        _, cols = px.grid_shape(n, self.ncols)
        r, c = divmod(i, cols)
        return r * (th + 1 + self._gap), c * (tw + 1), th, tw

    def tile_pixels(self, i: int) -> np.ndarray:
        """Tile ``i`` as sent to the browser, at the tile's own size: (h, w, 3) uint8."""
        y, x, th, tw = self.tile_box(i)
        return self.pixels[y : y + th : self.zoom, x : x + tw : self.zoom]

    def _framed(self, montage: np.ndarray) -> np.ndarray:
        """The montage with a frame (~3 screen px) just inside the selected tile's edge."""
        if not 0 <= self.selected < (self._shape[0] if self._shape else 0):
            return montage
        y0, x0, th, tw = self.tile_box(self.selected)
        k = max(1, round(3 * th / self.shown_tile_px))
        framed = montage.copy()
        tile = framed[y0 : y0 + th, x0 : x0 + tw]
        for edge in (tile[:k], tile[-k:], tile[:, :k], tile[:, -k:]):
            edge[...] = SELECTED_RGB[: montage.shape[-1]]
        return framed

    def _reframe(self, _change) -> None:
        with self._lock:
            if self._montage is not None and not self.stale:
                self.mark.image = self._framed(self._montage)[::-1]

    def _relayout(self, _change) -> None:
        with self._lock:
            self._relayout_due = True  # the next frame lays out at the new size (the selection stays)
            if self._last is not None and not self.stale:
                self._update(*self._last, force=True)

    def _place_labels(self, text: list[str], height: int) -> None:
        """One label centred in the band under each tile."""
        boxes = [self.tile_box(i) for i in range(len(text))]
        with self.labels.hold_sync():
            self.labels.x = [left + tw / 2 for _, left, _, tw in boxes]
            self.labels.y = [height - (top + th + self._gap * 0.6) for top, _, th, _ in boxes]
            self.labels.text = text
        self._label_text = text

    def tile_at(self, x: float, y: float) -> int | None:
        """The tile under figure coordinates (x right, y up), or None."""
        if self._shape is None:
            return None
        n, th, tw = self._shape
        h = self.mark.y[1]
        return px.tile_at(h - y, x, n, (th, tw), self.ncols, pad=1, row_gap=self._gap)

    def click(self, x: float, y: float) -> int | None:
        """Select the tile under figure coordinates (x right, y up), as a mouse click does."""
        index = self.tile_at(x, y)
        if index is not None:
            self.selected = index
        return index

    def _on_mouse(self, _interaction, content, _buffers=None):
        """``{"event": "click", "domain": {"x": .., "y": ..}}`` from the browser."""
        domain = content.get("domain", {}) if isinstance(content, dict) else {}
        if content.get("event") == "click" and "x" in domain and "y" in domain:
            self.click(float(domain["x"]), float(domain["y"]))
