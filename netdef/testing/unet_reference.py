"""The classic UNet in PyTorch, with the module layout and state_dict keys of milesial/Pytorch-UNet (not on PyPI):
DoubleConv, Down (max pool + DoubleConv), Up (ConvTranspose2d or bilinear upsampling, F.pad to the skip's size,
concatenation after the skip, DoubleConv) and OutConv. The reference `netdef/architectures/unet.yaml` rebuilds;
`netdef verify unet -w W.wts --model netdef.testing.unet_reference:UNet` compares the two."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """(3x3 convolution without bias, BatchNorm, ReLU) x 2; `mid` channels in between (default `c2`)."""

    def __init__(self, c1: int, c2: int, mid: int | None = None):
        super().__init__()
        mid = mid or c2
        self.double_conv = nn.Sequential(
            nn.Conv2d(c1, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """Halve the resolution (max pool 2) and DoubleConv."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(c1, c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Double the resolution of `x1`, pad it to the skip `x2`'s size, concatenate [x2, x1] and DoubleConv."""

    def __init__(self, c1: int, c2: int, bilinear: bool = False):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(c1, c2, c1 // 2)
        else:
            self.up = nn.ConvTranspose2d(c1, c1 // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(c1, c2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    """A 1x1 convolution to the class count."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """UNet(n_channels, n_classes, bilinear): 4 downsamplings to 1024 channels (512 with bilinear) and back."""

    def __init__(self, n_channels: int = 3, n_classes: int = 2, bilinear: bool = False):
        super().__init__()
        self.n_channels, self.n_classes, self.bilinear = n_channels, n_classes, bilinear
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, 64)
        self.down1, self.down2, self.down3 = Down(64, 128), Down(128, 256), Down(256, 512)
        self.down4 = Down(512, 1024 // factor)
        self.up1 = Up(1024, 512 // factor, bilinear)
        self.up2 = Up(512, 256 // factor, bilinear)
        self.up3 = Up(256, 128 // factor, bilinear)
        self.up4 = Up(128, 64, bilinear)
        self.outc = OutConv(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        return self.outc(self.up4(x, x1))
