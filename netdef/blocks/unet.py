"""The classic UNet (milesial/Pytorch-UNet layout: `inc.double_conv.0`, `down1.maxpool_conv.1.double_conv.3`,
`up1.up`, `up1.conv.double_conv.0`, `outc.conv`). `Up` pads the upsampled map to the skip's size as F.pad does,
so inputs whose sides are not multiples of 16 work as in PyTorch, also with sizes chosen at run time."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError
from ..network import Network
from ..registry import block
from .parts import conv_norm_act


@block("DoubleConv", width_args=("c2",))
def double_conv(net: Network, x: Any, prefix: str, c2: int, mid: int | None = None, eps: float = 1e-5) -> Any:
    """DoubleConv(c1, c2, mid): (3x3 conv without bias, BatchNorm, ReLU) twice, keys `prefix.double_conv.{0,1,3,4}`."""
    seq = f"{prefix}.double_conv"
    y = conv_norm_act(net, x, seq, mid or c2, 3, act="relu", eps=eps)
    return conv_norm_act(net, y, seq, c2, 3, act="relu", eps=eps, i=3)


@block("Down", width_args=("c2",))
def down(net: Network, x: Any, prefix: str, c2: int, eps: float = 1e-5) -> Any:
    """Down(c1, c2): MaxPool2d(2) `prefix.maxpool_conv.0`, then DoubleConv `prefix.maxpool_conv.1`."""
    y = net.pool(x, "max", 2, name=f"{prefix}.maxpool_conv.0")
    return double_conv(net, y, f"{prefix}.maxpool_conv.1", c2, eps=eps)


@block("Up", width_args=("c2",))
def up(net: Network, x: list, prefix: str, c2: int, bilinear: bool = False, eps: float = 1e-5) -> Any:
    """Up(c1, c2, bilinear) on the row's inputs [x1, skip]: x1 upsampled 2x (ConvTranspose2d(c1, c1 // 2, 2, 2)
    `prefix.up`, or bilinear with align_corners), padded to the skip's size (F.pad, [dx // 2, dx - dx // 2,
    dy // 2, dy - dy // 2]; a negative difference crops; from the runtime shapes where H, W are dynamic: one slice
    `prefix/pad`), concatenated after the skip, DoubleConv `prefix.conv`."""
    if not isinstance(x, list) or len(x) != 2:
        raise SpecError(f"{prefix}: Up takes two inputs (from: [-1, skip row])")
    x1, skip = x
    if bilinear:
        x1 = net.resize(x1, f"{prefix}/upsample", scale_factor=2.0, mode="bilinear", align_corners=True)
        net.match(x1, f"{prefix}.up")
    else:
        x1 = net.deconv(x1, f"{prefix}.up", net.channels(x1) // 2, 2, 2)
    (h1, w1), (h2, w2) = tuple(x1.shape)[2:], tuple(skip.shape)[2:]
    dy, dx = h2 - h1, w2 - w1
    if min(h1, w1, h2, w2) < 0:
        x1 = net.pad_like(x1, skip, f"{prefix}/pad")
    elif dx or dy:
        x1 = net.pad(x1, f"{prefix}/pad", [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
    y = net.concat([skip, x1], f"{prefix}/concat")
    c1 = net.channels(y)
    return double_conv(net, y, f"{prefix}.conv", c2, c1 // 2 if bilinear else None, eps)
