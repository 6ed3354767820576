"""The one exception type for bad user input."""


class VoxSegError(ValueError):
    """Bad input from the user.

    The message is one line that says what is wrong and how to fix it. The command line prints it
    and exits with code 2; the widget shows it as a napari notification. Anything else that escapes
    is a bug in napari-voxseg.
    """

    def __init__(self, message: str = ""):
        # Messages quote other libraries' errors, which may span lines: keep it to one line.
        super().__init__(" ".join(str(message).split()))


class StoppedEarly(VoxSegError):
    """The user stopped a run before it had made anything to keep (e.g. while stage 1 was
    still fitting): nothing was changed, and the message says so."""


def check_stop(should_stop, message: str) -> None:
    """Raise :class:`StoppedEarly` with ``message`` when ``should_stop()`` is true."""
    if should_stop is not None and should_stop():
        raise StoppedEarly(message)
