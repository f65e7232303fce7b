"""The one place that imports TensorRT and knows how its versions differ.

Supported: TensorRT 8.6 (weak typing: precision through builder flags), TensorRT 10.x (both; we use
strong typing), TensorRT 11.x and TensorRT-RTX (strong typing only: precision lives in the network as
casts and Q/DQ). Everything else in netdef asks this module instead of testing versions itself.
CUDA devices too: TensorRT builds, deserializes and runs on the calling thread's current device, which
`use_device(N)` selects (`visible_devices`, `check_device`, `gpu_identity` describe them).
"""
from __future__ import annotations

import collections
import functools
import importlib
import json
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

from . import interrupts
from .errors import OptionError, TensorRTError, TensorRTUnavailable

# Tried in this order; NETDEF_TRT=tensorrt|tensorrt_rtx|tensorrt_rtx_bindings forces one.
_CANDIDATES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")

# The first bytes of a serialized plan, per flavour (TensorRT 8.x-10.x: 'ftrt'; TensorRT-RTX: 'vtrt').
PLAN_MAGICS = {b"ftrt": "TensorRT", b"vtrt": "TensorRT-RTX"}

INSTALL_HINT = (
    "install TensorRT: `pip install tensorrt` (10.x/11.x, with a CUDA GPU) or, to build engines on a "
    "machine without a GPU, `pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings`"
)


@dataclass(frozen=True)
class TrtInfo:
    """What the installed TensorRT can do."""

    module: str  # import name
    flavor: str  # "tensorrt" or "tensorrt-rtx"
    version: str
    major: int
    strongly_typed: bool  # the network carries precision (casts / Q/DQ) instead of builder flags
    weak_typing: bool  # BuilderFlag.FP16 / INT8 exist
    plugins: bool  # plugin layers can be added to a network
    progress_monitor: bool  # IBuilderConfig.progress_monitor exists


@functools.lru_cache(maxsize=None)
def module() -> ModuleType:
    """Import and return the TensorRT Python module, or raise TensorRTUnavailable."""
    forced = os.environ.get("NETDEF_TRT")
    if forced and forced not in _CANDIDATES:
        raise TensorRTUnavailable(f"NETDEF_TRT={forced!r}: use one of {', '.join(_CANDIDATES)} (or leave it unset)")
    names = (forced,) if forced else _CANDIDATES
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as e:  # keep going: the next flavour may be installed
            if _chained(e, KeyboardInterrupt):  # Ctrl-C while its extension initialized: "initialization failed"
                raise KeyboardInterrupt from None
            errors.append(f"{name}: {e}")
    raise TensorRTUnavailable(f"no TensorRT Python module found ({'; '.join(errors)}); {INSTALL_HINT}")


def _chained(e: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether `e` or an exception it was raised from or during is a `kind`."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@functools.lru_cache(maxsize=None)
def info() -> TrtInfo:
    trt = module()
    version = getattr(trt, "__version__", "0")
    rtx = "rtx" in trt.__name__
    weak = hasattr(trt.BuilderFlag, "FP16")
    # 11.x types every network strongly and keeps the STRONGLY_TYPED flag only for compatibility: no FP16 flag
    # means strong typing whether or not a later release still has that flag.
    strong = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") or not weak
    return TrtInfo(
        module=trt.__name__,
        flavor="tensorrt-rtx" if rtx else "tensorrt",
        version=version,
        major=int(version.split(".")[0]),
        strongly_typed=strong,
        weak_typing=weak,
        plugins=not rtx,
        progress_monitor=hasattr(trt, "IProgressMonitor"),
    )


def version_string() -> str:
    i = info()
    return f"{i.flavor} {i.version}"


# ---------------------------------------------------------------- logger, builder, network

LOG_LEVELS = ("VERBOSE", "INFO", "WARNING", "ERROR", "INTERNAL_ERROR")


def logger() -> Any:
    """netdef's TensorRT logger, one per process (TensorRT keeps the first one it is given), at the level
    NETDEF_TRT_LOG=VERBOSE|INFO|WARNING|ERROR (default WARNING, read at each call). In netdef's commands
    (`use_stderr_logger`) it writes to stderr from Python, so stdout stays the command's result (`info --json`);
    made first in a program of yours it is TensorRT's own (a Python logger there could swallow a Ctrl-C:
    TensorRT catches exceptions raised in its callbacks)."""
    level = os.environ.get("NETDEF_TRT_LOG", "WARNING").upper()
    if level not in LOG_LEVELS:
        raise OptionError(f"NETDEF_TRT_LOG={os.environ['NETDEF_TRT_LOG']!r}: use one of {', '.join(LOG_LEVELS[:4])}")
    log = _process_logger(_IN_COMMAND[0])
    severity = getattr(module().ILogger.Severity, level)
    if hasattr(log, "threshold"):
        log.threshold = int(severity)
    else:
        log.min_severity = severity
    return log


_LOGGER: list[Any] = []  # the one logger, made on first use
_IN_COMMAND = [False]  # set by netdef's commands (`netdef.cli.guard`): their logger writes to stderr


def use_stderr_logger() -> bool:
    """TensorRT's messages to stderr from Python, its errors kept for netdef's exceptions (netdef's commands call
    this: stdout stays the command's result). False where netdef's TensorRT logger exists already as TensorRT's
    own (TensorRT keeps the first logger it is given): call it before netdef's first TensorRT call."""
    _IN_COMMAND[0] = True
    return not _LOGGER or type(_LOGGER[0]).__name__ == "StderrLogger"


_ERRORS: collections.deque[str] = collections.deque(maxlen=8)  # TensorRT's last error messages (netdef's logger)
_ERROR_COUNT = [0]  # how many error messages netdef's logger has seen in this process


def forget_errors() -> None:
    """Drop the error messages kept so far (a new network's layers may reuse an earlier one's names)."""
    _ERRORS.clear()


def last_error(about: str) -> str | None:
    """TensorRT's first recent error message naming `about` (a layer: the cause, before its consequences), where
    netdef's logger saw it (its commands)."""
    return next((m for m in _ERRORS if about in m), None)


def error_mark() -> int:
    """A mark for `errors_since`: the count of TensorRT error messages netdef's logger has seen so far."""
    return _ERROR_COUNT[0]


def errors_since(mark: int) -> list[str]:
    """TensorRT's error messages since `error_mark()` gave `mark` (the last 8 at most), where netdef's logger saw
    them (its commands)."""
    n = min(_ERROR_COUNT[0] - mark, len(_ERRORS))
    return list(_ERRORS)[len(_ERRORS) - n:] if n > 0 else []


def _process_logger(in_command: bool) -> Any:
    if not _LOGGER:
        _LOGGER.append(_stderr_logger() if in_command else module().Logger(module().Logger.WARNING))
    return _LOGGER[0]


_NO_DRIVER = "cudaError 35"  # "CUDA driver version is insufficient": what CUDA says where there is no GPU


def _stderr_logger() -> Any:
    trt = module()
    letters = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}  # INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE

    class StderrLogger(trt.ILogger):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.threshold = int(trt.ILogger.Severity.WARNING)

        @interrupts.trt_callback
        def log(self, severity: Any, msg: str) -> None:
            if _NO_DRIVER in msg and _ERRORS and info().flavor == "tensorrt-rtx" and gpu_identity() is None:
                return  # TensorRT-RTX on a machine without a GPU, after another error: not that error's cause
            if int(severity) <= 1:  # (INTERNAL_)ERROR: kept for netdef's own error messages
                _ERRORS.append(msg)
                _ERROR_COUNT[0] += 1
            if int(severity) > self.threshold or (interrupts.CANCEL.is_set() and "BuildCanceled" in msg):
                return  # (a build netdef cancelled on a signal: that is said once, by netdef)
            sys.stderr.write(f"[TRT] [{letters.get(int(severity), '?')}] {msg}\n")
            sys.stderr.flush()

    return StderrLogger()


def create_builder() -> Any:
    return module().Builder(logger())


def create_network(builder: Any) -> tuple[Any, bool]:
    """A network in explicit-batch mode; strongly typed where this TensorRT has it. Returns (network, strong)."""
    trt = module()
    flags = 0
    strong = info().strongly_typed
    if strong:
        if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # 8.x: implicit batch is the default
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return builder.create_network(flags), strong


def configure_precision(config: Any, precision: str, strong: bool, tf32: bool = True, definition: Any = None) -> None:
    """Weakly typed networks (8.6) get builder flags, and the builder honours a layer's own `precision` (a layer
    a block keeps in fp32) when the network has one; strongly typed ones already carry their types."""
    trt = module()
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if strong:
        return
    if definition is not None and any(getattr(definition.get_layer(i), "precision_is_set", False)
                                      for i in range(definition.num_layers)):
        prefer_layer_precisions(config)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        # Explicit quantization (Q/DQ) still needs the INT8 flag on weakly typed TensorRT.
        config.set_flag(trt.BuilderFlag.INT8)


def configure_target(config: Any, compute_capability: str | None) -> None:
    """TensorRT-RTX builds without a GPU for a named compute capability (e.g. '8.6'; default 8.6 without a GPU,
    else the GPU's). Only `compute_capability` (--compute-capability) chooses it: the engine header and the build
    key record that choice (`compiler.target_identity`)."""
    if not hasattr(config, "set_compute_capability"):
        return
    target = _compute_capability_target(compute_capability or ("8.6" if gpu_identity() is None else "current"))
    config.num_compute_capabilities = 1
    config.set_compute_capability(target, 0)


def check_compute_capability(compute_capability: str | None) -> None:
    """An OptionError naming --compute-capability and the targets this TensorRT-RTX supports where it cannot build
    for `compute_capability` ('9.0'; normalised by `BuildOptions`), told before the weights are read; nothing for
    None or a TensorRT without build targets (full TensorRT builds for its GPU)."""
    if compute_capability is not None and hasattr(module(), "ComputeCapability"):
        _compute_capability_target(compute_capability)


def _compute_capability_target(cc: str) -> Any:
    """TensorRT-RTX's ComputeCapability member for 'MAJOR.MINOR' or 'current', or an OptionError listing those it has
    (they change with its version: SM75 to SM121 in 1.7)."""
    trt = module()
    name = "CURRENT" if cc == "current" else "SM" + cc.replace(".", "")
    target = getattr(trt.ComputeCapability, name, None)
    valid = ", ".join(f"{m[2:-1]}.{m[-1]}" for m in trt.ComputeCapability.__members__ if m.startswith("SM"))
    if target is None:
        raise OptionError(f"--compute-capability {cc}: {version_string()} cannot build for it; it targets "
                          f"{valid} (or current, the GPU's)")
    if cc == "current" and gpu_identity() is None:  # else the build fails in TensorRT with a CUDA driver error
        raise OptionError(f"--compute-capability current: the GPU's, and no CUDA GPU is visible here; without one "
                          f"{version_string()} builds for a compute capability named: {valid}")
    return target


def timing_cache_supported() -> bool:
    """TensorRT-RTX on a machine without a GPU has no tactics to time (its cache fails to deserialize)."""
    return not (info().flavor == "tensorrt-rtx" and gpu_identity() is None)


def set_optimization_level(config: Any, level: int | None) -> None:
    if level is not None:
        config.builder_optimization_level = int(level)


def disable_library_tactics(config: Any) -> None:
    """No cuBLAS/cuBLASLt/cuDNN tactic sources: TensorRT 8.6 otherwise loads libcublas.so.12 for networks with
    plugin layers (their attachToContext handles) and fails where that CUDA 12 library is absent. 10+ has them
    off by default; netdef's plugins use none of them."""
    trt = module()
    sources = getattr(trt, "TacticSource", None)
    if sources is None or not hasattr(config, "get_tactic_sources"):
        return
    mask = int(config.get_tactic_sources())
    for name in ("CUBLAS", "CUBLAS_LT", "CUDNN"):
        if hasattr(sources, name):
            mask &= ~(1 << int(getattr(sources, name)))
    config.set_tactic_sources(mask)


def prefer_layer_precisions(config: Any) -> bool:
    """Weakly typed builds (8.6, 10.x): honour ILayer.precision where possible; False where there is no such flag."""
    flag = getattr(module().BuilderFlag, "PREFER_PRECISION_CONSTRAINTS", None)
    if flag is None:
        return False
    config.set_flag(flag)
    return True


def check_refittable() -> None:
    """Refuse a refittable build this TensorRT cannot make whatever the network (before the weights are read)."""
    if info().flavor == "tensorrt-rtx" and gpu_identity() is None:
        raise TensorRTUnavailable(f"{version_string()} cannot build refittable engines without a GPU (its kernel "
                                  "compiler needs CUDA): build with --refittable on a GPU machine")


def set_refittable(config: Any, definition: Any) -> None:
    """Build an engine whose weights can be replaced later (IRefitter). TensorRT 11.3 documents that REFIT
    can drop a GEMM bias that the refit API does not expose (its REFIT_IDENTICAL alternative only takes the
    build's own weights): refused there for networks with a matrix multiply rather than built wrong. The 11.4
    documentation's refit page no longer carries that warning."""
    trt = module()
    i = info()
    check_refittable()
    if i.version.startswith("11.3.") and any(definition.get_layer(k).type == trt.LayerType.MATRIX_MULTIPLY
                                             for k in range(definition.num_layers)):
        raise TensorRTUnavailable(f"{version_string()}: a refittable engine with a matrix multiply can lose its "
                                  "bias (TensorRT 11.3 known issue); build without --refittable or use another "
                                  "TensorRT version")
    config.set_flag(trt.BuilderFlag.REFIT)


def inspector_output_format(tensor: Any) -> str | None:
    """One output's format as the inspector gives it: 'Format/Datatype' up to 10.x; 11.x splits that field
    (its I/O tensors carry 'Format' and 'DataType'), so those are joined; None where neither is there."""
    if not isinstance(tensor, dict):
        return None
    if tensor.get("Format/Datatype"):
        return str(tensor["Format/Datatype"])
    parts = [str(tensor[k]) for k in ("Format", "DataType", "Datatype") if tensor.get(k)]
    return " ".join(parts) or None


def set_detailed_profiling(config: Any) -> None:
    """Keep each engine layer's type, tactic and formats in the engine (for `netdef profile`)."""
    config.profiling_verbosity = module().ProfilingVerbosity.DETAILED


def set_workspace(config: Any, mib: int | None) -> None:
    if mib is not None:
        config.set_memory_pool_limit(module().MemoryPoolType.WORKSPACE, int(mib) << 20)


def attach_progress(config: Any, monitor: Any) -> bool:
    """Attach an IProgressMonitor (TensorRT >= 10); returns False where the API is missing (8.6)."""
    if monitor is None or not info().progress_monitor:
        return False
    config.progress_monitor = monitor
    return True


def progress_monitor_base() -> type | None:
    return getattr(module(), "IProgressMonitor", None) if info().progress_monitor else None


# ---------------------------------------------------------------- layers whose API moved between versions

def set_resize_mode(layer: Any, mode: str, align_corners: bool = False) -> None:
    """Give a resize layer F.interpolate's semantics: 'nearest' (source index floor(dst * in / out), asymmetric)
    or 'bilinear' (half-pixel centres, or corner-aligned with `align_corners`)."""
    trt = module()
    modes = trt.ResizeMode if hasattr(trt, "ResizeMode") else trt.InterpolationMode  # 8.x / 10.x, RTX
    C = trt.ResizeCoordinateTransformation
    if mode == "nearest":
        layer.resize_mode = modes.NEAREST
        layer.coordinate_transformation = C.ASYMMETRIC
        layer.nearest_rounding = trt.ResizeRoundMode.FLOOR
    else:
        layer.resize_mode = modes.LINEAR
        layer.coordinate_transformation = C.ALIGN_CORNERS if align_corners else C.HALF_PIXEL


def slice_mode(kind: str) -> Any:
    """The slice layer's mode for out-of-bounds coordinates: 'strict', 'fill', 'reflect' or 'wrap' (8.x calls the
    enum SliceMode with DEFAULT for strict; 10+ and RTX SampleMode with STRICT_BOUNDS)."""
    trt = module()
    modes = getattr(trt, "SampleMode", None) or trt.SliceMode
    names = {"strict": "STRICT_BOUNDS" if hasattr(modes, "STRICT_BOUNDS") else "DEFAULT", "fill": "FILL",
             "reflect": "REFLECT", "wrap": "WRAP"}
    return getattr(modes, names[kind])


def add_linspace(network: Any, shape: tuple[int, ...]) -> Any:
    """A fill layer in LINSPACE mode with float32 output (10+ and RTX take the output type; 8.6 has no such
    argument and computes float32 from float32 start and delta tensors, which the caller sets as inputs 1 and 2)."""
    trt = module()
    try:
        return network.add_fill(tuple(shape), trt.FillOperation.LINSPACE, trt.float32)
    except TypeError:
        return network.add_fill(tuple(shape), trt.FillOperation.LINSPACE)


def gelu_activation(approximate: str) -> Any:
    """TensorRT's own GELU activation for approximate 'none' (erf) or 'tanh', or None where this version has
    none (8.6: compose it from unary and elementwise layers)."""
    return getattr(module().ActivationType, "GELU_ERF" if approximate == "none" else "GELU_TANH", None)


def keep_fp32(layer: Any, *, strict: bool = True) -> None:
    """Weakly typed networks (8.6): ask the builder to run `layer` in float32 (its precision and floating output
    types; `configure_precision` then sets PREFER_PRECISION_CONSTRAINTS); a normalization layer also computes
    its statistics in float32 (compute precision). `strict=False`: the compute precision alone, the builder
    chooses everything else (a precision constraint inside a region TensorRT 8.6 fuses, such as a transformer
    block, runs that whole region in float32). Strongly typed networks carry the type in the tensors instead
    (the caller casts)."""
    trt = module()
    if layer.type == trt.LayerType.NORMALIZATION and hasattr(layer, "compute_precision"):
        layer.compute_precision = trt.float32
    floating = (trt.float32, trt.float16)
    outs = [layer.get_output(i) for i in range(layer.num_outputs)]
    if not strict or not outs or any(t.dtype not in floating for t in outs) or layer.type == trt.LayerType.CONSTANT:
        return  # loose: the builder chooses; shape arithmetic and constants have no precision to keep
    layer.precision = trt.float32
    for i in range(layer.num_outputs):
        layer.set_output_type(i, trt.float32)


def add_uint8_conversion(network: Any, x: Any, dtype: Any, strongly_typed: bool) -> Any:
    """The layer turning the uint8 tensor `x` (a network input) into `dtype` (float32 or float16): a cast in a
    strongly typed network; in a weakly typed one (8.6, 10) an identity layer with that output type, the conversion
    TensorRT 8.x documents for uint8 network inputs."""
    if strongly_typed:
        return network.add_cast(x, dtype)
    layer = network.add_identity(x)
    layer.set_output_type(0, dtype)
    return layer


def add_quantize(network: Any, x: Any, scale: Any, axis: int | None) -> Any:
    """A QuantizeLayer to INT8 (8.6 infers the output type; 10+ takes it as an argument)."""
    trt = module()
    try:
        layer = network.add_quantize(x, scale, trt.int8)
    except TypeError:
        layer = network.add_quantize(x, scale)
    if axis is not None:
        layer.axis = axis
    return layer


def add_dequantize(network: Any, x: Any, scale: Any, axis: int | None, dtype: Any) -> Any:
    """A DequantizeLayer to `dtype` (a TensorRT DataType; 10+ and RTX). 8.6 takes no type: its output is
    float32 and the INT8/FP16 builder flags choose the precision. Scales are float32 constants everywhere
    (TensorRT-RTX also accepts them with float16 inputs)."""
    try:
        layer = network.add_dequantize(x, scale, dtype)
    except TypeError:
        layer = network.add_dequantize(x, scale)
    if axis is not None:
        layer.axis = axis
    return layer


# ---------------------------------------------------------------- weights of a network definition (refit)

def _weight_attrs() -> dict[Any, dict[str, tuple[type, str]]]:
    """Layer type -> {WeightsRole name: (layer class, attribute)} for the weights netdef's layers carry."""
    trt = module()
    L = trt.LayerType
    table = {L.CONVOLUTION: {"KERNEL": (trt.IConvolutionLayer, "kernel"), "BIAS": (trt.IConvolutionLayer, "bias")},
             L.CONSTANT: {"CONSTANT": (trt.IConstantLayer, "weights")},
             L.SCALE: {"SCALE": (trt.IScaleLayer, "scale"), "SHIFT": (trt.IScaleLayer, "shift")}}
    if hasattr(L, "DECONVOLUTION"):
        table[L.DECONVOLUTION] = {"KERNEL": (trt.IDeconvolutionLayer, "kernel"),
                                  "BIAS": (trt.IDeconvolutionLayer, "bias")}
    return table


def layer_weights(definition: Any) -> dict[tuple[str, str], np.ndarray]:
    """(layer name, WeightsRole name) -> the weights array of every weighted layer of a network definition."""
    definition = getattr(definition, "raw", definition)
    attrs = _weight_attrs()
    out: dict[tuple[str, str], np.ndarray] = {}
    for i in range(definition.num_layers):
        layer = definition.get_layer(i)
        roles = attrs.get(layer.type)
        if not roles:
            continue
        for role, (cls, attr) in roles.items():
            layer.__class__ = cls  # the Python bindings' downcast to the layer's own interface
            arr = np.array(getattr(layer, attr), copy=True)  # a view of the network's own buffer otherwise
            if arr.size:
                out[(layer.name, role)] = arr
    return out


def network_structure(definition: Any) -> list[tuple[str, str, list]]:
    """(layer name, layer type, output shapes) of every layer: what a refit must leave unchanged."""
    definition = getattr(definition, "raw", definition)
    out = []
    for i in range(definition.num_layers):
        layer = definition.get_layer(i)
        shapes = [list(layer.get_output(k).shape) for k in range(layer.num_outputs)]
        out.append((layer.name, str(layer.type), shapes))
    return out


# ---------------------------------------------------------------- layers as plain data (netdef.verify)

@dataclass
class LayerDescription:
    """A network-definition layer as plain Python data: what `netdef.verify` evaluates without TensorRT."""

    index: int
    name: str
    type: str  # the LayerType's name: CONVOLUTION, ACTIVATION, ...
    inputs: list[str | None]  # input tensor names (None: an optional input left unset)
    outputs: list[str]
    output_dtypes: list[str]  # numpy dtype names
    output_shapes: list[tuple[int, ...]]
    attrs: dict[str, Any]  # enums as their names, dims and permutations as int tuples, data types as numpy names
    weights: dict[str, np.ndarray]  # kernel, bias, scale, shift, power, weights (constant): flat copies


# The interface of each layer type whose attributes netdef reads (Python bindings downcast by class assignment)
_LAYER_CLASSES = {
    "CONVOLUTION": "IConvolutionLayer", "DECONVOLUTION": "IDeconvolutionLayer", "ACTIVATION": "IActivationLayer",
    "POOLING": "IPoolingLayer", "SCALE": "IScaleLayer", "SOFTMAX": "ISoftMaxLayer",
    "CONCATENATION": "IConcatenationLayer", "ELEMENTWISE": "IElementWiseLayer", "UNARY": "IUnaryLayer",
    "PADDING": "IPaddingLayer", "SHUFFLE": "IShuffleLayer", "REDUCE": "IReduceLayer",
    "MATRIX_MULTIPLY": "IMatrixMultiplyLayer", "CONSTANT": "IConstantLayer", "IDENTITY": "IIdentityLayer",
    "CAST": "ICastLayer", "SLICE": "ISliceLayer", "SHAPE": "IShapeLayer", "RESIZE": "IResizeLayer",
    "SELECT": "ISelectLayer", "GATHER": "IGatherLayer", "NORMALIZATION": "INormalizationLayer", "FILL": "IFillLayer",
    "TOPK": "ITopKLayer",
}


# Attributes that an input tensor replaces when it is set (reading them then fails or warns): {type: {input: attrs}}
_TENSOR_ATTRS = {"RESIZE": {1: ("scales", "shape")}, "SHUFFLE": {1: ("reshape_dims",)},
                 "SLICE": {1: ("start",), 2: ("shape",), 3: ("stride",)},
                 "FILL": {0: ("shape",), 1: ("alpha",), 2: ("beta",)}}


def describe_layers(definition: Any) -> list[LayerDescription]:
    """Every layer of a network definition, in order, as a LayerDescription."""
    definition = getattr(definition, "raw", definition)
    return [describe_layer(definition.get_layer(i), i) for i in range(definition.num_layers)]


def describe_layer(layer: Any, index: int = 0) -> LayerDescription:
    """One layer (as `INetworkDefinition.get_layer` returns it) as plain data; its own attributes are read
    from its interface where netdef knows it (other layer types keep only their name, type and tensors)."""
    trt = module()
    kind = layer.type.name
    inputs = [None if t is None else t.name for t in (layer.get_input(i) for i in range(layer.num_inputs))]
    outs = [layer.get_output(i) for i in range(layer.num_outputs)]
    desc = LayerDescription(index, layer.name, kind, inputs, [t.name for t in outs], [dtype_name(t.dtype) for t in outs],
                            [tuple(int(d) for d in t.shape) for t in outs], {}, {})
    cls = getattr(trt, _LAYER_CLASSES.get(kind, ""), None)
    if cls is None:
        return desc
    base = set(dir(trt.ILayer)) - {"type"}  # `type` of an activation/pooling interface is its own enum
    base |= {a for i, attrs in _TENSOR_ATTRS.get(kind, {}).items() if i < len(inputs) and inputs[i] for a in attrs}
    layer.__class__ = cls
    for attr in dir(cls):
        if attr.startswith("_") or attr in base or hasattr(cls, f"{attr}_nd"):  # 8.x's deprecated 2-D forms
            continue
        try:
            with warnings.catch_warnings():  # reading a deprecated attribute is harmless here
                warnings.simplefilter("ignore", DeprecationWarning)
                value = getattr(layer, attr)
        except Exception:  # noqa: BLE001  an attribute that does not apply to this layer's settings
            continue
        if isinstance(value, (trt.Weights, np.ndarray)):
            desc.weights[attr] = np.array(value, copy=True).ravel()
        elif callable(value):
            continue
        else:
            desc.attrs[attr] = _plain(value, trt)
    if isinstance(layer.type, trt.LayerType):  # the interface's `type` was the LayerType itself
        desc.attrs.pop("type", None)
    return desc


def _plain(value: Any, trt: ModuleType) -> Any:
    """A TensorRT attribute value as plain Python: data types as numpy names, enums as names, dims as tuples."""
    if isinstance(value, trt.DataType):
        return dtype_name(value)
    if hasattr(type(value), "__members__") and hasattr(value, "name"):
        return value.name
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, list):
        return [float(v) for v in value]
    return tuple(int(v) for v in value)  # Dims, Permutation


def refit_engine(engine: Any, arrays: dict[tuple[str, str], np.ndarray]) -> int:
    """Give every refittable weight of a deserialized engine its new array (by layer name and role) and refit it;
    returns the number of weights set. TensorRT's list of refittable weights decides what is needed: one the
    arrays lack, or one it refuses, is an error, and so is a weight it still reports missing."""
    trt = module()
    refitter = trt.Refitter(engine, logger())
    names, roles = refitter.get_all()
    lacking = [f"{n} ({r.name})" for n, r in zip(names, roles) if (n, r.name) not in arrays]
    if lacking:
        raise TensorRTError(f"the new network has no weights for {len(lacking)} refittable engine weight(s): "
                            f"{', '.join(lacking[:5])}; rebuild the engine")
    keep = []
    for n, r in zip(names, roles):
        arr = np.ascontiguousarray(arrays[(n, r.name)])
        keep.append(arr)
        if not refitter.set_weights(n, r, trt.Weights(arr)):
            raise TensorRTError(f"TensorRT refused the new {r.name} weights of layer {n} ({arr.size} values, "
                                f"{arr.dtype}; see its messages above): rebuild the engine")
    missing_names, missing_roles = refitter.get_missing()
    if missing_names:
        raise TensorRTError(f"TensorRT still misses {len(missing_names)} weight(s) after the refit: "
                            f"{', '.join(f'{n} ({r.name})' for n, r in zip(missing_names, missing_roles))}")
    with interrupts.tensorrt_call():
        done = refitter.refit_cuda_engine()
    if not done:
        raise TensorRTError("TensorRT could not refit the engine (see its messages above)")
    return len(names)


def serialize(engine: Any) -> bytes:
    """The plan of a deserialized (e.g. refitted) engine."""
    plan = engine.serialize()
    if plan is None:
        raise TensorRTError("TensorRT could not serialize the engine (see its messages above)")
    return bytes(plan)


# ---------------------------------------------------------------- data types

def trt_dtype(np_dtype: Any) -> Any:
    trt = module()
    table = {np.dtype(np.float32): trt.float32, np.dtype(np.float16): trt.float16,
             np.dtype(np.int32): trt.int32, np.dtype(np.int8): trt.int8, np.dtype(np.bool_): trt.bool}
    if hasattr(trt, "int64"):
        table[np.dtype(np.int64)] = trt.int64
    if hasattr(trt, "uint8"):
        table[np.dtype(np.uint8)] = trt.uint8
    return table[np.dtype(np_dtype)]


def np_dtype(trt_type: Any) -> np.dtype:
    trt = module()
    table = {trt.float32: np.float32, trt.float16: np.float16, trt.int32: np.int32,
             trt.int8: np.int8, trt.bool: np.bool_}
    if hasattr(trt, "int64"):
        table[trt.int64] = np.int64
    if hasattr(trt, "uint8"):
        table[trt.uint8] = np.uint8
    if trt_type not in table:  # 10.x/11.x/RTX: BF16, FP8, INT4 (11: FP4, E8M0) I/O in a plan another tool built
        raise TensorRTError(f"TensorRT data type {getattr(trt_type, 'name', trt_type)} has no numpy equivalent: netdef "
                            "handles float32, float16, int32, int64, int8, uint8 and bool tensors")
    return np.dtype(table[trt_type])


def dtype_name(trt_type: Any) -> str:
    return np_dtype(trt_type).name


# ---------------------------------------------------------------- engines and the GPU

def gpu_identity(device: int | None = None) -> tuple[str, str] | None:
    """(GPU name, compute capability 'major.minor') of CUDA device `device` (default: the calling thread's current
    device, see `use_device`), or None without a usable CUDA GPU."""
    devices = visible_devices()
    if not devices:
        return None
    return devices[current_device() if device is None else check_device(device)]


@functools.lru_cache(maxsize=None)
def visible_devices() -> tuple[tuple[str, str], ...]:
    """(name, compute capability) of each CUDA device this process sees, by index: CUDA_VISIBLE_DEVICES decides
    which devices and in what order. Empty without a usable CUDA GPU."""
    torch = _cuda_torch()
    if torch is not None:
        return tuple((torch.cuda.get_device_name(i), "%d.%d" % torch.cuda.get_device_capability(i))
                     for i in range(torch.cuda.device_count()))
    cuda = _pycuda()
    if cuda is None:
        return ()
    return tuple((cuda.Device(i).name(), "%d.%d" % cuda.Device(i).compute_capability())
                 for i in range(cuda.Device.count()))


def check_device(index: Any, what: str = "device") -> int:
    """`index` itself where it names a visible CUDA device; else an OptionError listing the visible ones."""
    if not isinstance(index, int) or isinstance(index, bool):
        raise OptionError(f"{what} {index!r}: expected a CUDA device index (an integer)")
    devices = visible_devices()
    if 0 <= index < len(devices):
        return index
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    note = "" if visible is None else f" (CUDA_VISIBLE_DEVICES={visible}: indices count the devices it leaves visible)"
    if not devices:
        raise OptionError(f"{what} {index}: no CUDA device is visible here{note}")
    listing = ", ".join(f"{i}: {name} (compute {cc})" for i, (name, cc) in enumerate(devices))
    raise OptionError(f"{what} {index}: no such CUDA device; the visible ones are {listing}{note}")


def current_device() -> int:
    """The calling thread's current CUDA device index (torch's; without torch, the innermost `use_device`'s);
    0 where none was selected."""
    torch = _cuda_torch()
    if torch is not None:
        return int(torch.cuda.current_device())
    stack = getattr(_selected, "stack", None)
    return stack[-1] if stack else 0


def use_device(index: int | None, what: str = "device") -> Any:
    """A context manager: CUDA device `index` is the calling thread's current device inside the `with` block (the
    device TensorRT builds, deserializes and runs on), the previous one again after it. None, or the device that
    is current already, changes nothing; an index no visible device has is an OptionError (`check_device`)."""
    return _DeviceScope(index, what)


class _DeviceScope:
    """`use_device`: torch's current device where torch has CUDA, else the device's primary context pushed with
    pycuda (the context torch and the CUDA runtime use)."""

    def __init__(self, index: int | None, what: str):
        self.index, self.what = index, what
        self._undo: Callable[[], None] | None = None

    def __enter__(self) -> None:
        if self.index is None or self.index == current_device():
            return
        index = check_device(self.index, self.what)
        torch = _cuda_torch()
        if torch is not None:
            previous = torch.cuda.current_device()
            torch.cuda.set_device(index)
            self._undo = lambda: torch.cuda.set_device(previous)
            return
        cuda = _pycuda()
        _primary_context(index).push()
        stack = _selected.__dict__.setdefault("stack", [])
        stack.append(index)

        def undo() -> None:
            stack.pop()
            cuda.Context.pop()

        self._undo = undo

    def __exit__(self, *exc: Any) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()


_selected = threading.local()  # without torch: the devices `use_device` selected on this thread, innermost last


@functools.lru_cache(maxsize=None)
def _cuda_torch() -> ModuleType | None:
    """torch, where it is installed and sees a CUDA device; else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _pycuda() -> ModuleType | None:
    """pycuda.driver, initialised; None where pycuda or the CUDA driver is missing."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda
    except Exception:  # noqa: BLE001  pycuda missing or no driver: no GPU as far as we can tell
        return None


@functools.lru_cache(maxsize=None)
def _primary_context(index: int) -> Any:
    """Device `index`'s primary context, retained for the process's lifetime (its engines live in it)."""
    return _pycuda().Device(index).retain_primary_context()


def here() -> str:
    """This machine's TensorRT and GPU, for messages: "tensorrt 8.6.0, GPU: NVIDIA H100 (compute capability 9.0)"
    ("no TensorRT", "GPU: none" where there is none)."""
    try:
        flavor = version_string()
    except TensorRTUnavailable:
        flavor = "no TensorRT"
    gpu = gpu_identity()
    return f"{flavor}, GPU: " + (f"{gpu[0]} (compute capability {gpu[1]})" if gpu else "none")


def can_run_engines() -> bool:
    """True where engines can be deserialized and executed (a CUDA GPU and a full TensorRT)."""
    try:
        i = info()
    except TensorRTUnavailable:
        return False
    return gpu_identity() is not None and i.flavor == "tensorrt"


def deserialize(plan: bytes) -> tuple[Any, Any]:
    """(runtime, engine); keep the runtime alive as long as the engine."""
    trt = module()
    runtime = trt.Runtime(logger())
    with interrupts.tensorrt_call():
        engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise TensorRTError("TensorRT could not deserialize the engine (see its messages above)")
    return runtime, engine


def io_tensors(engine: Any) -> list[tuple[str, bool, tuple[int, ...], str]]:
    """(name, is_input, shape with -1 for dynamic dims, numpy dtype name) for each I/O tensor."""
    trt = module()
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        try:
            dtype = dtype_name(engine.get_tensor_dtype(name))
        except TensorRTError as e:
            raise TensorRTError(f"the engine's {'input' if is_input else 'output'} '{name}': {e}") from None
        out.append((name, is_input, tuple(engine.get_tensor_shape(name)), dtype))
    return out


def create_context(engine: Any, where: Any = "the engine") -> Any:
    """A new execution context (with its activation memory); TensorRT returns none when that memory cannot be had."""
    context = engine.create_execution_context()
    if context is None:
        raise TensorRTError(f"TensorRT could not create an execution context for {where} (out of GPU memory? its "
                            f"messages above say why): free GPU memory or build the engine for a smaller batch")
    return context


def set_profile(context: Any, index: int, stream_handle: int) -> None:
    """Make optimization profile `index` the context's active one (input shapes must be set again)."""
    if not context.set_optimization_profile_async(index, stream_handle):
        raise TensorRTError(f"TensorRT could not switch to optimization profile {index} (see its messages above)")


def execute(context: Any, stream_handle: int) -> None:
    if not context.execute_async_v3(stream_handle):
        raise TensorRTError("TensorRT execute_async_v3 failed (see its messages above)")


def attach_profiler(context: Any, on_layer: Callable[[str, float], None]) -> Any:
    """Report each layer's time of every execution to `on_layer(name, ms)`; keep the returned profiler alive.
    It stays attached: TensorRT 8.6 rejects detaching (setProfiler(nullptr) is an API usage error), so
    attach it to a context used for profiling only."""
    trt = module()

    class Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        @interrupts.trt_callback
        def report_layer_time(self, layer_name: str, ms: float) -> None:
            on_layer(layer_name, ms)

    profiler = Profiler()
    context.profiler = profiler
    return profiler


def layer_information(engine: Any, context: Any) -> dict[str, Any]:
    """The engine inspector's entry for each engine layer by name: a dict (type, tactic, formats...) for
    engines built with detailed profiling verbosity, else the name alone."""
    trt = module()
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    out: dict[str, Any] = {}
    for i in range(engine.num_layers):
        entry = json.loads(inspector.get_layer_information(i, trt.LayerInformationFormat.JSON), strict=False)
        name = entry.get("Name") if isinstance(entry, dict) else entry
        out[str(name)] = entry
    return out


def plugin_registry() -> Any:
    trt = module()
    if not info().plugins:
        raise TensorRTUnavailable(f"{version_string()} has no plugin layers; build plugin engines with full TensorRT")
    return trt.get_plugin_registry()


def find_plugin_creator(name: str, version: str, namespace: str = "") -> Any:
    reg = plugin_registry()
    getter = getattr(reg, "get_creator", None) or reg.get_plugin_creator
    creator = getter(name, version, namespace)
    if creator is None:
        raise TensorRTUnavailable(f"plugin '{name}' version {version} is not registered with TensorRT")
    return creator


def add_plugin(network: Any, inputs: list, creator: Any, name: str, fields: dict[str, np.ndarray]) -> Any:
    """Create an IPluginV2 from a creator and field values and add it to the network."""
    trt = module()
    kinds = {np.dtype(np.float32): trt.PluginFieldType.FLOAT32, np.dtype(np.int32): trt.PluginFieldType.INT32}
    pfs = [trt.PluginField(k, v, kinds[v.dtype]) for k, v in fields.items()]
    plugin = creator.create_plugin(name, trt.PluginFieldCollection(pfs))
    if plugin is None:
        raise TensorRTError(f"plugin creator '{creator.name}' refused the fields {sorted(fields)}")
    return network.add_plugin_v2(inputs, plugin)


# ---------------------------------------------------------------- raw plans (netdef.deploy, `netdef info`)

def can_deserialize() -> bool:
    """Whether plans can be deserialized here, to inspect them (running them also needs full TensorRT). Every
    supported runtime needs a CUDA device for it: TensorRT-RTX 1.7 without one fails in deserializeCudaEngine
    (cudaError 35) and its get_engine_validity cannot read the GPU's properties."""
    try:
        info()
    except TensorRTUnavailable:
        return False
    return gpu_identity() is not None


def profile_batches(engine: Any) -> list[tuple[int, int, int]]:
    """(min, opt, max) batch of each optimization profile of a deserialized engine: the first axis of its
    inputs' profile shapes (an input with a static first axis n gives n:n:n)."""
    names = [name for name, is_input, _, _ in io_tensors(engine) if is_input]
    if not names:
        raise TensorRTError("the engine has no input tensors: netdef's runtime needs a batch axis")
    out = []
    for k in range(max(1, engine.num_optimization_profiles)):
        batches = set()
        for name in names:
            static = int(engine.get_tensor_shape(name)[0])
            if static >= 0:
                batches.add((static, static, static))
            else:
                lo, opt, hi = engine.get_tensor_profile_shape(name, k)
                batches.add((int(lo[0]), int(opt[0]), int(hi[0])))
        if len(batches) != 1:
            raise TensorRTError(f"optimization profile {k}: the inputs' first axes differ ({sorted(batches)}); "
                                "netdef's runtime needs one batch axis")
        out.append(batches.pop())
    return out


def profile_hw(engine: Any) -> list[list[list[int]]] | None:
    """Each optimization profile's [[minH, minW], [optH, optW], [maxH, maxW]] of the first (B, C, H, W) input
    whose height or width is dynamic; None when no input has a dynamic height or width."""
    for name, is_input, shape, _ in io_tensors(engine):
        if is_input and len(shape) == 4 and min(shape[2:]) < 0:
            return [[[int(d) for d in tuple(s)[2:]] for s in engine.get_tensor_profile_shape(name, k)]
                    for k in range(max(1, engine.num_optimization_profiles))]
    return None


# ---------------------------------------------------------------- ONNX parser (scripts/compare_routes.py only)

def parse_onnx(network: Any, path: str) -> Any:
    """Parse an ONNX file into `network` with TensorRT's ONNX parser; returns the parser (keep it alive
    until the build ends). 8.6 errors name a node index, 10+ also its name and operator."""
    trt = module()
    if not hasattr(trt, "OnnxParser"):
        raise TensorRTUnavailable(f"{version_string()} has no ONNX parser")
    parser = trt.OnnxParser(network, logger())
    with interrupts.tensorrt_call():
        parsed = parser.parse_from_file(str(path))
    if not parsed:
        msgs = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            where = (f"node {e.node_name()} ({e.node_operator()})" if hasattr(e, "node_name")
                     else f"node #{e.node()}")
            msgs.append(f"{where}: {e.desc()}")
        raise TensorRTError(f"TensorRT's ONNX parser rejected {path}: {'; '.join(msgs) or 'no details'}")
    return parser
