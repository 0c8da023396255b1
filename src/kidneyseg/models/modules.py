"""Small building blocks shared by the registry's networks."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_spatial_dims(x: torch.Tensor, spatial_dims: int) -> None:
    """Refuse an input that is not ``(N, C)`` + ``spatial_dims`` spatial axes with the package's InputError."""
    if x.dim() != 2 + int(spatial_dims):
        from kidneyseg.errors import InputError

        raise InputError(
            "network input has the wrong number of spatial dimensions",
            found=tuple(x.shape),
            expected=f"(N, C) + {spatial_dims} spatial axes",
            fix="give 2D models (N, C, H, W) slices and 3D models (N, C, X, Y, Z) volumes",
        )


class PadToMultiple(nn.Module):
    """Zero-pad the input up to a multiple of ``multiple`` and crop the output back.

    Input ``(N, C, *spatial)`` with ``len(spatial) == spatial_dims``; padding
    is added at the high end of each spatial axis, so output voxel ``p``
    corresponds to input voxel ``p``.  The wrapped network is ``self.net``.
    """

    def __init__(self, net: nn.Module, multiple: int, spatial_dims: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple)
        self.spatial_dims = int(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_dims(x, self.spatial_dims)
        size = x.shape[2:]
        pads = [(-s) % self.multiple for s in size]
        if any(pads):
            pad_arg: list[int] = []
            for p in reversed(pads):  # F.pad wants the last axis first
                pad_arg += [0, p]
            x = F.pad(x, pad_arg)
        y = self.net(x)
        if any(pads):
            y = y[(slice(None), slice(None), *(slice(0, s) for s in size))]
        return y


def kaiming_init(module: nn.Module) -> nn.Module:
    """Re-initialise every convolution and linear layer with Kaiming-normal weights (fan_out, ReLU).

    Biases are set to zero; normalisation layers to weight 1, bias 0.
    Returns the module for chaining.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm)):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module
