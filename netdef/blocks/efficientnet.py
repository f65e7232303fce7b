"""EfficientNet (B0-B7) MBConv stages with torchvision's key names (`features.2.0.block.1.0`, ...)."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError
from ..network import Network
from ..registry import block
from .parts import conv_norm_act, residual, squeeze_excitation


def mbconv(net: Network, x: Any, prefix: str, c2: int, k: int, s: int, t: int, eps: float) -> Any:
    """One torchvision MBConv `prefix`: [1x1 expand SiLU] -> kxk depthwise SiLU -> squeeze-excitation (SiLU,
    sigmoid gate, c1 // 4 channels) -> 1x1 projection (keys `prefix.block.*`); a residual add when s == 1 and
    c1 == c2 (stochastic depth is the identity in eval)."""
    c1 = net.channels(x)
    hidden = c1 * t
    seq, y, i = f"{prefix}.block", x, 0
    if t != 1:
        y, i = conv_norm_act(net, y, f"{seq}.0", hidden, 1, act="silu", eps=eps), 1
    y = conv_norm_act(net, y, f"{seq}.{i}", hidden, k, s, g=hidden, act="silu", eps=eps)
    y = squeeze_excitation(net, y, f"{seq}.{i + 1}", max(1, c1 // 4), "silu", "sigmoid")
    y = conv_norm_act(net, y, f"{seq}.{i + 2}", c2, 1, act="none", eps=eps)
    return residual(net, x, y, prefix) if s == 1 and c1 == c2 else y


@block("MBConv", repeat_arg="n")
def mbconv_stage(net: Network, x: Any, prefix: str, c2: int, n: int = 1, k: int = 3, s: int = 1, t: int = 6,
                 eps: float = 1e-5) -> Any:
    """A stage of `n` MBConv blocks `prefix.0 ... prefix.{n-1}` (MBConvConfig(expand_ratio t, kernel k, stride s,
    c1, c2, n)), the first with stride `s`."""
    if s not in (1, 2):
        raise SpecError(f"{prefix}: MBConv stride must be 1 or 2, got {s}")
    for j in range(n):
        x = mbconv(net, x, f"{prefix}.{j}", c2, k, s if j == 0 else 1, t, eps)
    return x
