"""napari-voxseg: interactive 3D segmentation for napari.

This module only holds the version: importing the package must stay cheap and must not pull in
torch, napari or Qt. The engine lives in :mod:`napari_voxseg.core`.
"""

__version__ = "0.1.0"
