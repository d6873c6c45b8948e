"""Keeps one parameter node bound to the panel's widgets, and only one.

``connectGui`` returns no tag in some Slicer versions (5.8 among them), so ``disconnectGui(None)`` left
the old bindings attached: every time the module was entered, another set piled up, and the stale combo
box bindings wrote their first choice ("auto") back into the node. ``connectParametersToGui`` returns its
tag in every version; this class keeps that tag and does not bind again to the node it is bound to.
"""
from __future__ import annotations

from typing import Any, Iterable

__all__ = ["ParameterNodeBinding", "PARAMETER_PROPERTY"]

PARAMETER_PROPERTY = "SlicerParameterName"  # the dynamic property that names a widget's parameter in the .ui


class ParameterNodeBinding:
    """Binds a parameter node wrapper to the widgets that name a parameter, one node at a time.

    Args:
        widgets: the panel's widgets; those with a ``SlicerParameterName`` property are bound.
    """

    def __init__(self, widgets: Iterable[Any]) -> None:
        self.widgets = {w.property(PARAMETER_PROPERTY): w for w in widgets if w.property(PARAMETER_PROPERTY)}
        self.wrapper = None
        self._tag = None

    def bind(self, wrapper) -> bool:
        """Binds ``wrapper`` (None unbinds); False when it wraps the node already bound (nothing done)."""
        if wrapper is not None and self.wrapper is not None and wrapper.parameterNode is self.wrapper.parameterNode:
            return False
        self.unbind()
        if wrapper is not None:
            self._tag = wrapper.connectParametersToGui(self.widgets)
            self.wrapper = wrapper
        return True

    def unbind(self) -> None:
        if self.wrapper is not None:
            self.wrapper.disconnectGui(self._tag)
        self.wrapper, self._tag = None, None
