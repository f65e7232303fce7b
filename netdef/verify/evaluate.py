"""Evaluate a TensorRT network definition on the CPU with torch in float64, layer by layer.

The evaluator works on `netdef.trt_api.LayerDescription`s (plain data), so it knows no TensorRT version. Each
output is computed in float64 and then rounded to its tensor's own type (a float16 tensor of a strongly
typed fp16 network holds float16 values), so the numbers follow the definition, not any engine's kernels.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import NetdefError
from ..trt_api import LayerDescription

PLUGIN_TYPES = ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3")


class UnsupportedLayer(NetdefError):
    """A layer type (or setting) the CPU evaluator does not compute."""


class LayerSizeError(NetdefError):
    """A layer the evaluator could not compute at the sizes this input gives it (`layer`: its name)."""

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer


def can_evaluate(layer: LayerDescription) -> bool:
    """Whether `evaluate` computes layers of this kind."""
    return layer.type in _OPS


def evaluate(layers: list[LayerDescription], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Every tensor of the network (inputs included) by name, as torch tensors (floats in float64), from the
    layers' descriptions (`trt_api.describe_layers`) and the network inputs' arrays by name."""
    import torch

    values: dict[str, Any] = {k: _as_dtype(torch, torch.as_tensor(np.asarray(v)), np.asarray(v).dtype.name)
                              for k, v in inputs.items()}
    declared = {name: shape for layer in layers for name, shape in zip(layer.outputs, layer.output_shapes)}
    for layer in _in_dependency_order(layers, values):
        fn = _OPS.get(layer.type)
        if fn is None:
            hint = " (a plugin layer)" if layer.type in PLUGIN_TYPES else ""
            raise UnsupportedLayer(f"layer '{layer.name}': the CPU evaluator cannot compute {layer.type} "
                                   f"layers{hint}")
        args = []
        for name in layer.inputs:
            if name is not None and name not in values:
                raise NetdefError(f"layer '{layer.name}': input tensor '{name}' is neither a network input nor "
                                  f"a layer's output")
            args.append(None if name is None else values[name])
        try:
            outs = fn(torch, layer, args)
        except (RuntimeError, ValueError, IndexError) as e:  # torch refusing the sizes this input gives the layer
            # a network input's sizes (not a layer's output) may be dynamic too: its batch
            open_sizes = [declared.get(name, (-1,)) for name in layer.inputs if name is not None]
            if not any(d < 0 for shape in [*layer.output_shapes, *open_sizes] for d in shape):
                raise  # sizes the definition fixes: an evaluator bug, with its traceback
            shapes = ", ".join(str(tuple(a.shape)) for a in args if a is not None)
            raise LayerSizeError(f"layer '{layer.name}' ({layer.type}) cannot be computed on inputs of shapes "
                                 f"{shapes}: {str(e).splitlines()[0]} (a size the definition does not fix, e.g. a "
                                 "fixed size joined with one that follows the input)", layer.name) from e
        outs = [_as_dtype(torch, t, d) for t, d in zip(outs if isinstance(outs, list) else [outs],
                                                       layer.output_dtypes)]
        for name, t, shape in zip(layer.outputs, outs, layer.output_shapes):
            if len(shape) != t.dim() or any(s >= 0 and s != n for s, n in zip(shape, t.shape)):
                raise NetdefError(f"layer '{layer.name}' ({layer.type}): the evaluator computed shape "
                                  f"{tuple(t.shape)}, TensorRT's definition says {shape} (an evaluator bug)")
            values[name] = t
    return values


def _in_dependency_order(layers: list[LayerDescription], known: Mapping[str, Any]) -> list[LayerDescription]:
    """The layers in network order, except that a layer comes after the producers of its inputs (a resize whose
    output size is a tensor computed by layers added after it)."""
    producer = {name: layer for layer in layers for name in layer.outputs}
    done: set[int] = set()
    order: list[LayerDescription] = []

    def visit(layer: LayerDescription, path: tuple[str, ...]) -> None:
        if layer.index in done:
            return
        if layer.name in path:
            raise NetdefError(f"layer '{layer.name}': its inputs depend on its own output ({' -> '.join(path)})")
        for name in layer.inputs:
            if name is not None and name not in known and name in producer:
                visit(producer[name], (*path, layer.name))
        done.add(layer.index)
        order.append(layer)

    for layer in layers:
        visit(layer, ())
    return order


# ---------------------------------------------------------------- helpers

def _attr(layer: LayerDescription, key: str) -> Any:
    if key not in layer.attrs:
        raise UnsupportedLayer(f"layer '{layer.name}' ({layer.type}): TensorRT gave no '{key}' attribute")
    return layer.attrs[key]


def _weights(torch: Any, layer: LayerDescription, key: str, shape: tuple[int, ...] | None = None) -> Any:
    """A layer weight as float64 (None when empty); reshaped to `shape` where given."""
    arr = layer.weights.get(key)
    if arr is None or arr.size == 0:
        return None
    t = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    return t.reshape(shape) if shape is not None else t


def _as_dtype(torch: Any, t: Any, dtype: str) -> Any:
    """Round a computed value to its tensor's type: float16 through half precision, integers and bools as such."""
    if dtype == "float16":
        return t.to(torch.float16).to(torch.float64)
    if dtype in ("float32", "float64"):
        return t.to(torch.float64)
    if dtype == "bool":
        return t.to(torch.bool)
    return t.to(torch.int64)


def _axes(mask: int, rank: int) -> list[int]:
    return [d for d in range(rank) if mask >> d & 1]


def _spatial(layer: LayerDescription, key: str, n: int) -> tuple[int, ...]:
    return tuple(_attr(layer, key))[-n:]


def _explicit_padding(layer: LayerDescription) -> tuple[tuple[int, ...], tuple[int, ...]]:
    mode = layer.attrs.get("padding_mode", "EXPLICIT_ROUND_DOWN")
    if mode != "EXPLICIT_ROUND_DOWN":
        raise UnsupportedLayer(f"layer '{layer.name}': padding mode {mode} is not supported (only explicit "
                               f"padding rounded down)")
    return tuple(_attr(layer, "pre_padding")), tuple(_attr(layer, "post_padding"))


def _pad_arg(pre: tuple[int, ...], post: tuple[int, ...]) -> list[int]:
    """torch.nn.functional.pad's argument (last axis first) for leading/trailing padding of the last axes."""
    out: list[int] = []
    for a, b in zip(reversed(pre), reversed(post)):
        out += [a, b]
    return out


# ---------------------------------------------------------------- layers

def _convolution(torch: Any, layer: LayerDescription, args: list) -> Any:
    x = args[0]
    n = len(_attr(layer, "kernel_size_nd"))
    k = tuple(_attr(layer, "kernel_size_nd"))
    groups, maps = int(_attr(layer, "num_groups")), int(_attr(layer, "num_output_maps"))
    if len(args) > 1 and args[1] is not None:
        raise UnsupportedLayer(f"layer '{layer.name}': kernels given as tensors are not supported")
    pre, post = _explicit_padding(layer)
    F = torch.nn.functional
    stride, dilation = _spatial(layer, "stride_nd", n), _spatial(layer, "dilation_nd", n)
    if layer.type == "CONVOLUTION":
        w = _weights(torch, layer, "kernel", (maps, x.shape[1] // groups, *k))
        b = _weights(torch, layer, "bias")
        conv = getattr(F, f"conv{n}d")
        return conv(F.pad(x, _pad_arg(pre, post)), w, b, stride=stride, dilation=dilation, groups=groups)
    w = _weights(torch, layer, "kernel", (x.shape[1], maps // groups, *k))
    b = _weights(torch, layer, "bias")
    y = getattr(F, f"conv_transpose{n}d")(x, w, b, stride=stride, dilation=dilation, groups=groups)
    index = [slice(None), slice(None)] + [slice(a, y.shape[2 + i] - c) for i, (a, c) in enumerate(zip(pre, post))]
    return y[tuple(index)]  # a deconvolution's padding crops its output


def _activation(torch: Any, layer: LayerDescription, args: list) -> Any:
    x, kind = args[0], _attr(layer, "type")
    a, b = float(layer.attrs.get("alpha", 0.0)), float(layer.attrs.get("beta", 0.0))
    ops: dict[str, Callable[[], Any]] = {
        "RELU": lambda: torch.relu(x),
        "SIGMOID": lambda: torch.sigmoid(x),
        "TANH": lambda: torch.tanh(x),
        "LEAKY_RELU": lambda: torch.where(x >= 0, x, a * x),
        "ELU": lambda: torch.where(x >= 0, x, a * (torch.exp(x) - 1)),
        "SELU": lambda: b * torch.where(x >= 0, x, a * (torch.exp(x) - 1)),
        "SOFTSIGN": lambda: x / (1 + x.abs()),
        "SOFTPLUS": lambda: a * torch.log1p(torch.exp(b * x)),
        "CLIP": lambda: x.clamp(a, b),
        "HARD_SIGMOID": lambda: (a * x + b).clamp(0.0, 1.0),
        "SCALED_TANH": lambda: a * torch.tanh(b * x),
        "THRESHOLDED_RELU": lambda: torch.where(x > a, x, torch.zeros_like(x)),
        "GELU_ERF": lambda: 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0))),
        "GELU_TANH": lambda: 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    }
    if kind not in ops:
        raise UnsupportedLayer(f"layer '{layer.name}': activation {kind} is not supported")
    return ops[kind]()


def _elementwise(torch: Any, layer: LayerDescription, args: list) -> Any:
    a, b = args
    op = _attr(layer, "op")
    ops: dict[str, Callable[[], Any]] = {
        "SUM": lambda: a + b, "PROD": lambda: a * b, "MAX": lambda: torch.maximum(a, b),
        "MIN": lambda: torch.minimum(a, b), "SUB": lambda: a - b,
        "DIV": lambda: a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc"),
        "POW": lambda: torch.pow(a, b), "FLOOR_DIV": lambda: torch.floor_divide(a, b),
        "AND": lambda: a.bool() & b.bool(), "OR": lambda: a.bool() | b.bool(), "XOR": lambda: a.bool() ^ b.bool(),
        "EQUAL": lambda: a == b, "GREATER": lambda: a > b, "LESS": lambda: a < b,
    }
    if op not in ops:
        raise UnsupportedLayer(f"layer '{layer.name}': elementwise operation {op} is not supported")
    return ops[op]()


_UNARY = {"EXP": "exp", "LOG": "log", "SQRT": "sqrt", "RECIP": "reciprocal", "ABS": "abs", "NEG": "neg",
          "SIN": "sin", "COS": "cos", "TAN": "tan", "SINH": "sinh", "COSH": "cosh", "ASIN": "asin", "ACOS": "acos",
          "ATAN": "atan", "ASINH": "asinh", "ACOSH": "acosh", "ATANH": "atanh", "CEIL": "ceil", "FLOOR": "floor",
          "ERF": "erf", "NOT": "logical_not", "SIGN": "sign", "ROUND": "round", "ISINF": "isinf", "ISNAN": "isnan"}


def _unary(torch: Any, layer: LayerDescription, args: list) -> Any:
    op = _attr(layer, "op")
    if op not in _UNARY:
        raise UnsupportedLayer(f"layer '{layer.name}': unary operation {op} is not supported")
    return getattr(torch, _UNARY[op])(args[0])


def _scale(torch: Any, layer: LayerDescription, args: list) -> Any:
    x, mode = args[0], _attr(layer, "mode")
    axis = int(layer.attrs.get("channel_axis", 1))
    if mode == "UNIFORM":
        shape: tuple[int, ...] = ()
    elif mode == "CHANNEL":
        shape = (x.shape[axis],) + (1,) * (x.dim() - axis - 1)
    elif mode == "ELEMENTWISE":
        shape = tuple(x.shape[axis:])
    else:
        raise UnsupportedLayer(f"layer '{layer.name}': scale mode {mode} is not supported")
    y = x
    for key, apply in (("scale", lambda t, w: t * w), ("shift", lambda t, w: t + w), ("power", torch.pow)):
        w = _weights(torch, layer, key)
        if w is not None:
            y = apply(y, w.reshape(shape) if shape else w.reshape(()))
    return y


def _pooling(torch: Any, layer: LayerDescription, args: list) -> Any:
    x, kind = args[0], _attr(layer, "type")
    k = tuple(_attr(layer, "window_size_nd"))
    n = len(k)
    stride = _spatial(layer, "stride_nd", n)
    pre, post, extra = _pool_padding(layer, tuple(x.shape[-n:]), k, stride)
    reach = tuple(a + e for a, e in zip(post, extra))
    F = torch.nn.functional
    if kind == "MAX":
        xp = F.pad(x, _pad_arg(pre, reach), value=-math.inf)
        return getattr(F, f"max_pool{n}d")(xp, k, stride)
    if kind != "AVERAGE":
        raise UnsupportedLayer(f"layer '{layer.name}': pooling type {kind} is not supported")
    avg = getattr(F, f"avg_pool{n}d")
    total = avg(F.pad(x, _pad_arg(pre, reach)), k, stride) * math.prod(k)
    ones = torch.ones_like(x[:1, :1])
    if layer.attrs.get("average_count_excludes_padding", True):  # the window's overlap with the input
        counted = F.pad(ones, _pad_arg(pre, reach))
    else:  # its overlap with the padded input (not the extra reach of ROUND_UP)
        counted = F.pad(F.pad(ones, _pad_arg(pre, post), value=1.0), _pad_arg((0,) * n, extra))
    return total / (avg(counted, k, stride) * math.prod(k))


def _pool_padding(layer: LayerDescription, size: tuple[int, ...], k: tuple[int, ...], stride: tuple[int, ...]
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Pre-padding, post-padding and how far past the post-padding the last window reaches. TensorRT's output
    size, with M = I + pre + post: floor((M - k) / s) + 1 (EXPLICIT_ROUND_DOWN; no reach) or
    ceil((M - k) / s) + 1 (EXPLICIT_ROUND_UP)."""
    mode = layer.attrs.get("padding_mode", "EXPLICIT_ROUND_DOWN")
    if mode == "EXPLICIT_ROUND_DOWN":
        pre, post = _explicit_padding(layer)
        return pre, post, (0,) * len(k)
    if mode != "EXPLICIT_ROUND_UP":
        raise UnsupportedLayer(f"layer '{layer.name}': padding mode {mode} is not supported (only explicit "
                               f"padding)")
    pre, post = tuple(_attr(layer, "pre_padding")), tuple(_attr(layer, "post_padding"))
    extra = []
    for i, b, a, w, s in zip(size, pre, post, k, stride):
        m = i + b + a
        extra.append((-(-(m - w) // s)) * s + w - m)  # (n - 1) * s + k - M with n - 1 = ceil((M - k) / s)
    return pre, post, tuple(extra)


def _reduce(torch: Any, layer: LayerDescription, args: list) -> Any:
    x, op = args[0], _attr(layer, "op")
    dims = _axes(int(_attr(layer, "axes")), x.dim())
    keep = bool(layer.attrs.get("keep_dims", False))
    if op in ("SUM", "AVG"):
        y = x.sum(dim=dims, keepdim=True)
        y = y / math.prod(x.shape[d] for d in dims) if op == "AVG" else y
    elif op == "PROD":
        y = x
        for d in dims:
            y = y.prod(dim=d, keepdim=True)
    elif op in ("MAX", "MIN"):
        y = x.amax(dim=dims, keepdim=True) if op == "MAX" else x.amin(dim=dims, keepdim=True)
    else:
        raise UnsupportedLayer(f"layer '{layer.name}': reduce operation {op} is not supported")
    return y if keep else y.reshape([s for d, s in enumerate(x.shape) if d not in dims])


def _shuffle(torch: Any, layer: LayerDescription, args: list) -> Any:
    x = args[0]
    x = x.permute(tuple(_attr(layer, "first_transpose"))[:x.dim()])
    dims = layer.attrs.get("reshape_dims")
    if len(args) > 1 and args[1] is not None:
        dims = tuple(int(v) for v in args[1].tolist())
    if dims is not None and (dims or not layer.output_shapes[0]):  # () may stand for "no reshape" (8.6)
        zero_copies = layer.attrs.get("zero_is_placeholder", True)
        shape = [x.shape[i] if d == 0 and zero_copies else d for i, d in enumerate(dims)]
        x = x.reshape(shape)
    return x.permute(tuple(_attr(layer, "second_transpose"))[:x.dim()])


def _matrix_multiply(torch: Any, layer: LayerDescription, args: list) -> Any:
    a, b = args
    op0, op1 = _attr(layer, "op0"), _attr(layer, "op1")
    a = a.transpose(-1, -2) if op0 == "TRANSPOSE" else a.unsqueeze(-2) if op0 == "VECTOR" else a
    b = b.transpose(-1, -2) if op1 == "TRANSPOSE" else b.unsqueeze(-1) if op1 == "VECTOR" else b
    y = torch.matmul(a, b)
    y = y.squeeze(-1) if op1 == "VECTOR" else y
    return y.squeeze(-2 if op1 != "VECTOR" else -1) if op0 == "VECTOR" else y


def _softmax(torch: Any, layer: LayerDescription, args: list) -> Any:
    dims = _axes(int(_attr(layer, "axes")), args[0].dim())
    if len(dims) != 1:
        raise UnsupportedLayer(f"layer '{layer.name}': softmax over axes {dims}: one axis expected")
    return torch.softmax(args[0], dim=dims[0])


def _resize(torch: Any, layer: LayerDescription, args: list) -> Any:
    x = args[0]
    mode = _attr(layer, "resize_mode")
    if mode not in ("NEAREST", "LINEAR"):
        raise UnsupportedLayer(f"layer '{layer.name}': resize mode {mode} is not supported")
    scales = layer.attrs.get("scales") or []
    if len(args) > 1 and args[1] is not None:
        out_shape = [int(v) for v in args[1].tolist()]
    elif scales:
        out_shape = [int(math.floor(s * f)) for s, f in zip(x.shape, scales)]
    else:
        out_shape = list(_attr(layer, "shape"))
    for axis, (n_in, n_out) in enumerate(zip(x.shape, out_shape)):
        scale = scales[axis] if scales else n_out / n_in
        if n_in == n_out and scale == 1:
            continue
        coord = _resize_coords(torch, layer, n_in, n_out, scale)
        if mode == "NEAREST":
            idx = _round(torch, layer, coord).clamp(0, n_in - 1).long()
            x = x.index_select(axis, idx)
        else:
            coord = coord.clamp(0, n_in - 1)
            lo = coord.floor().long()
            hi = (lo + 1).clamp(max=n_in - 1)
            shape = [1] * x.dim()
            shape[axis] = n_out
            frac = (coord - lo).reshape(shape)
            x = x.index_select(axis, lo) * (1 - frac) + x.index_select(axis, hi) * frac
    return x


def _resize_coords(torch: Any, layer: LayerDescription, n_in: int, n_out: int, scale: float) -> Any:
    """The input coordinate each output index samples along one axis."""
    i = torch.arange(n_out, dtype=torch.float64)
    how = _attr(layer, "coordinate_transformation")
    if n_out == 1 and layer.attrs.get("selector_for_single_pixel") == "UPPER":
        return torch.zeros(1, dtype=torch.float64)
    if how == "ALIGN_CORNERS":
        return i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    if how == "ASYMMETRIC":
        return i / scale
    if how == "HALF_PIXEL":
        return (i + 0.5) / scale - 0.5
    raise UnsupportedLayer(f"layer '{layer.name}': coordinate transformation {how} is not supported")


def _round(torch: Any, layer: LayerDescription, coord: Any) -> Any:
    how = layer.attrs.get("nearest_rounding", "FLOOR")
    ops = {"FLOOR": torch.floor, "CEIL": torch.ceil, "HALF_UP": lambda c: torch.floor(c + 0.5),
           "HALF_DOWN": lambda c: torch.ceil(c - 0.5)}
    if how not in ops:
        raise UnsupportedLayer(f"layer '{layer.name}': nearest rounding {how} is not supported")
    return ops[how](coord)


def _slice(torch: Any, layer: LayerDescription, args: list) -> Any:
    x = args[0]
    given = [None if i >= len(args) or args[i] is None else [int(v) for v in args[i].tolist()] for i in (1, 2, 3)]
    start, size, stride = (g if g is not None else list(_attr(layer, k))
                           for g, k in zip(given, ("start", "shape", "stride")))
    axes = layer.attrs.get("axes") or (tuple(int(v) for v in args[5].tolist()) if len(args) > 5 and args[5]
                                       is not None else tuple(range(x.dim())))
    mode = layer.attrs.get("mode", "STRICT_BOUNDS")
    fill = args[4].reshape(()) if len(args) > 4 and args[4] is not None else 0.0
    for axis, s0, n, st in zip(axes, start, size, stride):
        length = x.shape[axis]
        idx = s0 + st * torch.arange(n)
        inside = (idx >= 0) & (idx < length)
        if mode in ("STRICT_BOUNDS", "DEFAULT") and not bool(inside.all()):
            raise NetdefError(f"layer '{layer.name}': slice reads outside axis {axis} (size {length}) in "
                              f"{mode} mode")
        if mode == "WRAP":
            idx = idx % length
        elif mode == "REFLECT":
            period = max(2 * (length - 1), 1)
            idx = idx % period
            idx = torch.where(idx >= length, period - idx, idx)
        elif mode not in ("CLAMP", "FILL", "STRICT_BOUNDS", "DEFAULT"):
            raise UnsupportedLayer(f"layer '{layer.name}': slice mode {mode} is not supported")
        y = x.index_select(axis, idx.clamp(0, length - 1))
        if mode == "FILL":
            shape = [1] * x.dim()
            shape[axis] = n
            y = torch.where(inside.reshape(shape), y, torch.as_tensor(fill, dtype=y.dtype))
        x = y
    return x


def _constant(torch: Any, layer: LayerDescription, args: list) -> Any:
    arr = layer.weights.get("weights", np.zeros(0))
    shape = tuple(_attr(layer, "shape"))
    return torch.from_numpy(np.array(arr).reshape(shape)).to(
        torch.float64 if np.issubdtype(np.asarray(arr).dtype, np.floating) else torch.int64)


def _normalization(torch: Any, layer: LayerDescription, args: list) -> Any:
    x, scale, bias = args
    eps, groups = float(_attr(layer, "epsilon")), int(layer.attrs.get("num_groups", 1))
    if groups > 1:
        g = x.reshape(x.shape[0], groups, -1)
        y = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + eps)).reshape(
            x.shape)
        if scale.shape[1] != x.shape[1]:  # per-group scale and bias (TensorRT 8.6's form): one value per group
            scale = scale.repeat_interleave(x.shape[1] // scale.shape[1], dim=1)
            bias = bias.repeat_interleave(x.shape[1] // bias.shape[1], dim=1)
    else:
        dims = _axes(int(_attr(layer, "axes")), x.dim())
        mean = x.mean(dim=dims, keepdim=True)
        y = (x - mean) / torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps)
    return y * scale + bias


def _padding(torch: Any, layer: LayerDescription, args: list) -> Any:
    pre, post = tuple(_attr(layer, "pre_padding_nd")), tuple(_attr(layer, "post_padding_nd"))
    return torch.nn.functional.pad(args[0], _pad_arg(pre, post))


def _gather(torch: Any, layer: LayerDescription, args: list) -> Any:
    """Default-mode gather along `axis`; one element-wise dimension: each batch entry with its own indices."""
    data, idx = args
    batched = int(layer.attrs.get("num_elementwise_dims", 0))
    if layer.attrs.get("mode", "DEFAULT") != "DEFAULT" or batched > 1:
        raise UnsupportedLayer(f"layer '{layer.name}': only default-mode gathers with at most one element-wise "
                               "dimension are supported")
    axis = int(_attr(layer, "axis"))
    idx = torch.where(idx < 0, idx + data.shape[axis], idx).long()
    if batched:  # the element-wise dimension broadcasts (size 1 against B)
        n = max(data.shape[0], idx.shape[0])
        data, idx = data.expand(n, *data.shape[1:]), idx.expand(n, *idx.shape[1:])
        return torch.stack([_gather_one(d, i, axis - 1) for d, i in zip(data, idx)])
    return _gather_one(data, idx, axis)


def _gather_one(data: Any, idx: Any, axis: int) -> Any:
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape(*data.shape[:axis], *idx.shape, *data.shape[axis + 1:])


def _topk(torch: Any, layer: LayerDescription, args: list) -> list:
    """The k largest (MAX) or smallest values along the one reduced axis, sorted, and their indices."""
    axes = _axes(int(_attr(layer, "axes")), args[0].dim())
    if len(axes) != 1:
        raise UnsupportedLayer(f"layer '{layer.name}': top-k over {len(axes)} axes")
    values, index = torch.topk(args[0], int(_attr(layer, "k")), dim=axes[0], largest=_attr(layer, "op") == "MAX",
                               sorted=True)
    return [values, index]


def _fill(torch: Any, layer: LayerDescription, args: list) -> Any:
    """LINSPACE: start + sum_d delta[d] * index_d over the shape (inputs 0, 1, 2, or the static attributes)."""
    if _attr(layer, "operation") != "LINSPACE":
        raise UnsupportedLayer(f"layer '{layer.name}': fill operation {layer.attrs['operation']} is not supported")
    given = [None if i >= len(args) or args[i] is None else args[i] for i in range(3)]
    shape = [int(v) for v in given[0].tolist()] if given[0] is not None else list(_attr(layer, "shape"))
    if given[1] is None or given[2] is None:
        raise UnsupportedLayer(f"layer '{layer.name}': a LINSPACE fill without start and delta tensors")
    delta = given[2].to(torch.float64).reshape(-1)
    out = given[1].to(torch.float64).reshape(()).expand(shape)
    for d, n in enumerate(shape):
        view = [1] * len(shape)
        view[d] = n
        out = out + delta[d] * torch.arange(n, dtype=torch.float64).reshape(view)
    return out


_OPS: dict[str, Callable[[Any, LayerDescription, list], Any]] = {
    "CONVOLUTION": _convolution, "DECONVOLUTION": _convolution, "ACTIVATION": _activation,
    "ELEMENTWISE": _elementwise, "UNARY": _unary, "SCALE": _scale, "POOLING": _pooling, "REDUCE": _reduce,
    "SHUFFLE": _shuffle, "CONCATENATION": lambda torch, layer, a: torch.cat(a, dim=int(_attr(layer, "axis"))),
    "MATRIX_MULTIPLY": _matrix_multiply, "SOFTMAX": _softmax, "RESIZE": _resize, "SLICE": _slice,
    "CONSTANT": _constant, "CAST": lambda torch, layer, a: a[0], "IDENTITY": lambda torch, layer, a: a[0],
    "NORMALIZATION": _normalization, "PADDING": _padding, "GATHER": _gather,
    "SELECT": lambda torch, layer, a: torch.where(a[0].bool(), a[1], a[2]),
    "SHAPE": lambda torch, layer, a: torch.tensor(list(a[0].shape)), "FILL": _fill, "TOPK": _topk,
}
