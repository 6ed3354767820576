"""Export model...: the widget's model as TorchScript, ONNX or a bioimage.io package (see
:mod:`napari_voxseg.core.export`), written in a background thread. A refusal (a two-stage model
for bioimage.io, a file a layer was opened from, a missing package) is one line in the status,
never a traceback; a failed export leaves no file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from qtpy.QtWidgets import QFileDialog

from ..core import VoxSegError
from ..core.card import image_channels
from ..core.export import FORMATS, SUFFIXES, check_export, check_exportable, export_model
from .workers import start_worker

LABELS = {"torchscript": "TorchScript (.pt)", "onnx": "ONNX (.onnx)",
          "bioimageio": "bioimage.io package (.zip)"}


class ModelExport:
    """Its ``format`` box and ``button``; ``export(path)`` writes in the background."""

    def __init__(self, viewer, form, model, say):
        self.viewer, self.form, self.model, self.say = viewer, form, model, say
        self.format = ComboBox(label="Export as", value="onnx",
                               choices=[(LABELS[f], f) for f in FORMATS],
                               tooltip="TorchScript and ONNX take a normalized patch and give "
                                       "logits (a JSON beside says how); bioimage.io runs in "
                                       "ilastik, deepImageJ and bioimageio.core")
        self.button = PushButton(text="Export model...")
        self.row = Container(widgets=[self.format, self.button], layout="horizontal",
                             labels=False)
        self.row.margins = (0, 0, 0, 0)
        self.button.changed.connect(self._clicked)
        self._worker = None

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _clicked(self) -> None:
        fmt = self.format.value
        suffix = SUFFIXES[fmt]
        path, _ = QFileDialog.getSaveFileName(None, "Export the model", f"model{suffix}",
                                              f"{LABELS[fmt]} (*{suffix})")
        if path:
            chosen = Path(path)
            path = chosen if chosen.suffix.lower() == suffix else \
                chosen.with_name(chosen.name + suffix)
            # The dialog asked before replacing the file it returned, and only that one.
            self.export(path, overwrite=path == chosen and chosen.exists())

    def export(self, path, fmt: str | None = None, *, overwrite: bool = False) -> bool:
        """Export the model to ``path`` in a background thread; False (and a line in the
        status) when it is refused at once."""
        fmt = fmt or self.format.value
        model = self.model()
        sources = [layer.source.path for layer in self.viewer.layers if layer.source.path]
        try:
            if model is None:
                raise VoxSegError("no model to export: train or load one first")
            check_export(path, fmt, inputs=sources, overwrite=overwrite)
            check_exportable(model, fmt)
        except VoxSegError as exc:
            self.say(str(exc))
            return False
        self.button.enabled = False
        self.say(f"exporting the model as {fmt}...")
        self._worker = start_worker(
            _export, model, path, fmt, overwrite=overwrite, inputs=sources,
            image=self._sample_image(model), returned=self.say, finished=self._done,
            errored=lambda exc: self.say(f"could not export: {type(exc).__name__}: {exc}"))
        return True

    def _done(self) -> None:
        self.button.enabled = True
        self._worker = None

    def _sample_image(self, model):
        """The chosen image, for a bioimage.io package's test input (in memory, 3D, for a
        one-channel model); None: voxseg's sample."""
        layer = self.form.image_choice.value
        data = getattr(layer, "data", None)
        if isinstance(data, np.ndarray) and data.ndim == 3 and image_channels(
                model.config) == 1 and not getattr(layer, "rgb", False):
            return data
        return None


def _export(model, path, fmt, **kwargs) -> str:
    """Export (in the worker); what to tell the user, success or not."""
    try:
        paths = export_model(model, path, fmt, **kwargs)
    except VoxSegError as exc:
        return f"could not export: {exc}"
    except Exception as exc:  # a full disk, an operator the exporter lacks: said, not raised
        return f"could not export: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return "exported to " + " and ".join(str(p) for p in paths)
