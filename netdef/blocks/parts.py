"""Pieces the torchvision-style blocks share: a convolution + BatchNorm + activation laid out as torchvision's
`Conv2dNormActivation` (keys `seq.i`, `seq.i+1`, activation module `seq.i+2`) and `SqueezeExcitation`."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError
from ..network import Network

GATES = ("sigmoid", "hardsigmoid")


def conv_norm_act(net: Network, x: Any, seq: str, c2: int, k: int = 3, s: int = 1, g: int = 1,
                  act: str = "relu", eps: float = 1e-5, i: int = 0, d: int = 1) -> Any:
    """Conv2d `seq.i` (no bias, dilation `d`, 'same' padding `d * (k - 1) // 2` as torchvision's) + BatchNorm
    `seq.{i+1}` folded + activation; the activation layer is recorded as the output of module `seq.{i+2}` (for
    `netdef verify`)."""
    y = net.conv(x, f"{seq}.{i}", c2, k, s, g=g, d=d, bias=False, bn=f"{seq}.{i + 1}", eps=eps)
    return _act(net, y, act, f"{seq}.{i + 2}", f"{seq}.{i}")


def squeeze_excitation(net: Network, x: Any, prefix: str, squeeze: int, act: str = "relu",
                       gate: str = "sigmoid") -> Any:
    """torchvision's SqueezeExcitation `prefix`: x * gate(fc2(act(fc1(avgpool(x))))), fc1/fc2 1x1 convolutions
    with bias; `gate` sigmoid (EfficientNet) or hardsigmoid (MobileNetV3)."""
    if gate not in GATES:
        raise SpecError(f"{prefix}: squeeze-excitation gate '{gate}': use one of {', '.join(GATES)}")
    c = net.channels(x)
    s = net.global_avg_pool(x, f"{prefix}.avgpool", keep_dims=True)
    s = _act(net, net.conv(s, f"{prefix}.fc1", squeeze, 1, bias=True), act, f"{prefix}.activation", prefix)
    s = net.conv(s, f"{prefix}.fc2", c, 1, bias=True)
    s = net.activation(s, gate, prefix)
    net.match(s, f"{prefix}.scale_activation")
    y = net.mul(s, x, f"{prefix}/scale")
    return net.match(y, prefix)


def residual(net: Network, x: Any, y: Any, prefix: str) -> Any:
    """x + y, the output of module `prefix` (a residual join)."""
    out = net.add(y, x, f"{prefix}/add", residual=True)
    return net.match(out, prefix)


def _act(net: Network, y: Any, act: str, module: str, name: str) -> Any:
    """The activation `act` on `y` (layer `name/<act>`), recorded as the output of `module`."""
    out = net.activation(y, act, name)
    if out is not y:
        net.match(out, module)
    return out
