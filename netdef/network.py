"""`Network`: a TensorRT network definition together with the weights it consumes.

It keeps weight arrays alive until the build ends, names each layer after the weight-key prefix it
comes from (`layer1.0.conv1`; weightless layers `layer1.0/relu`), folds BatchNorm into convolutions,
and accounts for every key like `load_state_dict(strict=True)`.

Layers are named in one place: `Network.layer(kind, name, ...)` adds and names a layer; a block that
calls the raw API (`net.definition.add_shuffle(...)`) still gets a named layer, `<row prefix>/<kind>`
(rename it with `net.name`), so no layer is ever left as TensorRT's `(Unnamed Layer* N)`.

Typing: tensors carry the compute dtype `net.dtype` (float16 in fp16/int8 builds on strongly typed TensorRT,
float32 otherwise; constants and weights follow it). `with net.fp32(name):` keeps the layers added inside in
float32: strongly typed, their floating inputs are cast to float32 and their float32 results are cast back
when a layer outside uses them; on TensorRT 8.6 the layers get a float32 precision for the builder to honour.
Layer norm, group norm and softmax use `net.fp32(name, strict=False)` by default in fp16/int8 builds: the same
where the network is strongly typed; on 8.6 only normalization layers compute in float32 (see `fp32`). The
primitives follow PyTorch's argument names and defaults (docs/writing-blocks.md lists them with their torch
equivalents).
"""
from __future__ import annotations

import itertools
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from . import trt_api
from .errors import NetdefError, OptionError, SpecError, TensorRTError, WeightKeyError
from .options import FP16_MAX
from .wts import first_nonfinite

ACTIVATIONS = ("relu", "silu", "leaky", "hardswish", "hardsigmoid", "sigmoid", "tanh", "relu6", "gelu", "none")
IGNORED_KEY_SUFFIXES = ("num_batches_tracked",)


def parse_activation(act: Any, where: str) -> tuple[str, str]:
    """(kind, setting) of an activation text `Network.activation` builds: a name of ACTIVATIONS, leaky:SLOPE (a
    finite number; plain leaky is 0.1) or gelu:none|tanh; a SpecError naming `where` (the layer) otherwise."""
    if act is not None and not isinstance(act, str):  # YAML's `act: true`, say
        raise SpecError(f"activation {act!r} for {where}: expected a name, one of {ACTIVATIONS}")
    kind, colon, arg = (act or "none").partition(":")
    if kind not in ACTIVATIONS:
        raise SpecError(f"unknown activation '{act}' for {where}; use one of {ACTIVATIONS}")
    if colon and kind not in ("leaky", "gelu"):  # `relu:0.2` would be plain ReLU: the number is no setting of it
        raise SpecError(f"activation '{act}' for {where}: only leaky (its slope) and gelu (tanh) take a ':' setting")
    if kind == "gelu" and arg not in ("", "none", "tanh"):
        raise SpecError(f"activation '{act}' for {where}: gelu's setting is none or tanh")
    if kind == "leaky":
        try:
            ok = math.isfinite(float(arg or 0.1))
        except ValueError:
            ok = False
        if not ok:
            raise SpecError(f"activation '{act}' for {where}: the slope '{arg}' is no finite number (leaky:0.1, say)")
    return kind, arg


def batchnorm_affine(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float,
                     bn: str = "BatchNorm") -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm `bn` (inference form) as y = x * scale + shift per channel, in float64; a WeightKeyError naming
    its running_var where running_var + eps is not positive (BatchNorm divides by its square root: NaN or inf).
    A running_var slightly below 0 with eps above it (a Caffe or darknet conversion's -1e-5) computes as in
    PyTorch; values beyond float32 after folding are the callers' to refuse (`_finite32`)."""
    var = var.astype(np.float64) + eps
    bad = var <= 0
    if bad.any():
        i = int(np.argmax(bad))
        raise WeightKeyError(f"'{bn}.running_var'[{i}] is {var[i] - eps:.6g}: running_var + eps ({eps:g}) must be "
                             f"positive, BatchNorm divides by its square root; the weights are damaged or not this "
                             f"BatchNorm's", key=f"{bn}.running_var")
    scale = gamma.astype(np.float64) / np.sqrt(var)
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def fold_batchnorm(w: np.ndarray, b: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                   var: np.ndarray, eps: float, bn: str = "BatchNorm") -> tuple[np.ndarray, np.ndarray]:
    """Fold BatchNorm `bn` (inference form) into the preceding convolution: returns (weight, bias) in float32; a
    WeightKeyError naming `bn` where the folded values are not finite in float32 (`batchnorm_affine`)."""
    scale, shift = batchnorm_affine(gamma, beta, mean, var, eps, bn)
    w2 = w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))
    b2 = (0.0 if b is None else b.astype(np.float64)) * scale + shift
    given = (w, gamma, beta, mean, var, *([] if b is None else [b]))
    return (_finite32(w2, f"{bn} folded into the convolution's weight", given),
            _finite32(b2, f"{bn} folded into its bias", given))


def _finite32(values: np.ndarray, what: str, given: Sequence[np.ndarray]) -> np.ndarray:
    """`values` in float32; a WeightKeyError saying `what` where one is not finite there (NaN, or beyond float32)
    while the weights `given` that made it are finite (non-finite ones were let through on purpose:
    `NonFiniteAllowed`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32)
    bad = first_nonfinite(out, values)
    if bad is not None and all(np.isfinite(a).all() for a in given):
        at = tuple(int(k) for k in np.unravel_index(bad[0], values.shape))  # [channel, ...]
        raise WeightKeyError(f"{what}: the value at {list(at)} is {values[at]:.6g}, not a finite float32 (its "
                             f"weight, running_var or eps make it so): an engine of it computes NaN or inf; check "
                             f"these weights")
    return out


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
                self._net.name(layer, self._net.scoped(kind))
            return layer

        return add


class Network:
    """Build-time wrapper of an INetworkDefinition and a dict of weights (key -> 1-D float32 array).

    Typed build state: `params` (the build parameters blocks declared, resolved from `--set`), `plugins`
    (the plugin libraries the network's layers need; they go into the engine's metadata), `model` (what its head
    computes, as the engine's metadata records it), `quantizer`
    (int8 builds), `scope` and `where` (the current row's key prefix and YAML location)."""

    def __init__(self, weights: Mapping[str, np.ndarray], *, precision: str = "fp32", source: str = "weights",
                 params: Mapping[str, Any] | None = None, input_dtype: str = "float32",
                 input_normalization: tuple[Sequence[float], Sequence[float]] = ((0.0,), (1.0,))):
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
        self.params_read: set[str] = set()  # the build parameters a block asked for (`param`)
        # the network input's type and, uint8, its normalization inside the network, (mean, std) (`input`; the
        # BuildOptions' `input_normalization`)
        self.input_dtype, self.input_normalization = input_dtype, input_normalization
        self.plugins: list[dict[str, Any]] = []
        self.model: dict[str, Any] = {}  # what the head computes (record_model): the engine header's "model"
        self.built_values: dict[str, Any] = {}  # a top-level YAML value as the weights gave it (anchors): `show`
        self.classes: int | None = None  # a Classifier row's class count (checks --names where no head records one)
        self.quantizer: Any = None  # an int8 Quantizer (netdef.int8.quantize) places Q/DQ pairs
        self.scope = ""  # the key prefix of the row being built: default layer names start with it
        self.where = ""  # where the current row comes from (YAML file:line), recorded with missing keys
        self.made_by: dict[str, str] = {}  # layer name -> `where` of the row that made it (errors name the row)
        # output tensor -> its parts along dimension 1 (name, start, stop): a YOLO head's boxes, scores, mask
        # coefficients, each compared by verify on its own (boxes of 640 px would hide scores of 1e-4)
        self.output_parts: dict[str, list[tuple[str, int, int]]] = {}
        self.blocks_built: list[str] = []  # the blocks of the rows built so far (a head may depend on them)
        self.used: set[str] = set()
        self.read_by: dict[str, str] = {}  # used key -> where (YAML file:line of its row) it was read
        self.missing: dict[str, str] = {}
        self.stop_at_missing = False  # a missing key raises at once (a search for the architectures weights fit)
        self.skipped: dict[str, str] = {}  # keys consumed without being used (Network.skip) -> why
        self.supplied: dict[str, str] = {}  # fixed, untrained keys the file lacks, built from known values -> why
        self.fixed: set[str] = set()  # keys of fixed, untrained tensors (`fixed_weight`), read or supplied
        # keys whose values follow from others and were checked against them (YOLOv5's anchor_grid, strides):
        # a PyTorch model may lack them (verify does not ask it for them)
        self.derived: set[str] = set()
        self._keepalive: list[np.ndarray] = []
        self._names: dict[str, int] = {}
        self._inputs: set[str] = set()  # names of the network inputs (and their casts)
        # every module `match` ever named, also those a later match of the same tensor replaced (a Linear `fc`
        # whose bias add is matched again with the Sequential around it): a layer named after such a module is
        # not the module's output (the matrix multiply `fc` before its bias add), so verify does not compare it
        self.claimed: set[str] = set()
        # tensor -> every module matched with it (`match`), in the order matched, each with the channels of its
        # output the tensor holds (None: all): verify compares the tensor with each; `matches` and
        # `match_channels` are its last entries
        self.matched_modules: dict[str, dict[str, np.ndarray | None]] = {}
        # tensor -> the key prefix of the YAML row it ends (Ultralytics' `model.3`: the row's module), which verify
        # compares where no layer was matched with that module (a block of one's own that matches only its parts)
        self.row_outputs: dict[str, str] = {}
        self.row_ends: dict[str, tuple[str, str]] = {}  # tensor -> (`Spec.where`, prefix) of the YAML row it ends
        self._fp32_scope: str | None = None  # the name given to the `fp32` block being built, if any
        self.fp32_rows: tuple[str, ...] = ()  # patterns of the YAML rows built inside `fp32` (--fp32-rows)
        self.fp32_matched: set[str] = set()  # those that named a row
        self._fp32_strict = False  # whether that block constrains weakly typed layers too (`fp32(strict=True)`)
        self._fp32_tensors: set[str] = set()  # float32 outputs of fp32 blocks (strongly typed): cast back on use
        self._casts: dict[tuple[str, Any], Any] = {}  # (tensor name, dtype) -> its cast, made once
        self._checked = 0  # layers whose output shapes check_layers has seen
        trt_api.forget_errors()  # TensorRT's messages about an earlier network's layers of the same names

    # ------------------------------------------------------------ build parameters and plugins

    def param(self, name: str) -> Any:
        """The build parameter `name` (`--set name=...`), else the default its block declared."""
        self.params_read.add(name)
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

    def record_model(self, **fields: Any) -> None:
        """Record what the network's head computes (task, nc, ...: engine_file's "model" field); one head each."""
        if self.model and self.model != fields:
            raise SpecError(f"{self.scope}: a second head ({fields.get('task')}) after a {self.model.get('task')} "
                            f"head: an engine records one")
        self.model = dict(fields)

    def _quantized(self, name: str, *inputs: Any) -> bool:
        """Whether layer `name` gets int8 Q/DQ (an int8 build, not matched by --int8-exclude, not inside `fp32`);
        `inputs`: the activations it quantizes."""
        return self.quantizer is not None and not self.quantizer.excluded(name, inputs, fp32=self.in_fp32)

    @property
    def in_fp32(self) -> bool:
        """Whether the layers added now are kept in float32 (inside `fp32` in an fp16 or int8 build)."""
        return self._fp32_scope is not None

    # ------------------------------------------------------------ names and weights

    def layer(self, kind: str, name: str, *args: Any) -> Any:
        """Add a layer with TensorRT's `add_<kind>(*args)` and name it `name`; returns the layer. Inside `fp32`
        (and for tensors coming out of one) floating tensor arguments are cast to the compute dtype first."""
        if self.strongly_typed and kind != "cast":
            args = tuple(self._typed(a, f"{name}/in{i}") for i, a in enumerate(args))
        layer = self.name(getattr(self.definition.raw, f"add_{kind}")(*args), name)
        if self._fp32_scope is not None:
            if self.strongly_typed:
                self._fp32_tensors.update(layer.get_output(i).name for i in range(layer.num_outputs))
            else:
                trt_api.keep_fp32(layer, strict=self._fp32_strict)
        return layer

    def _typed(self, arg: Any, name: str) -> Any:
        """`arg` (a tensor, or a list of them) cast to the compute dtype where it crosses an `fp32` boundary."""
        if isinstance(arg, list):
            return [self._typed(a, f"{name}.{j}") for j, a in enumerate(arg)]
        if not isinstance(arg, self.trt.ITensor) or arg.dtype not in (self.trt.float16, self.trt.float32):
            return arg
        target = trt_api.trt_dtype(self.dtype)
        if arg.dtype == target or (self._fp32_scope is None and arg.name not in self._fp32_tensors):
            return arg
        key = (arg.name, target)
        if key not in self._casts:
            self._casts[key] = self.layer("cast", name, arg, target).get_output(0)
        return self._casts[key]

    @contextmanager
    def fp32(self, name: str, *, strict: bool = True) -> Iterator[None]:
        """Layers added inside compute in float32 in fp16/int8 builds (a no-op in fp32 builds): strongly typed,
        their inputs are cast to float32 and their results back to `net.dtype` where a later layer uses them;
        weakly typed (8.6), each layer's precision is set to float32. Constants made inside are float32.

        `strict=False` (what layer_norm, group_norm, softmax and attention blocks use): the same where the network
        is strongly typed; weakly typed, only normalization layers compute in float32 (their compute precision)
        and the builder chooses the rest. TensorRT 8.6 fuses a transformer block into one region and a precision
        constraint on any layer in it runs the whole region in float32: ViT-B/16 fp16 then kept float32 weights
        (330.9 MiB against 166.7) and ran 1.6x slower than the ONNX route at batch 64 (H200)."""
        if self.precision == "fp32" or (self._fp32_scope is not None and (self._fp32_strict or not strict)):
            yield
            return
        saved = self.dtype, self._fp32_scope, self._fp32_strict
        self.dtype, self._fp32_scope, self._fp32_strict = np.float32, self._fp32_scope or name, strict
        try:
            yield
        finally:
            self.dtype, self._fp32_scope, self._fp32_strict = saved

    def check_layers(self) -> None:
        """Raise TensorRTError naming the first layer added since the last check whose output shape TensorRT
        cannot compute (it rejected the layer: mismatched ranks or sizes); spec calls this after each row so the
        row that added a bad layer is blamed, not the next one."""
        raw = self.definition.raw
        for i in range(self._checked, raw.num_layers):
            layer = raw.get_layer(i)
            for k in range(layer.num_outputs):
                if _shape_or_none(layer.get_output(k)) is None:
                    inputs = [_shape_or_none(layer.get_input(j)) for j in range(layer.num_inputs)]
                    said = trt_api.last_error(layer.name)
                    raise TensorRTError(f"TensorRT rejected layer {layer.name} ({layer.type.name}) with input "
                                        f"shapes {inputs}" + (f": {said}" if said else " (its message above says why)"))
        self._checked = raw.num_layers

    def scoped(self, kind: str) -> str:
        """A default layer name: `<row prefix>/<kind>` (`network/<kind>` outside a row)."""
        return f"{self.scope or 'network'}/{kind}"

    def name(self, layer: Any, name: str) -> Any:
        """Give a layer a unique name (a repeated name gets `#2`, `#3`...) and its outputs the same name
        (`:i` added when there are several), so the reformat copies TensorRT inserts, which it names after
        tensors, point back to the module too. Returns the layer."""
        if not isinstance(name, str) or not name:  # TensorRT only logs a None name and leaves the layer unnamed
            raise SpecError(f"layer name {name!r} ({layer.type.name.lower()} layer): expected a non-empty string, a "
                            "module's key prefix or 'prefix/kind'")
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        layer.name = name if n == 1 else f"{name}#{n}"
        if self.where:
            self.made_by[layer.name] = self.where
        many = layer.num_outputs > 1
        for i in range(layer.num_outputs):
            layer.get_output(i).name = f"{layer.name}:{i}" if many else layer.name
        return layer

    def has(self, key: str) -> bool:
        """Whether the weights hold `key` (reading nothing: it is not counted as used)."""
        return key in self.weights

    def weight_size(self, key: str) -> int:
        """How many values the file holds for `key` (a present key), without using it: heads read their class
        count from it."""
        return int(np.asarray(self.weights[key]).size)

    def fixed_weight(self, key: str, values: np.ndarray, why: str) -> np.ndarray:
        """`key`'s array shaped as `values` (read and checked as `weight` reads it); where the file lacks it,
        `values` themselves: for a tensor no training changes (DFL's bins) that some exporters leave out. Such a
        key is recorded in `supplied` with `why` (what the values are): build logs it, `netdef show` lists it.
        Either way the key is in `fixed` (verify does not ask for its module's output: no training changes it)."""
        self.fixed.add(key)
        if key in self.weights:
            return self.weight(key, values.shape)
        self.supplied[key] = why
        return np.asarray(values, np.float32)

    def skip(self, keys: Sequence[str], reason: str) -> None:
        """Account for file `keys` that the block knowingly leaves out of the network (a training-only branch),
        with `reason` recorded in `net.skipped`: strict key accounting does not count them as unused."""
        absent = [k for k in keys if k not in self.weights]
        if absent:
            raise NetdefError(f"{self.scope or 'network'}: cannot skip keys the file does not have: {absent[:5]}")
        self.skipped.update((k, reason) for k in keys)

    def weight(self, key: str, shape: Sequence[int]) -> np.ndarray:
        """The array for `key` reshaped to `shape`; checks the size; a missing key is recorded and zeros returned."""
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise SpecError(f"'{key}': the weight shape {shape} the architecture computes depends on the input size, "
                            f"which is dynamic or too large here: check the input shape (--input-shape)")
        if key not in self.weights:
            if self.stop_at_missing:
                raise WeightKeyError(f"{self.source}: '{key}' is missing", key=key)
            self.missing.setdefault(key, self.where)
            return np.zeros(shape, np.float32)
        arr = np.asarray(self.weights[key], dtype=np.float32)
        expected = int(np.prod(shape))
        if arr.size != expected:
            raise WeightKeyError(
                f"{self.source}: '{key}' has {arr.size} values but the architecture expects shape "
                f"{shape} = {expected} values: the weights do not belong to this architecture/config, or a block "
                f"computes this shape differently from the model (its channels, groups or input shape)", key=key,
                expected=shape)
        given, wanted = (tuple(n for n in dims if n != 1) for dims in (arr.shape, shape))
        if len(given) == len(wanted) and given != wanted:  # (c1, c2) for (c2, c1): reshaped, its values would scramble
            raise WeightKeyError(
                f"{self.source}: '{key}' has shape {tuple(arr.shape)} but the architecture expects {shape}: the same "
                f"number of values in another layout (a transposed matrix, swapped channels), which reshaping would "
                f"scramble: give the module's own tensor (state_dict's), or check the block's channels and groups",
                key=key)
        self.used.add(key)
        self.read_by.setdefault(key, self.where)
        return arr.reshape(shape)

    def keep(self, arr: np.ndarray, key: str, dtype: Any = None) -> Any:
        """trt.Weights over a contiguous copy of `arr` in the compute dtype (or `dtype`), kept alive until the
        build; `key` names the weight in errors. fp16/int8 builds refuse floating values beyond fp16's range
        (except inside `fp32`, whose layers keep float32 weights; on TensorRT 8.6 only a strict one's); integer
        weights (a gather's int32 indices) are never cast to fp16."""
        kept = self._fp32_scope is not None and (self.strongly_typed or self._fp32_strict)  # float32 for sure
        floating = np.dtype(dtype or self.dtype).kind == "f"
        if self.precision != "fp32" and not kept and floating:  # fp16 here, or cast by TensorRT 8.6 or a DQ
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
                f"there; keep that layer in fp32 (`with net.fp32(name):` in its block, or build with --precision "
                f"fp32) or rescale the weights")

    def key_report(self) -> tuple[dict[str, str], list[str]]:
        """(missing keys -> where they were asked for, unused keys in file order; `skipped` keys are neither)."""
        unused = [k for k in self.weights
                  if k not in self.used and k not in self.skipped and not k.endswith(IGNORED_KEY_SUFFIXES)]
        return dict(self.missing), unused

    def check_keys(self, strict: bool = True) -> list[str]:
        """Raise on missing keys (always) and unused keys (strict); returns the unused keys."""
        missing, unused = self.key_report()
        saved = (_prefix_hint(list(missing), unused) or _fused_hint(list(missing), unused)
                 or misspelt_module_hint(missing, unused, self.weights, self.used)) if missing or unused and strict \
            else ""
        few = 5 if saved else 50  # keys saved otherwise (a prefix, say): the hint says how; a few of them show it
        problems = []
        if missing:
            lines = [f"  {k}   (asked for by {where})" if where else f"  {k}" for k, where in missing.items()]
            problems.append(f"{len(missing)} key(s) the architecture needs are missing:\n" + "\n".join(lines[:few])
                            + ("\n  ..." if len(lines) > few else ""))
        if unused and strict:
            problems.append(f"{len(unused)} key(s) in the weights were not used by the architecture:\n"
                            + "\n".join(f"  {k}" for k in unused[:few])
                            + ("\n  ..." if len(unused) > few else ""))
        if problems:
            hint = (saved or _default_prefix_hint(missing, self.weights, self.used)
                    or _repeat_hint(missing, unused, self.weights, self.used)
                    or _sequence_row_hint(missing, unused, self.weights, self.used)
                    or _shifted_rows_hint(missing, unused, self.weights)
                    or missing_modules_hint(list(missing), self.weights)
                    or unused_modules_hint(unused, self.used, self.read_by)
                    or _bias_hint(missing, self.used)
                    or ("" if missing else "\n(netdef build --no-strict, BuildOptions(strict=False) in Python, "
                                           "allows unused keys)"))
            parts = {*_module_groups(missing, self.weights), *_module_groups(unused, self.used)} - {None}
            # keys saved otherwise (prefixed, fused, misspelt) or of another task's head: no other scale explains them
            another = bool(saved) or any(m.rsplit(".", 1)[-1] in _HEAD_PARTS for m in parts)
            raise WeightKeyError(f"{self.source}: " + "\n".join(problems), hint=hint, another_layout=another)
        return unused

    # ------------------------------------------------------------ graph I/O

    def input(self, name: str, shape: Sequence[int]) -> Any:
        """A network input (dynamic dims as -1) of `input_dtype` (float32, float16 or uint8), cast to the compute
        dtype where it differs (layer NAME/cast). A uint8 input, images (B, C, H, W) of 0..255, is then scaled to
        [0, 1] and normalized per channel, (x / 255 - mean) / std (`input_normalization`), by one scale layer
        NAME/normalize."""
        t = self.definition.raw.add_input(name, trt_api.trt_dtype(self.input_dtype), tuple(shape))
        out = self.cast(t, self.dtype, f"{name}/cast")
        if self.input_dtype == "uint8":
            out = self._normalized(out, name, tuple(shape))
        self._inputs.update((t.name, out.name))
        return out

    def _normalized(self, x: Any, name: str, shape: tuple[int, ...]) -> Any:
        """(x / 255 - mean) / std per channel of the image input `name` (`input_normalization`: one value per
        channel or one for all)."""
        if len(shape) != 4 or shape[1] < 1:
            raise OptionError(f"--input-dtype uint8 is for image inputs (B, C, H, W); input '{name}' is "
                              f"{list(shape)} (the YAML's input shape [C, H, W] with the batch first)")
        c = int(shape[1])
        mean, std = (np.asarray(v, np.float64) for v in self.input_normalization)
        for option, values in (("--input-mean", mean), ("--input-std", std)):
            if values.size not in (1, c):
                raise OptionError(f"{option} has {values.size} values; input '{name}' has {c} "
                                  f"channel{'' if c == 1 else 's'}: give {c}, or one for all")
        where = f"{name}/normalize"
        return self.channel_scale(x, where, np.broadcast_to(1 / (255 * std), (c,)),
                                  np.broadcast_to(-mean / std, (c,)), (f"{where}.scale", f"{where}.shift"))

    def output(self, t: Any, name: str) -> Any:
        """Mark `t` as an output named `name`; floating outputs are returned as float32. A network input given as
        an output (an identity block) gets a layer `name/identity` between: renaming the input would lose it."""
        parts = self.output_parts.pop(t.name, None)
        if parts:
            self.output_parts[name] = parts
        if t.is_network_input:
            t = self.layer("identity", f"{name}/identity", t).get_output(0)
        if self.strongly_typed and t.dtype == self.trt.float16:
            t = self.cast(t, np.float32, f"{name}/cast")
        raw = self.definition.raw
        if t.name != name:  # a name another tensor has: TensorRT would log an error and keep the output's own name
            inputs = (f"the network input '{name}'" for i in range(raw.num_inputs) if raw.get_input(i).name == name)
            layers = (f"the output of layer '{layer.name}'" for layer in map(raw.get_layer, range(raw.num_layers))
                      for k in range(layer.num_outputs) if layer.get_output(k).name == name)
            taken = next(itertools.chain(inputs, layers), None)
            if taken:
                raise SpecError(f"output name '{name}' is taken by {taken} (netdef names a layer's output after the "
                                "layer): name the output otherwise")
        t.name = name
        raw.mark_output(t)
        return t

    def cast(self, t: Any, dtype: Any, name: str) -> Any:
        """`t.to(dtype)` (a numpy or TensorRT dtype) as layer `name`; `t` itself where it has that dtype already. A
        uint8 tensor (a network input) to float: `trt_api.add_uint8_conversion`."""
        target = trt_api.trt_dtype(dtype)
        if t.dtype == target:
            return t
        if t.dtype == self.trt.uint8:
            layer = trt_api.add_uint8_conversion(self.definition.raw, t, target, self.strongly_typed)
            return self.name(layer, name).get_output(0)
        return self.layer("cast", name, t, target).get_output(0)

    def constant(self, arr: np.ndarray, name: str, dtype: Any = None, *, key: str | None = None) -> Any:
        """A constant layer `name` holding `arr` in the compute dtype `net.dtype` (float16 in strongly typed
        fp16/int8 builds, float32 inside `fp32` and otherwise) or `dtype`; `key` (default `name`) is the weight
        key errors name."""
        arr = np.asarray(arr)
        return self.layer("constant", name, tuple(arr.shape), self.keep(arr, key or name, dtype)).get_output(0)

    def static_hw(self, t: Any, what: str, channels_last: bool = False) -> tuple[int, int]:
        """The static (H, W) of a (B, C, H, W) tensor, or of a (B, H, W, C) one with `channels_last` (Swin's
        windows), for a block `what` (e.g. "model.24: Detect") that bakes them into its layers; with a dynamic
        input size (`--input-shape MIN:OPT:MAX`) one SpecError saying so."""
        shape = tuple(t.shape)
        if len(shape) != 4:
            raise SpecError(f"{what} takes {'(B, H, W, C)' if channels_last else '(B, C, H, W)'} input, got {shape}")
        h, w = shape[1:3] if channels_last else shape[2:]
        if h < 0 or w < 0:
            raise SpecError(needs_static_size(what))
        return int(h), int(w)

    def hw_at(self, tensors: Sequence[Any], hw: tuple[int, int], what: str) -> list[tuple[int, int]]:
        """The (H, W) each (B, C, H, W) tensor would have with the network input HxW: TensorRT's own shape inference,
        the one input's size set to `hw` for the question and restored after (a block `what` of a dynamic build
        derives its strides so, as Ultralytics runs a probe image)."""
        raw = self.definition.raw
        if raw.num_inputs != 1 or len(raw.get_input(0).shape) != 4:
            raise SpecError(f"{what}: cannot probe the feature sizes of a network without one (B, C, H, W) input; "
                            f"give the block its strides")
        inp = raw.get_input(0)
        shape = tuple(inp.shape)
        inp.shape = (*shape[:2], *hw)
        try:
            sizes = [tuple(t.shape)[2:] for t in tensors]
        finally:
            inp.shape = shape
        if any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise SpecError(f"{what}: with a {hw[0]}x{hw[1]} input the feature shapes are {sizes}, not (H, W) sizes; "
                            f"give the block its strides")
        return [(int(h), int(w)) for h, w in sizes]

    def channels(self, t: Any) -> int:
        """The channel count of a (B, C, H, W) tensor (convolutions, BatchNorm)."""
        shape = tuple(t.shape)
        if len(shape) != 4 and t.name in self._inputs:
            given = list(shape[1:])  # [64, 64] (no C) suggests [1|3, 64, 64]; [3, 64] (no H or W) names no sizes
            hw = ", ".join(map(str, given[-2:])) if len(given) >= 2 and min(given[-2:]) > 4 else "H, W"
            raise SpecError(f"the input shape (the YAML's input: shape) is {given}, but a convolution or BatchNorm "
                            f"needs [C, H, W] (channels first, no batch): e.g. input: {{shape: [1, {hw}]}} for "
                            f"grayscale or [3, {hw}] for RGB images")
        if len(shape) != 4:
            raise SpecError(f"{t.name} has shape {shape}, not (B, C, H, W): convolutions and BatchNorm take 4-D input, "
                            f"and net.channels(x) reads the C of one (of a (B, N) tensor, N is tuple(x.shape)[1])")
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
        _check_conv_args(prefix, (kh, kw), (sh, sw), _pair(p), (dh, dw), g)
        c1 = self.channels(x)
        _check_channels(prefix, c2)
        if c1 % g or c2 % g:
            raise SpecError(f"{prefix}: channels {c1}->{c2} are not divisible by groups={g}")
        w = self.weight(f"{prefix}.weight", (c2, c1 // g, kh, kw))
        use_bias = self.has(f"{prefix}.bias") if bias is None else bias
        b = self.weight(f"{prefix}.bias", (c2,)) if use_bias else None
        if bn is not None:
            w, b = fold_batchnorm(w, b, *(self.weight(f"{bn}.{n}", (c2,))
                                          for n in ("weight", "bias", "running_mean", "running_var")), eps=eps, bn=bn)
        if b is None:
            b = np.zeros(c2, np.float32)
        layer = self.conv_layer(x, prefix, w, b)
        layer.stride_nd = (sh, sw)
        layer.padding_nd = _pair(p)
        layer.dilation_nd = (dh, dw)
        layer.num_groups = g
        if bn is not None:
            self.match(layer.get_output(0), bn)
        return self.activation(layer.get_output(0), act, prefix)

    def match(self, t: Any, module: str, channels: Sequence[int] | None = None) -> Any:
        """Record that tensor `t` (its layer's output; netdef names a layer's output after the layer) equals the
        output of PyTorch module `module`, where the layer's name does not say so; `verify` compares them.
        `channels`: `t` is those channels (dimension 1) of the module's output only (a convolution computed in
        parts). Returns `t`. A tensor matched again (a module's output is also the output of the Sequential or
        nn.Identity around it) is compared with each module (`matched_modules`); `matches` holds the last. Module ""
        (a row of no key prefix) is no module: the model itself has that name."""
        if not module:
            return t
        part = None if channels is None else np.asarray(channels, np.int64)
        modules = self.matched_modules.setdefault(t.name, {})
        modules.pop(module, None)  # matched again: its place is now the last
        modules[module] = part
        self.claimed.add(module)
        return t

    @property
    def matches(self) -> dict[str, str]:
        """Layer name -> the PyTorch module whose forward output that layer's output equals, where the layer's own
        name is not that module (a convolution with BatchNorm folded in equals the BatchNorm's output): the module
        matched last."""
        return {name: next(reversed(modules)) for name, modules in self.matched_modules.items()}

    @property
    def match_channels(self) -> dict[str, np.ndarray]:
        """Tensor -> the channels of its last matched module's output it holds, where not all."""
        return {name: part for name, modules in self.matched_modules.items()
                if (part := modules[next(reversed(modules))]) is not None}

    def conv_layer(self, x: Any, name: str, w: np.ndarray, b: np.ndarray) -> Any:
        """The convolution layer `name` with kernel `w` and bias `b` (folded already), int8 Q/DQ where the build
        quantizes it; the caller sets stride, padding, dilation and groups."""
        if self.quantizer is not None:  # it leaves out what --int8-exclude names
            return self.quantizer.conv(self, x, name, w, b)
        return self.convolution(x, name, w, b)

    def convolution(self, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        """The convolution layer `prefix` with kernel `w` (c2, c1/g, kh, kw) and bias `b` as weights; the caller
        sets stride, padding, dilation and groups."""
        c2, _, kh, kw = w.shape
        return self.layer("convolution_nd", prefix, x, int(c2), (int(kh), int(kw)), self.keep(w, f"{prefix}.weight"),
                          self.keep(b, f"{prefix}.bias"))

    def batchnorm(self, x: Any, prefix: str, eps: float = 1e-5) -> Any:
        """A standalone BatchNorm as a per-channel scale layer named `prefix`."""
        c = self.channels(x)
        given = [self.weight(f"{prefix}.{n}", (c,)) for n in ("weight", "bias", "running_mean", "running_var")]
        scale, shift = batchnorm_affine(*given, eps, prefix)
        return self.channel_scale(x, prefix, _finite32(scale, f"{prefix}'s scale", given),
                                  _finite32(shift, f"{prefix}'s shift", given), (f"{prefix}.weight", f"{prefix}.bias"))

    def channel_scale(self, x: Any, name: str, scale: np.ndarray, shift: np.ndarray, keys: tuple[str, str]) -> Any:
        """x * scale + shift per channel (dimension 1), one scale layer `name`; `keys` name the scale's and the
        shift's weights in errors."""
        return self.layer("scale", name, x, self.trt.ScaleMode.CHANNEL, self.keep(shift, keys[1]),
                          self.keep(scale, keys[0]), self.keep(np.ones(len(scale)), f"{name}/power")).get_output(0)

    def activation(self, x: Any, act: str | None, prefix: str) -> Any:
        """relu | silu | leaky[:slope] (default 0.1) | hardswish | hardsigmoid | sigmoid | tanh | relu6 |
        gelu[:none|tanh] | none."""
        kind, arg = parse_activation(act, prefix)
        A = self.trt.ActivationType
        if kind == "none":
            return x
        name = f"{prefix}/{kind}"
        if kind == "gelu":
            return self.gelu(x, name, arg or "none")
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
        if kind == "hardsigmoid":  # F.hardsigmoid: clamp(x / 6 + 1/2, 0, 1)
            layer = self.layer("activation", name, x, A.HARD_SIGMOID)
            layer.alpha, layer.beta = 1.0 / 6.0, 0.5
            return layer.get_output(0)
        if kind in ("silu", "hardswish"):
            gate = self.layer("activation", f"{name}/gate", x, A.SIGMOID if kind == "silu" else A.HARD_SIGMOID)
            if kind == "hardswish":
                gate.alpha, gate.beta = 1.0 / 6.0, 0.5
            return self.mul(x, gate.get_output(0), name)
        raise AssertionError(f"activation {kind} is in ACTIVATIONS but not built")

    def _elementwise(self, a: Any, b: Any, op: Any, name: str) -> Any:
        return self.layer("elementwise", name, a, b, op).get_output(0)

    def add(self, a: Any, b: Any, name: str, *, residual: bool = False) -> Any:
        """a + b, broadcasting size-1 dims and a static input of lower rank (given leading 1s, as torch).
        `residual=True` marks a residual join (a shortcut added to a convolution's output): int8 builds quantize
        its shortcut input so TensorRT can fuse the add into that convolution."""
        a, b = self._same_rank(a, b, name, "add")
        self._check_join([a, b], name, None)
        if residual and self.quantizer is not None and self.quantizer.fuses(a, b) \
                and self._quantized(name, self.quantizer.shortcut(a, b)):  # excluded: the shortcut keeps this key
            a, b = self.quantizer.residual(self, a, b, name)
        return self._elementwise(a, b, self.trt.ElementWiseOperation.SUM, name)

    def mul(self, a: Any, b: Any, name: str) -> Any:
        """a * b (broadcast as `add`)."""
        a, b = self._same_rank(a, b, name, "mul")
        return self._elementwise(a, b, self.trt.ElementWiseOperation.PROD, name)

    def _same_rank(self, a: Any, b: Any, name: str, op: str) -> tuple[Any, Any]:
        """`a`, `b` with the static one of lower rank given leading 1s (layer `name/expand`), as torch
        broadcasts it (a (heads, N, N) bias added to (B, heads, N, N) scores)."""
        ra, rb = len(a.shape), len(b.shape)
        if ra == rb:
            return a, b
        low, high = (a, rb) if ra < rb else (b, ra)
        if any(s < 0 for s in low.shape):
            raise SpecError(f"{name}: {op} of ranks {ra} and {rb}: the lower-rank input must be static")
        expanded = self.shuffle(low, f"{name}/expand", reshape=(1,) * (high - len(low.shape)) + tuple(low.shape))
        return (expanded, b) if ra < rb else (a, expanded)

    def concat(self, tensors: Sequence[Any], name: str, axis: int = 1) -> Any:
        """torch.cat(tensors, axis) (a negative axis counts from the end), the layer named `name`."""
        if not tensors:
            raise SpecError(f"{name}: nothing to concatenate")
        axis = self._axis(axis, len(tensors[0].shape), name)
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
            if d != axis and sizes and any(s[d] < 0 for s in shapes):
                fixed = next(t for t, s in zip(tensors, shapes) if s[d] in sizes)
                moving = next(t for t, s in zip(tensors, shapes) if s[d] < 0)
                raise SpecError(f"{name}: joins a fixed size {fixed.shape[d]} in dimension {d} (layer "
                                f"'{fixed.name}', shape {list(fixed.shape)}) with a size that follows the dynamic "
                                f"input (layer '{moving.name}', shape {list(moving.shape)}): such an engine works "
                                "at one input size only; take that size from the other tensor at run time "
                                "(net.resize(x, name, like=ref), the ResizeLike block), or build with a static "
                                "--input-shape")
            if d != axis and len(sizes) > 1:
                made = ", ".join(f"{list(s)} from layer '{t.name}'" for t, s in zip(tensors, shapes))
                rounding = max(sizes) - min(sizes) == 1  # a size halved with rounding and doubled again
                hint = ("; check the padding, stride and kernel size of the layers that made them (a block's own "
                        "or a YAML row's)" + (", or whether the input height and width are multiples of the "
                                              "network's total stride (the product of its downsampling strides)"
                                              + self._input_size_hint() if rounding else "")) if d >= 2 else ""
                raise SpecError(f"{name}: input shapes differ in dimension {d}: {made}{hint}")

    def _input_size_hint(self) -> str:
        """Where the (first) input has a static height and width that halve evenly fewer than 7 times, the likely
        cause of sizes that no longer join: say so, with the nearest multiples of the stride they lack (at least
        32, YOLO's; 64 for its P6 models)."""
        raw = self.definition.raw
        shape = tuple(raw.get_input(0).shape) if raw.num_inputs else ()
        if len(shape) != 4 or min(shape[2:]) < 1:
            return ""
        h, w = shape[2:]
        halvings = min((v & -v).bit_length() - 1 for v in (h, w))
        if halvings >= 7:
            return ""
        stride = max(32, 2 << halvings)  # the sizes joined again after one more halving than the input takes
        up = lambda v: -(-v // stride) * stride  # noqa: E731
        return (f"; the input {h}x{w} halves evenly only {halvings} time(s): a network that downsamples and joins "
                f"the sizes again needs multiples of its total stride (YOLO: 32, its P6 models 64), e.g. "
                f"--input-shape {up(h)}x{up(w)}")

    def pool(self, x: Any, kind: str, k: int | Sequence[int], s: int | Sequence[int] | None = None,
             p: int | Sequence[int] = 0, name: str | None = None, ceil_mode: bool = False,
             count_include_pad: bool = True) -> Any:
        """nn.MaxPool2d / nn.AvgPool2d(k, s, p, ceil_mode, count_include_pad) over (B, C, H, W), the layer `name`
        (default `<row prefix>/pool`, which verify compares with module `<row prefix>.pool`). `ceil_mode`:
        torch's windows (`_ceil_pool_reach`); a static size pads explicitly up to the last window (padding,
        which max and excluding averages ignore; an average that counts torch's padding pads it with zeros first,
        layer `name/pad`), a dynamic one rounds up (TensorRT's EXPLICIT_ROUND_UP)."""
        name = name or self.scoped("pool")
        types = {"max": self.trt.PoolingType.MAX, "avg": self.trt.PoolingType.AVERAGE}
        if kind not in types:
            raise SpecError(f"{name}: pooling kind '{kind}': use max or avg")
        k2, s2, p2 = _pair(k), _pair(k if s is None else s), _pair(p)
        if any(w < 1 or st < 1 or q < 0 or 2 * q > w for w, st, q in zip(k2, s2, p2)):
            raise SpecError(f"{name}: pooling kernel {list(k2)}, stride {list(s2)}, padding {list(p2)}: positive "
                            f"kernel and stride, padding at most half the kernel (as torch requires)")
        if len(x.shape) != 4:
            raise SpecError(f"{name}: pooling takes (B, C, H, W) input, got {tuple(x.shape)}")
        exclude = kind == "avg" and not count_include_pad
        post, reach = p2, _ceil_pool_reach(tuple(x.shape)[2:], k2, s2, p2, name) if ceil_mode else None
        if reach and max(reach) > 0:
            if kind == "avg" and not exclude and any(p2):  # torch counts its padding, not the rest: zeros as input
                x, p2 = self.pad(x, f"{name}/pad", [p2[1], p2[1], p2[0], p2[0]]), (0, 0)
            post, exclude = tuple(q + max(0, r) for q, r in zip(p2, reach)), kind == "avg"
        elif ceil_mode and reach is None and kind == "avg" and not exclude:  # a dynamic size: the divisor must not
            if any(p2):  # rest on how TensorRT counts the rounded-up reach (torch counts padding, not the reach)
                raise SpecError(f"{name}: ceil_mode average pooling that counts its padding {list(p2)} on a dynamic "
                                "input size: build with --input-shape HxW (or count_include_pad=False)")
            exclude = True  # no padding: torch divides by the window's part inside the input
        layer = self.layer("pooling_nd", name, x, types[kind], k2)
        layer.stride_nd = s2
        layer.padding_nd = p2
        if post != p2:
            layer.post_padding = post
        if ceil_mode and reach is None:
            layer.padding_mode = self.trt.PaddingMode.EXPLICIT_ROUND_UP
        if kind == "avg":
            layer.average_count_excludes_padding = exclude
        return layer.get_output(0)

    def global_avg_pool(self, x: Any, name: str, keep_dims: bool = False) -> Any:
        """Mean over H and W: (B, C, H, W) -> (B, C) (or (B, C, 1, 1) with keep_dims)."""
        if len(x.shape) != 4:
            raise SpecError(f"{name}: a global average pool needs a (B, C, H, W) input, got {x.name} of shape "
                            f"{tuple(x.shape)} (pooled already, or flattened?)")
        return self.layer("reduce", name, x, self.trt.ReduceOperation.AVG, (1 << 2) | (1 << 3), keep_dims).get_output(0)

    def adaptive_avg_pool(self, x: Any, name: str, output_size: int | Sequence[int | None]) -> Any:
        """nn.AdaptiveAvgPool2d(output_size) (VGG's 7x7, AlexNet's 6x6) at a static input size: torch's windows
        [floor(i * H / h), ceil((i + 1) * H / h)) as averaging matrices, A_h @ x @ A_w^T (layers `name/rows`,
        `name`); None in a pair keeps that size, as in torch."""
        pair = list(output_size) if isinstance(output_size, (list, tuple)) else [output_size] * 2
        if len(pair) != 2 or not all(v is None or _is_int(v) and v >= 1 for v in pair):
            raise SpecError(f"{name}: AdaptiveAvgPool2d output_size {output_size!r}: expected a positive integer or two "
                            "(None in a pair keeps that size)")
        h, w = self.static_hw(x, f"{name}: AdaptiveAvgPool2d({pair})")
        oh, ow = (h if pair[0] is None else int(pair[0])), (w if pair[1] is None else int(pair[1]))
        rows = self.constant(_adaptive_windows(h, oh), f"{name}/rows_avg")
        y = self.matmul(rows, x, f"{name}/rows")
        return self.matmul(y, self.constant(_adaptive_windows(w, ow), f"{name}/cols_avg"), name, transpose_b=True)

    def upsample(self, x: Any, scale: int, name: str) -> Any:
        """Nearest-neighbour upsampling by `scale` (nn.Upsample(scale_factor=scale)): `resize` with mode nearest."""
        return self.resize(x, name, scale_factor=float(scale))

    def resize(self, x: Any, name: str, size: int | Sequence[int] | None = None,
               scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
               align_corners: bool | None = None, like: Any = None) -> Any:
        """F.interpolate over the dims after (B, C): output `size`, floor(in * scale_factor) with the source
        coordinates mapped by the given scale as torch does, or `like`'s sizes (F.interpolate(x,
        size=like.shape[2:]), taken at run time where they are dynamic); 'nearest' is torch's (floor, asymmetric),
        'bilinear' uses half-pixel centres or `align_corners`."""
        rank = len(x.shape)
        if sum(v is not None for v in (size, scale_factor, like)) != 1:
            raise SpecError(f"{name}: give one of size, scale_factor and like")
        if mode not in ("nearest", "bilinear"):
            raise SpecError(f"{name}: resize mode '{mode}' is not supported: use nearest or bilinear")
        if mode == "nearest" and align_corners is not None:
            raise SpecError(f"{name}: align_corners applies to bilinear resizing only (as in torch)")
        if mode == "bilinear" and rank != 4:
            raise SpecError(f"{name}: bilinear resizing takes (B, C, H, W) input, got {tuple(x.shape)}")
        layer = self.layer("resize", name, x)
        if like is not None:
            dims = self._size_like(x, like, name)
            if isinstance(dims, tuple):
                layer.shape = dims
            else:
                layer.set_input(1, dims)
        elif size is not None:
            out = _ints(size, rank - 2, f"{name}: size")
            if any(v < 1 for v in out):
                raise SpecError(f"{name}: size {list(out)} must be positive")
            dims = self.dims(x, name, [1, 1] + [0] * (rank - 2), [0, 0, *out])
            if isinstance(dims, tuple):
                layer.shape = dims
            else:
                layer.set_input(1, dims)
        else:
            factors = scale_factor if isinstance(scale_factor, (list, tuple)) else [scale_factor] * (rank - 2)
            if len(factors) != rank - 2 or not all(isinstance(f, (int, float)) and f > 0 for f in factors):
                raise SpecError(f"{name}: scale_factor {scale_factor!r}: expected {rank - 2} positive numbers")
            layer.scales = [1.0, 1.0, *(float(f) for f in factors)]
        trt_api.set_resize_mode(layer, mode, bool(align_corners))
        return layer.get_output(0)

    def shuffle(self, x: Any, name: str, reshape: Sequence[int] | None = None, first: Sequence[int] | None = None,
                second: Sequence[int] | None = None) -> Any:
        """A shuffle layer: optional first transpose, reshape (0 keeps a dimension, -1 infers one), second transpose.
        A reshape that cannot hold the input's values is a SpecError here (TensorRT finds it only at build time
        where the batch is dynamic)."""
        if reshape is not None:
            src = tuple(x.shape)
            _check_volume(tuple(src[d] for d in first) if first is not None else src, tuple(reshape), name)
        layer = self.layer("shuffle", name, x)
        if first is not None:
            layer.first_transpose = tuple(first)
        if reshape is not None:
            layer.reshape_dims = tuple(reshape)
        if second is not None:
            layer.second_transpose = tuple(second)
        return layer.get_output(0)

    def reshape(self, x: Any, name: str, shape: Sequence[int]) -> Any:
        """x.reshape(shape), with TensorRT's conventions: 0 keeps the input's dimension at that index (the
        dynamic batch), -1 (at most one) is inferred."""
        shape = _ints(shape, None, f"{name}: shape")
        if shape.count(-1) > 1 or any(v < -1 for v in shape):
            raise SpecError(f"{name}: reshape to {list(shape)}: at most one -1, other sizes >= 0")
        dynamic = [d for d, n in enumerate(tuple(x.shape)) if d and n < 0 and not (d < len(shape) and shape[d] == 0)]
        if dynamic and -1 not in shape:  # fixed sizes cannot hold a size chosen at run time (H*W baked in)
            raise SpecError(needs_static_size(f"{name}: reshape of {tuple(x.shape)} to {list(shape)}"))
        return self.shuffle(x, name, reshape=shape)

    def permute(self, x: Any, name: str, dims: Sequence[int]) -> Any:
        """x.permute(*dims)."""
        rank = len(x.shape)
        perm = tuple(self._axis(d, rank, name) for d in dims)
        if sorted(perm) != list(range(rank)):
            raise SpecError(f"{name}: permute dims {list(dims)} are not a permutation of {rank} dimensions")
        return self.shuffle(x, name, first=perm)

    def flatten(self, x: Any, name: str, start_dim: int = 1, end_dim: int = -1) -> Any:
        """torch.flatten(x, start_dim, end_dim): (B, C, H, W) -> (B, C*H*W) by default."""
        shape = tuple(x.shape)
        lo, hi = self._axis(start_dim, len(shape), name), self._axis(end_dim, len(shape), name)
        if lo > hi:
            raise SpecError(f"{name}: flatten start_dim {start_dim} comes after end_dim {end_dim}")
        merged, after = shape[lo:hi + 1], shape[hi + 1:]
        if any(s < 0 for s in after) or (any(s < 0 for s in merged) and any(s < 0 for s in shape[:lo])):
            raise SpecError(f"{name}: flatten of {shape} from dim {lo} to {hi}: only one dynamic part can be inferred")
        if any(s < 0 for s in shape[:lo]) or any(s < 0 for s in merged):
            size = -1
        else:
            size = int(np.prod(merged))
        return self.shuffle(x, name, reshape=(*[0] * lo, size, *after))

    def slice(self, x: Any, name: str, start: Sequence[int], shape: Sequence[int],
              stride: Sequence[int] | None = None) -> Any:
        """Elements start + i * stride, i < shape, per dimension (TensorRT's slice; torch's x[a:b:s] with
        shape = ceil((b - a) / s)). A -1 in `shape` keeps that dimension whole (the dynamic batch)."""
        rank = len(x.shape)
        start = _ints(start, rank, f"{name}: start")
        shape = _ints(shape, rank, f"{name}: shape")
        stride = _ints(stride or [1] * rank, rank, f"{name}: stride")
        for d, (n, a, k, s) in enumerate(zip(tuple(x.shape), start, shape, stride)):
            whole = k == -1 and a == 0 and s == 1
            inside = n >= 0 and k >= 1 and s != 0 and 0 <= a < n and 0 <= a + (k - 1) * s < n
            if not (whole or inside):
                raise SpecError(f"{name}: slice of dimension {d} (size {n}) with start {a}, shape {k}, stride {s} "
                                f"is out of bounds (-1 keeps a dimension whole: start 0, stride 1)")
        keep = [1 if k == -1 else 0 for k in shape]
        return self._slice(x, name, start, keep, [0 if k == -1 else k for k in shape], stride, "strict")

    def split(self, x: Any, name: str, split_size: int | Sequence[int], dim: int = 1) -> list[Any]:
        """torch.split(x, split_size, dim): pieces of `split_size` along `dim` (the last one smaller where it does
        not divide the size) or of the listed sizes (adding up to it), as slices `name/0`, `name/1`, ... that keep
        the other dimensions whole (any batch and input size); `dim`'s own size must be static."""
        shape = tuple(x.shape)
        d = self._axis(dim, len(shape), name)
        n = int(shape[d])
        if n < 0:
            raise SpecError(f"{name}: split of dimension {d} of {shape}, whose size is chosen at run time")
        if _is_int(split_size):
            if split_size < 1:
                raise SpecError(f"{name}: split size {split_size!r}: expected a positive integer")
            sizes = [min(split_size, n - a) for a in range(0, n, split_size)]
        else:
            sizes = list(_ints(split_size, None, f"{name}: split sizes"))
            if min(sizes, default=0) < 1 or sum(sizes) != n:
                raise SpecError(f"{name}: split sizes {sizes} must be positive and add up to {n}, the size of "
                                f"dimension {d} of {shape}")
        starts = np.cumsum([0, *sizes[:-1]])
        return [self.slice(x, f"{name}/{i}", [int(a) if j == d else 0 for j in range(len(shape))],
                           [k if j == d else -1 for j in range(len(shape))])
                for i, (a, k) in enumerate(zip(starts, sizes))]

    def chunk(self, x: Any, name: str, chunks: int, dim: int = 1) -> list[Any]:
        """torch.chunk(x, chunks, dim) (ShuffleNet's and YOLOv8's channel split): `split` into pieces of
        ceil(size / chunks), so fewer than `chunks` pieces where torch gives fewer."""
        if not _is_int(chunks) or chunks < 1:
            raise SpecError(f"{name}: chunks {chunks!r}: expected a positive integer")
        n = int(x.shape[self._axis(dim, len(x.shape), name)])
        return self.split(x, name, max(1, -(-n // chunks)), dim)  # a dynamic size: split says so

    def channel_shuffle(self, x: Any, name: str, groups: int) -> Any:
        """nn.ChannelShuffle(groups) (ShuffleNet's channel_shuffle) on (B, C, H, W): channel g * (C // groups) + i
        goes to i * groups + g. Two shuffle layers, `name` and `name/merge`, whose 0s keep the batch and the
        spatial sizes, so any input size works."""
        c = self.channels(x)
        if not _is_int(groups) or groups < 1 or c % groups:
            raise SpecError(f"{name}: channel shuffle of {c} channels in groups={groups!r}: groups must divide them")
        y = self.shuffle(x, name, first=(0, 2, 3, 1), reshape=(0, 0, 0, groups, c // groups), second=(0, 1, 2, 4, 3))
        return self.shuffle(y, f"{name}/merge", reshape=(0, 0, 0, c), second=(0, 3, 1, 2))

    def pad(self, x: Any, name: str, pads: Sequence[int], mode: str = "constant", value: float = 0.0) -> Any:
        """F.pad(x, pads, mode, value): `pads` = (left, right, top, bottom, ...) from the last dimension
        backwards; negative pads crop. mode constant or reflect. A slice layer in fill/reflect mode."""
        shape = tuple(x.shape)
        pads = _ints(pads, None, f"{name}: pads")
        if len(pads) % 2 or len(pads) // 2 > len(shape):
            raise SpecError(f"{name}: pads {list(pads)}: expected pairs (before, after) for at most {len(shape)} dims")
        if mode not in ("constant", "reflect"):
            raise SpecError(f"{name}: pad mode '{mode}' is not supported: use constant or reflect")
        start, delta = [0] * len(shape), [0] * len(shape)
        for i in range(len(pads) // 2):
            d, before, after = len(shape) - 1 - i, pads[2 * i], pads[2 * i + 1]
            if (before or after) and shape[d] < 0:
                raise SpecError(f"{name}: cannot pad dimension {d}: its size is dynamic")
            if shape[d] + before + after < 1:
                raise SpecError(f"{name}: pads ({before}, {after}) leave nothing of dimension {d} (size {shape[d]})")
            if mode == "reflect" and max(before, after) >= shape[d]:
                raise SpecError(f"{name}: reflect pads ({before}, {after}) must be smaller than dimension {d} "
                                f"(size {shape[d]})")
            start[d], delta[d] = -before, before + after
        kind = "strict" if all(p <= 0 for p in pads) else "fill" if mode == "constant" else "reflect"
        return self._slice(x, name, start, [1] * len(shape), delta, [1] * len(shape), kind, value)

    def roll(self, x: Any, name: str, shifts: int | Sequence[int], dims: int | Sequence[int]) -> Any:
        """torch.roll(x, shifts, dims) over dimensions of static size (Swin's shifted windows): one slice layer
        in wrap mode, starting each rolled dimension at -shift modulo its size (a dimension named twice rolls by the
        sum of its shifts, as in torch)."""
        shape = tuple(x.shape)
        dims = _ints(dims, None, f"{name}: dims")
        shifts = _ints(shifts, len(dims), f"{name}: shifts")
        start = [0] * len(shape)
        for s, d in zip(shifts, dims):
            a = self._axis(d, len(shape), name)
            if shape[a] < 0:
                raise SpecError(needs_static_size(f"{name}: roll of dimension {a} of {shape}"))
            start[a] = (start[a] - s) % shape[a]
        return self._slice(x, name, start, [1] * len(shape), [0] * len(shape), [1] * len(shape), "wrap")

    def _slice(self, x: Any, name: str, start: Sequence[int], keep: Sequence[int], offset: Sequence[int],
               stride: Sequence[int], kind: str, value: float = 0.0) -> Any:
        """A slice layer of size shape(x) * keep + offset (a shape tensor where that size is dynamic)."""
        size = self.dims(x, name, keep, offset)
        layer = self.layer("slice", name, x, tuple(start), size if isinstance(size, tuple) else (1,) * len(keep),
                           tuple(stride))
        if not isinstance(size, tuple):
            layer.set_input(2, size)
        layer.mode = trt_api.slice_mode(kind)
        if kind == "fill" and value != 0:
            layer.set_input(4, self.constant(np.array(value), f"{name}/value"))
        return layer.get_output(0)

    def dims(self, x: Any, name: str, keep: Sequence[int], offset: Sequence[int]) -> Any:
        """The dims shape(x) * keep + offset: a tuple where they are static, else a shape tensor (dynamic batch)."""
        shape = tuple(x.shape)
        if all(s >= 0 or not k for s, k in zip(shape, keep)):
            return tuple(int(s * k + o) for s, k, o in zip(shape, keep, offset))
        dims = self.layer("shape", f"{name}/shape", x).get_output(0)
        E = self.trt.ElementWiseOperation
        if not all(keep):
            dims = self._elementwise(dims, self._shape_constant(keep, dims, f"{name}/keep"), E.PROD, f"{name}/kept")
        return self._elementwise(dims, self._shape_constant(offset, dims, f"{name}/offset"), E.SUM, f"{name}/size")

    def linspace(self, shape: Any, name: str, start: float, delta: Sequence[float]) -> Any:
        """Ramps over a tensor of `shape` (a tuple, or a 1-D shape tensor such as `dims` gives, for sizes chosen at
        run time): start + sum_d delta[d] * index_d (torch.arange along one dimension when the other deltas are 0).
        TensorRT's fill layer `name` (LINSPACE) computes it in float32; cast to the compute dtype."""
        rank = len(delta)
        static = isinstance(shape, tuple)
        if static and len(shape) != rank:
            raise SpecError(f"{name}: linspace of shape {shape} takes {len(shape)} deltas, got {list(delta)}")
        layer = self.name(trt_api.add_linspace(self.definition.raw, shape if static else (1,) * rank), name)
        if not static:
            layer.set_input(0, shape)
        layer.set_input(1, self.constant(np.array(start), f"{name}/start", np.float32))  # 8.6 needs both as tensors
        layer.set_input(2, self.constant(np.asarray(delta), f"{name}/delta", np.float32))
        return self.cast(layer.get_output(0), self.dtype, f"{name}/cast")

    def pad_like(self, x: Any, ref: Any, name: str) -> Any:
        """x padded (zeros) or cropped on its last two dimensions to `ref`'s sizes, centred as F.pad(x, [dx // 2,
        dx - dx // 2, dy // 2, dy - dy // 2]) with d = ref's size - x's (UNet's Up): one fill-mode slice whose
        start and size come from both tensors' runtime shapes, for sizes chosen at run time."""
        rank = len(x.shape)
        if rank != len(ref.shape) or rank < 3:
            raise SpecError(f"{name}: pad_like takes tensors of one rank >= 3, got {tuple(x.shape)} and "
                            f"{tuple(ref.shape)}")
        E = self.trt.ElementWiseOperation
        sx = self.layer("shape", f"{name}/shape", x).get_output(0)
        sr = self.layer("shape", f"{name}/ref_shape", ref).get_output(0)
        last = [0] * (rank - 2) + [1, 1]
        diff = self._elementwise(sr, sx, E.SUB, f"{name}/diff")
        half = self._elementwise(diff, self._shape_constant([2] * rank, sx, f"{name}/two"), E.FLOOR_DIV,
                                 f"{name}/half")
        start = self._elementwise(half, self._shape_constant([-v for v in last], sx, f"{name}/negate"), E.PROD,
                                  f"{name}/start")
        size = self._mixed_dims(sx, sr, last, name)
        layer = self.layer("slice", name, x, (0,) * rank, (1,) * rank, (1,) * rank)
        layer.set_input(1, start)
        layer.set_input(2, size)
        layer.mode = trt_api.slice_mode("fill")
        return layer.get_output(0)

    def _size_like(self, x: Any, ref: Any, name: str) -> Any:
        """x's batch and channels with `ref`'s sizes after them: a tuple where static, else a shape tensor."""
        rank = len(x.shape)
        if len(ref.shape) != rank or rank < 3:
            raise SpecError(f"{name}: resize like a tensor takes two tensors of one rank >= 3, got {tuple(x.shape)} "
                            f"and {tuple(ref.shape)}")
        sizes = tuple(ref.shape)[2:]
        take = [0, 0] + [1] * (rank - 2)
        if min(sizes) >= 0:  # ref's sizes are static (x's batch may still be dynamic)
            return self.dims(x, name, [1 - v for v in take], [0, 0, *sizes])
        sx = self.layer("shape", f"{name}/shape", x).get_output(0)
        sr = self.layer("shape", f"{name}/ref_shape", ref).get_output(0)
        return self._mixed_dims(sx, sr, take, name)

    def _mixed_dims(self, sx: Any, sr: Any, take: Sequence[int], name: str) -> Any:
        """The shape tensor sx * (1 - take) + sr * take: per dimension one of two shapes (layers `name/keep`,
        `/kept`, `/take`, `/taken`, `/size`)."""
        E = self.trt.ElementWiseOperation
        kept = self._elementwise(sx, self._shape_constant([1 - v for v in take], sx, f"{name}/keep"), E.PROD,
                                 f"{name}/kept")
        taken = self._elementwise(sr, self._shape_constant(list(take), sx, f"{name}/take"), E.PROD, f"{name}/taken")
        return self._elementwise(kept, taken, E.SUM, f"{name}/size")

    def _shape_constant(self, values: Sequence[int], like: Any, name: str) -> Any:
        """A 1-D integer constant in the type of shape tensor `like` (int32 on TensorRT 8.6, int64 on 10+)."""
        dt = trt_api.np_dtype(like.dtype)
        return self.constant(np.array(values, dt), name, dt)

    def _axis(self, d: int, rank: int, name: str) -> int:
        """A dimension index (negative counts from the end) checked against `rank`."""
        if not isinstance(d, int) or isinstance(d, bool) or not -rank <= d < rank:
            raise SpecError(f"{name}: dimension {d!r} is out of range for a {rank}-D tensor")
        return d % rank

    def reduce(self, x: Any, name: str, op: str = "mean", dims: int | Sequence[int] = -1,
               keepdim: bool = False) -> Any:
        """x.mean/amax/amin/sum/prod(dims, keepdim) (op mean, max or amax, min or amin, sum or prod)."""
        ops = {"mean": "AVG", "max": "MAX", "amax": "MAX", "min": "MIN", "amin": "MIN", "sum": "SUM", "prod": "PROD"}
        if op not in ops:
            raise SpecError(f"{name}: reduce op '{op}': use one of {', '.join(ops)}")
        axes = {self._axis(d, len(x.shape), name) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
        mask = sum(1 << a for a in axes)
        return self.layer("reduce", name, x, getattr(self.trt.ReduceOperation, ops[op]), mask,
                          bool(keepdim)).get_output(0)

    def softmax(self, x: Any, name: str, dim: int, fp32: bool = True) -> Any:
        """torch.softmax(x, dim); computed in float32 in fp16/int8 builds (`fp32(strict=False)`: TensorRT 8.6
        chooses) unless `fp32=False`."""
        axis = self._axis(dim, len(x.shape), name)
        with self.fp32(name, strict=False) if fp32 else nullcontext():
            layer = self.layer("softmax", name, x)
            layer.axes = 1 << axis
        return layer.get_output(0)

    def gelu(self, x: Any, name: str, approximate: str = "none") -> Any:
        """F.gelu(x, approximate='none'|'tanh'): TensorRT's GELU where it has one, else composed (x/2 (1 +
        erf(x/sqrt 2)) or its tanh form) from unary, activation and elementwise layers."""
        if approximate not in ("none", "tanh"):
            raise SpecError(f"{name}: gelu approximate '{approximate}': use none or tanh")
        kind = trt_api.gelu_activation(approximate)
        if kind is not None:
            return self.layer("activation", name, x, kind).get_output(0)
        ones = (1,) * len(x.shape)

        def const(v: float, n: str) -> Any:
            return self.constant(np.full(ones, v), f"{name}/{n}")

        if approximate == "none":
            scaled = self.mul(x, const(1.0 / np.sqrt(2.0), "rsqrt2"), f"{name}/scale")
            inner = self.layer("unary", f"{name}/erf", scaled, self.trt.UnaryOperation.ERF).get_output(0)
        else:
            cube = self.mul(self.mul(x, x, f"{name}/square"), x, f"{name}/cube")
            poly = self.add(x, self.mul(cube, const(0.044715, "c"), f"{name}/cube_c"), f"{name}/poly")
            poly = self.mul(poly, const(np.sqrt(2.0 / np.pi), "k"), f"{name}/poly_k")
            inner = self.layer("activation", f"{name}/tanh", poly, self.trt.ActivationType.TANH).get_output(0)
        half = self.mul(x, const(0.5, "half"), f"{name}/half")
        return self.mul(half, self.add(inner, const(1.0, "one"), f"{name}/one_plus"), name)

    def matmul(self, a: Any, b: Any, name: str, transpose_a: bool = False, transpose_b: bool = False) -> Any:
        """torch.matmul(a, b) of tensors of rank >= 2 (batched, leading dims broadcast), optionally with the last
        two dims of `a` or `b` transposed; a static tensor of lower rank gets leading 1s."""
        if min(len(a.shape), len(b.shape)) < 2:
            raise SpecError(f"{name}: matmul takes tensors of rank >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")
        a, b = self._same_rank(a, b, name, "matmul")
        ka = a.shape[-2] if transpose_a else a.shape[-1]
        kb = b.shape[-1] if transpose_b else b.shape[-2]
        if ka >= 0 and kb >= 0 and ka != kb:
            raise SpecError(f"{name}: matmul of {tuple(a.shape)} and {tuple(b.shape)} (transposed: {transpose_a}, "
                            f"{transpose_b}): inner sizes {ka} and {kb} differ")
        M = self.trt.MatrixOperation
        return self.layer("matrix_multiply", name, a, M.TRANSPOSE if transpose_a else M.NONE, b,
                          M.TRANSPOSE if transpose_b else M.NONE).get_output(0)

    def layer_norm(self, x: Any, prefix: str, normalized_shape: int | Sequence[int] | None = None,
                   eps: float = 1e-5, affine: bool = True, axes: Sequence[int] | None = None,
                   fp32: bool = True) -> Any:
        """nn.LayerNorm(normalized_shape, eps, elementwise_affine=affine) `prefix` over the trailing dims, or
        over `axes` (e.g. [1]: ConvNeXt's channels-first LayerNorm2d; weight and bias then have the size of
        those dims). Without either, the fewest trailing dims of the size of `prefix.weight` (the last one where
        the weights lack it). A normalization layer named `prefix` (axes not at the end are permuted there and back,
        the last permute named `prefix`), in float32 in fp16/int8 builds (`fp32(strict=False)`) unless
        `fp32=False`."""
        shape, rank = tuple(x.shape), len(x.shape)
        if axes is None:
            if normalized_shape is None:
                normalized_shape = self._trailing_of_size(shape, f"{prefix}.weight", affine, prefix)
            ns = _ints(normalized_shape, None, f"{prefix}: normalized_shape")
            if not 0 < len(ns) <= rank or shape[rank - len(ns):] != ns:
                raise SpecError(f"{prefix}: normalized_shape {list(ns)} does not end the input shape {shape}")
            dims = list(range(rank - len(ns), rank))
        else:
            dims = sorted({self._axis(a, rank, prefix) for a in _ints(axes, None, f"{prefix}: LayerNorm axes")})
        if any(shape[d] < 0 for d in dims):
            raise SpecError(f"{prefix}: LayerNorm over dynamic dimensions {dims} of {shape}")
        wshape = tuple(shape[d] for d in dims)
        w = self.weight(f"{prefix}.weight", wshape) if affine else np.ones(wshape, np.float32)
        b = self.weight(f"{prefix}.bias", wshape) if affine else np.zeros(wshape, np.float32)
        trailing = list(range(rank - len(dims), rank))
        bshape = (1,) * (rank - len(dims)) + wshape
        with self.fp32(prefix, strict=False) if fp32 else nullcontext():
            if dims == trailing:
                return self._normalization(x, prefix, prefix, w.reshape(bshape), b.reshape(bshape), dims, eps)
            perm = [d for d in range(rank) if d not in dims] + dims
            y = self.permute(x, f"{prefix}/to_last", perm)
            y = self._normalization(y, f"{prefix}/norm", prefix, w.reshape(bshape), b.reshape(bshape), trailing, eps)
            return self.permute(y, prefix, [perm.index(d) for d in range(rank)])

    def _trailing_of_size(self, shape: tuple[int, ...], key: str, affine: bool, prefix: str) -> tuple[int, ...]:
        """The fewest trailing dims of `shape` whose size is that of the weight `key` (a LayerNorm's normalized
        shape, as its weight gives it), the last dim where the weights lack `key`."""
        if not affine:
            raise SpecError(f"{prefix}: LayerNorm without elementwise_affine needs normalized_shape (or axes): no "
                            "weight gives it")
        if not self.has(key):
            return shape[-1:]
        size, n = self.weight_size(key), 1
        for i in range(len(shape) - 1, -1, -1):
            n *= shape[i]
            if n == size:
                return shape[i:]
            if n > size or n < 0:
                break
        raise SpecError(f"{prefix}: LayerNorm: {key} has {size} values, which no trailing dims of the input "
                        f"{shape} make: give normalized_shape (or axes)")

    def group_norm(self, x: Any, prefix: str, groups: int, eps: float = 1e-5, affine: bool = True,
                   fp32: bool = True) -> Any:
        """nn.GroupNorm(groups, C, eps, affine) `prefix` on (B, C, ...): each group normalized as a layer norm
        of (B, groups, -1), then the per-channel affine (the last layer is named `prefix`); float32 in fp16/int8
        builds (`fp32(strict=False)`) unless `fp32=False`."""
        shape = tuple(x.shape)
        if len(shape) < 3 or any(s < 0 for s in shape[1:]):
            raise SpecError(f"{prefix}: GroupNorm takes (B, C, ...) input with static sizes after B, got {shape}")
        c = shape[1]
        if groups < 1 or c % groups:
            raise SpecError(f"{prefix}: {c} channels are not divisible by groups={groups}")
        per_group = int(np.prod(shape[1:])) // groups
        w = self.weight(f"{prefix}.weight", (c,)) if affine else None
        b = self.weight(f"{prefix}.bias", (c,)) if affine else None
        with self.fp32(prefix, strict=False) if fp32 else nullcontext():
            g = self.shuffle(x, f"{prefix}/group", reshape=(0, groups, per_group))
            ones = np.ones((1, 1, per_group), np.float32)
            g = self._normalization(g, f"{prefix}/norm", f"{prefix}/norm", ones, np.zeros_like(ones), [2], eps)
            y = self.shuffle(g, f"{prefix}/ungroup" if affine else prefix, reshape=(0, *shape[1:]))
            if affine:
                cshape = (1, c) + (1,) * (len(shape) - 2)
                y = self.mul(y, self.constant(w.reshape(cshape), f"{prefix}/weight", key=f"{prefix}.weight"),
                             f"{prefix}/mul")
                y = self.add(y, self.constant(b.reshape(cshape), f"{prefix}/bias", key=f"{prefix}.bias"), prefix)
        return y

    def _normalization(self, x: Any, name: str, key: str, w: np.ndarray, b: np.ndarray, dims: Sequence[int],
                       eps: float) -> Any:
        """(x - mean) / sqrt(var + eps) * w + b over the trailing `dims` (TensorRT's normalization layer, named
        `name`; its weights come from module `key`)."""
        scale = self.constant(w, f"{name}/weight", key=f"{key}.weight")
        bias = self.constant(b, f"{name}/bias", key=f"{key}.bias")
        layer = self.layer("normalization", name, x, scale, bias, sum(1 << d for d in dims))
        layer.epsilon = float(eps)
        return layer.get_output(0)

    def scale(self, x: Any, key: str, dim: int = 1, name: str | None = None) -> Any:
        """x times the per-channel weight `key` (shape (C,), or (C, 1, 1) as torchvision stores it) along `dim`:
        a layer scale (ConvNeXt's gamma; dim=1 on NCHW, dim=-1 channels-last). The layer is named `name`, by
        default the key's module where the key is all it holds (timm's LayerScale: `blocks.0.ls1.gamma` ->
        `blocks.0.ls1`, whose output it is), else `module/param` (a parameter of a larger module, the ConvNeXt
        block's `stages.0.0.gamma` -> `stages.0.0/gamma`: not compared with that block's output by verify)."""
        module, _, param = key.rpartition(".")
        alone = module and not any(k.startswith(f"{module}.") and k != key for k in self.weights)
        name = name or (module if alone else f"{module}/{param}" if module else key)
        axis = self._axis(dim, len(x.shape), name)
        c = int(x.shape[axis])
        if c < 0:
            raise SpecError(f"{name}: the scaled dimension {axis} of {tuple(x.shape)} must be static")
        shape = [1] * len(x.shape)
        shape[axis] = c
        return self.mul(x, self.constant(self.weight(key, (c,)).reshape(shape), f"{name}/weight", key=key), name)

    def deconv(self, x: Any, prefix: str, c2: int, k: int | Sequence[int], s: int | Sequence[int] = 1,
               p: int | Sequence[int] = 0, output_padding: int | Sequence[int] = 0, g: int = 1,
               d: int | Sequence[int] = 1, bias: bool | None = None) -> Any:
        """nn.ConvTranspose2d `prefix` (weight (c1, c2/g, kh, kw)); output size as torch's: (in - 1) * s - 2p +
        d (k - 1) + output_padding + 1. `bias=None` uses `prefix.bias` when the file has it."""
        (kh, kw), (sh, sw), (ph, pw), (oh, ow), (dh, dw) = (_pair(v) for v in (k, s, p, output_padding, d))
        _check_conv_args(prefix, (kh, kw), (sh, sw), (ph, pw), (dh, dw), g)
        c1 = self.channels(x)
        _check_channels(prefix, c2)
        if c1 % g or c2 % g:
            raise SpecError(f"{prefix}: channels {c1}->{c2} are not divisible by groups={g}")
        if not (0 <= oh < max(sh, dh) and 0 <= ow < max(sw, dw)):
            raise SpecError(f"{prefix}: output_padding {(oh, ow)} must be smaller than the stride or the dilation")
        w = self.weight(f"{prefix}.weight", (c1, c2 // g, kh, kw))
        use_bias = self.has(f"{prefix}.bias") if bias is None else bias
        b = self.weight(f"{prefix}.bias", (c2,)) if use_bias else np.zeros(c2, np.float32)
        extra = (max(oh - ph, 0), max(ow - pw, 0))  # output padding past the full output: only the bias reaches it
        layer = self.layer("deconvolution_nd", prefix, x, int(c2), (kh, kw), self.keep(w, f"{prefix}.weight"),
                           self.keep(np.zeros(c2) if any(extra) else b, f"{prefix}.bias"))
        layer.stride_nd, layer.dilation_nd, layer.num_groups = (sh, sw), (dh, dw), g
        layer.pre_padding = (ph, pw)
        layer.post_padding = (max(ph - oh, 0), max(pw - ow, 0))
        y = layer.get_output(0)
        if any(extra):
            y = self.pad(y, f"{prefix}/output_padding", (0, extra[1], 0, extra[0]))
            bias_t = self.constant(b.reshape(1, c2, 1, 1), f"{prefix}/bias", key=f"{prefix}.bias")
            y = self.add(y, bias_t, f"{prefix}/add_bias")
            self.match(y, prefix)
        return y

    def linear(self, x: Any, prefix: str, c2: int, bias: bool = True) -> Any:
        """nn.Linear `prefix`: y = x W^T + b over the last dimension, as torch's. On (B, C), tokens (B, N, C) or any
        (..., C) (channels-last maps (B, H, W, C): ConvNeXt's MLP) a matrix multiply `prefix` (TensorRT 10 removed
        the fully connected layer) and the bias add `prefix/add_bias`; on pooled (B, C, 1, 1) features a 1x1
        convolution with the bias fused, flattened to (B, c2)."""
        if len(x.shape) == 4 and tuple(x.shape[2:]) == (1, 1):  # the weight read as torch's (c2, c1)
            _check_channels(prefix, c2)
            w = self.weight(f"{prefix}.weight", (c2, self.channels(x)))
            b = self.weight(f"{prefix}.bias", (c2,)) if bias else np.zeros(c2, np.float32)
            y = self.conv_layer(x, prefix, w[:, :, None, None], b).get_output(0)
            return self.flatten(y, f"{prefix}/flatten")
        if len(x.shape) < 2:
            raise SpecError(f"{prefix}: Linear takes (B, C), tokens (B, N, C), (..., C) or pooled (B, C, 1, 1) input, "
                            f"got {tuple(x.shape)}")
        c1 = int(x.shape[-1])
        stored = self.weights.get(f"{prefix}.weight")
        if len(x.shape) == 4 and stored is not None and np.size(stored) == c2 * int(x.shape[1]) != c2 * c1:
            raise SpecError(f"{prefix}: Linear acts on the last dimension ({c1}) of {tuple(x.shape)}, but its weight "
                            f"takes the {int(x.shape[1])} channels: add a Flatten or GlobalAvgPool row before it, or "
                            "permute the channels last")
        w = self.weight(f"{prefix}.weight", (c2, c1))
        if self._quantized(prefix, x):
            wt = self.quantizer.linear_weight(self, x, prefix, w)
            x = self.quantizer.activation(self, x, prefix)
        else:
            wt = self.constant(w, f"{prefix}/weight", key=f"{prefix}.weight")
        y = self.matmul(x, wt, prefix, transpose_b=True)
        if bias:
            b = self.weight(f"{prefix}.bias", (c2,)).reshape((1,) * (len(x.shape) - 1) + (c2,))
            b = self.constant(b, f"{prefix}/bias", key=f"{prefix}.bias")
            y = self._elementwise(y, b, self.trt.ElementWiseOperation.SUM, f"{prefix}/add_bias")
            self.match(y, prefix)
        return y


def needs_static_size(what: str) -> str:
    """The error for a block or layer `what` that needs the input's height and width at build time."""
    return f"{what} needs a static input size: build with --input-shape HxW (this build's input H, W are dynamic)"


def _ceil_pool_reach(hw: Sequence[int], k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
                     name: str) -> list[int] | None:
    """How far torch's last ceil_mode window reaches past the right padding, per axis (<= 0: not past it); None for
    a size chosen at run time. torch: ceil((I + 2p - k) / s) + 1 windows, less a last one that would start in the
    right padding (at input index I or later). TensorRT's EXPLICIT_ROUND_UP gives ceil((I + pre + post - k) / s)
    + 1 and counts an average over the padded input: torch's rule at every size where no window can start in the
    padding, s <= k - p, which a dynamic size needs."""
    if min(hw) < 0:
        if any(st > w - q for w, st, q in zip(k, s, p)):
            raise SpecError(f"{name}: ceil_mode pooling with kernel {list(k)}, stride {list(s)}, padding {list(p)} on "
                            f"a dynamic input size: torch drops a last window that would start in the padding, "
                            f"which TensorRT cannot follow at sizes chosen at run time unless stride <= kernel - "
                            f"padding; build with --input-shape HxW")
        return None
    reach = []
    for n, w, st, q in zip(hw, k, s, p):
        if n + 2 * q < w:
            raise SpecError(f"{name}: pooling input size {n} with padding {q} is smaller than the kernel {w}")
        count = -(-(n + 2 * q - w) // st) + 1
        if (count - 1) * st >= n + q:
            count -= 1
        reach.append((count - 1) * st + w - n - 2 * q)  # the last window's end, (count - 1) * s - p + k, past I + p
    return reach


def _adaptive_windows(n: int, out: int) -> np.ndarray:
    """(out, n): row i averages torch's adaptive-pool window [floor(i * n / out), ceil((i + 1) * n / out))."""
    a = np.zeros((out, n))
    for i in range(out):
        lo, hi = i * n // out, -(-(i + 1) * n // out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _shape_or_none(t: Any) -> tuple[int, ...] | None:
    """The tensor's shape; None for no tensor or one TensorRT cannot compute (RTX and 10+ raise, 8.6 may give
    dimensions with a negative count)."""
    try:
        return None if t is None else tuple(t.shape)
    except (RuntimeError, ValueError, TypeError):
        return None


def _check_volume(src: tuple[int, ...], dims: tuple[int, ...], name: str) -> None:
    """Refuse a reshape of `src` to `dims` (0 copies src's dimension there, -1 is inferred) that changes the number
    of values, where the dimensions not copied are static."""
    rest = [n for d, n in enumerate(src) if not (d < len(dims) and dims[d] == 0)]
    fixed = [n for n in dims if n > 0]
    if any(n < 0 for n in rest) or 0 in dims[len(src):] or not all(rest):
        return
    have, want = math.prod(rest), math.prod(fixed)
    if have % want if -1 in dims else have != want:
        raise SpecError(f"{name}: reshape of {src} to {list(dims)}: {have} values (beside the dimensions 0 keeps) "
                        f"{'are not a multiple of' if -1 in dims else 'cannot fill'} {want}")


def _ints(v: Any, n: int | None, what: str) -> tuple[int, ...]:
    """`v` (one integer, or a list of them) as a tuple of `n` integers (any length for n=None)."""
    vals = list(v) if isinstance(v, (list, tuple)) else [v] * (n or 1)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in vals) or (n is not None and len(vals) != n):
        raise SpecError(f"{what} {v!r}: expected {n or 'a list of'} integer(s)")
    return tuple(vals)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    """A kernel size, stride, padding or dilation: one integer or two (a YAML value such as 2.5 or 'two' is an
    error, not truncated)."""
    pair = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
    if len(pair) != 2 or not all(map(_is_int, pair)):
        raise SpecError(f"expected an integer or two integers (a kernel size, stride, padding or dilation), got {v!r}")
    return int(pair[0]), int(pair[1])


def _check_conv_args(prefix: str, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], d: tuple[int, int],
                     g: Any) -> None:
    """A convolution's kernel, stride and dilation must be positive, its padding not negative and its groups a
    positive integer, as torch requires (TensorRT only logs a bad one and keeps its default: a silently other layer)."""
    if min(*k, *s, *d) < 1 or min(p) < 0 or not _is_int(g) or g < 1:
        raise SpecError(f"{prefix}: convolution kernel {list(k)}, stride {list(s)}, padding {list(p)}, dilation "
                        f"{list(d)}, groups {g!r}: positive kernel, stride, dilation and groups, padding not negative "
                        f"(as torch requires)")


def _check_channels(prefix: str, c2: Any) -> None:
    """An output channel count from the YAML: a positive integer."""
    if not _is_int(c2) or c2 < 1:
        raise SpecError(f"{prefix}: output channels {c2!r}: expected a positive integer")


def _is_int(n: Any) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool)


# Modules of Ultralytics heads that only some tasks have: what a file holding them was trained for
_HEAD_PARTS = {"proto": "mask prototypes of a segmentation head, a -seg model",
               "cv4": "the extra branch of a segmentation, pose or oriented-box head: a -seg or -pose model (-obb "
                      "oriented boxes have no netdef architecture)",
               "one2one_cv2": "YOLO26's end-to-end branch, a yolo26 model",
               "one2one_cv4": "the extra branch of a YOLO26 segmentation, pose or oriented-box head: a -seg or -pose "
                              "model (-obb oriented boxes have no netdef architecture)"}


def unused_modules_hint(unused: list[str], used: set[str], read_by: Mapping[str, str] | None = None) -> str:
    """Where unused keys form whole modules the architecture never reads (another head, another model), a line
    naming them (and what such a module means for Ultralytics' heads); '' where some unused keys belong to
    modules the architecture does read (a differently configured block: the key list tells more). Where each such
    module sits beside keys that one row reads (`read_by`: key -> its row's YAML file:line), the line names the
    row whose block may have forgotten to read it."""
    named = _whole_modules(unused, used)
    if not named:
        return ""
    forgotten = _forgotten_parts(unused, used, read_by or {})
    if forgotten:
        return ("\nThe unused keys are parts of modules the architecture reads: "
                + "; ".join(f"{', '.join(parts)} beside the keys {where} reads" for where, parts in forgotten.items())
                + ". Does that row's block forget to read them (a BatchNorm, a bias, a second convolution), or were "
                  "the weights saved from a differently configured module?")
    return (f"\nThe unused keys are whole modules this architecture does not have: {named}. Either the weights are "
            "of another architecture or task (build the one they were trained with), or the YAML leaves out rows "
            "for these modules (add them); --no-strict would drop those modules: right only if you removed them on "
            "purpose")


def _forgotten_parts(unused: list[str], used: set[str], read_by: Mapping[str, str]) -> dict[str, list[str]]:
    """{row location: the unused modules under a module whose other keys only that row reads}; {} unless every
    unused module is such a part (not one of Ultralytics' task-specific head parts, which _HEAD_PARTS explains)."""
    parts: dict[str, list[str]] = {}
    for module in _module_groups(unused, used):
        if module is None or "." not in module or module.rsplit(".", 1)[-1] in _HEAD_PARTS:
            return {}
        parent = module.rsplit(".", 1)[0] + "."
        rows = {where for k, where in read_by.items() if k.startswith(parent)}
        if len(rows) != 1 or not next(iter(rows)):
            return {}
        parts.setdefault(rows.pop(), []).append(module)
    return parts


def _default_prefix_hint(missing: Mapping[str, str], present: Iterable[str], used: set[str]) -> str:
    """Where the missing keys are all model.<row>.* (the prefix of a row that names none), the file has no
    model.* key and the other rows' keys are read, a line saying to give those rows their prefixes; '' otherwise."""
    if not used or not missing or not all(re.match(r"model\.\d+\.", k) for k in missing) \
            or any(k.startswith("model.") for k in present):
        return ""
    first = next(iter(missing))
    where = missing[first]
    return (f"\nThe missing keys are model.<row>.* ({first}{f', {where}' if where else ''}): a row without a "
            "prefix (its 5th item) reads model.<row>.* (Ultralytics' key names): give it the module's prefix, "
            "[from, number, block, args, prefix]")


def _repeat_hint(missing: Mapping[str, str], unused: list[str], present: Iterable[str], used: set[str]) -> str:
    """Where the missing (else the unused) keys form whole units of a sequence (`x.3` or `x.block2-3`, numbered
    after a unit `x.0` or `x.block2-0` the file has, or the architecture reads), a line asking about a row too
    many (missing) or a row's `number` larger (smaller) than the model's; '' otherwise."""
    for keys, others, more in ((list(missing), set(present), True), (unused, used, False)):
        groups = _module_groups(keys, others)
        if not keys or not groups or None in groups:
            continue
        prefixes = {".".join(k.split(".")[:i]) for k in others for i in range(1, k.count(".") + 1)}
        units = [re.fullmatch(r"(.*\.(?:[^.]*[-_])?)(\d+)", m) for m in groups]
        if not all(u and any(f"{u[1]}{i}" in prefixes for i in range(int(u[2]))) for u in units):
            return ""
        named = ", ".join(list(groups)[:4]) + (", ..." if len(groups) > 4 else "")
        where = f" ({missing[keys[0]]})" if more and missing[keys[0]] else ""
        return (f"\nThe {'missing' if more else 'unused'} keys are whole units {named} after units "
                f"{'the file has' if more else 'the architecture reads'}: a row {'too many' if more else 'missing'}, "
                f"or a row's number (repeats) {'larger' if more else 'smaller'} than the model's{where}? (In a "
                "scaled family: weights of another depth)")
    return ""


def _lost_and_spare(missing: Iterable[str], unused: Iterable[str], present: Iterable[str],
                    used: set[str]) -> tuple[dict[str | None, list[str]], dict[str, set[str]]] | None:
    """(the modules the missing keys belong to, each unused module of the file with its keys' endings) for the
    hints that look for a missing module's twin among the unused ones; None where no missing key has a module."""
    lost = _module_groups(missing, present)
    if not lost or None in lost:
        return None
    return lost, {u: {k[len(u):] for k in ks} for u, ks in _module_groups(unused, used).items() if u is not None}


def _sequence_row_hint(missing: Mapping[str, str], unused: list[str], present: Iterable[str], used: set[str]) -> str:
    """Where each missing module is `x.N.j` and the file's unused `x.{N + j}` has its keys (a row `[-1, 2, Fire, ...,
    x.N]` of a block without repeat_arg, repeated as x.N.0, x.N.1 for the file's x.N, x.{N+1}), a line saying to
    give each module its row; '' otherwise."""
    groups = _lost_and_spare(missing, unused, present, used)
    if groups is None:
        return ""
    lost, spare = groups
    pairs = []
    for m, keys in lost.items():
        unit = re.fullmatch(r"(.*)\.(\d+)\.(\d+)", m)
        twin = unit and f"{unit[1]}.{int(unit[2]) + int(unit[3])}"
        if not twin or spare.get(twin) != {k[len(m):] for k in keys}:
            return ""
        pairs.append(f"{m} = {twin}")
    first = next(iter(missing))
    where = f" ({missing[first]})" if missing[first] else ""
    return (f"\nThe missing modules are the file's next ones under other names ({', '.join(pairs[:4])}"
            f"{', ...' if len(pairs) > 4 else ''}): a row whose number repeats a block without a repeat argument"
            f"{where} names the repeats prefix.0, prefix.1, ...; give each module its own row (number 1)")


def _shifted_rows_hint(missing: Mapping[str, str], unused: list[str], present: Iterable[str]) -> str:
    """Where each missing key `x.N.rest` is the file's unused `x.{N + 1}.rest` (rows whose key prefixes count the
    rows, Ultralytics' model.N, each reading the keys of the module before theirs: the YAML lacks a row), a line
    naming the first module the rows read short; '' otherwise, and where the file has no key of that first module
    x.N (two rows swapped around a weightless one, an Upsample: `missing_modules_hint` says that better)."""
    spare, shifted = set(unused), []
    for key in missing:
        m = re.fullmatch(r"(.*?)\.(\d+)\.(.+)", key)
        if not m or f"{m[1]}.{int(m[2]) + 1}.{m[3]}" not in spare:
            return ""
        shifted.append((m[1], int(m[2]), key))
    if not shifted or len({base for base, _, _ in shifted}) != 1:
        return ""
    base, n, first = min(shifted, key=lambda s: s[1])
    if not any(key.startswith(f"{base}.{n}.") for key in present):
        return ""
    rest = first[len(f"{base}.{n}."):]
    return (f"\nEach missing key is the file's unused key of the next module ('{first}' is the file's "
            f"'{base}.{n + 1}.{rest}'): the rows from {missing[first] or f'the one of {base}.{n}'} on read the keys of "
            f"the module before theirs. Is a row missing from the YAML (the file's {base}.{n}, or one before it)? The "
            "rows after a missing one also get its input, and their `from` indices shift")


def _bias_hint(missing: Mapping[str, str], used: set[str]) -> str:
    """Where every missing key is the bias of a module whose weight was read (nn.Conv2d(..., bias=False) built by a
    row that adds a bias), a line saying how to leave the bias out; '' otherwise."""
    modules = [k.removesuffix(".bias") for k in missing]
    if not modules or not all(k.endswith(".bias") and f"{m}.weight" in used for k, m in zip(missing, modules)):
        return ""
    named = ", ".join(modules[:4]) + (", ..." if len(modules) > 4 else "")
    return (f"\nThe file has the weight but no bias of {named}: modules made with bias=False. Give their rows bias: "
            "false (the Conv2d, ConvTranspose2d and Linear blocks take it), or pass bias=False to net.conv, "
            "net.deconv or net.linear in a block")


def missing_modules_hint(missing: list[str], present: Iterable[str]) -> str:
    """Where missing keys form whole modules the file has no key of (another head, another model), a line naming
    them; '' otherwise."""
    named = _whole_modules(missing, set(present))
    return (f"\nThe missing keys are whole modules the file does not have: {named}. The weights are of another "
            "architecture or task: build the one they were trained with") if named else ""


def _whole_modules(keys: list[str], others: set[str]) -> str:
    """`keys` grouped by the shortest module prefix that no key of `others` has ("module (n keys[: what an
    Ultralytics head part means])", ...); '' where a key has no such prefix."""
    modules = _module_groups(keys, others)
    if not modules or None in modules:
        return ""
    named = [f"{m} ({len(ks)} key{'s' if len(ks) > 1 else ''}" + (f": {_HEAD_PARTS[m.rsplit('.', 1)[-1]]})"
                                                               if m.rsplit(".", 1)[-1] in _HEAD_PARTS else ")")
             for m, ks in list(modules.items())[:8] if m is not None]
    return ", ".join(named) + (", ..." if len(modules) > 8 else "")


def _module_groups(keys: Iterable[str], others: Iterable[str]) -> dict[str | None, list[str]]:
    """`keys` by the shortest module prefix that no key of `others` has (None: keys without such a prefix)."""
    prefixes = {".".join(k.split(".")[:i]) for k in others for i in range(1, k.count(".") + 1)}
    modules: dict[str | None, list[str]] = {}
    for k in keys:
        parts = k.split(".")
        i = next((i for i in range(1, len(parts)) if ".".join(parts[:i]) not in prefixes), None)
        modules.setdefault(None if i is None else ".".join(parts[:i]), []).append(k)
    return modules


def misspelt_module_hint(missing: Mapping[str, str], unused: list[str], present: Iterable[str],
                         used: set[str]) -> str:
    """Where every missing key belongs to a module the file lacks and each such module (or each of its submodules)
    has exactly one unused module of the file with the same keys under another name (a misspelt prefix in a YAML
    row or block), a line
    naming them and where the first key was asked for; '' otherwise (weights of another architecture, say). Of
    several such modules (a block repeated through the network), the one whose name differs in one part only."""
    groups = _lost_and_spare(missing, unused, present, used)
    if groups is None:
        return ""
    lost, spare = groups
    pairs = []
    for m, keys in lost.items():
        found = _twin_modules(m, keys, spare)
        if not found:
            return _renamed_siblings_hint(lost, unused)
        pairs += found
    m, u, keys = pairs[0]
    where = missing[keys[0]]
    more = f" (and {len(pairs) - 1} more such module(s))" if len(pairs) > 1 else ""
    return (f"\nThe file has no module {m} but an unused module {u} with exactly its {len(keys)} key(s){more}: a "
            f"misspelt module prefix{f' ({where})' if where else ''}? Name the module as the file does")


def _renamed_siblings_hint(lost: Mapping[str, list[str]], unused: Iterable[str]) -> str:
    """Where the modules the file lacks and as many unused ones of the same keys lie one name part apart, but
    cannot be paired by their keys alone (a block that named `fc1` and `fc2` `squeeze` and `excite`): a line
    naming both sets; '' otherwise."""
    found: set[str] = set()
    for m, keys in lost.items():
        depth = m.count(".") + 1
        tails: dict[str, set[str]] = {}  # the unused modules at m's depth, each with its keys' endings
        for k in unused:
            parts = k.split(".")
            if len(parts) > depth:
                tails.setdefault(".".join(parts[:depth]), set()).add(k[len(".".join(parts[:depth])):])
        want = {k[len(m):] for k in keys}
        twins = {u for u, t in tails.items() if t == want and _one_part_apart(m, u)}
        if not twins:
            return ""
        found |= twins
    if len(found) != len(lost):
        return ""

    def some(names: list[str]) -> str:
        return ", ".join(names[:4]) + (f" (and {len(names) - 4} more)" if len(names) > 4 else "")

    return (f"\nThe file has no modules {some(list(lost))} but unused modules {some(sorted(found))} with "
            f"the same keys beside them: misspelt module names (a block naming its layers otherwise than the "
            f"PyTorch module)? Name the modules as the file does")


def _twin_modules(m: str, keys: list[str], spare: Mapping[str, set[str]],
                  sub: bool = False) -> list[tuple[str, str, list[str]]]:
    """[(m, the one unused module with m's keys, m's keys)], else the same for each submodule of m, whose twin must
    be at its own place, one name part apart (a row prefix misspelt in a part other rows share: feature.9 for the
    file's features.9); [] where some key has no twin."""
    tails = {k[len(m):] for k in keys}
    twins = [u for u, t in spare.items() if t == tails]
    if len(twins) > 1 or sub:  # layer1.0.bn1 has layer1.0.norm1, layer1.1.norm1, ...: the one at its own place
        twins = [u for u in twins if _one_part_apart(m, u)]
    if len(twins) == 1:
        return [(m, twins[0], keys)]
    subs: dict[str, list[str]] = {}
    for k in keys:
        rest = k[len(m) + 1:]
        if "." not in rest:  # a key of m itself
            return []
        subs.setdefault(f"{m}.{rest.split('.', 1)[0]}", []).append(k)
    pairs = []
    for part, ks in subs.items():
        found = _twin_modules(part, ks, spare, sub=True)
        if not found:
            return []
        pairs += found
    return pairs


def _one_part_apart(a: str, b: str) -> bool:
    """Whether dotted names `a` and `b` have as many parts and differ in exactly one of them."""
    pa, pb = a.split("."), b.split(".")
    return len(pa) == len(pb) and sum(x != y for x, y in zip(pa, pb)) == 1


def _fused_hint(missing: list[str], unused: list[str]) -> str:
    """Where the missing keys are BatchNorm's and the file has the convolutions' biases instead (a checkpoint
    saved after fusing BatchNorm into the convolutions), a line saying so; '' otherwise."""
    bn = [k for k in missing if ".bn." in k or k.rsplit(".", 2)[-2:-1] == ["bn"]]
    biases = [k for k in unused if k.endswith(".conv.bias")]
    if not bn or len(bn) * 2 < len(missing) or not biases:
        return ""
    return ("\nThe file has convolution biases (e.g. " + biases[0] + ") where the architecture reads BatchNorm: "
            "the model was saved after BatchNorm was fused into its convolutions (Ultralytics' fuse(), a fused "
            "export). Export the checkpoint as trained, before fusing")


def _prefix_hint(missing: list[str], unused: list[str]) -> str:
    """Where at least half the missing keys are unused keys with a prefix added (a DataParallel checkpoint's
    'module.') or removed, a line saying so; '' otherwise."""
    for extra, short, added in ((unused, missing, True), (missing, unused, False)):
        wanted = set(short)
        prefix = next((k[:j + 1] for k in extra[:200] for j, c in enumerate(k) if c == "." and k[j + 1:] in wanted),
                      None)
        if not prefix or sum(k.startswith(prefix) and k[len(prefix):] in wanted for k in extra) * 2 < len(short):
            continue
        if added:
            return (f"\nThe file's keys carry the prefix '{prefix}' the architecture's lack (a DataParallel "
                    f"checkpoint's 'module.', a Lightning module's 'model.', say): export the checkpoint again "
                    f"without it: `netdef export CHECKPOINT --strip-prefix {prefix} -o WEIGHTS.wts`")
        twice = next((k for k in extra if k.startswith(prefix + prefix) and k[len(prefix):] in wanted), None)
        if twice:  # ConvBnAct {conv: stem.0} in row 'stem': stem.stem.0.weight for the file's stem.0.weight
            return (f"\nThe architecture's keys repeat the prefix '{prefix}' ({twice} for the file's "
                    f"{twice[len(prefix):]}): a row's key names (ConvBnAct's conv: and bn:) are relative to the row's "
                    f"prefix: write them without it")
        return (f"\nThe architecture's keys start with '{prefix}' and the file's do not: export the weights of the "
                f"module that holds them (or add the prefix to the keys)")
    return ""
