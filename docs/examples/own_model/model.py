"""TinyNet: a small classifier of one's own, for docs/own-model.md (export, YAML, block, verify, build)."""
import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean of x over H, W)))): one weight per channel."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class DWSepSE(nn.Module):
    """Depthwise 3x3 conv-bn-relu6, squeeze-excitation, pointwise 1x1 conv-bn-relu6."""

    def __init__(self, c1, c2, s=1, squeeze=8):
        super().__init__()
        self.dw = nn.Conv2d(c1, c1, 3, s, 1, groups=c1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = nn.ReLU6()
        self.se = SqueezeExcite(c1, squeeze)
        self.pw = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = nn.ReLU6()

    def forward(self, x):
        x = self.se(self.act1(self.bn1(self.dw(x))))
        return self.act2(self.bn2(self.pw(x)))


class TinyNet(nn.Module):
    def __init__(self, nc=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(DWSepSE(16, 32, s=2), DWSepSE(32, 64, s=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, nc)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def make(nc=10):
    """The model for `netdef export` and `netdef verify --model` (random weights unless you load yours)."""
    return TinyNet(nc)
