"""`Network`: a TensorRT network definition together with the weights it consumes.

It keeps weight arrays alive until the build ends, names each layer after the weight-key prefix it
comes from (`layer1.0.conv1`; weightless layers `layer1.0/relu`), folds BatchNorm into convolutions,
and accounts for every key like `load_state_dict(strict=True)`.

Layers are named in one place: `Network.layer(kind, name, ...)` adds and names a layer; a block that
calls the raw API (`net.definition.add_shuffle(...)`) still gets a named layer, `<row prefix>/<kind>`
(rename it with `net.name`), so no layer is ever left as TensorRT's `(Unnamed Layer* N)`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import trt_api
from .errors import NetdefError, OptionError, SpecError, WeightKeyError

ACTIVATIONS = ("relu", "silu", "leaky", "hardswish", "sigmoid", "tanh", "relu6", "none")
FP16_MAX = 65504.0  # the largest finite float16
IGNORED_KEY_SUFFIXES = ("num_batches_tracked",)


def fold_batchnorm(w: np.ndarray, b: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
                   mean: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold BatchNorm (inference form) into the preceding convolution: returns (weight, bias) in float32."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w2 = w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))
    b0 = np.zeros_like(scale) if b is None else b.astype(np.float64)
    b2 = (b0 - mean.astype(np.float64)) * scale + beta.astype(np.float64)
    return w2.astype(np.float32), b2.astype(np.float32)


class NamingDefinition:
    """The INetworkDefinition as blocks see it: every `add_*` call returns a layer already named after the
    current scope (`<prefix>/<kind>`); everything else is TensorRT's own attribute. `raw` is the real one."""

    def __init__(self, net: "Network", raw: Any):
        self._net, self.raw = net, raw

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self.raw, attr)
        if not attr.startswith("add_") or not callable(value):
            return value
        kind = attr[len("add_"):]

        def add(*args: Any, **kwargs: Any) -> Any:
            layer = value(*args, **kwargs)
            if hasattr(layer, "get_output"):  # a layer (add_input gives a tensor)
                self._net.name(layer, f"{self._net.scope or 'network'}/{kind}")
            return layer

        return add


class Network:
    """Build-time wrapper of an INetworkDefinition and a dict of weights (key -> 1-D float32 array).

    Typed build state: `params` (the build parameters blocks declared, resolved from `--set`), `plugins`
    (the plugin libraries the network's layers need; they go into the engine's metadata), `quantizer`
    (int8 builds), `scope` and `where` (the current row's key prefix and YAML location)."""

    def __init__(self, weights: Mapping[str, np.ndarray], *, precision: str = "fp32", source: str = "weights",
                 params: Mapping[str, Any] | None = None):
        if precision not in ("fp32", "fp16", "int8"):
            raise OptionError(f"unknown precision '{precision}': use fp32, fp16 or int8")
        self.trt = trt_api.module()
        self.builder = trt_api.create_builder()
        raw, self.strongly_typed = trt_api.create_network(self.builder)
        self.definition = NamingDefinition(self, raw)
        self.precision = precision
        # In a strongly typed network the compute type is explicit; 8.6 keeps fp32 and uses builder flags.
        self.dtype = np.float16 if (self.strongly_typed and precision in ("fp16", "int8")) else np.float32
        self.weights = weights
        self.source = source
        self.params: dict[str, Any] = dict(params or {})
        self.plugins: list[dict[str, Any]] = []
        self.quantizer: Any = None  # an int8 Quantizer (netdef.int8.quantize) places Q/DQ pairs
        self.scope = ""  # the key prefix of the row being built: default layer names start with it
        self.where = ""  # where the current row comes from (YAML file:line), recorded with missing keys
        self.used: set[str] = set()
        self.missing: dict[str, str] = {}
        self._keepalive: list[np.ndarray] = []
        self._names: dict[str, int] = {}
        self._inputs: set[str] = set()  # names of the network inputs (and their casts)

    # ------------------------------------------------------------ build parameters and plugins

    def param(self, name: str) -> Any:
        """The build parameter `name` (`--set name=...`), else the default its block declared."""
        if name in self.params:
            return self.params[name]
        from .registry import declared_params

        declared = declared_params()
        if name not in declared:
            raise NetdefError(f"build parameter '{name}' is declared by no block: declare it with "
                              f"@block(..., params={{'{name}': Param(default)}})")
        return declared[name].default

    def add_plugin_record(self, library: Mapping[str, Any], layer: Mapping[str, Any]) -> None:
        """Record that `layer` (its settings) needs the plugin `library` (once per library)."""
        entry = next((e for e in self.plugins if e.get("library") == library.get("library")), None)
        if entry is None:
            entry = dict(library, layers=[])
            self.plugins.append(entry)
        entry["layers"].append(dict(layer))

    def _quantized(self, name: str) -> bool:
        """Whether layer `name` gets int8 Q/DQ (an int8 build, and not matched by --int8-exclude)."""
        return self.quantizer is not None and not self.quantizer.excluded(name)

    # ------------------------------------------------------------ names and weights

    def layer(self, kind: str, name: str, *args: Any) -> Any:
        """Add a layer with TensorRT's `add_<kind>(*args)` and name it `name`; returns the layer."""
        return self.name(getattr(self.definition.raw, f"add_{kind}")(*args), name)

    def name(self, layer: Any, name: str) -> Any:
        """Give a layer a unique name (a repeated name gets `#2`, `#3`...) and its outputs the same name
        (`:i` added when there are several), so the reformat copies TensorRT inserts, which it names after
        tensors, point back to the module too. Returns the layer."""
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        layer.name = name if n == 1 else f"{name}#{n}"
        many = layer.num_outputs > 1
        for i in range(layer.num_outputs):
            layer.get_output(i).name = f"{layer.name}:{i}" if many else layer.name
        return layer

    def has(self, key: str) -> bool:
        return key in self.weights

    def weight(self, key: str, shape: Sequence[int]) -> np.ndarray:
        """The array for `key` reshaped to `shape`; checks the size; a missing key is recorded and zeros returned."""
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise SpecError(f"'{key}': the weight shape {shape} the architecture computes depends on the input size, "
                            f"which is dynamic or too large here: check the input shape (--input-shape)")
        if key not in self.weights:
            self.missing.setdefault(key, self.where)
            return np.zeros(shape, np.float32)
        arr = np.asarray(self.weights[key], dtype=np.float32)
        expected = int(np.prod(shape))
        if arr.size != expected:
            raise WeightKeyError(
                f"{self.source}: '{key}' has {arr.size} values but the architecture expects shape "
                f"{shape} = {expected} values: the .wts does not belong to this architecture/config")
        self.used.add(key)
        return arr.reshape(shape)

    def keep(self, arr: np.ndarray, key: str, dtype: Any = None) -> Any:
        """trt.Weights over a contiguous copy of `arr` in the compute dtype (or `dtype`), kept alive until the
        build; `key` names the weight in errors. fp16/int8 builds refuse values beyond fp16's range."""
        if self.precision != "fp32":  # stored as fp16 here, or cast to fp16 by TensorRT 8.6 or a dequantize layer
            self._check_fp16_range(arr, key)
        a = np.ascontiguousarray(arr, dtype=dtype or self.dtype)
        self._keepalive.append(a)
        return self.trt.Weights(a)

    def _check_fp16_range(self, arr: np.ndarray, key: str) -> None:
        """Refuse finite weights beyond fp16's range: cast to fp16 they become inf (and the engine's outputs)."""
        mag = np.abs(np.asarray(arr))
        peak = float(np.max(mag, where=np.isfinite(mag), initial=0.0))
        if peak > FP16_MAX:
            raise WeightKeyError(
                f"{self.source}: '{key}' reaches {peak:.6g} in magnitude (with BatchNorm folded in, where there is "
                f"one), beyond fp16's largest value {FP16_MAX:g}: the {self.precision} engine would compute inf "
                f"there; keep that layer in fp32 (build with --precision fp32) or rescale the weights")

    def key_report(self) -> tuple[dict[str, str], list[str]]:
        """(missing keys -> where they were asked for, unused keys in file order)."""
        unused = [k for k in self.weights
                  if k not in self.used and not k.endswith(IGNORED_KEY_SUFFIXES)]
        return dict(self.missing), unused

    def check_keys(self, strict: bool = True) -> list[str]:
        """Raise on missing keys (always) and unused keys (strict); returns the unused keys."""
        missing, unused = self.key_report()
        problems = []
        if missing:
            lines = [f"  {k}   (asked for by {where})" if where else f"  {k}" for k, where in missing.items()]
            problems.append(f"{len(missing)} key(s) the architecture needs are missing:\n" + "\n".join(lines[:50]))
        if unused and strict:
            problems.append(f"{len(unused)} key(s) in the file were not used by the architecture:\n"
                            + "\n".join(f"  {k}" for k in unused[:50])
                            + ("\n  ..." if len(unused) > 50 else ""))
        if problems:
            hint = "" if missing else "\n(pass --no-strict / strict=False to allow unused keys)"
            raise WeightKeyError(f"{self.source}: " + "\n".join(problems) + hint)
        return unused

    # ------------------------------------------------------------ graph I/O

    def input(self, name: str, shape: Sequence[int]) -> Any:
        """A float32 network input (dynamic dims as -1), cast to the compute dtype when strongly typed."""
        t = self.definition.raw.add_input(name, self.trt.float32, tuple(shape))
        out = self.cast(t, self.dtype, f"{name}/cast")
        self._inputs.update((t.name, out.name))
        return out

    def output(self, t: Any, name: str) -> Any:
        """Mark `t` as an output named `name`; floating outputs are returned as float32."""
        if self.strongly_typed and t.dtype == self.trt.float16:
            t = self.cast(t, np.float32, f"{name}/cast")
        t.name = name
        self.definition.raw.mark_output(t)
        return t

    def cast(self, t: Any, dtype: Any, name: str) -> Any:
        target = trt_api.trt_dtype(dtype)
        if t.dtype == target:
            return t
        return self.layer("cast", name, t, target).get_output(0)

    def constant(self, arr: np.ndarray, name: str, dtype: Any = None, *, key: str | None = None) -> Any:
        """A constant layer `name` holding `arr`; `key` (default `name`) is the weight key errors name."""
        arr = np.asarray(arr)
        return self.layer("constant", name, tuple(arr.shape), self.keep(arr, key or name, dtype)).get_output(0)

    def channels(self, t: Any) -> int:
        """The channel count of a (B, C, H, W) tensor (convolutions, BatchNorm)."""
        shape = tuple(t.shape)
        if len(shape) != 4 and t.name in self._inputs:
            hw = ", ".join(map(str, shape[-2:])) if len(shape) >= 3 else "H, W"
            raise SpecError(f"the input shape is {list(shape[1:])}, but a convolution or BatchNorm needs [C, H, W] "
                            f"(channels first, no batch): e.g. input: {{shape: [1, {hw}]}} for grayscale or "
                            f"[3, {hw}] for RGB images")
        if len(shape) != 4:
            raise SpecError(f"{t.name}: a convolution or BatchNorm takes (B, C, H, W) input, got {shape}")
        c = int(shape[1])
        if c < 0:
            raise SpecError(f"the channel dimension of {t.name} must be static (only the batch may be dynamic)")
        return c

    # ------------------------------------------------------------ layers

    def conv(self, x: Any, prefix: str, c2: int, k: int | Sequence[int], s: int | Sequence[int] = 1,
             p: int | Sequence[int] | None = None, g: int = 1, d: int = 1, bias: bool | None = None,
             bn: str | None = None, eps: float = 1e-5, act: str = "none") -> Any:
        """Convolution `prefix` (+ BatchNorm `bn` folded in) (+ activation). `p=None` means 'same' padding.

        `bias=None` uses `prefix.bias` when the file has it. The convolution layer is named `prefix`.
        """
        kh, kw = _pair(k)
        sh, sw = _pair(s)
        dh, dw = _pair(d)
        if p is None:
            p = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        c1 = self.channels(x)
        if c1 % g or c2 % g:
            raise SpecError(f"{prefix}: channels {c1}->{c2} are not divisible by groups={g}")
        w = self.weight(f"{prefix}.weight", (c2, c1 // g, kh, kw))
        use_bias = self.has(f"{prefix}.bias") if bias is None else bias
        b = self.weight(f"{prefix}.bias", (c2,)) if use_bias else None
        if bn is not None:
            w, b = fold_batchnorm(w, b, *(self.weight(f"{bn}.{n}", (c2,))
                                          for n in ("weight", "bias", "running_mean", "running_var")), eps=eps)
        if b is None:
            b = np.zeros(c2, np.float32)
        if self._quantized(prefix):
            layer = self.quantizer.conv(self, x, prefix, w, b)
        else:
            layer = self.convolution(x, prefix, w, b)
        layer.stride_nd = (sh, sw)
        layer.padding_nd = _pair(p)
        layer.dilation_nd = (dh, dw)
        layer.num_groups = g
        return self.activation(layer.get_output(0), act, prefix)

    def convolution(self, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        """The convolution layer `prefix` with kernel `w` (c2, c1/g, kh, kw) and bias `b` as weights; the caller
        sets stride, padding, dilation and groups."""
        c2, _, kh, kw = w.shape
        return self.layer("convolution_nd", prefix, x, int(c2), (int(kh), int(kw)), self.keep(w, f"{prefix}.weight"),
                          self.keep(b, f"{prefix}.bias"))

    def batchnorm(self, x: Any, prefix: str, eps: float = 1e-5) -> Any:
        """A standalone BatchNorm as a per-channel scale layer named `prefix`."""
        c = self.channels(x)
        gamma, beta, mean, var = (self.weight(f"{prefix}.{n}", (c,)).astype(np.float64)
                                  for n in ("weight", "bias", "running_mean", "running_var"))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        return self.layer("scale", prefix, x, self.trt.ScaleMode.CHANNEL, self.keep(shift, f"{prefix}.bias"),
                          self.keep(scale, f"{prefix}.weight"), self.keep(np.ones(c), f"{prefix}/power")).get_output(0)

    def activation(self, x: Any, act: str | None, prefix: str) -> Any:
        """relu | silu | leaky[:slope] (default 0.1) | hardswish | sigmoid | tanh | relu6 | none."""
        kind, _, arg = (act or "none").partition(":")
        A = self.trt.ActivationType
        if kind == "none":
            return x
        name = f"{prefix}/{kind}"
        if kind in ("relu", "sigmoid", "tanh"):
            return self.layer("activation", name, x, getattr(A, kind.upper())).get_output(0)
        if kind == "leaky":
            layer = self.layer("activation", name, x, A.LEAKY_RELU)
            layer.alpha = float(arg or 0.1)
            return layer.get_output(0)
        if kind == "relu6":
            layer = self.layer("activation", name, x, A.CLIP)
            layer.alpha, layer.beta = 0.0, 6.0
            return layer.get_output(0)
        if kind in ("silu", "hardswish"):
            gate = self.layer("activation", f"{name}/gate", x, A.SIGMOID if kind == "silu" else A.HARD_SIGMOID)
            if kind == "hardswish":
                gate.alpha, gate.beta = 1.0 / 6.0, 0.5
            return self.mul(x, gate.get_output(0), name)
        raise SpecError(f"unknown activation '{act}' for {prefix}; use one of {ACTIVATIONS}")

    def _elementwise(self, a: Any, b: Any, op: Any, name: str) -> Any:
        return self.layer("elementwise", name, a, b, op).get_output(0)

    def add(self, a: Any, b: Any, name: str, *, residual: bool = False) -> Any:
        """a + b. `residual=True` marks a residual join (a shortcut added to a convolution's output): int8
        builds quantize its shortcut input so TensorRT can fuse the add into that convolution."""
        self._check_join([a, b], name, None)
        if residual and self._quantized(name):
            a, b = self.quantizer.residual(self, a, b, name)
        return self._elementwise(a, b, self.trt.ElementWiseOperation.SUM, name)

    def mul(self, a: Any, b: Any, name: str) -> Any:
        return self._elementwise(a, b, self.trt.ElementWiseOperation.PROD, name)

    def concat(self, tensors: Sequence[Any], name: str, axis: int = 1) -> Any:
        self._check_join(tensors, name, axis)
        layer = self.layer("concatenation", name, list(tensors))
        layer.axis = axis
        return layer.get_output(0)

    def _check_join(self, tensors: Sequence[Any], name: str, axis: int | None) -> None:
        """Static sizes must agree (except along `axis`; an add may broadcast size 1): odd input sizes
        otherwise fail deep inside TensorRT."""
        shapes = [tuple(t.shape) for t in tensors]
        if len({len(s) for s in shapes}) != 1:
            raise SpecError(f"{name}: inputs have different ranks {shapes}")
        for d in range(1, len(shapes[0])):
            sizes = {s[d] for s in shapes if s[d] >= 0 and (axis is not None or s[d] != 1)}
            if d != axis and len(sizes) > 1:
                hint = ("; with strided layers the input height and width must be multiples of the network's "
                        "total stride (the product of its downsampling strides)") if d >= 2 else ""
                raise SpecError(f"{name}: input shapes {[list(s) for s in shapes]} differ in dimension {d}{hint}")

    def pool(self, x: Any, kind: str, k: int, s: int | None = None, p: int = 0, name: str = "pool") -> Any:
        """max or avg pooling; avg counts padding like PyTorch's default (count_include_pad=True)."""
        types = {"max": self.trt.PoolingType.MAX, "avg": self.trt.PoolingType.AVERAGE}
        layer = self.layer("pooling_nd", name, x, types[kind], _pair(k))
        layer.stride_nd = _pair(k if s is None else s)
        layer.padding_nd = _pair(p)
        if kind == "avg":
            layer.average_count_excludes_padding = False
        return layer.get_output(0)

    def global_avg_pool(self, x: Any, name: str, keep_dims: bool = False) -> Any:
        """Mean over H and W: (B, C, H, W) -> (B, C) (or (B, C, 1, 1) with keep_dims)."""
        return self.layer("reduce", name, x, self.trt.ReduceOperation.AVG, (1 << 2) | (1 << 3), keep_dims).get_output(0)

    def upsample(self, x: Any, scale: int, name: str) -> Any:
        layer = self.layer("resize", name, x)
        layer.scales = [1.0, 1.0, float(scale), float(scale)]
        trt_api.resize_nearest(layer)
        return layer.get_output(0)

    def shuffle(self, x: Any, name: str, reshape: Sequence[int] | None = None, first: Sequence[int] | None = None,
                second: Sequence[int] | None = None) -> Any:
        """A shuffle layer: optional first transpose, reshape (0 keeps a dimension, -1 infers one), second transpose."""
        layer = self.layer("shuffle", name, x)
        if first is not None:
            layer.first_transpose = tuple(first)
        if reshape is not None:
            layer.reshape_dims = tuple(reshape)
        if second is not None:
            layer.second_transpose = tuple(second)
        return layer.get_output(0)

    def flatten(self, x: Any, name: str) -> Any:
        """(B, C, H, W) -> (B, C*H*W)."""
        return self.shuffle(x, name, reshape=(0, -1))

    def linear(self, x: Any, prefix: str, c2: int, bias: bool = True) -> Any:
        """y = x W^T + b. On (B, C) a matrix multiply (TensorRT 10 removed the fully connected layer); on
        pooled (B, C, 1, 1) features a 1x1 convolution with the bias fused, flattened to (B, c2)."""
        if len(x.shape) == 4 and tuple(x.shape[2:]) == (1, 1):
            return self.flatten(self.conv(x, prefix, c2, 1, bias=bias), f"{prefix}/flatten")
        if len(x.shape) != 2:  # TensorRT's matrix multiply needs equal ranks: a (c2, c1) weight takes 2-D input
            raise SpecError(f"{prefix}: Linear takes (B, C) or pooled (B, C, 1, 1) input, got {tuple(x.shape)}; "
                              f"add a Flatten or GlobalAvgPool row before it")
        c1 = int(x.shape[-1])
        w = self.weight(f"{prefix}.weight", (c2, c1))
        if self._quantized(prefix):
            wt = self.quantizer.linear_weight(self, x, prefix, w)
            x = self.quantizer.activation(self, x, prefix)
        else:
            wt = self.constant(w, f"{prefix}/weight", key=f"{prefix}.weight")
        y = self.layer("matrix_multiply", prefix, x, self.trt.MatrixOperation.NONE, wt,
                       self.trt.MatrixOperation.TRANSPOSE).get_output(0)
        if bias:
            b = self.weight(f"{prefix}.bias", (c2,)).reshape(1, c2)
            b = self.constant(b, f"{prefix}/bias", key=f"{prefix}.bias")
            y = self._elementwise(y, b, self.trt.ElementWiseOperation.SUM, f"{prefix}/add_bias")
        return y


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise SpecError(f"expected one value or two, got {v}")
        return int(v[0]), int(v[1])
    return int(v), int(v)
