"""Vision Transformer blocks with torchvision's key names (`conv_proj`, `class_token`, `encoder.pos_embedding`,
`encoder.layers.encoder_layer_0.self_attention.in_proj_weight`, `...mlp.0`, `heads.head`).

Tokens are (B, N, E) with a dynamic batch B; attention scores and softmax run in float32 in fp16 builds
(`net.fp32(strict=False)`: TensorRT 8.6 chooses their precision)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import SpecError
from ..network import Network
from ..registry import block


@block("PatchEmbed")
def patch_embed(net: Network, x: Any, prefix: str, c2: int, patch: int = 16) -> Any:
    """Conv2d(c1, c2, patch, stride patch) `prefix`, then (B, c2, h, w) -> tokens (B, h * w, c2)."""
    y = net.conv(x, prefix, c2, patch, patch, p=0, bias=True)
    return net.permute(net.flatten(y, f"{prefix}/flatten", 2), f"{prefix}/tokens", (0, 2, 1))


@block("ClassToken")
def class_token(net: Network, x: Any, prefix: str) -> Any:
    """Prepend the learned token `prefix` (weight (1, 1, E)) to every sequence: (B, N, E) -> (B, N + 1, E)."""
    e = _static(x, prefix)[1]
    token = net.constant(net.weight(prefix, (1, 1, e)), prefix)
    size = net.dims(x, f"{prefix}/batch", (1, 0, 0), (0, 1, e))  # (B, 1, E), a shape tensor if B is dynamic
    layer = net.layer("slice", f"{prefix}/expand", token, (0, 0, 0),
                      size if isinstance(size, tuple) else (1, 1, e), (0, 1, 1))  # stride 0 repeats the token
    if not isinstance(size, tuple):
        layer.set_input(2, size)
    return net.concat([layer.get_output(0), x], f"{prefix}/concat")


@block("PositionEmbedding")
def position_embedding(net: Network, x: Any, prefix: str) -> Any:
    """x + the learned embedding `prefix` (weight (1, N, E))."""
    n, e = _static(x, prefix)
    pos = net.constant(net.weight(prefix, (1, n, e)), prefix)
    return net.add(x, pos, f"{prefix}/add")


def multihead_attention(net: Network, x: Any, prefix: str, heads: int) -> Any:
    """nn.MultiheadAttention(E, heads, batch_first=True) `prefix` as self-attention: packed q/k/v projection
    `prefix.in_proj_weight`/`in_proj_bias`, softmax(q k^T / sqrt(E / heads)) v per head, `prefix.out_proj`."""
    n, e = _static(x, prefix)
    if e % heads:
        raise SpecError(f"{prefix}: embedding size {e} is not divisible by heads={heads}")
    d = e // heads
    w = net.constant(net.weight(f"{prefix}.in_proj_weight", (3 * e, e)), f"{prefix}/in_proj_weight")
    b = net.constant(net.weight(f"{prefix}.in_proj_bias", (1, 1, 3 * e)), f"{prefix}/in_proj_bias")
    qkv = net.add(net.matmul(x, w, f"{prefix}/in_proj", transpose_b=True), b, f"{prefix}/in_proj/add_bias")

    def head_split(i: int, what: str) -> Any:  # (B, N, E) slice i of q, k, v -> (B, heads, N, d)
        part = net.slice(qkv, f"{prefix}/{what}", (0, 0, i * e), (-1, n, e))
        return net.shuffle(part, f"{prefix}/{what}_heads", reshape=(0, n, heads, d), second=(0, 2, 1, 3))

    q, k, v = (head_split(i, what) for i, what in enumerate(("q", "k", "v")))
    q = net.mul(q, net.constant(_full(1.0 / math.sqrt(d), 4), f"{prefix}/q_scale_factor"), f"{prefix}/q_scale")
    with net.fp32(f"{prefix}/attention", strict=False):
        scores = net.matmul(q, k, f"{prefix}/scores", transpose_b=True)
        attn = net.softmax(scores, f"{prefix}/softmax", -1)
    y = net.matmul(attn, v, f"{prefix}/context")  # (B, heads, N, d)
    y = net.shuffle(y, f"{prefix}/merge_heads", first=(0, 2, 1, 3), reshape=(0, n, e))
    out = net.linear(y, f"{prefix}.out_proj", e)
    net.match(out, prefix)  # MultiheadAttention's output (its out_proj is no module forward() calls)
    return out


@block("ViTEncoderLayer", repeat_arg="n")
def vit_encoder(net: Network, x: Any, prefix: str, heads: int, mlp_dim: int, n: int = 1, eps: float = 1e-6) -> Any:
    """`n` torchvision EncoderBlocks `prefix.encoder_layer_{i}`: x + attention(ln_1(x)), then + mlp(ln_2(x))
    with mlp = Linear `mlp.0`, GELU, Linear `mlp.3` (dropout is the identity in eval)."""
    for i in range(n):
        p = f"{prefix}.encoder_layer_{i}"
        e = _static(x, p)[1]
        y = multihead_attention(net, net.layer_norm(x, f"{p}.ln_1", e, eps), f"{p}.self_attention", heads)
        x = net.add(x, y, f"{p}/add_attention", residual=True)
        y = net.gelu(net.linear(net.layer_norm(x, f"{p}.ln_2", e, eps), f"{p}.mlp.0", mlp_dim), f"{p}.mlp.1")
        x = net.add(x, net.linear(y, f"{p}.mlp.3", e), f"{p}/add_mlp", residual=True)
        net.match(x, p)
    return x


def _static(x: Any, prefix: str) -> tuple[int, int]:
    """(N, E) of tokens (B, N, E); both must be static."""
    shape = tuple(x.shape)
    if len(shape) != 3 or min(shape[1:]) < 0:
        raise SpecError(f"{prefix}: expected tokens (B, N, E) with static N and E, got {shape}")
    return int(shape[1]), int(shape[2])


def _full(v: float, rank: int) -> np.ndarray:
    return np.full((1,) * rank, v, np.float32)
