"""What the command line's commands share: its messages (logging) and progress bar (tqdm),
number lists, reading an image with its channels first."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

# What the commands say as they go (stdout); -q keeps only warnings and errors, -v adds details.
log = logging.getLogger("napari_voxseg.cli")


def setup_logging(verbose: int = 0, quiet: int = 0) -> None:
    """Messages to stdout at INFO (WARNING with ``-q``, DEBUG with ``-v``), bare lines."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def note(message: str) -> None:
    """A remark about the run on stderr (hidden with ``-q``; warnings and errors never are)."""
    if log.isEnabledFor(logging.INFO):
        print(message, file=sys.stderr)


class Progress:
    """A tqdm progress bar on stderr, shown only on a terminal and not with ``-q``."""

    def __init__(self, label: str, stream=None):
        from tqdm import tqdm

        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(desc=label, file=stream, disable=not tty or not log.isEnabledFor(
            logging.INFO), leave=True)

    def update(self, done: int, total: int, extra: str = "") -> None:
        if self.bar.disable:
            return
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        if extra:
            self.bar.set_postfix_str(extra, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


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
