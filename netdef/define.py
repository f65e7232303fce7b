"""Define a network: an architecture (YAML spec) plus weights (a .wts path or a mapping of arrays) become a
`Network` whose layers hold those weights, with strict key accounting and checked build parameters."""
from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import FamilyError, NetdefError, OptionError, SpecError, WeightKeyError, WtsFormatError
from .fileio import file_sha256_and_key
from .network import Network, unused_modules_hint
from .options import BuildOptions, checked_options, format_hw_range, unmatched_patterns
from .spec import Spec, build_network, load_spec, observing_rows
from .wts import NonFiniteAllowed, first_nonfinite, read_wts, torch_values

Weights = Union[str, Path, Mapping[str, Any]]  # a .wts path, or a mapping key -> array (numpy or torch)


IN_MEMORY = "in-memory weights"  # where weights given as a mapping come from (`weights_identity`)


class Identity(tuple):
    """(where the weights come from, their SHA-256), a pair; for a file also `file`, the `fileio.file_key` of the
    file hashed, so that reading it later (`load_tensors`) reads those bytes or fails (a concurrent `netdef export`
    may replace the file in between: an engine must not record one file's SHA-256 and hold another's weights)."""

    file: tuple | None

    def __new__(cls, source: str, sha256: str, file: tuple | None = None) -> Identity:
        self = super().__new__(cls, (source, sha256))
        self.file = file
        return self

    def __getnewargs__(self) -> tuple:  # pickle and copy make it again with its file
        return (self[0], self[1], self.file)


def weights_identity(weights: Weights) -> Identity:
    """(where the weights come from, their SHA-256): the file's, or a digest of an in-memory mapping."""
    if isinstance(weights, Mapping):
        h = hashlib.sha256()
        for k in sorted(_keys(weights)):
            h.update(k.encode() + b"\0" + np.ascontiguousarray(_array(weights[k], k, finite=False)).tobytes())
        return Identity(IN_MEMORY, h.hexdigest())
    path = Path(_path(weights))
    if not path.is_file():
        what = ("is a directory, not a .wts file" if path.is_dir() else
                "is not a regular file (a pipe or a device: netdef reads .wts files)" if path.exists() else "not found")
        raise WtsFormatError(str(path), f"weights file {what} (create one with `netdef export`)")
    return Identity(str(path), *file_sha256_and_key(path))


def identified(weights: Weights) -> tuple[Weights, Identity]:
    """The weights as `define_network` reads them, with their `weights_identity`: a mapping converted once (float32
    arrays, checked as `load_tensors` checks them) and hashed from those arrays, so that the build converts no
    tensor twice; a .wts path as it is, hashed (the file read later must be this one)."""
    if isinstance(weights, Mapping):
        arrays = load_tensors(weights, _stderr)
        return arrays, weights_identity(arrays)
    return weights, weights_identity(weights)


def define_network(spec: Spec | str | Path, weights: Weights, opts: BuildOptions | None = None,
                   log: Callable[[str], None] | None = None, *, quantizer: Any = None,
                   identity: tuple[str, str] | None = None, progress: bool | None = None) -> Network:
    """Read the weights (a .wts path or a mapping of arrays) and define the network (no engine build); checks
    the weight keys and the build parameters. `quantizer` replaces the int8 build's (calibration records);
    `identity` is the weights' `weights_identity` when the caller has it already (no second hash). `progress`:
    a bar while reading the .wts (default: when stderr is a terminal)."""
    opts = checked_options(opts)  # an input size of 0, a list of params: named as the option, not as a layer
    log = log or _stderr
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    params = spec.resolve_params(opts.params)
    if identity is None:
        weights, identity = identified(weights)
    source, weights_sha = identity
    tensors = load_tensors(weights, log, progress, expect=getattr(identity, "file", None))
    net = Network(tensors, precision=opts.precision, source=source, params=params, input_dtype=opts.input_dtype,
                  input_normalization=opts.input_normalization)
    if quantizer is None and opts.precision == "int8":
        from .int8.quantize import Quantizer  # int8 only: needs a calibration table

        quantizer = Quantizer.for_build(spec, weights_sha, opts, weights_from=source)
    net.quantizer = quantizer
    net.fp32_rows = tuple(opts.fp32_rows)
    try:
        build_network(spec, net, (-1, -1) if opts.input_range else opts.input_hw)  # -1: H, W chosen at run time
        _check_params_read(net, opts.params)
        _check_fp32_rows(spec, net)
        if quantizer is not None:
            quantizer.check_exclude(spec.name)
        unused = net.check_keys(strict=opts.strict)
    except SpecError as e:  # a layer the input size breaks (a YOLO of 500x500): the size, where the stride says
        _check_size_fits(spec, tensors, opts)
        raise e
    except WeightKeyError as e:  # sizes or keys of another scale or task of the family?
        sibling = _fitting_sibling(spec, tensors, opts)
        if sibling is not None:
            more = f"\nThese weights fit {sibling}: build that architecture"
        else:
            more = "" if e.another_layout else (_input_channels_hint(spec, tensors, e) or _row_count_hint(spec, tensors)
                                                 or _custom_scale_hint(spec, tensors, opts, net, e))
        raise e.with_hint(more) from None
    for key, why in net.supplied.items():
        log(f"[netdef] note: {key} is not in {source}; built with {why}")
    if unused:
        log(f"[netdef] warning: {len(unused)} unused key(s) in {source}, e.g. {unused[:3]}"
            + unused_modules_hint(unused, net.used, net.read_by).replace("\n", " "))
    return net


def _check_size_fits(spec: Spec, tensors: Mapping[str, np.ndarray], opts: BuildOptions) -> None:
    """For a definition an --input-shape broke: where the network at its YAML's own size records a stride (a YOLO
    head's) that the size is no multiple of, the OptionError `check_stride` gives a range, not the error of the row
    where the sizes first disagreed."""
    if opts.input_hw is None or opts.input_range:
        return
    net = Network(tensors, precision="fp32", params=spec.resolve_params(opts.params))
    try:
        with observing_rows(None):  # not rows of the network `netdef show` lists
            build_network(spec, net, None)
    except NetdefError:
        return
    if net.model.get("stride"):
        check_stride([tuple(opts.input_hw)], int(net.model["stride"]), spec.name)


def _check_fp32_rows(spec: Spec, net: Network) -> None:
    """An --fp32-rows pattern that named no row of the architecture would keep nothing in float32: refused, listing
    the rows' key prefixes (a pattern names whole rows, not layers inside one)."""
    unmatched = [p for p in net.fp32_rows if p not in net.fp32_matched]
    if unmatched:
        bare = [f"row {r.index}" for r in spec.rows if not r.prefix]
        raise unmatched_patterns("--fp32-rows", unmatched, f"no row of {spec.name}; it names YAML rows by their key "
                                 "prefix (fnmatch: 'model.22', 'layer4*'), not layers inside one" + (
                                     f" ({', '.join(bare)}: no key prefix, only '*' names it)" if bare else ""),
                                 [r.prefix for r in spec.rows if r.prefix])


def _check_params_read(net: Network, given: Mapping[str, Any]) -> None:
    """A build parameter given (--set) that no block of this build read would be recorded without effect (max_det
    with a head that keeps every box, say): refused, naming it."""
    from .registry import declared_params

    unread = sorted(set(given or {}) - net.params_read)
    if unread:
        key = unread[0]
        param = declared_params().get(key)
        why = f" (its help: {param.help})" if param is not None and param.help else ""
        raise OptionError(f"--set {key}={given[key]}: no block of this build reads it, so it would have no effect"
                          f"{why}; leave {key} out")


def load_tensors(weights: Weights, log: Callable[[str], None], progress: bool | None = None,
                 expect: tuple | None = None) -> dict[str, np.ndarray]:
    """The weights as float32 arrays by key: a mapping's values converted, or the .wts read (a bar where
    `progress`, default: when stderr is a terminal; `expect`: the file must be the one `weights_identity` hashed,
    its `Identity.file`)."""
    if isinstance(weights, _Loaded):  # converted and checked already (`identified`, verify's): taken as they are
        return weights
    if isinstance(weights, Mapping):
        finite = not isinstance(weights, NonFiniteAllowed)
        return _Loaded({k: _array(weights[k], k, finite) for k in _keys(weights)})
    _path(weights)
    log(f"[netdef] reading {weights} ...")
    return _Loaded(read_wts(weights, progress=sys.stderr.isatty() if progress is None else progress, expect=expect))


class _Loaded(dict):
    """Weights `load_tensors` made (float32 arrays by key, converted and checked): given to it again, taken as
    they are."""


def _input_channels_hint(spec: Spec, tensors: Mapping[str, np.ndarray], e: WeightKeyError) -> str:
    """A convolution weight of the network's input channels (its first) sized for another count of them (a 1-channel
    model): how to build one of that input; '' otherwise."""
    channels = spec.input_shape[0] if spec.input_shape else None
    if e.key not in tensors or e.expected is None or len(e.expected) != 4 or e.expected[1] != channels:
        return ""
    outputs, _, kh, kw = e.expected
    base = e.key.removesuffix(".weight")
    counts = [tensors[k].size for k in (f"{base}.bias", f"{base.rsplit('.', 1)[0]}.bn.weight") if k in tensors]
    if not counts or any(n != outputs for n in counts):  # another width, not another input (or nothing to tell)
        return ""
    have, rest = divmod(tensors[e.key].size, outputs * kh * kw)
    if rest or have in (0, channels):
        return ""
    where = f"a copy of {spec.path.name}" if spec.path else f"a YAML of {spec.source}'s text"
    return (f"\nThe weights' {e.key} takes {have} input channel(s), {spec.name}'s input {channels}: build {where} "
            f"with `input: {{name: {spec.input_name}, shape: {[have, *spec.input_shape[1:]]}}}`")


_ROW_KEY = re.compile(r"model\.(\d+)\.")  # an Ultralytics-style key's row: model.12.cv1.conv.weight


def _row_count_hint(spec: Spec, tensors: Mapping[str, np.ndarray]) -> str:
    """For Ultralytics-style weights (`model.N.*` keys) of rows beyond `spec`'s last row: the two counts (a P2 head,
    a block inserted: another layout, which no scale of `spec` builds); '' otherwise (fewer rows with weights say
    nothing: the last rows may have none)."""
    rows = {int(m[1]) for k in tensors if (m := _ROW_KEY.match(k))}
    if not rows or len(spec.rows) < 2 or not all(r.prefix == f"model.{i}" for i, r in enumerate(spec.rows)):
        return ""
    last = max(rows)
    if last <= len(spec.rows) - 1:
        return ""
    return (f"\nThe weights' rows run to model.{last} ({last + 1} rows), {spec.name}'s to model.{len(spec.rows) - 1}: "
            f"they are of another layout (a P2 head, a block added or left out), which no scale of {spec.name} "
            f"builds: build a YAML of the model they come from (`netdef export` of its checkpoint says how)")


def _custom_scale_hint(spec: Spec, tensors: Mapping[str, np.ndarray], opts: BuildOptions, net: Any,
                       e: WeightKeyError) -> str:
    """For a scaled family member whose weights no scale fits but whose keys are the family's (`model.*`): how a
    custom depth and width (tensorrtx's `c gd gw`) is built; '' otherwise (weights `spec` itself takes without
    the --set values given: one of those disagrees with them, `--set nc=80` for 3 classes, say; keys missing or
    unused only in part of a module, which no other depth explains: a running_var lost, say)."""
    if spec.scale is None or not tensors or sum(k.startswith("model.") for k in tensors) * 2 < len(tensors):
        return ""
    if opts.params and _fits(spec, tensors, opts.precision, {}):
        return ""
    row = _ROW_KEY.match(e.key or "")
    if row and int(row[1]) < len(spec.rows) and not spec.rows[int(row[1])].block.module.startswith("netdef."):
        return ""  # a row of a block of one's own: its own channels, no scale of the family's
    if (e.key or "").endswith((".anchors", ".anchor_grid", ".strides")):
        return ""  # a head's anchors or strides disagree with its others: no width or depth makes them
    if e.key is None:  # keys missing or unused: another depth adds or drops whole modules
        from .network import _module_groups

        missing, unused = net.key_report()
        if set(_module_groups(missing, tensors)) <= {None} and set(_module_groups(unused, net.used)) <= {None}:
            return ""  # no module missing or unused whole: a lost tensor, not another depth
    family = f"copy {spec.path.name}" if spec.path else f"write {spec.source}'s text"
    return (f"\nIf the weights are of a custom depth and width (tensorrtx's `c gd gw`, say): {family} "
            "with `depth_multiple: gd` and `width_multiple: gw` in place of its `scales:` map and build that file")


def _fitting_sibling(spec: Spec, tensors: Mapping[str, np.ndarray], opts: BuildOptions) -> str | None:
    """The name of another scale or task of `spec`'s family (yolo11s for yolo11n weights, yolo26n-pose for
    yolo26n-seg weights), else of another YOLO family (yolo11n for yolo11n weights built as yolov8n, those of its
    scale first), or for an architecture of no family another of netdef's (resnet18 for its weights built as
    resnet50), whose network the weights fit key for key and shape for shape, or None (none fits). Scales that
    do not fit fail at their first row, tasks at their head."""
    from .spec import available_archs

    if not tensors:  # no weights (`netdef show` alone): nothing to fit
        return None
    if spec.scale is None:  # resnet50 given resnet18's weights: netdef's other architectures
        names = [name for name in available_archs(own=True) if name != spec.name]
        return next(iter(_fitting(names, tensors, opts.precision, {}, own=True)), None)
    parts = re.match(r"^(.*?\d+)" + re.escape(spec.scale), spec.name)  # yolo11 + l (+ -seg)
    if parts is None:
        return None
    family = re.compile(re.escape(parts[1]) + r"[a-z](-[a-z0-9]+)?")
    yolo = re.compile(r"yolov?\d+([a-z])(6|-[a-z0-9]+)?")
    names = available_archs()
    others = [name for name in names if yolo.fullmatch(name) and not family.fullmatch(name)]
    others.sort(key=lambda name: yolo.fullmatch(name)[1] != spec.scale)  # the same scale first
    candidates = [name for name in names if family.fullmatch(name) and name != spec.name] + others
    return next(iter(_fitting(candidates, tensors, opts.precision, opts.params)), None)


def fitting_architectures(tensors: Mapping[str, Any], precision: str = "fp32") -> list[str]:
    """netdef's own architectures whose network takes the weights `tensors` (arrays or torch tensors by key) key
    for key and shape for shape with their default build parameters (`_fitting`); none without TensorRT (the
    networks are TensorRT's: `netdef export` needs only PyTorch)."""
    from . import trt_api
    from .errors import TensorRTUnavailable
    from .spec import available_archs

    try:
        trt_api.module()
    except TensorRTUnavailable:
        return []
    return list(_fitting(available_archs(own=True), tensors, precision, {}, own=True))


def _fitting(names: Iterable[str], tensors: Mapping[str, Any], precision: str,
             params: Mapping[str, Any], *, own: bool = False) -> Iterator[str]:
    """The architectures among `names`, in order, that take `tensors` (`_fits`); `own`: the names are netdef's
    (a ./architectures file of one's name is not loaded for it). Only those whose first and last rows' key
    prefixes are among the weights' keys are defined (a network's definition takes a while; most architectures
    fail this look at the keys); one that does not load is left out."""
    keys = list(tensors)
    arrays: dict[str, np.ndarray] | None = None
    for name in names:
        try:
            spec = load_spec(name, own=own)
        except NetdefError:
            continue
        ends = [row.prefix for row in (spec.rows[0], spec.rows[-1]) if row.prefix]
        if not all(any(k.startswith(p + ".") for k in keys) for p in ends):
            continue
        arrays = arrays if arrays is not None else {k: _array(v, k, finite=False) for k, v in tensors.items()}
        if _fits(spec, arrays, precision, params):
            yield name


def _fits(spec: Spec | str, tensors: Mapping[str, np.ndarray], precision: str, params: Mapping[str, Any]) -> bool:
    """Whether `spec` (or the architecture of that name) takes the weights key for key and shape for shape with
    the build parameters `params`."""
    try:
        spec = spec if isinstance(spec, Spec) else load_spec(spec)
        net = Network(tensors, precision=precision, params=spec.resolve_params(params))
        net.stop_at_missing = True  # most architectures looked at lack a key early: no need to define the rest
        with observing_rows(None):  # not rows of the network `netdef show` lists
            build_network(spec, net, None)
        net.check_keys(strict=True)
    except NetdefError:
        return False
    return True


def spec_for_weights(arch: str | Path | Spec, weights: Weights | None) -> Spec:
    """`load_spec(arch)` (a Spec is itself); a family named without a scale (`yolov5`) with `weights` given: the
    error names the scale the weights fit, where one does."""
    if isinstance(arch, Spec):
        return arch
    try:
        return load_spec(arch)
    except FamilyError as e:
        if weights is None or not e.scales:
            raise
        try:
            fits = next(iter(_fitting(e.scales, load_tensors(weights, lambda _: None, False), "fp32", {})), None)
        except NetdefError:  # weights that do not read: the architecture is the first thing to mend
            fits = None
        if fits is None:
            raise
        shown = "these weights fit" if isinstance(weights, Mapping) else f"{Path(weights).name} fits"
        raise FamilyError(f"{e.message}; {shown} {fits}", where=e.where, scales=e.scales) from None


def check_weights(weights: Any) -> None:
    """`weights` must be a mapping key -> array or a .wts path (an OptionError says so), checked before any work."""
    if not isinstance(weights, Mapping):
        _path(weights)


def _path(weights: Any) -> str | os.PathLike:
    """`weights` where it is not a mapping: a .wts path, else an OptionError saying what weights are."""
    if isinstance(weights, (str, os.PathLike)):
        return weights
    what = type(weights).__name__
    hint = " (a torch module: pass its state_dict())" if hasattr(weights, "state_dict") else ""
    raise OptionError(f"weights: expected a .wts path or a mapping key -> array (a state_dict), got {what}{hint}")


def _keys(weights: Mapping[Any, Any]) -> list[str]:
    """The keys of a mapping of weights, each a string as a state_dict's (a WeightKeyError names another)."""
    keys = list(weights)
    for k in keys:
        if not isinstance(k, str):
            raise WeightKeyError(f"{IN_MEMORY}: key {k!r} ({type(k).__name__}): weight keys are strings, a module's "
                                 "name and the tensor's ('layer1.0.conv1.weight'), as a state_dict's")
    return keys


def _array(v: Any, key: str, finite: bool) -> np.ndarray:
    """A float32 numpy array from a numpy array or a torch tensor (any device), or a sequence or number; values
    that are no real numbers (strings, objects, None, complex numbers) are a WeightKeyError naming `key`, and so
    (where `finite`) are NaN, infinities and values beyond float32's range, as a .wts file's are."""
    if hasattr(v, "detach"):
        if v.is_complex():
            raise WeightKeyError(f"{IN_MEMORY}: '{key}' is a tensor of {v.dtype}: weights are real numbers", key=key)
        try:
            v = torch_values(v)
        except TypeError as e:
            raise WeightKeyError(f"{IN_MEMORY}: '{key}': {e}", key=key) from None
    try:
        arr = np.asarray(v)
    except ValueError as e:  # a ragged sequence
        raise WeightKeyError(f"{IN_MEMORY}: '{key}' is no array of numbers ({e})", key=key) from None
    if arr.dtype.kind not in "biuf":  # bool, integers, floats
        what = "None" if v is None else f"an array of {arr.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
        raise WeightKeyError(f"{IN_MEMORY}: '{key}' is {what}: weights are real numbers (a float, integer or bool "
                             "array or torch tensor)", key=key)
    with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
        out = arr.astype(np.float32, copy=False)
    bad = first_nonfinite(out, arr) if finite else None
    if bad is not None:
        i, src = bad
        what = f"{src} (beyond float32's range)" if np.isfinite(src) else str(np.float32(src))
        raise WeightKeyError(f"{IN_MEMORY}: '{key}' holds {what} at index {i}: an engine built from it outputs NaN "
                             "or inf; fix the weights (or pass netdef.wts.NonFiniteAllowed(weights) to take them as "
                             "they are)", key=key)
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_stride(hw_range: Any, stride: int, name: str) -> None:
    """MIN, OPT and MAX of a dynamic size (or a static size) must be multiples of the model's recorded stride (the
    YOLO heads'): TensorRT only warns about such a range and builds an engine whose sizes do not fit together
    (checked by build and show, not when refitting or verifying an engine built before)."""
    bad = [f"{h}x{w}" for h, w in hw_range if h % stride or w % stride]
    if bad:
        fit = [tuple(max(stride, round(v / stride) * stride) for v in hw) for hw in hw_range]
        raise OptionError(f"--input-shape {format_hw_range(hw_range)}: {name}'s input height and width must be "
                          f"multiples of its stride {stride} ({', '.join(bad)} not), e.g. {format_hw_range(fit)}")
