"""What many test files share: tiny training settings, running the command line, copies of a
viewer's layers, draining a core generator, waiting for the widget, hashing a folder."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_voxseg.core.errors import VoxSegError

# A network small enough to train a few steps in well under a second on a 2-core CPU.
TINY = dict(iterations=4, patch_size=(8, 16, 16), base_channels=4, depth=2, batch_size=1)


def run_cli(*args, cwd=None):
    """``python -m napari_voxseg ARGS`` in a new process: what a user's shell does."""
    return subprocess.run([sys.executable, "-m", "napari_voxseg", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def run_main(*args):
    """``main(ARGS)`` of the command line in this process, as :func:`run_cli` gives it (exit
    code, stdout, stderr): the same code without starting Python and torch again, for long
    batteries of cases; an exception that escapes main() fails the test as a traceback would."""
    import contextlib
    import io
    import types

    from napari_voxseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def snapshot(viewer):
    """A copy of every layer's data, by name."""
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}


def drain(generator):
    """Run a core generator to its end: (the events it yielded, its return value)."""
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as stop:
            return events, stop.value


def wait_done(qtbot, widget, timeout=300_000):
    """Let the Qt event loop run until the widget's background run has ended."""
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def tree(folder: Path) -> dict:
    """Every file under ``folder`` (links not followed) with a hash of its bytes."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            found[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
                hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def one_line_error(call, *words):
    """``call()`` raises a VoxSegError of one line that holds every one of ``words``."""
    with pytest.raises(VoxSegError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
