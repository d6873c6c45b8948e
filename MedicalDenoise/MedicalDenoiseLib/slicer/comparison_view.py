"""The side-by-side comparison: input in Red, output in Yellow, linked, on the same plane, fitted to the volume.

Works on MRML nodes alone (layout, slice composite and slice nodes), so also without a main window, and
needs no ``slicer`` import: everything goes through the nodes' own methods.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["showSideBySide"]


def showSideBySide(scene, inputVolume, outputVolume) -> None:
    """Side-by-side layout, Red = input and Yellow = output, linked and hot-linked, both fitted to the input."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(layout.SlicerLayoutSideBySideView)
    composites = _nodesByLayoutName(scene, "vtkMRMLSliceCompositeNode")
    for name, volume in (("Red", inputVolume), ("Yellow", outputVolume)):
        composite = composites.get(name)
        if composite is None:
            composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
            composite.SetLayoutName(name)
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(True)
        composite.SetHotLinkedControl(True)
    sliceNodes = _nodesByLayoutName(scene, "vtkMRMLSliceNode")
    red, yellow = sliceNodes.get("Red"), sliceNodes.get("Yellow")
    if red is None or yellow is None:
        return
    if red.GetOrientation() in ("Axial", "Sagittal", "Coronal"):
        yellow.SetOrientation(red.GetOrientation())
    else:  # Red was reformatted (common with oblique volumes): copy its plane as is
        yellow.GetSliceToRAS().DeepCopy(red.GetSliceToRAS())
    for node in (red, yellow):
        fitSliceToVolume(node, inputVolume)


def fitSliceToVolume(sliceNode, volume) -> None:
    """Centres the slice view on the volume and sets the field of view that just shows all of it."""
    corners = _voxelCornersRAS(volume)
    sliceToRAS = sliceNode.GetSliceToRAS()
    axes = np.array([[sliceToRAS.GetElement(r, c) for c in range(3)] for r in range(3)])
    inPlane = corners @ axes  # each corner in the view's own x, y, z axes
    extent = inPlane.max(axis=0) - inPlane.min(axis=0)
    width, height, _ = sliceNode.GetDimensions()
    aspect = height / width if width > 0 and height > 0 else 1.0
    fovX = max(extent[0], extent[1] / aspect, 1e-3)
    sliceNode.SetFieldOfView(fovX, fovX * aspect, sliceNode.GetFieldOfView()[2])
    sliceNode.JumpSliceByCentering(*corners.mean(axis=0))
    sliceNode.UpdateMatrices()


def _voxelCornersRAS(volume) -> np.ndarray:
    """The 8 outer corners of the voxel grid in RAS, shape (8, 3)."""
    directions = [[0.0] * 3 for _ in range(3)]
    volume.GetIJKToRASDirections(directions)
    ijkToRAS = np.array(directions) * np.array(volume.GetSpacing())
    dims = volume.GetImageData().GetDimensions()
    ijk = np.array(list(itertools.product(*[(-0.5, d - 0.5) for d in dims])))
    return ijk @ ijkToRAS.T + np.array(volume.GetOrigin())


def _nodesByLayoutName(scene, className: str) -> dict:
    nodes = {}
    for i in range(scene.GetNumberOfNodesByClass(className)):
        node = scene.GetNthNodeByClass(i, className)
        nodes.setdefault(node.GetLayoutName(), node)
    return nodes
