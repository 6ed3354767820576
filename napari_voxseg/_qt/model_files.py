"""Save model... and Load model...: the widget's model to and from a folder.

:class:`ModelFiles` is a part of :class:`~.widget.VoxSegWidget` (a mixin: it uses the widget's
``viewer``, ``model``, ``form``, ``model_info`` and notifications). A refusal is a notification,
never a traceback; a folder that holds anything but a voxseg model, or a file a layer was opened
from, is never written.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_info

from ..core import VoxSegError, load_model, resolve_device, save_model
from ..core.checkpoint import check_model_folder
from ..core.models import describe_network
from ..core.tasks import task_of
from .dialogs import ask_model_folder, ask_save_folder


class ModelFiles:
    """The widget's Save model... and Load model... (see the module)."""

    def save_model(self, path, overwrite: bool = False) -> Path | None:
        """Save the model to the folder ``path``: a new name or an empty folder, or (with
        ``overwrite``) a model folder voxseg wrote; never a folder that holds anything else
        or a file a layer was opened from. A refusal is a notification."""
        try:
            if self._model is None:
                raise VoxSegError("no model to save: train one first")
            sources = [layer.source.path for layer in self.viewer.layers]
            check_model_folder(path, inputs=sources, overwrite=overwrite)
            saved = save_model(self._model, path, overwrite=overwrite)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return None
        except OSError as exc:
            self._notify_error(f"could not save the model to {path}: {exc.strerror or exc}; "
                               "choose a folder you can write to")
            return None
        show_info(f"model saved to {saved}")
        return saved

    def load_model(self, path):
        """Load a model folder; the form follows its task, classes and loss."""
        try:
            model = load_model(path, device=resolve_device(self.device.value))
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return None
        self._resume = None  # Continue goes on with a run of this session, not a file's
        self.model = model
        names = ", ".join(c.get("name", "?") for c in model.config["classes"])
        task = task_of(model.config)
        self.model_info.value = f"{Path(path).name} ({task}): {names}; " \
            f"{describe_network(model.config)}"
        self.form.follow_model(model.config)
        show_info(f"model loaded from {path}")
        return model

    def _save_clicked(self) -> None:
        answer = ask_save_folder(self.native)
        if answer is not None:
            self.save_model(*answer)

    def _load_clicked(self) -> None:
        path = ask_model_folder(self.native)
        if path:
            self.load_model(path)
