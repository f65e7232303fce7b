"""Blocks for torchvision's semantic segmentation heads (LRASPP, DeepLabV3), torchvision's key names."""
from __future__ import annotations

from typing import Any

from netdef.blocks.parts import conv_norm_act
from netdef.network import Network
from netdef.registry import block


@block("LRASPPHead", width_args=("inter",))
def lraspp_head(net: Network, x: list, prefix: str, nc: int = 21, inter: int = 128) -> Any:
    """LRASPPHead(low, high): cbr(high) * sigmoid(conv(avgpool(high))), resized bilinear to low's size, then
    low_classifier(low) + high_classifier(that)."""
    low, high = x
    y = conv_norm_act(net, high, f"{prefix}.cbr", inter, 1, act="relu")
    s = net.global_avg_pool(high, f"{prefix}.scale.0", keep_dims=True)
    s = net.conv(s, f"{prefix}.scale.1", inter, 1, bias=False)
    s = net.match(net.activation(s, "sigmoid", f"{prefix}.scale.1"), f"{prefix}.scale")
    y = net.mul(y, s, f"{prefix}/mul")
    y = net.resize(y, f"{prefix}/resize", mode="bilinear", align_corners=False, like=low)
    a = net.conv(low, f"{prefix}.low_classifier", nc, 1, bias=True)
    b = net.conv(y, f"{prefix}.high_classifier", nc, 1, bias=True)
    return net.match(net.add(a, b, f"{prefix}/add"), prefix)


@block("ASPP", width_args=("c2",))
def aspp(net: Network, x: Any, prefix: str, c2: int = 256, rates: tuple = (12, 24, 36)) -> Any:
    """DeepLabV3's ASPP(c1, rates, c2): a 1x1 branch, one dilated 3x3 branch per rate, a global-pooling branch
    resized back (bilinear), concatenated, then `project` (1x1 conv, BN, ReLU; its Dropout is eval's identity)."""
    ys = [conv_norm_act(net, x, f"{prefix}.convs.0", c2, 1)]
    ys += [conv_norm_act(net, x, f"{prefix}.convs.{i}", c2, 3, d=r) for i, r in enumerate(rates, 1)]
    pool = f"{prefix}.convs.{len(rates) + 1}"
    p = net.global_avg_pool(x, f"{pool}.0", keep_dims=True)
    p = conv_norm_act(net, p, pool, c2, 1, i=1)
    ys.append(net.match(net.resize(p, f"{pool}/resize", mode="bilinear", align_corners=False, like=x), pool))
    y = net.concat(ys, f"{prefix}/cat")
    return net.match(conv_norm_act(net, y, f"{prefix}.project", c2, 1), prefix)


@block("DeepLabHead")
def deeplab_head(net: Network, x: Any, prefix: str, nc: int = 21, c2: int = 256, rates: tuple = (12, 24, 36)) -> Any:
    """torchvision's DeepLabHead(c1, nc): ASPP `prefix.0`, 3x3 conv `prefix.1` + BN `prefix.2` + ReLU `prefix.3`,
    1x1 classifier `prefix.4` (with bias)."""
    y = aspp(net, x, f"{prefix}.0", c2, rates)
    y = conv_norm_act(net, y, prefix, c2, 3, i=1)
    return net.match(net.conv(y, f"{prefix}.4", nc, 1, bias=True), prefix)
