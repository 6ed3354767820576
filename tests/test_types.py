"""The core passes a type checker (mypy, with None checked: strict optional is on)."""

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_passes_mypy(tmp_path):
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"),
                                      "--cache-dir", str(tmp_path / "cache"),
                                      str(ROOT / "napari_voxseg" / "core")])
    assert status == 0, stdout + stderr
