"""``python -m napari_voxseg demo``: napari with the sample volume and the VoxSeg widget.

With ``--headless`` (no person at the screen; still needs a display, e.g. Xvfb) it runs the
same loop by itself: trains on the example strokes, predicts, writes the prediction, a
screenshot and the Dice per class against the sample's ground truth into ``out_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def wait_for(widget, timeout: float = 1800.0) -> None:
    """Run the Qt event loop until the widget's worker is done."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while widget.running and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def settle(turns: int = 10) -> None:
    """Let Qt handle what is pending (layouts, timers) for a few turns of its loop."""
    from qtpy.QtWidgets import QApplication

    for _ in range(turns):
        QApplication.processEvents()
        time.sleep(0.01)


def open_demo(viewer):
    """Add the sample layers and dock the widget; return the widget."""
    from .widget import VoxSegWidget

    viewer.open_sample("napari-voxseg", "cells")
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="VoxSeg", area="right")
    widget.image_choice.value = viewer.layers["voxseg sample"]
    widget.labels_choice.value = viewer.layers["voxseg sample strokes"]
    viewer.dims.set_point(0, viewer.layers["voxseg sample"].data.shape[0] // 2 *
                          viewer.layers["voxseg sample"].scale[0])
    return widget


DEMO_OUTPUTS = ("prediction.tif", "model", "screenshot.png", "report.json")


def check_demo_folder(out_dir: Path) -> None:
    """The headless demo writes only into a new folder, or one that holds nothing but an
    earlier demo's outputs (which it replaces)."""
    from ..core import VoxSegError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VoxSegError(f"{out_dir} is a file; give a folder name for the demo's outputs")
    if out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if p.name not in DEMO_OUTPUTS
                        and not p.name.startswith("."))
        if others:
            raise VoxSegError(f"{out_dir} holds files the demo did not write "
                              f"({', '.join(others[:3])}); give --out a new folder name")


def run_demo(headless: bool, out_dir: Path, iterations: int | None = None) -> int:
    import napari

    from ..core import dice_per_class, write_volume

    if headless:
        check_demo_folder(out_dir)
    viewer = napari.Viewer(title="napari-voxseg demo")
    viewer.window.resize(1400, 820)
    widget = open_demo(viewer)
    if iterations:
        widget.iterations.value = iterations
    if not headless:
        napari.run()
        return 0

    start = time.perf_counter()
    widget.train()
    wait_for(widget)
    seconds = time.perf_counter() - start
    image = viewer.layers["voxseg sample"]
    prediction = viewer.layers["voxseg sample prediction"]
    truth = viewer.layers["voxseg sample ground truth"].data
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    viewer.layers["voxseg sample strokes"].visible = False
    viewer.layers.selection.active = prediction
    settle()  # the dock lays out its last texts
    # before saving: its notification would cover the canvas
    shot = viewer.screenshot(path=str(out_dir / "screenshot.png"), canvas_only=False)
    # the folder holds only an earlier demo's outputs (checked above): replace them
    write_volume(out_dir / "prediction.tif", prediction.data, tuple(image.scale),
                 overwrite=True)
    widget.save_model(out_dir / "model", overwrite=True)
    dice = {str(k): round(v, 4) for k, v in dice_per_class(prediction.data, truth).items()}
    report = {"train_and_predict_seconds": round(seconds, 1), "dice": dice,
              "outputs": [str(out_dir / n) for n in ("prediction.tif", "model", "screenshot.png")]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"screenshot {shot.shape[1]}x{shot.shape[0]} written")
    viewer.close()
    return 0
