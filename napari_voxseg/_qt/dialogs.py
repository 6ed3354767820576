"""The file dialogs of Save model... and Load model...: where, and whether to replace."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QMessageBox

from ..core.outputs import MODEL, written_by_voxseg


def ask_save_folder(parent) -> tuple[str, bool] | None:
    """(folder, overwrite) to save a model to, or None when the person cancels. The dialog's
    own "replace?" would be asked of any existing name; ours is asked only of a model folder
    voxseg wrote (saving refuses any other folder)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save model as folder", "voxseg-model",
                                          options=QFileDialog.Option.DontConfirmOverwrite)
    if not path:
        return None
    if not written_by_voxseg(path, MODEL):
        return path, False
    answer = QMessageBox.question(
        parent, "Replace model?", f"{path} holds a voxseg model. Replace it with this one?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return (path, True) if answer == QMessageBox.StandardButton.Yes else None


def ask_model_folder(parent) -> str | None:
    """A model folder to load, or None when the person cancels."""
    return QFileDialog.getExistingDirectory(parent, "Load model folder") or None
