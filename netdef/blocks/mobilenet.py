"""MobileNetV2 and MobileNetV3 inverted residual blocks with torchvision's key names
(`features.2.conv.0.0`, `features.4.block.2.fc1`, ...)."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError
from ..network import Network
from ..registry import block
from .parts import conv_norm_act, residual, squeeze_excitation

V3_ACTS = ("relu", "hardswish")


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to a multiple of `divisor`, never below 90 % of `v`."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@block("InvertedResidual")
def inverted_residual(net: Network, x: Any, prefix: str, c2: int, s: int = 1, t: int = 6, eps: float = 1e-5) -> Any:
    """MobileNetV2's InvertedResidual(c1, c2, stride s, expand_ratio t): [1x1 expand ReLU6] -> 3x3 depthwise ReLU6
    -> 1x1 projection + BatchNorm (keys `prefix.conv.*`); a residual add when s == 1 and c1 == c2."""
    if s not in (1, 2):
        raise SpecError(f"{prefix}: InvertedResidual stride must be 1 or 2, got {s}")
    c1 = net.channels(x)
    hidden = int(round(c1 * t))
    seq, y, i = f"{prefix}.conv", x, 0
    if t != 1:
        y, i = conv_norm_act(net, y, f"{seq}.0", hidden, 1, act="relu6", eps=eps), 1
    y = conv_norm_act(net, y, f"{seq}.{i}", hidden, 3, s, g=hidden, act="relu6", eps=eps)
    y = net.conv(y, f"{seq}.{i + 1}", c2, 1, bias=False, bn=f"{seq}.{i + 2}", eps=eps)
    return residual(net, x, y, prefix) if s == 1 and c1 == c2 else y


@block("InvertedResidualV3")
def inverted_residual_v3(net: Network, x: Any, prefix: str, c2: int, k: int = 3, exp: int = 16, se: bool = False,
                         act: str = "relu", s: int = 1, eps: float = 1e-3, d: int = 1) -> Any:
    """MobileNetV3's InvertedResidual (InvertedResidualConfig(c1, k, exp, c2, se, act, s, dilation d)): [1x1
    expand to `exp`] -> kxk depthwise -> [squeeze-excitation, hardsigmoid gate] -> 1x1 projection (keys
    `prefix.block.*`); a residual add when s == 1 and c1 == c2. `act` relu or hardswish; BatchNorm eps 0.001 as
    torchvision's. `d` > 1 dilates the depthwise convolution and makes its stride 1, as torchvision's
    `dilated=True` backbones (the segmentation models') do with the last stage; write the config's `s` as is."""
    if act not in V3_ACTS:
        raise SpecError(f"{prefix}: InvertedResidualV3 act '{act}': use one of {', '.join(V3_ACTS)}")
    if s not in (1, 2):
        raise SpecError(f"{prefix}: InvertedResidualV3 stride must be 1 or 2, got {s}")
    if d < 1:
        raise SpecError(f"{prefix}: InvertedResidualV3 dilation d must be 1 or more, got {d}")
    s = 1 if d > 1 else s  # torchvision: `stride = 1 if cnf.dilation > 1 else cnf.stride`
    c1 = net.channels(x)
    seq, y, i = f"{prefix}.block", x, 0
    if exp != c1:
        y, i = conv_norm_act(net, y, f"{seq}.0", exp, 1, act=act, eps=eps), 1
    y = conv_norm_act(net, y, f"{seq}.{i}", exp, k, s, g=exp, act=act, eps=eps, d=d)
    if se:
        i += 1
        y = squeeze_excitation(net, y, f"{seq}.{i}", make_divisible(exp // 4), "relu", "hardsigmoid")
    y = conv_norm_act(net, y, f"{seq}.{i + 1}", c2, 1, act="none", eps=eps)
    return residual(net, x, y, prefix) if s == 1 and c1 == c2 else y
