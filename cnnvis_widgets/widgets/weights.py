"""WeightsView: a conv layer's kernels as images, one tile per filter (or per filter and input).

The kernels are read from the traced model (``kernels_as_images``), so any Flax model a
Probe wraps works. 0 weight is mid-grey; scaling by the largest |weight| of the layer keeps
relative strengths visible, per filter shows each one's pattern. First-layer RGB kernels
are shown in colour; otherwise one grayscale tile per input channel (a row per filter), the
mean over input channels, or one chosen input channel.
"""

from __future__ import annotations

import html
import time

import ipywidgets as widgets
import numpy as np

from cnnvis_widgets.engine.activations import kernels_as_images
from cnnvis_widgets.models import kernels as kernels_lib
from cnnvis_widgets.widgets.grid import ImageGrid
from cnnvis_widgets.widgets.view import View, as_probe

MODES = (
    ("auto (RGB or per input channel)", "auto"),
    ("colour (RGB inputs only)", "rgb"),
    ("every input channel", "all"),
    ("mean over input channels", "mean"),
    ("one input channel", "channel"),
)
SCALES = (("whole layer", "layer"), ("each filter", "filter"))
MAX_TILES = 1024  # "every input channel" shows the first filters that fit


class WeightsView(View):
    """The kernels producing a conv layer, as images.

    Args:
      probe: a Probe or a zoo name ("digits-cnn").
      layer: the starting conv layer (default the first one).
      mode: "auto", "rgb", "all", "mean" or "channel" (see ``MODES``).
      scale: "layer" or "filter" (see ``kernels_as_images``).
      autorun: show the kernels at once.
    """

    def __init__(
        self, probe, layer: str | None = None, *, mode: str = "auto", scale: str = "layer", autorun=True
    ):
        super().__init__(name="cnnvis-weights")
        self.probe = probe = as_probe(probe)
        # a conv after its norm and activation ("+act") has its conv's kernel: listed once
        self.conv_layers = [
            lyr.name for lyr in probe.layers if lyr.kind == "conv" and lyr.spatial and lyr.after is None
        ]
        if not self.conv_layers:
            raise ValueError(f"{probe.name} has no conv layers with kernels to show.")
        if layer is not None and layer in probe.layer_names:
            layer = probe.layer(layer).after or layer
        if layer is not None and layer not in self.conv_layers:
            raise ValueError(_not_conv(probe, layer, self.conv_layers))
        # results, written only by a job that is still current
        self.layer: str | None = None
        self.tiles: np.ndarray | None = None  # (N, kh, kw, 1|3) as shown
        self.labels: list[str] = []
        self.shown_mode = ""
        self._cache: dict[tuple, tuple[np.ndarray, str]] = {}
        self._inputs: dict[str, int] = {}  # layer → input channels per group of its kernel

        self.layer_select = widgets.Dropdown(
            options=self.conv_layers, value=layer or self.conv_layers[0], description="layer"
        )
        for what, value, valid in (("mode", mode, MODES), ("scale", scale, SCALES)):
            if value not in [v for _, v in valid]:
                raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(v for _, v in valid)}.")
        self.mode = widgets.Dropdown(
            options=MODES, value=mode, description="inputs", layout=widgets.Layout(width="340px")
        )  # its longest option whole: "auto (RGB or per input channel)"
        self.scale = widgets.Dropdown(options=SCALES, value=scale, description="scale")
        self.channel = widgets.BoundedIntText(0, min=0, max=4096, description="input ch.")
        self.grid = ImageGrid(cmap="gray", tile_px=0, enlarge_tiny=True)  # fitted: 3x3 kernels enlarged
        self.children = [
            widgets.HBox([self.layer_select, self.mode]),
            widgets.HBox([self.scale, self.channel]),
            self.status,
            self.grid,
        ]
        for control in (self.layer_select, self.mode, self.scale, self.channel):
            control.observe(lambda _change: self.run(), "value")
        if autorun:
            self.run()

    def set_layer(self, layer: str) -> None:
        """Show ``layer``'s kernels; a layer without a kernel shows why in the status line."""
        if layer in self.conv_layers:
            self.layer_select.value = layer
            return
        self.runner.cancel()
        self.show_error(ValueError(_not_conv(self.probe, layer, self.conv_layers)))

    # --------------------------------------------------------------- running
    def run(self) -> int:
        """Show the kernels for the controls' current values (on the worker); returns its generation."""
        self.channel.layout.display = None if self.mode.value == "channel" else "none"
        request = (self.layer_select.value, self.mode.value, self.scale.value, int(self.channel.value))
        self.show_status(f"reading {request[0]}'s kernels…")
        return self.runner.submit(lambda cancelled: self._job(request, cancelled))

    def _job(self, request, cancelled):
        start = time.monotonic()
        layer, mode, scale, channel = request
        if layer not in self._inputs:
            self._inputs[layer] = kernels_lib.layer_conv(self.probe, layer).kernel.shape[2]
        n_inputs = self._inputs[layer]
        if mode == "channel":
            channel = min(channel, n_inputs - 1)  # as the control clamps it once its maximum follows
        key = (layer, mode, scale, channel if mode == "channel" else 0)
        if key not in self._cache:
            self._cache[key] = _kernel_tiles(self.probe, layer, mode, scale, channel)
        raw, used = self._cache[key]
        if raw.ndim == 5:  # (out, in, kh, kw, 1): a row per filter, a column per input channel
            n_out, n_in = raw.shape[:2]
            keep = max(1, min(n_out, MAX_TILES // n_in))
            tiles = raw[:keep].reshape(keep * n_in, *raw.shape[2:])
            labels = [f"{o}" if i == 0 else "" for o in range(keep) for i in range(n_in)]
            ncols = n_in if n_in > 1 else None
            shown = f"{keep} of {n_out} filters × {n_in} input channels" if keep < n_out else None
        else:
            tiles, labels, ncols, shown = raw, [str(o) for o in range(len(raw))], None, None
            n_out = len(raw)
        if cancelled():
            return
        kh, kw = tiles.shape[1:3]
        what = {
            "rgb": "in colour",
            "all": "one tile per input channel (a row per filter)" if n_inputs > 1 else "grayscale",
            "mean": "mean over input channels",
            "channel": f"input channel {channel}",
        }[used]
        note = f" · showing {shown}: use 'mean' or 'one input channel' for all" if shown else ""
        with self.hold_sync():
            self.grid.ncols = ncols
            self.grid.update(tiles, labels, force=True)
            self.layer, self.tiles, self.labels, self.shown_mode = layer, tiles, labels, used
            self.channel.max = n_inputs - 1  # may clamp the value: the rerun then hits the cache
            self.status.value = html.escape(
                f"{layer}: {n_out} kernels of {kh}×{kw}, {what}, scaled by the {scale}'s largest |weight| "
                f"(grey = 0){note} · {time.monotonic() - start:.2f} s"
            )

    # ----------------------------------------------------------------- export
    def to_figure(self):
        """A matplotlib figure of the kernels shown now."""
        from cnnvis_widgets import export

        if self.tiles is None:
            raise RuntimeError("No kernels shown yet: call run() and wait().")
        return export.grid_figure(
            self.tiles,
            self.labels,
            title=f"{self.probe.name} · {self.layer} kernels ({self.shown_mode})",
            ncols=self.grid.ncols,
            cmap="gray",
            tile_inches=0.6,
        )


def _kernel_tiles(probe, layer: str, mode: str, scale: str, channel: int):
    """(tiles from kernels_as_images, the mode used): "auto" resolves to "rgb" or "all"."""
    if mode == "channel":
        tiles = kernels_as_images(probe, layer, input_channels=[channel], scale=scale)
        return tiles[:, 0], "channel"
    tiles = kernels_as_images(probe, layer, input_channels=mode, scale=scale)
    used = mode if mode != "auto" else ("rgb" if tiles.ndim == 4 else "all")
    return tiles, used


def _not_conv(probe, layer: str, conv_layers: list[str]) -> str:
    valid = f"Conv layers of {probe.name}: {', '.join(conv_layers)}."
    if layer not in probe.layer_names:
        return f"Unknown layer {layer!r} for model {probe.name}. {valid}"
    info = probe.layer(layer)
    return f"Layer {info.name!r} ({info.kind}, shape {info.shape}) has no convolution kernel to show. {valid}"
