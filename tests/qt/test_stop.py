"""Stop in the widget: heard while stage 1 fits, before the first training step."""

import threading
import time

import numpy as np
from helpers import wait_done

SAMPLE = "voxseg sample"


def test_stop_while_stage_1_fits_ends_the_run_without_a_model(sample_widget, qtbot, messages,
                                                              monkeypatch):
    import napari_voxseg.core.stage1 as stage1

    original, reached = stage1.check_stop, threading.Event()

    def held(should_stop, message):
        """Stage 1's first poll waits (up to 30 s) for the Stop: as on a large volume, whose
        stage 1 takes minutes on a CPU."""
        reached.set()
        deadline = time.monotonic() + 30
        while should_stop is not None and not should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        original(should_stop, message)

    monkeypatch.setattr(stage1, "check_stop", held)
    viewer, widget = sample_widget
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    before = strokes.data.copy()
    widget.train()
    qtbot.waitUntil(reached.is_set, timeout=60_000)
    start = time.monotonic()
    widget.stop_button.clicked.emit()
    wait_done(qtbot, widget, timeout=30_000)
    assert time.monotonic() - start < 5
    assert widget.status.value.startswith("stopped while stage 1 read the strokes")
    assert widget.model is None and widget.train_button.enabled
    assert not widget.continue_button.enabled  # nothing to continue from
    assert not [m for m in messages if "failed" in m or "stopped" in m]  # a status, no error
    np.testing.assert_array_equal(strokes.data, before)
