"""What the command line's commands share: the text progress bar, number lists, reading an
image with its channels first."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path


class Progress:
    """A text progress bar on stderr: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1
        self._start = time.perf_counter()

    def update(self, done: int, total: int, extra: str = "") -> None:
        frac = done / total if total else 1.0
        decile = int(frac * 10)
        if not self.tty and decile == self._last_decile and done != total:
            return
        self._last_decile = decile
        filled = int(frac * self.width)
        elapsed = time.perf_counter() - self._start
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
                f"{elapsed:5.0f}s {extra}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _floats(text: str, count: int, what: str) -> tuple[float, ...]:
    from .core import VoxSegError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise VoxSegError(f"{what} {text!r} is not {count} comma-separated numbers") from None
    if len(values) != count or not all(math.isfinite(v) and v > 0 for v in values):
        raise VoxSegError(f"{what} {text!r} must be {count} positive numbers, e.g. "
                          f"{','.join(['1'] * count)}")
    return values


def _read_image(path, channel_axis: int | None):
    """The image and its voxel size, channels first: as the file marks them, or moved from
    ``channel_axis`` (for files that do not say, e.g. a .npy saved as Z, Y, X, C)."""
    from .core import read_volume

    image, voxel = read_volume(path)
    return _move_channels(image, channel_axis, path), voxel


def _move_channels(image, channel_axis: int | None, path):
    import numpy as np

    from .core.errors import VoxSegError

    if channel_axis is not None:
        if image.ndim != 4 or not -4 <= channel_axis < 4:
            raise VoxSegError(f"--channel-axis {channel_axis}: {Path(path).name} has shape "
                              f"{image.shape}; give the axis (0 to 3) of a 4D image that "
                              "holds its channels")
        image = np.moveaxis(image, channel_axis, 0)
    return image
