"""YOLOv8, YOLO11 and YOLO26 blocks under Ultralytics' (8.x) names, arguments and weight keys: C2f, C2 (YOLOv8-P6's
head), C3k2 (with C3k or attention), C2PSA (PSABlock, Attention), DWConv, GhostConv and C3Ghost (YOLOv8-ghost) and
Classify; YOLOv9's ADown and SPPELAN, YOLOv10's SCDown, and CBAM (ChannelAttention, SpatialAttention). Their
detection, segmentation and pose heads are in netdef.blocks.yolo_heads.

`cv1(x).chunk(2, 1)` is one convolution with its activation and channel slices `<cv1 prefix>/a`, `/b`
(`model.2.cv1/b`); a C2f's concatenation takes the whole output, which equals cat(a, b). The attention's q/k/v
are convolutions over the matching weight rows, named `<conv prefix>/<part>` (`model.10.m.0.attn.qkv.conv/q`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import SpecError
from ..network import Network, fold_batchnorm
from ..registry import block
from .yolo import HEAD_PARAMS, _act, bottleneck, class_count, conv, csp3


# ---------------------------------------------------------------- convolutions and CSP blocks

@block("DWConv", width_args=("c2",))
def dwconv(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, d: int = 1,
           act: bool | str = True) -> Any:
    """Depth-wise Conv: groups = gcd(c1, c2)."""
    return conv(net, x, prefix, c2, k, s, None, math.gcd(net.channels(x), c2), d, act)


def conv_parts(net: Network, x: Any, prefix: str, parts: Mapping[str, Sequence[int] | np.ndarray], c2: int,
               k: int = 1, act: bool | str = True, gains: Mapping[str, float] | None = None) -> dict[str, Any]:
    """An Ultralytics Conv `prefix` (Conv2d without bias + BatchNorm + activation) of `c2` output channels whose
    output is used in parts: one convolution per part over that part's output channels (BatchNorm folded),
    times `gains[part]` where given. Returns part -> tensor (B, len(rows), H, W)."""
    c1 = net.channels(x)
    w = net.weight(f"{prefix}.conv.weight", (c2, c1, k, k))
    w, b = fold_batchnorm(w, None, *(net.weight(f"{prefix}.bn.{n}", (c2,))
                                     for n in ("weight", "bias", "running_mean", "running_var")),
                          eps=net.param("bn_eps"), bn=f"{prefix}.bn")
    out = {}
    for part, rows in parts.items():
        rows = np.asarray(rows, np.int64)
        gain = float((gains or {}).get(part, 1.0))
        name = f"{prefix}.conv/{part}"
        layer = net.conv_layer(x, name, w[rows] * gain, b[rows] * gain)
        layer.padding_nd = (k // 2, k // 2)
        if gain == 1.0:  # those channels of the BatchNorm's output
            net.match(layer.get_output(0), f"{prefix}.bn", channels=rows)
        out[part] = net.activation(layer.get_output(0), _act(act, net), name)
    return out


def chunk_conv(net: Network, x: Any, prefix: str, c: int, parts: str = "ab") -> tuple[Any, ...]:
    """`cv1(x).chunk(2, 1)` of the 1x1 Conv `prefix` (2c channels): its whole output, then the channel slices
    `prefix/a` (0..c) and/or `prefix/b` (c..2c) named in `parts` (any batch and input size)."""
    y = conv(net, x, prefix, 2 * c, 1)
    return y, *(net.slice(y, f"{prefix}/{part}", [0, "ab".index(part) * c, 0, 0], [-1, c, -1, -1])
                for part in parts)


@block("C2f", width_args=("c2",), repeat_arg="n")
def c2f(net: Network, x: Any, prefix: str, c2: int, n: int = 1, shortcut: bool = False, g: int = 1,
        e: float = 0.5) -> Any:
    """CSP bottleneck, 2 convolutions: cv2(cat(a, b, m.0(b), m.1(m.0(b)), ...)) with a, b = cv1(x).chunk(2);
    the Bottlenecks `m.i` are 3x3 -> 3x3."""
    c = int(c2 * e)
    y, last = chunk_conv(net, x, f"{prefix}.cv1", c, "b")
    ms = []
    for i in range(n):
        last = bottleneck(net, last, f"{prefix}.m.{i}", c, shortcut, g, e=1.0, k=(3, 3))
        ms.append(last)
    return conv(net, net.concat([y, *ms], f"{prefix}/concat"), f"{prefix}.cv2", c2, 1)  # y is cat(a, b)


@block("C2", width_args=("c2",), repeat_arg="n")
def c2(net: Network, x: Any, prefix: str, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
       e: float = 0.5) -> Any:
    """CSP bottleneck, 2 convolutions (YOLOv8-P6's head): cv2(cat(m(a), b)) with a, b = cv1(x).chunk(2); the
    Bottlenecks `m.i`, in sequence on a, are 3x3 -> 3x3."""
    c = int(c2 * e)
    _, a, b = chunk_conv(net, x, f"{prefix}.cv1", c)
    for i in range(n):
        a = bottleneck(net, a, f"{prefix}.m.{i}", c, shortcut, g, e=1.0, k=(3, 3))
    return conv(net, net.concat([a, b], f"{prefix}/concat"), f"{prefix}.cv2", c2, 1)


@block("GhostConv", width_args=("c2",))
def ghost_conv(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, g: int = 1,
               act: bool | str = True) -> Any:
    """cat(y, cv2(y)) with y = cv1(x) (k x k, stride s, c2 / 2 channels) and cv2 a depth-wise 5x5 Conv."""
    y = conv(net, x, f"{prefix}.cv1", c2 // 2, k, s, None, g, act=act)
    z = conv(net, y, f"{prefix}.cv2", c2 // 2, 5, 1, None, c2 // 2, act=act)
    return net.match(net.concat([y, z], f"{prefix}/concat"), prefix)


@block("GhostBottleneck", width_args=("c2",))
def ghost_bottleneck(net: Network, x: Any, prefix: str, c2: int, k: int = 3, s: int = 1) -> Any:
    """conv(x) + shortcut(x): conv = GhostConv 1x1 (c2 / 2), a k x k depth-wise Conv without activation where
    s == 2, GhostConv 1x1 without activation; shortcut = x, or where s == 2 a depth-wise Conv and a 1x1 Conv."""
    y = ghost_conv(net, x, f"{prefix}.conv.0", c2 // 2, 1, 1)
    if s == 2:
        y = dwconv(net, y, f"{prefix}.conv.1", c2 // 2, k, s, act=False)
    y = ghost_conv(net, y, f"{prefix}.conv.2", c2, 1, 1, act=False)
    if s == 2:
        short = dwconv(net, x, f"{prefix}.shortcut.0", net.channels(x), k, s, act=False)
        x = conv(net, short, f"{prefix}.shortcut.1", c2, 1, 1, act=False)
    return net.match(net.add(y, x, f"{prefix}/add"), prefix)


@block("C3Ghost", width_args=("c2",), repeat_arg="n")
def c3ghost(net: Network, x: Any, prefix: str, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
            e: float = 0.5) -> Any:
    """C3 whose `n` inner blocks are GhostBottlenecks (stride 1; `shortcut` and `g` unused, as in Ultralytics)."""
    return csp3(net, x, prefix, c2, n, e, lambda y, p, c: ghost_bottleneck(net, y, p, c))


@block("C3k", width_args=("c2",), repeat_arg="n")
def c3k_block(net: Network, x: Any, prefix: str, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
        e: float = 0.5, k: int = 3) -> Any:
    """C3 whose Bottlenecks are k x k -> k x k."""
    return csp3(net, x, prefix, c2, n, e, lambda y, p, c: bottleneck(net, y, p, c, shortcut, g, e=1.0, k=(k, k)))


@block("C3k2", width_args=("c2",), repeat_arg="n")
def c3k2(net: Network, x: Any, prefix: str, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5,
         attn: bool = False, g: int = 1, shortcut: bool = True) -> Any:
    """YOLO11's C2f whose inner blocks are Bottlenecks, C3k (`c3k`) or Bottleneck + PSABlock (`attn`).

    Ultralytics' parse_model turns `c3k` on for the m, l and x scales whatever the row says; netdef reads it
    from the weights (a C3k has `m.0.cv3`, a Bottleneck has not) and uses the row's value only without them."""
    c = int(c2 * e)
    if net.has(f"{prefix}.m.0.cv3.conv.weight"):
        c3k = True
    elif net.has(f"{prefix}.m.0.cv1.conv.weight"):
        c3k = False
    y, last = chunk_conv(net, x, f"{prefix}.cv1", c, "b")
    ms = []
    for i in range(n):
        p = f"{prefix}.m.{i}"
        if attn:
            last = bottleneck(net, last, f"{p}.0", c, shortcut, g, e=0.5, k=(3, 3))
            last = psa_block(net, last, f"{p}.1", c, 0.5, max(c // 64, 1))
        elif c3k:
            last = c3k_block(net, last, p, c, 2, shortcut, g)
        else:
            last = bottleneck(net, last, p, c, shortcut, g, e=0.5, k=(3, 3))
        ms.append(last)
    return conv(net, net.concat([y, *ms], f"{prefix}/concat"), f"{prefix}.cv2", c2, 1)  # y is cat(a, b)


# ---------------------------------------------------------------- attention

@block("Attention")
def attention(net: Network, x: Any, prefix: str, num_heads: int = 8, attn_ratio: float = 0.5) -> Any:
    """Multi-head self-attention over the H*W positions (Ultralytics' Attention): qkv 1x1 Conv,
    softmax(q^T k / sqrt(key_dim)), v attn^T, plus a 3x3 depth-wise positional Conv `pe` of v, then `proj`."""
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 4 or shape[1] <= 0:
        raise SpecError(f"{prefix}: Attention needs (B, C, H, W) input with a static C, got {shape}")
    dim, h, w = shape[1:]
    if dim % num_heads:
        raise SpecError(f"{prefix}: {dim} channels are not divisible by num_heads={num_heads}")
    head_dim = dim // num_heads
    key_dim = int(head_dim * attn_ratio)
    per_head = 2 * key_dim + head_dim  # qkv rows per head: q, k, v
    rows = {part: np.concatenate([np.arange(start, start + size) + head * per_head for head in range(num_heads)])
            for part, start, size in (("q", 0, key_dim), ("k", key_dim, key_dim), ("v", 2 * key_dim, head_dim))}
    qkv = conv_parts(net, x, f"{prefix}.qkv", rows, dim + 2 * key_dim * num_heads, act=False,
                     gains={"q": key_dim ** -0.5})
    n = h * w if min(h, w) > 0 else -1  # -1: H, W chosen at run time
    q = net.shuffle(qkv["q"], f"{prefix}/q_heads", reshape=(0, num_heads, key_dim, n))
    k = net.shuffle(qkv["k"], f"{prefix}/k_heads", reshape=(0, num_heads, key_dim, n))
    v = net.shuffle(qkv["v"], f"{prefix}/v_heads", reshape=(0, num_heads, head_dim, n))
    attn = net.softmax(net.matmul(q, k, f"{prefix}/scores", transpose_a=True), f"{prefix}/softmax", -1,
                       fp32=False)
    out = net.matmul(v, attn, f"{prefix}/attend", transpose_b=True)
    if n > 0:
        out = net.shuffle(out, f"{prefix}/merge_heads", reshape=(0, dim, h, w))
    else:  # back to x's runtime shape
        merge = net.layer("shuffle", f"{prefix}/merge_heads", out)
        merge.set_input(1, net.layer("shape", f"{prefix}/merge_heads/shape", x).get_output(0))
        out = merge.get_output(0)
    pe = conv(net, qkv["v"], f"{prefix}.pe", dim, 3, 1, g=dim, act=False)
    return conv(net, net.add(out, pe, f"{prefix}/add_pe"), f"{prefix}.proj", dim, 1, act=False)


@block("PSABlock")
def psa_block(net: Network, x: Any, prefix: str, c: int, attn_ratio: float = 0.5, num_heads: int = 4,
              shortcut: bool = True) -> Any:
    """x + attn(x), then + ffn (1x1 Conv to 2c, 1x1 Conv back without activation)."""
    y = attention(net, x, f"{prefix}.attn", num_heads, attn_ratio)
    x = net.add(x, y, f"{prefix}/add_attn") if shortcut else y
    y = conv(net, conv(net, x, f"{prefix}.ffn.0", 2 * c, 1), f"{prefix}.ffn.1", c, 1, act=False)
    return net.add(x, y, f"{prefix}/add_ffn") if shortcut else y


@block("C2PSA", width_args=("c2",), repeat_arg="n")
def c2psa(net: Network, x: Any, prefix: str, c2: int, n: int = 1, e: float = 0.5) -> Any:
    """cv2(cat(a, PSABlocks(b))) with a, b = cv1(x).chunk(2); c1 must equal c2."""
    c1 = net.channels(x)
    if c1 != c2:
        raise SpecError(f"{prefix}: C2PSA keeps the channel count: input {c1} != c2 {c2}")
    c = int(c1 * e)
    _, a, b = chunk_conv(net, x, f"{prefix}.cv1", c)
    for i in range(n):
        b = psa_block(net, b, f"{prefix}.m.{i}", c, 0.5, max(c // 64, 1))
    return conv(net, net.concat([a, b], f"{prefix}/concat"), f"{prefix}.cv2", c1, 1)


# ---------------------------------------------------------------- YOLOv9/YOLOv10 downsampling and pooling

@block("SCDown", width_args=("c2",))
def scdown(net: Network, x: Any, prefix: str, c2: int, k: int = 3, s: int = 2) -> Any:
    """YOLOv10's separable downsampling: 1x1 Conv `cv1` to c2, then a k x k stride-s depth-wise Conv `cv2` without
    activation."""
    return conv(net, conv(net, x, f"{prefix}.cv1", c2, 1, 1), f"{prefix}.cv2", c2, k, s, g=c2, act=False)


@block("ADown", width_args=("c2",))
def adown(net: Network, x: Any, prefix: str, c2: int) -> Any:
    """YOLOv9's downsampling: a 2x2 stride-1 average pool, its channel halves a 3x3 stride-2 Conv `cv1` and a 3x3
    stride-2 max pool + 1x1 Conv `cv2`, concatenated (c2/2 channels each)."""
    a, b = net.chunk(net.pool(x, "avg", 2, 1, 0, name=f"{prefix}/avgpool"), f"{prefix}/chunk", 2)
    a = conv(net, a, f"{prefix}.cv1", c2 // 2, 3, 2, 1)
    b = conv(net, net.pool(b, "max", 3, 2, 1, name=f"{prefix}/maxpool"), f"{prefix}.cv2", c2 // 2, 1, 1, 0)
    return net.match(net.concat([a, b], f"{prefix}/concat"), prefix)


@block("SPPELAN", width_args=("c2",))
def sppelan(net: Network, x: Any, prefix: str, c2: int, c3: int, k: int = 5) -> Any:
    """YOLOv9's SPP-ELAN: cv5(cat(y, pool(y), pool(pool(y)), pool(pool(pool(y))))) with y = cv1(x) (c3 channels, not
    scaled by width_multiple, as Ultralytics) and the k x k stride-1 max pools `cv2` to `cv4`."""
    ys = [conv(net, x, f"{prefix}.cv1", c3, 1, 1)]
    for i in (2, 3, 4):
        ys.append(net.pool(ys[-1], "max", k, 1, k // 2, name=f"{prefix}.cv{i}"))
    return conv(net, net.concat(ys, f"{prefix}/concat"), f"{prefix}.cv5", c2, 1, 1)


# ---------------------------------------------------------------- CBAM (Ultralytics' conv.py; no model YAML of theirs)

@block("ChannelAttention")
def channel_attention(net: Network, x: Any, prefix: str, channels: int | None = None) -> Any:
    """ChannelAttention(channels): x * sigmoid(fc(avgpool(x))), `fc` a 1x1 convolution with bias. `channels` as
    the row writes it (Ultralytics does not scale it by width): the input's, checked."""
    c = _written_channels(net, x, prefix, channels)
    pooled = net.global_avg_pool(x, f"{prefix}.pool", keep_dims=True)
    gate = net.activation(net.conv(pooled, f"{prefix}.fc", c, 1, p=0, bias=True), "sigmoid", f"{prefix}.act")
    return net.match(net.mul(x, gate, f"{prefix}/mul"), prefix)


@block("SpatialAttention")
def spatial_attention(net: Network, x: Any, prefix: str, kernel_size: int = 7) -> Any:
    """SpatialAttention(kernel_size 3 or 7): x * sigmoid(cv1(cat(mean(x, 1), max(x, 1)))), `cv1` a k x k
    convolution of 2 channels to 1 without bias."""
    if kernel_size not in (3, 7):
        raise SpecError(f"{prefix}: SpatialAttention kernel_size {kernel_size!r}: 3 or 7, as Ultralytics asserts")
    stats = [net.reduce(x, f"{prefix}/{op}", op, dims=1, keepdim=True) for op in ("mean", "max")]
    y = net.conv(net.concat(stats, f"{prefix}/cat"), f"{prefix}.cv1", 1, kernel_size, p=kernel_size // 2, bias=False)
    return net.match(net.mul(x, net.activation(y, "sigmoid", f"{prefix}.act"), f"{prefix}/mul"), prefix)


@block("CBAM")
def cbam(net: Network, x: Any, prefix: str, c1: int | None = None, kernel_size: int = 7) -> Any:
    """CBAM(c1, kernel_size): SpatialAttention `spatial_attention` after ChannelAttention `channel_attention`."""
    y = channel_attention(net, x, f"{prefix}.channel_attention", _written_channels(net, x, prefix, c1))
    return net.match(spatial_attention(net, y, f"{prefix}.spatial_attention", kernel_size), prefix)


def _written_channels(net: Network, x: Any, prefix: str, written: int | None) -> int:
    """The input's channels, which a row's channel argument (not scaled by width, as Ultralytics builds it) must
    equal where given."""
    c = net.channels(x)
    if written is not None and written != c:
        raise SpecError(f"{prefix}: the row gives {written} channels, its input has {c} (Ultralytics builds this "
                        f"block with the number as written, not scaled by width_multiple): write {c}")
    return c


# ---------------------------------------------------------------- Classify

@block("Classify", params={"nc": HEAD_PARAMS["nc"]})
def classify(net: Network, x: Any, prefix: str, nc: int, k: int = 1, s: int = 1, p: int | None = None,
             g: int = 1, softmax: bool = True, eps: float | None = None) -> Any:
    """Ultralytics' classification head in eval mode: Conv `prefix.conv` to 1280 channels, global average pool,
    Linear `prefix.linear` to nc, softmax: (B, nc) probabilities (several inputs are concatenated first).
    `softmax=False`: the logits, as YOLOv5's Classify returns them. `eps`: the Conv's BatchNorm eps when it
    differs from the model's `bn_eps` (YOLOv5 adds Classify after initialize_weights: PyTorch's 1e-5). Records
    the task (`Network.record_model`: classify, nc, head "probs" or "logits"). The class count is the weights'
    (`prefix.linear.weight` is nc x 1280), else the YAML's; `--set nc` must agree with the weights."""
    key = f"{prefix}.linear.weight"
    trained = net.weight_size(key) // 1280 if net.has(key) and net.weight_size(key) % 1280 == 0 else None
    nc = class_count(net, prefix, nc, trained, f"'{key}'")
    if isinstance(x, (list, tuple)):
        x = net.concat(list(x), f"{prefix}/concat")
    if eps is None:
        y = conv(net, x, f"{prefix}.conv", 1280, k, s, p, g)
    else:
        y = net.conv(x, f"{prefix}.conv.conv", 1280, k, s, p, g, bias=False, bn=f"{prefix}.conv.bn", eps=eps,
                     act=_act(True, net))
    logits = net.linear(net.global_avg_pool(y, f"{prefix}.pool", keep_dims=True), f"{prefix}.linear", nc)
    net.record_model(task="classify", nc=int(logits.shape[1]), head="probs" if softmax else "logits")
    if not softmax:
        return logits
    return net.softmax(logits, f"{prefix}/softmax", 1, fp32=False)
