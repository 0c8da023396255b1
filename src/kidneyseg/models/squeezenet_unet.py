"""U-Net with a torchvision SqueezeNet 1.1 encoder (the slice U-Net method).

torchvision has the encoder (``squeezenet1_1().features``) but no U-Net
decoder for it, so the decoder is written here: at each scale, upsample
bilinearly to the skip's size, concatenate, two 3x3 conv-BN-ReLU.  Any input
size works (upsampling goes to the exact skip size).

Encoder taps (input ``H x W``): ``features[0:2]`` 64 ch at ~H/2,
``features[2:5]`` 128 ch at ~H/4, ``features[5:8]`` 256 ch at ~H/8,
``features[8:13]`` 512 ch at ~H/16.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from kidneyseg.models.modules import check_spatial_dims


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SqueezeNetUNet(nn.Module):
    """SqueezeNet 1.1 encoder + U-Net decoder.

    Input ``(N, in_channels, H, W)``, output logits ``(N, out_channels, H, W)``.
    ``self.encoder.features`` holds torchvision's ``squeezenet1_1().features``
    (first convolution adapted to ``in_channels``), so a torchvision
    SqueezeNet 1.1 state dict loads into it.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, decoder_channels: tuple[int, ...] = (128, 64, 32, 16)) -> None:
        super().__init__()
        from torchvision.models import squeezenet1_1

        features = squeezenet1_1(weights=None).features
        if in_channels != 3:
            old = features[0]
            features[0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
        self.encoder = nn.Module()
        self.encoder.features = features
        self.stem = _conv_block(in_channels, decoder_channels[-1])  # full-resolution skip
        skips = [256, 128, 64]
        d = list(decoder_channels)
        self.dec = nn.ModuleList(
            [
                _conv_block(512 + skips[0], d[0]),
                _conv_block(d[0] + skips[1], d[1]),
                _conv_block(d[1] + skips[2], d[2]),
                _conv_block(d[2] + d[3], d[3]),
            ]
        )
        self.head = nn.Conv2d(d[3], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_dims(x, 2)
        f = cast(nn.Sequential, self.encoder.features)  # torchvision's squeezenet1_1().features
        s0 = self.stem(x)
        s1 = f[0:2](x)
        s2 = f[2:5](s1)
        s3 = f[5:8](s2)
        s4 = f[8:13](s3)
        y = s4
        for block, skip in zip(self.dec, (s3, s2, s1, s0)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return self.head(y)
