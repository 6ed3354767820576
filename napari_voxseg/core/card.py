"""What makes a folder a voxseg model: its file names and the format its config.json names.

Kept apart from the network and the checkpoint code (and free of torch) so that the output
rules (:mod:`napari_voxseg.core.outputs`) can tell a model folder voxseg wrote from a user's
folder without importing the engine.
"""

from __future__ import annotations

import json
from pathlib import Path

FORMAT = "napari-voxseg-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def is_complete_model(path: Path) -> bool:
    """Whether the folder holds both files of a saved model."""
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is a folder that voxseg saved a model into: its config.json names
    voxseg's model format, and nothing else is in it but the model's two files."""
    path = Path(path)
    try:
        with open(path / CONFIG, encoding="utf-8") as f:
            config = json.load(f)
        names = {p.name for p in path.iterdir()}
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("format") == FORMAT
            and names <= {CONFIG, WEIGHTS})
