"""Binding the panel to its parameter node, against a fake of Slicer's parameter node wrapper.

The fake behaves like Slicer 5.8's: ``connectGui`` returns no tag, ``connectParametersToGui`` does, and
``disconnectGui`` only removes the bindings whose tag it is given. What stays unverified here: the real
wrapper and Qt widgets (the module's self-test runs in Slicer).
"""
from __future__ import annotations

from MedicalDenoiseLib.slicer.parameter_binding import ParameterNodeBinding


class FakeWidget:
    def __init__(self, parameter: str | None):
        self._parameter = parameter

    def property(self, name):
        return self._parameter if name == "SlicerParameterName" else None


class FakeWrapper:
    """A new wrapper object around ``node`` (as every getParameterNode() call makes)."""

    live: dict[int, dict] = {}  # tag -> mapping, across all wrappers: the bindings that are attached
    _next = 0

    def __init__(self, node):
        self.parameterNode = node

    def connectGui(self, widgets):  # Slicer 5.8: connects, returns nothing
        self.connectParametersToGui({w.property("SlicerParameterName"): w for w in widgets})

    def connectParametersToGui(self, mapping):
        FakeWrapper._next += 1
        FakeWrapper.live[FakeWrapper._next] = dict(mapping)
        return FakeWrapper._next

    def disconnectGui(self, tag):
        FakeWrapper.live.pop(tag, None)


WIDGETS = [FakeWidget("device"), FakeWidget("strengthMode"), FakeWidget(None)]


def test_only_widgets_naming_a_parameter_are_bound():
    assert set(ParameterNodeBinding(WIDGETS).widgets) == {"device", "strengthMode"}


def test_entering_the_module_again_binds_nothing_new():
    FakeWrapper.live.clear()
    node = object()
    binding = ParameterNodeBinding(WIDGETS)
    assert binding.bind(FakeWrapper(node)) is True
    for _ in range(3):  # enter(): a new wrapper around the same node each time
        assert binding.bind(FakeWrapper(node)) is False
    assert len(FakeWrapper.live) == 1


def test_a_new_parameter_node_replaces_the_old_bindings_and_none_removes_them():
    FakeWrapper.live.clear()
    binding = ParameterNodeBinding(WIDGETS)
    binding.bind(FakeWrapper(object()))
    (first,) = FakeWrapper.live
    assert binding.bind(FakeWrapper(object())) is True  # after the scene closed and a new node came
    assert first not in FakeWrapper.live and len(FakeWrapper.live) == 1
    binding.bind(None)
    assert FakeWrapper.live == {} and binding.wrapper is None


def test_the_old_way_leaves_bindings_attached_in_slicer_5_8():
    # Why connectParametersToGui: connectGui's missing tag makes disconnectGui(None) a no-op.
    FakeWrapper.live.clear()
    wrapper = FakeWrapper(object())
    tag = wrapper.connectGui(WIDGETS)
    wrapper.disconnectGui(tag)
    assert len(FakeWrapper.live) == 1
