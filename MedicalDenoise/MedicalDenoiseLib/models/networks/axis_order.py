"""The same network for inputs whose first spatial axis is moved last.

CPU convolution kernels (oneDNN) are several times slower per voxel on thin slabs such as a 2D image padded
to four slices (``4 × 616 × 820``) than on cubes; with the thin axis last (``616 × 820 × 4``) most of that
is won back. Permuting every kernel the same way gives the same function: for ``moved = depth_last(net)``,
``moved(x.permute(0, 1, 3, 4, 2)) == net(x).permute(0, 1, 3, 4, 2)`` up to float rounding.
"""
from __future__ import annotations

import copy

from torch import nn

__all__ = ["depth_last"]

_CONVOLUTIONS = (nn.Conv3d, nn.ConvTranspose3d)
_PER_AXIS = ("kernel_size", "stride", "padding", "dilation", "output_padding")


def depth_last(network: nn.Module) -> nn.Module:
    """A copy of ``network`` that takes ``(B, C, H, W, D)`` where ``network`` takes ``(B, C, D, H, W)``.

    Raises:
        ValueError: for a convolution whose padding is not given in voxels (e.g. ``"same"``) or that pads
            other than with zeros; neither occurs in the shipped networks.
    """
    moved = copy.deepcopy(network)
    for module in moved.modules():
        if not isinstance(module, _CONVOLUTIONS):
            continue
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise ValueError(f"cannot reorder axes of {module}: padding must be zeros given in voxels")
        module.weight.data = module.weight.data.permute(0, 1, 3, 4, 2).contiguous()
        for name in _PER_AXIS:
            value = getattr(module, name, None)
            if isinstance(value, tuple) and len(value) == 3:
                setattr(module, name, (value[1], value[2], value[0]))
    return moved
