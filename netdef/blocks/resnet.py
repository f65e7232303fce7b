"""ResNet blocks with torchvision's key names (`layer1.0.conv1`, `layer1.0.downsample.0`, ...)."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError
from ..network import Network
from ..registry import block

EXPANSION = {"basic": 1, "bottleneck": 4}


def residual_unit(net: Network, x: Any, prefix: str, kind: str, planes: int, stride: int,
                  groups: int = 1, base_width: int = 64, eps: float = 1e-5, d: int = 1) -> Any:
    """One torchvision BasicBlock or Bottleneck (stride on the 3x3 convolution, ResNet v1.5; a Bottleneck's 3x3
    dilated by `d`, padded `d`)."""
    c_out = planes * EXPANSION[kind]
    if kind == "basic" and d != 1:
        raise SpecError(f"{prefix}: a basic ResLayer has no dilation (torchvision's BasicBlock neither), got d={d}")
    if kind == "basic":
        y = net.conv(x, f"{prefix}.conv1", planes, 3, stride, bn=f"{prefix}.bn1", eps=eps, act="relu")
        y = net.conv(y, f"{prefix}.conv2", planes, 3, 1, bn=f"{prefix}.bn2", eps=eps)
    else:
        width = int(planes * (base_width / 64.0)) * groups
        y = net.conv(x, f"{prefix}.conv1", width, 1, bn=f"{prefix}.bn1", eps=eps, act="relu")
        y = net.conv(y, f"{prefix}.conv2", width, 3, stride, g=groups, d=d, bn=f"{prefix}.bn2", eps=eps, act="relu")
        y = net.conv(y, f"{prefix}.conv3", c_out, 1, bn=f"{prefix}.bn3", eps=eps)
    shortcut = x
    if stride != 1 or net.channels(x) != c_out:
        shortcut = net.conv(x, f"{prefix}.downsample.0", c_out, 1, stride, bn=f"{prefix}.downsample.1", eps=eps)
    out = net.activation(net.add(y, shortcut, f"{prefix}/add", residual=True), "relu", prefix)
    return net.match(out, prefix)  # the unit's output: its ReLU module is shared, which verify cannot compare


@block("ResLayer", repeat_arg="n")
def res_layer(net: Network, x: Any, prefix: str, planes: int, n: int = 1, s: int = 1, kind: str = "bottleneck",
              groups: int = 1, width_per_group: int = 64, eps: float = 1e-5, d: int = 1,
              d_first: int | None = None) -> Any:
    """torchvision `layerN`: `n` residual units `prefix.0 ... prefix.{n-1}`, the first with stride `s`.
    Dilation (`replace_stride_with_dilation`, DeepLab's and FCN's backbones): the 3x3 convolutions dilated by `d`,
    the first unit's by `d_first` (torchvision's previous layer's dilation; default `d`); write `s: 1`, the
    stride replaced. E.g. [False, True, True]: layer3 {s: 1, d: 2, d_first: 1}, layer4 {s: 1, d: 4, d_first: 2}."""
    if kind not in EXPANSION:
        raise SpecError(f"ResLayer kind must be one of {sorted(EXPANSION)}, got '{kind}'")
    if d < 1 or (d_first is not None and d_first < 1):
        raise SpecError(f"{prefix}: ResLayer dilations d={d}, d_first={d_first}: each must be 1 or more")
    for i in range(n):
        di = d if i or d_first is None else d_first
        x = residual_unit(net, x, f"{prefix}.{i}", kind, planes, s if i == 0 else 1, groups, width_per_group, eps,
                          di)
    return x
