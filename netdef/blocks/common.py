"""Generic blocks: convolutions, normalization, activations, pooling, linear, joins, resizing and shape ops.

Blocks named after a torch module (Conv2d, ConvTranspose2d, LayerNorm, GroupNorm, GELU, Softmax, Upsample)
take that module's arguments in its order, with its defaults (the input channels come from the input).
A layer named `prefix/kind` whose output is the module's output is recorded in `net.matches`."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError, WeightKeyError
from ..network import Network
from ..registry import Param, block


@block("ConvBnAct", width_args=("c2",))
def conv_bn_act(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                g: int = 1, d: int = 1, act: str = "relu", conv: str | None = None, bn: str | None = None,
                eps: float = 1e-5, bias: bool | None = None) -> Any:
    """Convolution + folded BatchNorm + activation; `p=None` (the default) pads 'same' (unlike nn.Conv2d: see
    Conv2d). Keys `conv` and `bn` are relative to the row prefix (defaults: the prefix itself and no
    BatchNorm); use absolute names with a leading '/'."""
    conv_key = _key(prefix, conv)
    bn_key = _key(prefix, bn) if bn else None
    return net.conv(x, conv_key, c2, k, s, p, g, d, bias=bias, bn=bn_key, eps=eps, act=act)


@block("Conv2d", width_args=("c2",))
def conv2d(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int = 0, d: int = 1,
           g: int = 1, bias: bool = True) -> Any:
    """nn.Conv2d(c1, c2, k, s, p, d, g, bias) `prefix`: `p` defaults to 0 as in torch (ConvBnAct pads 'same')."""
    return net.conv(x, prefix, c2, k, s, p, g, d, bias=bias)


NC = Param(None, int, help="classes of the model's classifier (YOLO heads, Classify, Classifier rows); default: the "
                           "count the weights were trained with, else the YAML's; given, the weights must agree",
           valid=(lambda v: v >= 1, "at least 1 class"))


def class_count(net: Network, prefix: str, yaml_nc: Any, trained: int | None, evidence: str) -> int:
    """The head's class count: `--set nc` (checked against the weights), else the count the weights were trained
    with (`trained`, None when they do not tell), else the YAML's `nc`."""
    given = net.param("nc")
    nc = given if given is not None else trained if trained is not None else yaml_nc
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise SpecError(f"{prefix}: nc must be a positive integer, got {nc!r}")
    if given is not None and trained is not None and trained != given:
        raise WeightKeyError(f"{prefix}: --set nc={given}, but the weights were trained with nc={trained} "
                             f"({evidence}); leave nc out to use the weights' count")
    return nc



@block("Classifier", params={"nc": NC})
def classifier(net: Network, x: Any, prefix: str, c2: int, conv: bool = False, bias: bool = True) -> Any:
    """The model's class scores: nn.Linear `prefix` (`conv`: a 1x1 nn.Conv2d, e.g. UNet's OutConv) to the class
    count: `--set nc` (checked against the weights), else the count the weights were trained with (one value of
    `prefix.bias` per class), else `c2`, the YAML's. A custom-trained classifier needs no copied YAML."""
    key = f"{prefix}.bias"
    nc = class_count(net, prefix, c2, net.weight_size(key) if bias and net.has(key) else None, f"'{key}'")
    net.classes = nc
    return net.conv(x, prefix, nc, 1, bias=bias) if conv else net.linear(x, prefix, nc, bias)


@block("ConvTranspose2d", width_args=("c2",))
def conv_transpose2d(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int = 0,
                     output_padding: int = 0, g: int = 1, bias: bool = True, d: int = 1) -> Any:
    """nn.ConvTranspose2d(c1, c2, k, s, p, output_padding, g, bias, d) `prefix`; `p` defaults to 0 as in torch."""
    return net.deconv(x, prefix, c2, k, s, p, output_padding, g, d, bias=bias)


@block("LayerNorm")
def layer_norm(net: Network, x: Any, prefix: str, normalized_shape: Any = None, eps: float = 1e-5,
               elementwise_affine: bool = True, axes: Any = None) -> Any:
    """nn.LayerNorm over the trailing `normalized_shape` (default: the trailing dims its weight's size makes), or
    over `axes` ([1]: channels-first, ConvNeXt's LayerNorm2d); float32 in fp16/int8 builds (TensorRT 8.6: its
    statistics; `Network.fp32`, strict=False)."""
    return net.layer_norm(x, prefix, normalized_shape, eps, elementwise_affine, axes)


@block("GroupNorm")
def group_norm(net: Network, x: Any, prefix: str, num_groups: int, eps: float = 1e-5, affine: bool = True) -> Any:
    """nn.GroupNorm(num_groups, C, eps, affine); float32 in fp16/int8 builds (TensorRT 8.6: its statistics)."""
    return net.group_norm(x, prefix, num_groups, eps, affine)


@block("GELU")
def gelu(net: Network, x: Any, prefix: str, approximate: str = "none") -> Any:
    """nn.GELU(approximate='none'|'tanh')."""
    return net.gelu(x, prefix, approximate)


@block("Softmax")
def softmax(net: Network, x: Any, prefix: str, dim: int = -1) -> Any:
    """nn.Softmax(dim) (float32 in fp16/int8 builds; TensorRT 8.6 chooses: `Network.fp32`, strict=False)."""
    return net.softmax(x, prefix, dim)


@block("LayerScale")
def layer_scale(net: Network, x: Any, prefix: str, param: str = "gamma", dim: int = 1) -> Any:
    """x times the per-channel weight `prefix.<param>` along `dim` (1: NCHW, -1: channels-last)."""
    return net.scale(x, f"{prefix}.{param}", dim, name=prefix)


@block("Pad")
def pad(net: Network, x: Any, prefix: str, pads: list, mode: str = "constant", value: float = 0.0) -> Any:
    """F.pad(x, pads, mode, value): (left, right, top, bottom) on the last two dims; negative pads crop."""
    return net.pad(x, prefix, pads, mode, value)


@block("Resize")
def resize(net: Network, x: Any, prefix: str, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
           align_corners: bool | None = None) -> Any:
    """F.interpolate(x, size, scale_factor, mode nearest|bilinear, align_corners)."""
    return net.resize(x, prefix, size, scale_factor, mode, align_corners)


@block("ResizeLike")
def resize_like(net: Network, x: list, prefix: str, mode: str = "nearest", align_corners: bool | None = None) -> Any:
    """F.interpolate(x, size=ref.shape[2:], mode, align_corners) of the row's inputs `from: [x, ref]`: ref's sizes,
    taken at run time where they are dynamic (DeepLab's ASPP pooling branch back to the feature map)."""
    if not isinstance(x, list) or len(x) != 2:
        raise SpecError(f"{prefix}: ResizeLike takes two inputs (from: [x, ref])")
    return net.resize(x[0], prefix, mode=mode, align_corners=align_corners, like=x[1])


@block("Permute")
def permute(net: Network, x: Any, prefix: str, dims: list) -> Any:
    """x.permute(*dims), the layer named `prefix`."""
    return net.permute(x, prefix, dims)


@block("Reshape")
def reshape(net: Network, x: Any, prefix: str, shape: list) -> Any:
    """x.reshape(shape); 0 keeps the input's dimension (the dynamic batch), -1 is inferred."""
    return net.reshape(x, prefix, shape)


@block("Slice")
def slice_(net: Network, x: Any, prefix: str, start: list, shape: list, stride: list | None = None) -> Any:
    """Elements start + i * stride, i < shape, per dimension; -1 in `shape` keeps a dimension whole."""
    return net.slice(x, prefix, start, shape, stride)


@block("ChannelShuffle")
def channel_shuffle(net: Network, x: Any, prefix: str, groups: int) -> Any:
    """nn.ChannelShuffle(groups) on (B, C, H, W) (ShuffleNet's channel_shuffle); layers `prefix`, `prefix/merge`."""
    return _matched(net, net.channel_shuffle(x, prefix, groups), prefix)


@block("Reduce")
def reduce(net: Network, x: Any, prefix: str, op: str = "mean", dims: Any = -1, keepdim: bool = False) -> Any:
    """x.mean/amax/amin/sum/prod(dims, keepdim)."""
    return net.reduce(x, prefix, op, dims, keepdim)


@block("MatMul")
def matmul(net: Network, x: list, prefix: str, transpose_a: bool = False, transpose_b: bool = False) -> Any:
    """torch.matmul of the row's two inputs (batched), optionally transposing the last two dims of either."""
    if not isinstance(x, list) or len(x) != 2:
        raise SpecError(f"{prefix}: MatMul takes two inputs (from: [a, b])")
    return net.matmul(x[0], x[1], prefix, transpose_a, transpose_b)


@block("BatchNorm")
def batchnorm(net: Network, x: Any, prefix: str, eps: float = 1e-5) -> Any:
    """nn.BatchNorm2d `prefix` in eval mode, alone (after a convolution, a ConvBnAct row folds it instead)."""
    return net.batchnorm(x, prefix, eps)


@block("Act")
def act(net: Network, x: Any, prefix: str, kind: str = "relu") -> Any:
    """An activation (relu, silu, leaky[:slope], hardswish, hardsigmoid, sigmoid, tanh, relu6, gelu[:tanh], none)."""
    return _matched(net, net.activation(x, kind, prefix), prefix, x)


@block("MaxPool")
def max_pool(net: Network, x: Any, prefix: str, k: int = 2, s: int | None = None, p: int = 0,
             ceil_mode: bool = False) -> Any:
    """nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode) (no dilation)."""
    return net.pool(x, "max", k, s, p, name=prefix, ceil_mode=ceil_mode)


@block("AvgPool")
def avg_pool(net: Network, x: Any, prefix: str, k: int = 2, s: int | None = None, p: int = 0,
             ceil_mode: bool = False, count_include_pad: bool = True) -> Any:
    """nn.AvgPool2d(k, s, p, ceil_mode, count_include_pad)."""
    return net.pool(x, "avg", k, s, p, name=prefix, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


@block("GlobalAvgPool")
def global_avg_pool(net: Network, x: Any, prefix: str, keep_dims: bool = False) -> Any:
    """(B, C, H, W) -> (B, C), or (B, C, 1, 1) with keep_dims (a following Linear then runs as a 1x1 conv)."""
    return net.global_avg_pool(x, prefix, keep_dims)


@block("AdaptiveAvgPool")
def adaptive_avg_pool(net: Network, x: Any, prefix: str, output_size: int | list[int] = 1) -> Any:
    """nn.AdaptiveAvgPool2d(output_size) at a static input size (VGG's and AlexNet's avgpool)."""
    return net.adaptive_avg_pool(x, prefix, output_size)


@block("Flatten")
def flatten(net: Network, x: Any, prefix: str, start_dim: int = 1, end_dim: int = -1) -> Any:
    """torch.flatten(x, start_dim, end_dim)."""
    return net.flatten(x, prefix, start_dim, end_dim)


@block("Linear")
def linear(net: Network, x: Any, prefix: str, c2: int, bias: bool = True) -> Any:
    """nn.Linear(c1, c2, bias) `prefix` over the last dimension (or on pooled (B, C, 1, 1) features)."""
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
    """torch.cat of the row's inputs (`from: [i, j, ...]`) along `dimension`; the layer is `prefix/concat`."""
    return _matched(net, net.concat(x, f"{prefix}/concat", dimension), prefix)


@block("Upsample")
def upsample(net: Network, x: Any, prefix: str, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> Any:
    """nn.Upsample(size, scale_factor, mode nearest|bilinear, align_corners) (the Ultralytics row form
    `[None, 2, 'nearest']`): one of size and scale_factor, as torch takes them; the layer is `prefix/upsample`."""
    if (size is None) == (scale_factor is None):
        raise SpecError(f"{prefix}: Upsample takes one of size and scale_factor, as nn.Upsample does (given "
                        f"{'both' if size is not None else 'neither'}): e.g. {{scale_factor: 2}} or [null, 2, nearest]")
    y = net.resize(x, f"{prefix}/upsample", size, scale_factor, mode, align_corners)
    return _matched(net, y, prefix)


def _matched(net: Network, y: Any, prefix: str, x: Any = None) -> Any:
    """Record that `y`, the output of a layer named `prefix/...`, is the output of module `prefix`; a prefix with
    '/' names no module (a function forward() calls: `features/relu` for F.relu), so verify looks for none."""
    if y is not x and y.name != prefix and "/" not in prefix:
        net.match(y, prefix)
    return y


def _key(prefix: str, rel: str | int | None) -> str:
    """Resolve a key relative to the row prefix; '/name' is absolute; None is the prefix itself."""
    if rel is None:
        return prefix
    rel = str(rel)  # an unquoted numeric key in YAML (`conv: 0`) arrives as an int
    if rel.startswith("/"):
        return rel[1:]
    return f"{prefix}.{rel}" if prefix else rel
