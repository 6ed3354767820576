"""The README picture docs/paint_next.png, from the real viewer (run under Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/paint_next_picture.py docs/paint_next.png
"""
import sys, time
import napari
from qtpy.QtWidgets import QApplication
from napari_voxseg._qt.widget import VoxSegWidget
from napari_voxseg.core.train import TrainConfig, train

viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 900)
viewer.open_sample("napari-voxseg", "cells")
widget = VoxSegWidget(viewer)
viewer.window.add_dock_widget(widget, name="VoxSeg", area="right")
app = QApplication.instance()
def pump(seconds):
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents(); time.sleep(0.02)
pump(1)
image = viewer.layers["voxseg sample"].data
strokes = viewer.layers["voxseg sample strokes"].data
model = train(image, strokes, TrainConfig(iterations=int(sys.argv[2]) if len(sys.argv) > 2 else 60)).model
widget.model = model
widget.predict_button.clicked.emit()
while widget.running:
    pump(0.2)
while widget.paint_next.list.count() == 0 or widget.paint_next.running:
    pump(0.2)
paint = widget.paint_next
paint.list.itemClicked.emit(paint.list.item(0))
viewer.layers.selection.active = viewer.layers["voxseg sample strokes"]
widget.sections["Data"].collapse()
viewer.layers["voxseg sample prediction"].visible = False
pump(1)
from qtpy.QtWidgets import QScrollArea
scroll = widget.native.findChild(QScrollArea, "voxseg scroll")
scroll.ensureWidgetVisible(paint.list)
pump(2)
viewer.screenshot(path=sys.argv[1], canvas_only=False)
print([ (s.slice, round(s.score,3)) for s in paint.suggestions], widget.status.value)
