"""Blocks for torchvision's ShuffleNetV2, ConvNeXt, GoogLeNet, DenseNet, SqueezeNet and RegNetY classifiers,
torchvision's key names.

    netdef export torchvision:googlenet -o weights/googlenet.wts --randomize-bn
    netdef verify docs/examples/classification/googlenet.yaml -w weights/googlenet.wts --model torchvision:googlenet \
           --cpu --blocks docs/examples/classification/blocks.py --input-shape 97x75
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from netdef.blocks.parts import conv_norm_act, squeeze_excitation
from netdef.errors import SpecError
from netdef.network import Network
from netdef.registry import Param, block


@block("ShuffleUnit", width_args=("c2",))
def shuffle_unit(net: Network, x: Any, prefix: str, c2: int, s: int = 1) -> Any:
    """torchvision's shufflenetv2.InvertedResidual(c1, c2, s): stride 1 splits the channels in half and runs
    `branch2` on the second half; stride 2 runs `branch1` (depth-wise 3x3 + BN, 1x1 + BN + ReLU) and `branch2` on
    the whole input. Then torch.cat and channel_shuffle(2)."""
    half = c2 // 2
    if s == 1:
        a, b = net.chunk(x, f"{prefix}/chunk", 2)
    else:
        c1 = net.channels(x)
        a = conv_norm_act(net, x, f"{prefix}.branch1", c1, 3, s, g=c1, act="none")
        a = conv_norm_act(net, a, f"{prefix}.branch1", half, 1, act="relu", i=2)
        b = x
    b = conv_norm_act(net, b, f"{prefix}.branch2", half, 1, act="relu")
    b = conv_norm_act(net, b, f"{prefix}.branch2", half, 3, s, g=half, act="none", i=3)
    b = conv_norm_act(net, b, f"{prefix}.branch2", half, 1, act="relu", i=5)
    y = net.concat([a, b], f"{prefix}/cat")
    return net.match(net.channel_shuffle(y, f"{prefix}/shuffle", 2), prefix)


@block("ShuffleStage", width_args=("c2",), repeat_arg="n")
def shuffle_stage(net: Network, x: Any, prefix: str, c2: int, n: int = 1) -> Any:
    """torchvision's ShuffleNetV2 stage `prefix`: a stride-2 unit `prefix.0`, then `n - 1` stride-1 units."""
    for i in range(n):
        x = shuffle_unit(net, x, f"{prefix}.{i}", c2, 2 if i == 0 else 1)
    return net.match(x, prefix)


@block("CNBlock", width_args=("dim",))
def cn_block(net: Network, x: Any, prefix: str, dim: int) -> Any:
    """torchvision's convnext.CNBlock(dim): x + layer_scale * block(x), block = depth-wise 7x7 conv, permute to
    channels last, LayerNorm(eps=1e-6), Linear to 4 dim, GELU, Linear back, permute to channels first (the
    StochasticDepth is eval's identity)."""
    y = net.conv(x, f"{prefix}.block.0", dim, 7, p=3, g=dim, bias=True)
    y = net.permute(y, f"{prefix}.block.1", (0, 2, 3, 1))
    y = net.layer_norm(y, f"{prefix}.block.2", dim, eps=1e-6)
    y = net.gelu(net.linear(y, f"{prefix}.block.3", 4 * dim), f"{prefix}.block.4")
    y = net.linear(y, f"{prefix}.block.5", dim)
    y = net.permute(y, f"{prefix}.block.6", (0, 3, 1, 2))
    y = net.match(y, f"{prefix}.block")
    y = net.scale(y, f"{prefix}.layer_scale")  # named {prefix}/layer_scale: a parameter of the block
    return net.match(net.add(y, x, f"{prefix}/add", residual=True), prefix)


@block("CNStage", width_args=("dim",), repeat_arg="n")
def cn_stage(net: Network, x: Any, prefix: str, dim: int, n: int = 1) -> Any:
    """A ConvNeXt stage `prefix`: `n` CNBlocks `prefix.0 ... prefix.{n-1}`."""
    for i in range(n):
        x = cn_block(net, x, f"{prefix}.{i}", dim)
    return net.match(x, prefix)


def basic_conv(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int = 0) -> Any:
    """GoogLeNet's BasicConv2d `prefix`: Conv2d `prefix.conv` (no bias) + BatchNorm `prefix.bn` (eps 1e-3) + ReLU."""
    y = net.conv(x, f"{prefix}.conv", c2, k, s, p, bias=False, bn=f"{prefix}.bn", eps=1e-3, act="relu")
    return net.match(y, prefix)


@block("BasicConv2d", width_args=("c2",))
def basic_conv2d(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int = 0) -> Any:
    """torchvision's googlenet.BasicConv2d(c1, c2, kernel_size=k, stride=s, padding=p); `p` defaults to 0 as in
    torch."""
    return basic_conv(net, x, prefix, c2, k, s, p)


@block("Inception")
def inception(net: Network, x: Any, prefix: str, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
              ch5x5: int, pool_proj: int) -> Any:
    """torchvision's googlenet.Inception(c1, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj): four branches
    concatenated; branch3's "5x5" is a 3x3 as in torchvision, branch4 a 3x3 max-pool (stride 1, ceil_mode) then
    a 1x1 BasicConv2d."""
    b1 = basic_conv(net, x, f"{prefix}.branch1", ch1x1)
    b2 = basic_conv(net, basic_conv(net, x, f"{prefix}.branch2.0", ch3x3red), f"{prefix}.branch2.1", ch3x3, 3, p=1)
    b3 = basic_conv(net, basic_conv(net, x, f"{prefix}.branch3.0", ch5x5red), f"{prefix}.branch3.1", ch5x5, 3, p=1)
    b4 = net.pool(x, "max", 3, 1, 1, name=f"{prefix}.branch4.0", ceil_mode=True)
    b4 = basic_conv(net, b4, f"{prefix}.branch4.1", pool_proj)
    for i, b in enumerate((b2, b3, b4), 2):
        net.match(b, f"{prefix}.branch{i}")
    return net.match(net.concat([b1, b2, b3, b4], f"{prefix}/cat"), prefix)


@block("SkipAux")
def skip_aux(net: Network, x: Any, prefix: str) -> Any:
    """An auxiliary classifier `prefix` that eval mode does not run (GoogLeNet's InceptionAux): its keys, where
    the file has them (aux_logits=True), are accounted for as knowingly unused; `x` passes through."""
    net.skip([k for k in net.weights if k.startswith(f"{prefix}.")], "auxiliary classifier: training only")
    return x


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@block("TransformInput", params={"transform_input": Param(
        False, bool, help="GoogLeNet's transform_input (True for torchvision's ImageNet weights, False for its "
                          "random init): inputs normalised with ImageNet's mean and std made (x - 0.5) / 0.5")})
def transform_input(net: Network, x: Any, prefix: str) -> Any:
    """GoogLeNet's _transform_input with `--set transform_input=true`: channel c becomes x_c * std_c / 0.5 +
    (mean_c - 0.5) / 0.5; without it the input passes through."""
    if not net.param("transform_input"):
        return x
    scale = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1) / 0.5
    shift = (np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1) - 0.5) / 0.5
    y = net.mul(x, net.constant(scale, f"{prefix}/scale"), f"{prefix}/mul")
    return net.add(y, net.constant(shift, f"{prefix}/shift"), f"{prefix}/add")


def bn_relu(net: Network, x: Any, prefix: str, norm: str, relu: str) -> Any:
    """BatchNorm `prefix.norm` (before a convolution, so not folded) + ReLU, the module `prefix.relu`."""
    y = net.activation(net.batchnorm(x, f"{prefix}.{norm}"), "relu", f"{prefix}.{norm}")
    return net.match(y, f"{prefix}.{relu}")


@block("DenseBlock", repeat_arg="n")
def dense_block(net: Network, x: Any, prefix: str, n: int = 1, growth: int = 32, bn_size: int = 4) -> Any:
    """torchvision's densenet._DenseBlock `prefix`: `n` _DenseLayers `prefix.denselayer1 ...`, each norm1, ReLU,
    1x1 conv1 (+ norm2 folded), ReLU, 3x3 conv2 on the concatenation of all features so far; returns that
    concatenation with the last layer's features."""
    features = [x]
    for i in range(1, n + 1):
        p = f"{prefix}.denselayer{i}"
        y = features[0] if len(features) == 1 else net.concat(features, f"{p}/cat")
        y = net.conv(bn_relu(net, y, p, "norm1", "relu1"), f"{p}.conv1", bn_size * growth, 1, bias=False,
                     bn=f"{p}.norm2", act="relu")
        y = net.match(y, f"{p}.relu2")
        features.append(net.match(net.conv(y, f"{p}.conv2", growth, 3, p=1, bias=False), p))
    return net.match(net.concat(features, f"{prefix}/cat"), prefix)


@block("Transition", width_args=("c2",))
def transition(net: Network, x: Any, prefix: str, c2: int) -> Any:
    """torchvision's densenet._Transition `prefix`: norm, ReLU, 1x1 conv, 2x2 average pool."""
    y = net.conv(bn_relu(net, x, prefix, "norm", "relu"), f"{prefix}.conv", c2, 1, bias=False)
    return net.match(net.pool(y, "avg", 2, 2, name=f"{prefix}.pool"), prefix)


@block("Fire", width_args=("e1", "e3"))
def fire(net: Network, x: Any, prefix: str, s: int, e1: int, e3: int) -> Any:
    """torchvision's squeezenet.Fire(c1, s, e1, e3): 1x1 `squeeze` + ReLU, then 1x1 `expand1x1` and 3x3
    `expand3x3` (padding 1), each + ReLU, concatenated."""
    y = net.match(net.conv(x, f"{prefix}.squeeze", s, 1, p=0, bias=True, act="relu"), f"{prefix}.squeeze_activation")
    a = net.match(net.conv(y, f"{prefix}.expand1x1", e1, 1, p=0, bias=True, act="relu"),
                  f"{prefix}.expand1x1_activation")
    b = net.match(net.conv(y, f"{prefix}.expand3x3", e3, 3, p=1, bias=True, act="relu"),
                  f"{prefix}.expand3x3_activation")
    return net.match(net.concat([a, b], f"{prefix}/cat"), prefix)


def res_bottleneck(net: Network, x: Any, prefix: str, c2: int, s: int, gw: int, se: float) -> Any:
    """torchvision's regnet.ResBottleneckBlock (bottleneck multiplier 1): `f` = 1x1 `a`, 3x3 `b` of groups of
    `gw` channels (stride s), SqueezeExcitation `se` (round(se * c1) channels), 1x1 `c` without activation; plus
    `proj` (1x1, stride s) where the shape changes, else x; then ReLU."""
    c1, f = net.channels(x), f"{prefix}.f"
    y = conv_norm_act(net, x, f"{f}.a", c2, 1)
    y = conv_norm_act(net, y, f"{f}.b", c2, 3, s, g=c2 // gw)
    y = squeeze_excitation(net, y, f"{f}.se", int(round(se * c1)))
    y = conv_norm_act(net, y, f"{f}.c", c2, 1, act="none")
    shortcut = conv_norm_act(net, x, f"{prefix}.proj", c2, 1, s, act="none") if c1 != c2 or s != 1 else x
    y = net.add(shortcut, y, f"{prefix}/add", residual=True)
    return net.match(net.activation(y, "relu", prefix), prefix)


@block("RegStage", width_args=("c2",), repeat_arg="n")
def reg_stage(net: Network, x: Any, prefix: str, c2: int, n: int = 1, s: int = 2, gw: int = 8,
              se: float = 0.25) -> Any:
    """torchvision's regnet.AnyStage `prefix` (`trunk_output.blockK`): `n` ResBottleneckBlocks `prefix.blockK-0
    ... prefix.blockK-{n-1}`, the first of stride `s`; `gw` the group width, `se` the squeeze-excitation ratio."""
    stage = prefix.rsplit(".", 1)[-1]
    if not re.fullmatch(r"block\d+", stage):
        raise SpecError(f"{prefix}: a RegStage's prefix ends in its module's name blockK (trunk_output.block1), "
                        f"which names its units blockK-0, blockK-1, ...")
    for i in range(n):
        x = res_bottleneck(net, x, f"{prefix}.{stage}-{i}", c2, s if i == 0 else 1, gw, se)
    return net.match(x, prefix)
