"""Generic blocks: convolutions, pooling, linear, joins, resizing."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError
from ..network import Network
from ..registry import block


@block("ConvBnAct", width_args=("c2",))
def conv_bn_act(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                g: int = 1, d: int = 1, act: str = "relu", conv: str | None = None, bn: str | None = None,
                eps: float = 1e-5, bias: bool | None = None) -> Any:
    """Convolution + folded BatchNorm + activation. Keys `conv` and `bn` are relative to the row prefix
    (defaults: the prefix itself and no BatchNorm); use absolute names with a leading '/'."""
    conv_key = _key(prefix, conv)
    bn_key = _key(prefix, bn) if bn else None
    return net.conv(x, conv_key, c2, k, s, p, g, d, bias=bias, bn=bn_key, eps=eps, act=act)


@block("BatchNorm")
def batchnorm(net: Network, x: Any, prefix: str, eps: float = 1e-5) -> Any:
    return net.batchnorm(x, prefix, eps)


@block("Act")
def act(net: Network, x: Any, prefix: str, kind: str = "relu") -> Any:
    return net.activation(x, kind, prefix)


@block("MaxPool")
def max_pool(net: Network, x: Any, prefix: str, k: int = 2, s: int | None = None, p: int = 0) -> Any:
    return net.pool(x, "max", k, s, p, name=prefix)


@block("AvgPool")
def avg_pool(net: Network, x: Any, prefix: str, k: int = 2, s: int | None = None, p: int = 0) -> Any:
    return net.pool(x, "avg", k, s, p, name=prefix)


@block("GlobalAvgPool")
def global_avg_pool(net: Network, x: Any, prefix: str, keep_dims: bool = False) -> Any:
    """(B, C, H, W) -> (B, C), or (B, C, 1, 1) with keep_dims (a following Linear then runs as a 1x1 conv)."""
    return net.global_avg_pool(x, prefix, keep_dims)


@block("Flatten")
def flatten(net: Network, x: Any, prefix: str) -> Any:
    return net.flatten(x, prefix)


@block("Linear")
def linear(net: Network, x: Any, prefix: str, c2: int, bias: bool = True) -> Any:
    return net.linear(x, prefix, c2, bias)


@block("Add")
def add(net: Network, x: list, prefix: str) -> Any:
    """The sum of the row's inputs, a residual join (int8 builds quantize its shortcut input)."""
    out = x[0]
    for i, t in enumerate(x[1:], 1):
        out = net.add(out, t, f"{prefix}/add{i}" if len(x) > 2 else f"{prefix}/add", residual=True)
    return out


@block("Concat")
def concat(net: Network, x: list, prefix: str, dimension: int = 1) -> Any:
    return net.concat(x, f"{prefix}/concat", dimension)


@block("Upsample")
def upsample(net: Network, x: Any, prefix: str, size: Any = None, scale_factor: int = 2, mode: str = "nearest") -> Any:
    """Nearest-neighbour upsampling by an integer factor (the Ultralytics row form `[None, 2, 'nearest']`)."""
    if size is not None or mode != "nearest":
        raise SpecError(f"{prefix}: Upsample supports scale_factor with mode 'nearest' only")
    return net.upsample(x, int(scale_factor), f"{prefix}/upsample")


def _key(prefix: str, rel: str | int | None) -> str:
    """Resolve a key relative to the row prefix; '/name' is absolute; None is the prefix itself."""
    if rel is None:
        return prefix
    rel = str(rel)  # an unquoted numeric key in YAML (`conv: 0`) arrives as an int
    if rel.startswith("/"):
        return rel[1:]
    return f"{prefix}.{rel}" if prefix else rel
