"""A small plot of the training loss (and Dice against a ground truth) drawn with QPainter.

No plotting library: napari does not bring one, and a line plot of a few thousand points is a
few dozen lines of QPainter.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor("#ff9f1c")
RAW_COLOUR = QColor(255, 159, 28, 70)
DICE_COLOUR = QColor("#2ec4b6")
MAX_POINTS = 2000  # older points are merged in pairs beyond this


class _Series:
    """(step, value) points, merged in pairs when there are too many, so memory stays bounded
    however long training runs."""

    def __init__(self):
        self.points: list[tuple[float, float]] = []

    def add(self, step: float, value: float) -> None:
        if not math.isfinite(value):
            return
        self.points.append((float(step), float(value)))
        if len(self.points) > MAX_POINTS:
            pts = self.points
            self.points = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
                           for a, b in zip(pts[0::2], pts[1::2])] + (
                [pts[-1]] if len(pts) % 2 else [])


class LossCurve(QWidget):
    """Loss per step (log scale, left) and, when given, Dice (0..1, right)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setToolTip("Training loss (orange: smoothed, faint: per step, log scale) and Dice "
                        "against the ground-truth layer in the previewed region (teal)")
        self.clear()

    def clear(self) -> None:
        self.raw, self.smoothed, self.dice = _Series(), _Series(), _Series()
        self.update()

    def add_loss(self, step: int, loss: float, smoothed: float) -> None:
        self.raw.add(step, loss)
        self.smoothed.add(step, smoothed)
        self.update()

    def add_dice(self, step: int, value: float) -> None:
        self.dice.add(step, value)
        self.update()

    @property
    def losses(self) -> list[tuple[float, float]]:
        return list(self.smoothed.points)

    def paintEvent(self, _event):
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 6, 6, 16, 6
        box_w, box_h = max(1, w - left - right), max(1, h - top - bottom)
        painter.fillRect(self.rect(), QColor(0, 0, 0, 40))
        painter.setPen(QPen(QColor(128, 128, 128, 120), 1))
        painter.drawRect(left, top, box_w, box_h)

        values = [v for _, v in self.raw.points + self.smoothed.points if v > 0]
        # The x axis runs over the steps so far (a run may be meant to go on until stopped).
        steps = [s for s, _ in self.raw.points + self.dice.points]
        x0 = min(steps, default=0.0)
        span = max(1.0, max(steps, default=1.0) - x0)

        def x_of(step):
            return left + box_w * (step - x0) / span

        if values:
            lo, hi = math.log10(min(values)), math.log10(max(values))
            if hi - lo < 1e-6:
                lo, hi = lo - 0.5, hi + 0.5

            def y_loss(v):
                return top + box_h * (hi - math.log10(max(v, 1e-12))) / (hi - lo)

            self._line(painter, self.raw.points, x_of, y_loss, RAW_COLOUR, 1)
            self._line(painter, self.smoothed.points, x_of, y_loss, LOSS_COLOUR, 2)
        self._line(painter, self.dice.points, x_of, lambda v: top + box_h * (1 - v),
                   DICE_COLOUR, 2)

        text = []
        if self.smoothed.points:
            text.append(f"loss {self.smoothed.points[-1][1]:.4g}")
        if self.dice.points:
            text.append(f"Dice {self.dice.points[-1][1]:.3f}")
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(left, 0, box_w, top, Qt.AlignLeft | Qt.AlignVCenter,
                         "  ".join(text) or "loss curve")
        painter.end()

    @staticmethod
    def _line(painter, points, x_of, y_of, colour, width) -> None:
        if not points:
            return
        path = QPainterPath(QPointF(x_of(points[0][0]), y_of(points[0][1])))
        for step, value in points[1:]:
            path.lineTo(QPointF(x_of(step), y_of(value)))
        painter.setPen(QPen(colour, width))
        painter.drawPath(path)
