"""The napari manifest: every contribution imports, npe2 validates it and finds the plugin.
(That the core loads neither napari nor Qt: tests/test_structure.py.)"""

import importlib
from pathlib import Path

import yaml

import napari_voxseg


def test_manifest_contributions_import():
    package_yaml = Path(napari_voxseg.__file__).parent / "napari.yaml"
    manifest = yaml.safe_load(package_yaml.read_text())
    assert manifest["name"] == "napari-voxseg"
    for command in manifest["contributions"]["commands"]:
        module, name = command["python_name"].split(":")
        assert callable(getattr(importlib.import_module(module), name))
    top = Path(__file__).parents[2] / "napari.yaml"
    assert top.read_text() == package_yaml.read_text()  # one source of truth


def test_npe2_validates_and_finds_the_plugin():
    from npe2 import PluginManager, PluginManifest

    manifest = PluginManifest.from_file(Path(napari_voxseg.__file__).parent / "napari.yaml")
    assert manifest.name == "napari-voxseg"
    pm = PluginManager.instance()
    pm.discover()
    assert "napari-voxseg" in pm._manifests or pm.get_manifest("napari-voxseg")


def test_the_widget_is_under_layers_segment():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(napari_voxseg.__file__).parent / "napari.yaml")
    items = manifest.contributions.menus["napari/layers/segment"]
    assert [item.command for item in items] == ["napari-voxseg.widget"]
