"""What napari says about painting, turned into :mod:`..core.live_strokes` changes.

napari's ``paint`` event (at the end of a stroke, a fill or a polygon) carries the edit as
history atoms: a masked box (``slice_key``, ``mask``, ``old_values``, ``new_value``) or an
``(indices, old_values, new_values)`` tuple. Undo and redo change the data with no ``paint``
or ``data`` event, only ``set_data`` (which slicing and every dab of a stroke also send): a
``set_data`` outside a drag of the mouse that no ``paint`` explains means "changed in ways
we were not told", and the watchers count or copy again, off the main thread.
"""

from __future__ import annotations

from napari.qt.threading import create_worker
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..core.live_strokes import Change, StrokeMirror, Tally, count_values

RECOUNT_DELAY_MS = 500  # a recount waits for this much quiet
# Layers this small are counted on the spot (about a millisecond per million voxels), so that
# the weights shown follow a new layer or an undo at once; larger ones in a background thread.
SYNC_COUNT_VOXELS = 1 << 22


def changes_of(event) -> list[Change] | None:
    """The changes a napari ``paint`` event carries (None if its form is unknown)."""
    changes = []
    for atom in event.value or ():
        if hasattr(atom, "slice_key"):
            changes.append(Change.box(atom.slice_key, atom.mask, atom.old_values,
                                      atom.new_value))
        elif isinstance(atom, tuple) and len(atom) == 3:
            indices, old, new = atom
            if isinstance(indices, tuple) and all(hasattr(i, "__len__") for i in indices):
                changes.append(Change.points(indices, old, new))
            else:
                return None
        else:
            return None
    return changes


class LayerWatch:
    """Calls ``on_changes(changes)`` for every stroke on ``layer`` and ``on_unknown()`` when
    its data changed in ways napari did not detail (at most once per turn of the loop).

    A stroke sends ``set_data`` for every dab while the mouse is down, then ``paint``; a
    ``paint`` from code follows its ``set_data``. An undo sends ``set_data`` alone: a
    ``set_data`` outside a drag that no ``paint`` follows in the same turn of the event loop
    (or that another ``set_data`` follows first) is such a change. Slicing sends ``set_data``
    alone too: with the ``viewer`` given, a move of its dims explains the ``set_data`` of its
    turn."""

    def __init__(self, layer, on_changes, on_unknown, viewer=None):
        self.layer = layer
        self._on_changes, self._on_unknown = on_changes, on_unknown
        self._suspect = self._seen = self._scheduled = self._slicing = False
        self._events = {layer.events.paint: self._painted, layer.events.data: self._replaced,
                        layer.events.set_data: self._set_data}
        if viewer is not None:
            dims = viewer.dims.events
            for event in (dims.current_step, dims.ndisplay, dims.order):
                self._events[event] = self._sliced
        for event, handler in self._events.items():
            event.connect(handler)
        # napari writes a stroke into the data as the mouse moves and tells it at the release:
        # a count made meanwhile would hold part of it, and the stroke again when told.
        self.painting, self.strokes = False, 0
        layer.mouse_drag_callbacks.insert(0, self._drag)  # before the brush's first dab

    def _drag(self, _layer, event):
        self.painting, self.strokes = True, self.strokes + 1
        yield
        while event.type == "mouse_move":
            yield
        self.painting = False

    def close(self) -> None:
        for event, handler in self._events.items():
            event.disconnect(handler)
        if self._drag in self.layer.mouse_drag_callbacks:
            self.layer.mouse_drag_callbacks.remove(self._drag)

    def _painted(self, event) -> None:
        self._suspect = False  # the set_data before it was this edit's
        changes = changes_of(event)
        if changes is None:
            self._on_unknown()
        else:
            self._on_changes(changes)

    def _replaced(self, _event=None) -> None:
        self._on_unknown()

    def _sliced(self, _event=None) -> None:
        self._suspect, self._slicing = False, True  # this turn's set_data: the new slice
        self._schedule()

    def _set_data(self, _event=None) -> None:
        if self._slicing or self.painting:  # a new slice; a stroke (told at its end)
            return
        self._seen = self._seen or self._suspect  # the one before was not painting's
        self._suspect = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._check)

    def _check(self) -> None:
        unknown = self._suspect or self._seen
        self._suspect = self._seen = self._scheduled = self._slicing = False
        if unknown:
            self._on_unknown()


class Tallies:
    """Voxels per label value of each watched annotation layer, kept from its strokes; counted
    again in a background thread when the changes are unknown. ``changed`` is emitted (main
    thread) whenever a tally changes. ``fresh`` is False while a recount is pending."""

    changed = Signal()

    def __init__(self, viewer=None):
        self._viewer = viewer
        self._tallies: dict[int, Tally] = {}
        self._watches: dict[int, LayerWatch] = {}
        self._layers: dict[int, object] = {}
        self._due: set[int] = set()
        self._workers: dict[int, object] = {}
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(RECOUNT_DELAY_MS)
        self._timer.timeout.connect(self._recount_due)

    def watch(self, layers) -> None:
        """Watch exactly ``layers`` (new ones are counted in the background)."""
        keep = {id(layer) for layer in layers}
        for key in list(self._watches):
            if key not in keep:
                self._watches.pop(key).close()
                self._tallies.pop(key, None)
                self._layers.pop(key, None)
                self._due.discard(key)
        for layer in layers:
            key = id(layer)
            if key in self._watches:
                continue
            self._layers[key] = layer
            self._watches[key] = LayerWatch(
                layer, lambda changes, k=key: self._apply(k, changes),
                lambda k=key: self._unknown(k), self._viewer)
            self._unknown(key, delay=False)

    def tally(self, layer) -> Tally | None:
        """The layer's tally, None while it has not been counted yet."""
        return self._tallies.get(id(layer))

    def settle(self) -> None:
        """Run the recounts that are due and small now (no waiting for the quiet)."""
        if self._due:
            self._recount_due()

    @property
    def fresh(self) -> bool:
        return not self._due and not self._workers and all(
            key in self._tallies for key in self._watches)

    def _apply(self, key: int, changes) -> None:
        tally = self._tallies.get(key)
        if tally is None:  # not counted yet: the count under way may miss it, count again
            self._unknown(key)
            return
        tally.apply(changes)
        self.changed.emit()

    def _unknown(self, key: int, delay: bool = True) -> None:
        if key not in self._watches:  # a check left over from a layer no longer watched
            return
        self._due.add(key)
        if delay:
            self._timer.start()
        else:
            self._recount_due()

    def _recount_due(self) -> None:
        for key in list(self._due):
            if key in self._workers:  # one count at a time per layer: again when it ends
                continue
            if self._watches[key].painting:  # after the stroke (its paint event restarts us)
                self._timer.start()
                continue
            self._due.discard(key)
            tally = self._tallies.get(key)
            self._start_count(key, (None if tally is None else tally.version,
                                    self._watches[key].strokes))

    def _start_count(self, key: int, token) -> None:
        layer = self._layers[key]
        if getattr(layer.data, "size", SYNC_COUNT_VOXELS + 1) <= SYNC_COUNT_VOXELS:
            self._counted(key, token, count_values(layer.data))  # a few ms at most
            return
        worker = create_worker(count_values, layer.data, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(lambda counts, k=key, t=token: self._counted(k, t, counts))
        worker.finished.connect(lambda k=key: self._count_ended(k))
        self._workers[key] = worker
        worker.start()

    def _counted(self, key: int, token, counts) -> None:
        """A count started at ``token`` (the tally's version, the strokes begun) is taken
        unless a stroke began, ended or goes on since: then counted again."""
        watch = self._watches.get(key)
        if watch is None or counts is None:
            return
        version, strokes = token
        tally = self._tallies.get(key)
        if watch.painting or watch.strokes != strokes:
            self._due.add(key)
            self._timer.start()
        elif tally is None:
            self._tallies[key] = Tally(counts)
        elif not tally.replace(counts, version):
            self._due.add(key)  # painted meanwhile: count again
            self._timer.start()
        self.changed.emit()

    def _count_ended(self, key: int) -> None:
        self._workers.pop(key, None)
        if key in self._due:
            self._timer.start()

    def close(self) -> None:
        self.watch([])
        self._timer.stop()


class LiveStrokes:
    """What a training worker reads of the annotation layers while it runs: a
    :class:`~..core.live_strokes.StrokeMirror` per layer, fed with each stroke's changes (the
    main thread never copies a layer). :meth:`take` (worker) gives the strokes as the core
    takes them: one array, or a list of them (``as_list``: multi-label), or None when
    nothing changed since the last take."""

    def __init__(self, layers, *, as_list: bool = False):
        self.layers = list(layers)
        self.as_list = as_list
        self.mirrors = [StrokeMirror(lambda layer=layer: layer.data) for layer in self.layers]
        self._watches: list[LayerWatch] = []

    def connect(self, viewer=None) -> None:
        """(Main thread) start following the layers' strokes (in ``viewer``)."""
        self._watches = [LayerWatch(layer, mirror.push, mirror.resync, viewer)
                         for layer, mirror in zip(self.layers, self.mirrors)]

    def close(self) -> None:
        for watch in self._watches:
            watch.close()
        self._watches = []

    def take(self):
        taken = [mirror.take() for mirror in self.mirrors]
        if all(t is None for t in taken):
            return None
        if not self.as_list:
            return taken[0]
        return [m.current() if t is None else t for m, t in zip(self.mirrors, taken)]
