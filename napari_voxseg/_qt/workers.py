"""One way to run a dock part's job in a background thread: its result, its error (said in one
line by the part, never raised as a traceback on the GUI thread) and its end, each handed to
the part on the main thread."""

from __future__ import annotations

from collections.abc import Callable

from napari.qt.threading import create_worker


def _while_shown(callback: Callable) -> Callable:
    """``callback``, which does nothing once the dock's widgets are gone (closed while the
    job ran: Qt has deleted them, and there is no one left to tell)."""

    def call(*args):
        try:
            callback(*args)
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise

    return call


def start_worker(function: Callable, *args, returned: Callable, errored: Callable,
                 finished: Callable, **kwargs):
    """Start ``function(*args, **kwargs)`` in a thread; return the worker."""
    worker = create_worker(function, *args, **kwargs, _start_thread=False,
                           _ignore_errors=True)
    worker.returned.connect(_while_shown(returned))
    worker.errored.connect(_while_shown(errored))
    worker.finished.connect(_while_shown(finished))
    worker.start()
    return worker
