"""The core imports neither napari nor Qt; the manifest's every contribution imports."""

import importlib
import subprocess
import sys
from pathlib import Path

import yaml

import napari_voxseg


def test_core_imports_no_napari_or_qt():
    code = ("import sys, napari_voxseg.core, napari_voxseg.cli; "
            "bad = [m for m in ('napari', 'qtpy', 'magicgui', 'PyQt5', 'PyQt6', 'PySide6', 'vispy')"
            " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifest_contributions_import():
    package_yaml = Path(napari_voxseg.__file__).parent / "napari.yaml"
    manifest = yaml.safe_load(package_yaml.read_text())
    assert manifest["name"] == "napari-voxseg"
    for command in manifest["contributions"]["commands"]:
        module, name = command["python_name"].split(":")
        assert callable(getattr(importlib.import_module(module), name))
    top = Path(__file__).parents[1] / "napari.yaml"
    assert top.read_text() == package_yaml.read_text()  # one source of truth


def test_npe2_validates_and_finds_the_plugin():
    from npe2 import PluginManager, PluginManifest

    manifest = PluginManifest.from_file(Path(napari_voxseg.__file__).parent / "napari.yaml")
    assert manifest.name == "napari-voxseg"
    pm = PluginManager.instance()
    pm.discover()
    assert "napari-voxseg" in pm._manifests or pm.get_manifest("napari-voxseg")
