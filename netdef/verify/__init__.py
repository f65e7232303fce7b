"""`netdef verify`: find the first layer where a netdef network diverges from the PyTorch model it rebuilds.

The same `.wts` goes into the PyTorch model (strictly) and into the network; both see one input (random, or
the caller's: `input_data`).
Layers are matched with modules by name (`Network.matches` first: a convolution with BatchNorm folded in
equals the BatchNorm's output), forward hooks give the modules' outputs, and each matched layer's output is
compared with its module's (max relative error). netdef's tensors come from the network definition
evaluated in float64 on the CPU (`cpu=True`: `evaluate.py`, no GPU or TensorRT runtime needed) or from an
engine whose compared tensors are marked as outputs (`engine.py`).
"""
from __future__ import annotations

import copy
import math
import numbers
import re
import sys
from collections.abc import Callable, Container, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import trt_api
from ..define import Weights, define_network, identified, load_tensors, spec_for_weights
from ..errors import NetdefError, OptionError, TensorRTUnavailable, WeightKeyError
from ..network import IGNORED_KEY_SUFFIXES
from ..fileio import read_npy
from ..options import BuildOptions, format_hw_range
from ..runtime import random_input
from ..spec import Spec
from ..tools.verify import check_tolerance, max_rel_error
from .evaluate import PLUGIN_TYPES, LayerSizeError, UnsupportedLayer, can_evaluate, evaluate
from .reference import ModuleOutputs, load_model, load_weights_strict, module_input, run_hooked
from .report import OUTPUT_MODULE, ROUNDING_NOTE, Report, compare, module_matcher

__all__ = ["Report", "UnsupportedLayer", "default_tolerance", "evaluate", "verify"]

# fp32: the CPU evaluator is exact up to fp32 weights; an engine's kernels reorder sums
TOLERANCES = {("fp32", True): 1e-5, ("fp32", False): 1e-4, ("fp16", True): 1e-2, ("fp16", False): 1e-2}


def default_tolerance(precision: str, cpu: bool) -> float:
    """The max relative error `verify` accepts by default."""
    return TOLERANCES[(precision, cpu)]


def verify(arch: str | Path | Spec, weights: Weights, model: Any, *, cpu: bool = False,
           opts: BuildOptions | None = None, tol: float | None = None, seed: int = 0, batch: int | None = None,
           size: tuple[int, int] | None = None, input_data: np.ndarray | str | Path | None = None,
           input_scale: float | None = None, log: Callable[[str], None] | None = None) -> Report:
    """Compare the network `arch` + `weights` (a .wts path or a mapping of arrays) with `model` (a torch module,
    or a source as `netdef export` takes it: torchvision:NAME, package.module:callable, a checkpoint) layer by
    layer on one input; the model gets `weights` too (a copy of a module you pass: yours is left as it is). The
    input is `input_data` (an array or a .npy file of the network's input shape, e.g. a real image preprocessed as
    the model expects), else random: `batch` images (default 1), standard normal times `input_scale` (default 1;
    a clamp such as ReLU6's at 6 acts only on large values) or uint8 images. A network with a dynamic input size
    (`opts.input_range`) is defined as the build defines it and fed images of `size` (H, W) within the range
    (default: `input_data`'s, else the OPT size). Without `tol`, on the CPU a layer also passes within
    FLOOR_FACTOR x PyTorch's own error there in the network's precision (float32 for fp32, float16 for fp16; up
    to FLOOR_CAPS x the tolerance). Each report row names the YAML row that made its layer (`Row.where`)."""
    log = log or _stderr
    for name, value, least in (("batch", 1 if batch is None else batch, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise OptionError(f"verify {name} {value!r}: expected an integer >= {least}")
    check_tolerance(tol, "verify tol")
    if opts is not None and not isinstance(opts, BuildOptions):
        raise OptionError(f"opts {opts!r}: expected a netdef.options.BuildOptions")
    model = str(model) if isinstance(model, Path) else model  # a checkpoint's path
    _check_model(model)
    given, label = _load_input(input_data, input_scale, opts)  # a file's errors before any other work
    if given is not None:  # its batch, and its height and width for a dynamic input size
        batch, size = _given_batch_and_size(given, label, batch, size, opts)
    batch = batch or 1
    opts = replace(opts or BuildOptions(), tf32=False, batch=(batch, batch, batch), profiles=())
    opts.validate()  # before the weights are read and the model loaded
    size = _input_size(opts, size, label)
    if opts.precision not in ("fp32", "fp16"):
        raise OptionError(f"verify compares fp32 or fp16 networks, not {opts.precision}")
    widen = tol is None and cpu  # an explicit tolerance is the bound
    tol = default_tolerance(opts.precision, cpu) if tol is None else tol
    if not cpu and not trt_api.can_run_engines():
        raise TensorRTUnavailable(f"verify without --cpu builds and runs an engine, which needs a CUDA GPU and full "
                                  f"TensorRT (this is {trt_api.here()}): use --cpu to evaluate the network definition")
    spec = spec_for_weights(arch, weights)
    if given is not None and opts.input_range is None:  # a file that does not fit: before the model is loaded
        want = np.empty((batch, *spec.input_shape_for(opts.input_hw)), np.dtype(opts.input_dtype))
        _checked_input(given, label, spec.input_name, want)
    weights, identity = identified(weights)  # a path hashed first: the file read next must be the one hashed
    tensors = load_tensors(weights, lambda m: None, progress=False, expect=identity.file)
    if isinstance(model, str):
        log(f"[netdef] loading {model} with PyTorch ...")
        source, checkpoint = model, Path(model).is_file()
        model = load_model(model)
    else:  # the weights are loaded into it and it is run in float64: the caller's module stays as it is
        source, checkpoint = f"the {type(model).__name__} given", False
        model = copy.deepcopy(model)
    net = define_network(spec, tensors, opts, log, identity=identity)
    note = own_weights_note(model, tensors, source, identity[0], checkpoint=checkpoint,
                            fixed={*net.fixed, *net.derived, *net.skipped})
    try:
        load_weights_strict(model, tensors, identity[0], derived=net.derived, supplied=net.supplied)
    except WeightKeyError as e:
        raise e.with_hint(_another_model_hint(model, spec) or _class_count_hint(model, tensors, source)) from None
    if note:  # weights of the model's own that the .wts does not hold (said once the keys are known to match)
        log(note)
    _check_keypoints(model, net)
    _note_other_layout(model, spec, log)
    _check_activation(model, net)
    _run_the_built_head(model, net, log)
    layers = trt_api.describe_layers(net.definition)
    raw = net.definition.raw
    outputs = [raw.get_output(i).name for i in range(raw.num_outputs)]
    feeds = _random_inputs(raw, seed, batch, size, input_scale)
    if len(feeds) != 1:
        raise NetdefError(f"verify feeds one input to the PyTorch model; {spec.name} has {len(feeds)}")
    if given is not None:
        feeds = {name: _checked_input(given, label, name, want) for name, want in feeds.items()}
    x = _model_input(next(iter(feeds.values())), opts)
    modules = {name for name, _ in model.named_modules() if name}
    match = module_matcher(net.matches, modules, net.claimed)
    single = [layer for layer in layers if len(layer.outputs) == 1]
    matched = {layer.name: m for layer in single if (m := match(layer.name)) is not None}  # layer -> module
    rows, again = _row_matches(single, matched, net, modules)  # a row's output with its module
    matched.update(rows)
    pairs = {layer.outputs[0]: matched[layer.name] for layer in single if layer.name in matched}  # tensor -> module
    also = _earlier_matches(single, matched, net.matched_modules)
    for layer, module in again.items():  # a row output matched with an inner module: with the row's module too
        also.setdefault(layer, {})[module] = None
    hooked = [*pairs.values(), *(m for found in also.values() for m in found)]
    owners = _weight_owners(tensors, net.skipped, net.fixed)  # their calls counted: a shared one has no one output
    floor = None
    if cpu:
        _check_evaluable(layers, spec, net.params)
        try:
            values = evaluate(layers, feeds)
        except LayerSizeError as e:  # a size a block fixed (a reshape to batch 1): its YAML row
            raise e.at(net.made_by.get(e.layer, "")) from None
        refs = run_hooked(model, x, hooked, device="cpu", dtype="float64", count=owners)
        # PyTorch's own run in the network's precision, after the reference (what its forward caches is then
        # float64's): the floor of what the network can reach
        floor = _own_run(model, x, hooked, opts.precision, log) if widen else None
        mode = "CPU, float64 definition"
    else:
        from .engine import engine_values

        values = engine_values(net, opts, feeds, [*pairs, *outputs], log,
                               arch=spec.identity(),
                               weights={"path": identity[0], "sha256": identity[1]})
        refs = run_hooked(model, x, hooked, device="cuda", dtype="float32", count=owners)
        mode = f"GPU engine, {trt_api.version_string()}"
    outputs_of = {layer.name: layer.outputs[0] for layer in single}
    for layer, module in [*rows.items(), *again.items()]:  # a row module whose output is not a tensor of that size
        ref, out = refs.outputs.get(module), values.get(outputs_of[layer])  # (a head's tuple)
        if ref is None or out is None or int(np.prod(tuple(out.shape))) != ref.size:
            if layer in rows:
                del matched[layer]
            else:
                del also[layer][module]
    shown = (f", batch {batch}" if batch > 1 else "") + (f", input {size[0]}x{size[1]}" if size else "")
    if given is not None:  # which input, where not the standard-normal one
        shown += f", input {Path(input_data).name}" if isinstance(input_data, (str, Path)) else ", input given"
    elif input_scale is not None:
        shown += f", random input x{input_scale:g}"
    report = compare(spec.name, f"{mode}, {opts.precision}{shown}", tol, layers, values, refs, matched, outputs,
                     floor, modules, net.match_channels, half=opts.precision == "fp16", also=also,
                     parts=net.output_parts)
    report.uncompared = _uncompared(owners, report)
    report.shared = {m: refs.calls[m] for m in report.uncompared if refs.calls.get(m, 0) > 1}
    _name_rows(report, layers, net.made_by, net.output_parts)
    _top_k_hint(report, net)
    report.input_error = _input_error(report, layers, values, modules,
                                      lambda name: module_input(model, x, name, device="cpu" if cpu else "cuda",
                                                                dtype="float64" if cpu else "float32"))
    report.unchecked_before = _unchecked_before(report, layers, matched, also, net)
    if report.input_differs:
        report.unchecked_layers = _unchecked_layers(report, layers)
    return report


def _unchecked_layers(report: Report, layers: list[Any]) -> list[str]:
    """The layers between the last passing compared layer and the first failure that no module was compared with
    (those without weights: a block's inner mean, max or concatenation), where the failing layer's input
    differs already."""
    last_pass, failure = _since_last_pass(report, layers)
    compared = {r.layer for r in report.rows}
    return [la.name for la in layers[last_pass + 1:failure]
            if la.name not in compared and la.type not in ("CONSTANT", "CAST")]


def _since_last_pass(report: Report, layers: list[Any]) -> tuple[int, int]:
    """(index of the last passing compared layer before the first failure, -1 where none; index of the first
    failure, 0 where none is a layer)."""
    order = {layer.name: i for i, layer in enumerate(layers)}
    first = report.first_failure
    end = order.get(first.layer, 0) if first is not None else 0
    return max((order[r.layer] for r in report.rows if r.status == "pass" and order.get(r.layer, end) < end),
               default=-1), end


def _note_other_layout(model: Any, spec: Spec, log: Callable[[str], None]) -> None:
    """Where `model` is an Ultralytics model whose YAML (`model.yaml`) differs from netdef's architecture `spec` at
    a row (an edited C2f shortcut, an upsampling mode): a note naming both rows, as the divergence there follows."""
    from ..export import _layout_difference

    cfg = getattr(model, "yaml", None)
    own = spec.path is not None and spec.path.resolve().parent == Path(__file__).resolve().parents[1] / "architectures"
    if not (isinstance(cfg, dict) and cfg.get("backbone") and own and spec.scale is not None):
        return
    differs = _layout_difference(cfg, spec.name, str(spec.scale))
    if differs is not None:
        log(f"[netdef] note: the model's YAML differs from netdef's {spec.name} ({spec.path.name}) at {differs}: "
            f"a divergence there is that difference; to check the model as it is, verify a copy of its own YAML")


def _input_error(report: Report, layers: list[Any], values: Mapping[str, Any], modules: set[str],
                 module_input: Callable[[str], np.ndarray | None]) -> float | None:
    """The max relative error of the first failing layer's input against the input PyTorch gives the module of
    the layer's name (a convolution's), where that layer has weights and both inputs are at hand (a CPU
    evaluation has every tensor); None where not compared."""
    first = report.first_failure
    layer = next((la for la in layers if first is not None and la.name == first.layer), None)
    if layer is None or first.error is None or not layer.weights or layer.name not in modules or not layer.inputs:
        return None
    ours = values.get(layer.inputs[0])
    theirs = module_input(layer.name) if ours is not None else None
    if theirs is None or tuple(np.shape(ours)) != theirs.shape:
        return None
    return max_rel_error(np.asarray(ours, np.float64), theirs)


def _unchecked_before(report: Report, layers: list[Any], matched: Mapping[str, str],
                      also: Mapping[str, Mapping[str, Any]], net: Any) -> list[str]:
    """The YAML rows ("where (layer)") from the last passing row up to the first failure whose output was not
    compared with a module of the row's own (a row named after its convolution, or of prefix ""): a mistake at
    its end (an activation left out) shows first at the failure. Only where the failing layer is one of values
    (a shape is the layer's own arguments) computed without weights of its own (a pooling, an activation, an
    addition: its inputs are then the likelier cause; a convolution's weights and folded BatchNorm are its own), or
    with weights but an input that differs already from its module's (`Report.input_error`: a Concat's inputs
    swapped ahead of a convolution)."""
    first = report.first_failure
    order = {layer.name: i for i, layer in enumerate(layers)}
    if first is None or first.error is None or first.layer not in order:
        return []
    failing = layers[order[first.layer]]
    constants = {t for layer in layers if layer.type == "CONSTANT" for t in layer.outputs}  # a LayerNorm's scale
    if (failing.weights or any(t in constants for t in failing.inputs)) and not report.input_differs:
        return []
    last_pass, end = _since_last_pass(report, layers)
    start = max(last_pass, 0)

    def checked(layer: Any) -> bool:  # compared with the row's module (`row_outputs`, or a block's own match)
        module = net.row_outputs.get(layer.outputs[0]) or net.row_ends[layer.outputs[0]][1]
        return bool(module) and (matched.get(layer.name) == module or module in also.get(layer.name, {}))

    return [f"{net.row_ends[layer.outputs[0]][0]} (layer {layer.name})" for layer in layers[start:end]
            if len(layer.outputs) == 1 and layer.outputs[0] in net.row_ends and not checked(layer)]


def _own_run(model: Any, x: np.ndarray, hooked: list[str], precision: str,
             log: Callable[[str], None]) -> ModuleOutputs | None:
    """PyTorch's own run of `model` on the CPU in `precision`'s type (float32 for fp32, float16 for fp16); None,
    said, where this PyTorch cannot run the model in float16 on the CPU (layers are then held to the tolerance)."""
    if precision != "fp16":
        return run_hooked(model, x, hooked, dtype="float32")
    try:
        return run_hooked(model, x, hooked, dtype="float16")
    except NetdefError as e:
        log(f"[netdef] PyTorch's own float16 run on the CPU failed, so each layer is held to the tolerance alone: {e}")
        return None


def _row_matches(single: list[Any], matched: Mapping[str, str], net: Any,
                 modules: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    """layer -> the module of the YAML row whose output the layer's is (`Network.row_outputs`), for rows whose module
    no layer is compared with: a mistake inside a block then shows at its row, not only at the next row's layers.
    Two mappings: layers compared with no module yet, and layers compared with an inner module already (a row's
    convolution matched with its BatchNorm: the row's module is compared besides, so a missing activation shows).
    A row module that names another layer of the row (a ConvBnAct row whose prefix is its Conv2d's name: layer
    `conv1`, BatchNorm `bn1` folded in, activation `conv1/relu`) is that layer's module, not the row's output."""
    taken = set(matched.values()) | set(net.claimed)
    names = {layer.name for layer in single}
    found, again = {}, {}
    for layer in single:
        module = net.row_outputs.get(layer.outputs[0])
        if module in modules and module not in taken and (module == layer.name or module not in names):
            (again if layer.name in matched else found)[layer.name] = module
            taken.add(module)
    return found, again


def _earlier_matches(single: list[Any], matched: Mapping[str, str],
                     matched_modules: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """layer -> the other modules `Network.match` matched its output with (a BatchNorm whose output is also its
    Sequential's), each with the channels it holds: compared besides `matched`'s module, so that none of them is
    reported as never compared."""
    also = {}
    for layer in single:
        if layer.name in matched:
            found = {m: c for m, c in matched_modules.get(layer.name, {}).items() if m != matched[layer.name]}
            if found:
                also[layer.name] = found
    return also


def _weight_owners(tensors: Mapping[str, Any], skipped: Container[str] = (), fixed: Container[str] = ()) -> list[str]:
    """The modules whose weights the network reads, in key order. Keys a block `skipped` (Network.skip: a
    training-only branch) are not read; `fixed` ones (Network.fixed_weight: DFL's bins, folded into dist2bbox's
    matrix multiply) hold values no training changes, so no mistake of a block's hides in them."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in tensors if "." in k and not k.endswith(IGNORED_KEY_SUFFIXES)
                              and k not in skipped and k not in fixed))


def _uncompared(owners: list[str], report: Report) -> list[str]:
    """The modules whose weights the network reads (`owners`) but whose output no row compared: a mistake inside
    one shows only through what follows it (not at all behind a small layer scale)."""
    done = [r for r in report.rows if r.status != "skip"]
    compared = {r.module for r in done} | {r.layer.split("/")[0] for r in done}  # a layer NAME/add_bias is NAME's
    return [m for m in owners if m not in compared and not any(c.startswith(m + ".") for c in compared)]


def own_weights_note(model: Any, tensors: Mapping[str, np.ndarray], source: str, wts: str, *,
                     checkpoint: bool = True, fixed: Container[str] = ()) -> str:
    """A note where the model's own floating weights differ from the .wts values they share keys with (beyond
    float16 rounding: trainers save half-precision EMA weights), naming how many and which; '' where none do.
    verify loads the .wts into the model, so it checks the network against the .wts alone. A `checkpoint`'s
    state_dict is its own (trained); another model's (a callable's, one passed in) counts only where some of its
    parameters differ and others equal (a tensor transposed on its way into the .wts), each relative to its own
    largest value (ViT's 1e-6 biases), and only parameters that are neither `fixed` (values netdef knows: DFL's
    bins) nor of one value (a fresh model's BatchNorm ones and zeros): those say nothing of where the .wts came
    from."""
    own = model.state_dict().items() if checkpoint else \
        ((k, v) for k, v in model.named_parameters() if k not in fixed and v.numel() and v.min() != v.max())
    compared, differ = 0, []
    for key, value in own:
        ours = tensors.get(key)
        if ours is None or not value.is_floating_point() or not 0 < value.numel() == np.asarray(ours).size:
            continue
        compared += 1
        a = value.detach().float().cpu().numpy().reshape(-1)
        b = np.asarray(ours, np.float32).reshape(-1)
        d, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
        if not d <= 1e-3 * (max(1.0, scale) if checkpoint else max(scale, float(np.abs(a).max()))):
            differ.append((key, d))
    if not differ or not checkpoint and len(differ) == compared:  # a fresh model's weights: none of the .wts's
        return ""
    worst = max(differ, key=lambda kd: kd[1])
    keys = ", ".join(k for k, _ in differ[:4]) + (", ..." if len(differ) > 4 else "")
    counted = f"in {len(differ)} of {compared} tensors ({keys}; the most in {worst[0]}, by {worst[1]:.3g})"
    if checkpoint:
        return (f"[netdef] note: the weights in {source} differ from {wts} {counted}: verify loads {wts} into the "
                f"model and checks the network against it, not against this checkpoint's own weights (was {wts} "
                f"exported from another checkpoint?)")
    return (f"[netdef] note: the weights of {source} differ from {wts} {counted} and equal it in the others: "
            f"verify loads {wts} into the model and checks the network against it, so a tensor changed on its way "
            f"into {wts} (transposed, reordered, exported from another layout) passes unseen: check those tensors")


def _another_model_hint(model: Any, spec: Spec) -> str:
    """For weights that do not fit an Ultralytics model of another architecture than `spec`: which one the model is
    (the weights fit `spec`: define_network checked them), so the wrong checkpoint is named; '' otherwise."""
    from ..export import ultralytics_arch

    named = ultralytics_arch(model)
    if named is None or named[0] == spec.name:
        return ""
    return (f"\nThe PyTorch model is an Ultralytics {named[0]}, the weights are {spec.name}'s: give --model the "
            "checkpoint they were exported from")


def _class_count_hint(model: Any, tensors: Mapping[str, np.ndarray], source: str) -> str:
    """For weights whose one differing module is a layer of another output count (a classifier trained on 10
    classes, the model made with torchvision's 1000): the count, and how to make the model with it; '' otherwise."""
    sd = model.state_dict()
    wrong = {k for k in tensors if k in sd and np.asarray(tensors[k]).size != sd[k].numel()}
    prefixes = {k.rsplit(".", 1)[0] for k in wrong}
    if len(prefixes) != 1:
        return ""
    prefix = prefixes.pop()
    weight, bias = f"{prefix}.weight", f"{prefix}.bias"
    if wrong != {weight, bias} or sd[weight].dim() < 2:
        return ""
    n, m = np.asarray(tensors[bias]).size, sd[bias].numel()
    if np.asarray(tensors[weight]).size * m != sd[weight].numel() * n:  # not the same layer with other outputs
        return ""
    plain = re.fullmatch(r"torchvision:\w+", source)
    return (f"\nThe weights' {prefix} has {n} outputs, the model's {m}: make the model with {n} classes" +
            (f', --model "{source}(num_classes={n})"' if plain else ""))


def _check_keypoints(model: Any, net: Any) -> None:
    """A pose network built with another keypoint layout than the PyTorch model's (the weights cannot tell 6x3
    from 9x2): an OptionError saying both, before the outputs are compared."""
    head = model.model[-1] if hasattr(model, "model") and hasattr(model.model, "__getitem__") else None
    ours, theirs = (net.model or {}).get("kpt_shape"), getattr(head, "kpt_shape", None)
    if ours is None or theirs is None or [int(v) for v in theirs] == [int(v) for v in ours]:
        return
    raise OptionError(f"the PyTorch model's keypoints are {theirs[0]}x{theirs[1]} (kpt_shape {list(theirs)}), the "
                      f"network's {ours[0]}x{ours[1]}: build and verify with --set kpt_shape={theirs[0]},{theirs[1]}")


def _check_activation(model: Any, net: Any) -> None:
    """An Ultralytics model whose YAML sets another Conv activation (`activation: nn.ReLU()`) than the network's
    `default_act`: an OptionError giving the --set that builds it, before the outputs are compared."""
    from ..spec import torch_activation

    cfg = getattr(model, "yaml", None)
    act = cfg.get("activation") if isinstance(cfg, dict) else None
    if act is None or "default_act" not in net.params_read:  # no block of the network builds Ultralytics' Conv
        return
    try:
        theirs = torch_activation(act, lambda key, what: ValueError(what))
    except ValueError:  # one netdef does not build: the layers' comparison shows where
        return
    ours = net.param("default_act")
    if _activation_of(theirs) != _activation_of(ours):
        raise OptionError(f"the PyTorch model's YAML sets `activation: {act}` for its Conv layers, the network "
                          f"builds {ours}: build and verify with --set default_act={theirs}")


def _activation_of(text: str) -> tuple[str, Any]:
    """An activation text as what it computes: leaky's slope a number (plain leaky 0.1), gelu's form none or tanh."""
    from ..network import parse_activation

    kind, arg = parse_activation(text, "default_act")
    return kind, float(arg or 0.1) if kind == "leaky" else (arg or "none") if kind == "gelu" else ""


def _run_the_built_head(model: Any, net: Any, log: Callable[[str], None]) -> None:
    """A model whose head switches between its end-to-end rows and its one-to-many output (Ultralytics' YOLO26:
    `model.end2end`, which its checkpoints load switched off, and the head's `max_det`) runs the branch the
    network builds (`--set head`, `--set max_det`), so that the outputs compare."""
    if not (hasattr(type(model), "end2end") and net.model and hasattr(model, "model")):
        return
    end2end, head = net.model["task"] == "end2end", model.model[-1]
    if bool(getattr(model, "end2end", False)) != end2end:
        log(f"[netdef] verify: the model's end2end set to {end2end}, the head the network builds")
        model.end2end = end2end
    if end2end and hasattr(head, "max_det") and head.max_det != net.param("max_det"):
        head.max_det = net.param("max_det")


def _top_k_hint(report: Any, net: Any) -> None:
    """An end-to-end head's output row that rounding alone can fail (random weights tie scores, and tied top-k rows
    come in either order) says which comparison can tell: the one-to-many branch, which has no top-k."""
    if not net.model or net.model.get("task") != "end2end":
        return
    for r in report.rows:
        if r.status == "FAIL" and r.module == OUTPUT_MODULE and ROUNDING_NOTE in r.note:
            r.why += ("; this head's top-k puts tied scores in either order: `--set head=one2many` compares the "
                      "branch without it (every layer before it is compared here as it is), or trained weights")


def _input_size(opts: BuildOptions, size: tuple[int, int] | None, given: str = "") -> tuple[int, int] | None:
    """The (H, W) fed to a network with a dynamic input size: `size`, checked against the range, or the range's
    OPT size; None for a static size (a `size` then is an error: the network takes only its own). `given`: the
    input the size is of (`_load_input`'s label), for the error."""
    r = opts.input_range
    if r is None:
        if size is not None:
            raise OptionError(f"verify size {tuple(size)}: the network's input size is static; set it with "
                              "input_hw (--input-shape HxW) instead")
        return None
    if size is None:
        return tuple(r[1])
    if not all(lo <= v <= hi for lo, v, hi in zip(r[0], size, r[2])):
        what = f"{given}: its size" if given else "verify size"
        raise OptionError(f"{what} {size[0]}x{size[1]}: outside the input range {format_hw_range(r)}")
    return tuple(size)


def _check_model(model: Any) -> None:
    """`model` must be a torch module or a source string (`load_model`'s): a state_dict, a factory or a
    DataParallel wrapper is refused, saying what to give instead."""
    wrapper = type(model).__name__ in ("DataParallel", "DistributedDataParallel") and hasattr(model, "module")
    if wrapper:  # its keys are the model's with module. before each: the wrapped model is the one to compare
        raise OptionError(f"verify model ({type(model).__name__}): a wrapper whose keys start with module.; give the "
                          "model it wraps, its .module")
    if isinstance(model, str) or not isinstance(model, type) and callable(getattr(model, "named_parameters", None)):
        return
    what = type(model).__name__
    held = [k for k in ("ema", "model") if isinstance(model, Mapping) and callable(getattr(model.get(k), "eval", None))]
    if held:  # a checkpoint torch.load gave: the module inside
        instead = f"the module it holds, checkpoint['{held[0]}'] (or the checkpoint's path, which verify loads)"
    elif isinstance(model, Mapping):
        instead = "the module the weights belong to (the weights come from the .wts)"
    elif callable(model):
        instead = f"the module it makes ({getattr(model, '__name__', what)}()), or a source such as 'FILE.py:NAME'"
    else:
        instead = "a torch module or a source such as 'torchvision:resnet18', 'FILE.py:NAME' or a checkpoint's path"
    raise OptionError(f"verify model ({what}): not a torch module; give {instead}")


def _load_input(data: np.ndarray | str | Path | None, scale: float | None,
                opts: BuildOptions | None) -> tuple[np.ndarray | None, str]:
    """(the input given to verify, a label naming it in errors: '--input FILE' or 'verify input_data'), or
    (None, '') for a random one; `scale` checked (a positive number, for a random float input only)."""
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale < math.inf:
            raise OptionError(f"--input-scale {scale!r}: expected a positive number (the random input's standard "
                              "deviation)")
        if data is not None:
            raise OptionError("--input-scale scales the random input; --input gives one of its own: leave one out")
        if opts is not None and opts.input_dtype == "uint8":
            raise OptionError(f"--input-scale {scale:g}: the network takes uint8 images, whose random values span "
                              "0..255 already; give a real image as --input to see other values")
    if data is None:
        return None, ""
    if isinstance(data, (str, Path)):
        return read_npy(data, "--input"), f"--input {data}"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.Tensor):  # a tensor (a Parameter too): its values, on the CPU
        data = data.detach().cpu().numpy()
    if not isinstance(data, np.ndarray):
        raise OptionError(f"verify input_data: a {type(data).__name__}; give a numpy array, a torch tensor or a "
                          ".npy file's path")
    return data, "verify input_data"


def _given_batch_and_size(x: np.ndarray, label: str, batch: int | None, size: tuple[int, int] | None,
                          opts: BuildOptions | None) -> tuple[int, tuple[int, int] | None]:
    """The batch of the given input `x` (`batch`, if given, must be it) and, for a network with a dynamic input
    size, its (H, W) (`size`, if given, must be it)."""
    if x.ndim == 0:
        raise OptionError(f"{label}: a single value (shape ()); give an array of the network's input shape")
    if batch is not None and x.shape[0] != batch:
        raise OptionError(f"{label}: shape {x.shape}, a batch of {x.shape[0]}, not {batch} (--batch): leave out "
                          "--batch (the file's batch is used) or give a file of that batch")
    hw = tuple(int(d) for d in x.shape[2:]) if x.ndim == 4 else None
    if opts is not None and opts.input_range is not None and hw is not None:
        if size is not None and tuple(size) != hw:
            raise OptionError(f"{label}: its size {hw[0]}x{hw[1]} is not verify's size {size[0]}x{size[1]}: "
                              "leave the size out")
        size = hw
    return int(x.shape[0]), size


def _checked_input(x: np.ndarray, label: str, name: str, want: np.ndarray) -> np.ndarray:
    """The given input `x` as the network input `name` takes it (the shape and type of `want`, its random
    stand-in): an OptionError naming `label` (the file) and the expected shape where it does not fit."""
    expected = f"{tuple(want.shape)} {want.dtype}"
    if x.ndim != want.ndim:  # its first dimension is no batch
        expected = f"(B, {', '.join(map(str, want.shape[1:]))}) {want.dtype}, a batch of B"
        hint = " (one image: save it with its batch dimension, x[None])" if x.shape == want.shape[1:] else ""
        raise OptionError(f"{label}: shape {x.shape} {x.dtype}; the network's input '{name}' is {expected}{hint}")
    if x.shape != want.shape:
        hint = (f" (build it at the file's size with --input-shape {x.shape[2]}x{x.shape[3]})"
                if x.ndim == 4 and x.shape[:2] == want.shape[:2] else "")
        raise OptionError(f"{label}: shape {x.shape} {x.dtype}; the network's input '{name}' is {expected}{hint}")
    if want.dtype == np.uint8 and x.dtype != np.uint8:
        raise OptionError(f"{label}: {x.dtype} values; the network's input '{name}' is {expected}: uint8 images of "
                          "0..255 (the network normalizes them itself)")
    if want.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise OptionError(f"{label}: {x.dtype} values; the network's input '{name}' is {expected}: give the "
                              "float values the model takes (a network built with --input-dtype uint8 takes images)")
        if not np.isfinite(x).all():
            raise OptionError(f"{label}: holds values that are not finite (NaN or inf)")
    return x.astype(want.dtype, copy=False)


def _name_rows(report: Report, layers: list[Any], made_by: Mapping[str, str],
               parts: Mapping[str, list[tuple[str, int, int]]]) -> None:
    """Set each report row's `where`: the YAML row that made its layer ("file:line: row N (Block)", `made_by`);
    '' for layers of the input or made after the last row (marking the outputs). An output's `parts` rows are
    its own."""
    made = {f"(output) {t}": layer.name for layer in layers for t in layer.outputs}
    made |= {f"(output) {t}[{part}]": made[f"(output) {t}"] for t, split in parts.items() for part, _, _ in split
             if f"(output) {t}" in made}
    for r in report.rows:
        r.where = made_by.get(made.get(r.layer, r.layer), "")


def _random_inputs(definition: Any, seed: int, batch: int = 1, size: tuple[int, int] | None = None,
                   scale: float | None = None) -> dict[str, np.ndarray]:
    """A random array per network input of its type: standard-normal floats times `scale` (float16 ones rounded),
    uint8 images of 0..255; the dynamic batch `batch`, dynamic height and width `size` (an image input's
    dimensions 2 and 3)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in (definition.get_input(i) for i in range(definition.num_inputs)):
        dims = [int(d) for d in t.shape]
        if dims and dims[0] < 0:
            dims[0] = batch
        if any(d < 0 for d in dims):
            if size is None or len(dims) != 4 or any(d < 0 for d in dims[:2]):
                raise NetdefError(f"verify cannot choose the dynamic dimensions of input {t.name} {dims}: only a "
                                  "dynamic batch and, with an input range, height and width of (B, C, H, W)")
            dims[2:] = [v if d < 0 else d for d, v in zip(dims[2:], size)]
        x = random_input(dims, trt_api.np_dtype(t.dtype), rng)
        out[t.name] = x if scale is None or x.dtype == np.uint8 else (x * np.float64(scale)).astype(x.dtype)
    return out


def _model_input(x: np.ndarray, opts: BuildOptions) -> np.ndarray:
    """What the PyTorch model takes for the network input `x`: float32, and a uint8 image as the network itself
    normalizes it, (x / 255 - mean) / std per channel (`opts.input_normalization`)."""
    if x.dtype != np.uint8:
        return x.astype(np.float32)
    mean, std = (np.reshape(np.asarray(v, np.float64), (1, -1, 1, 1)) for v in opts.input_normalization)
    return ((x / 255.0 - mean) / std).astype(np.float32)


def _check_evaluable(layers: list, spec: Spec, params: dict[str, Any]) -> None:
    """The CPU evaluator computes no plugin layer and a few other kinds: name the first such layer, and the build
    parameters that avoid a plugin (another choice of a head's `--set` parameter)."""
    bad = next((lay for lay in layers if not can_evaluate(lay)), None)
    if bad is None:
        return
    plugin = bad.type in PLUGIN_TYPES
    avoid = "decode" if plugin else None  # the YOLO heads' choice without a plugin
    declared = spec.build_params()
    hints = []
    for k, p in declared.items():
        if p.choices and avoid in p.choices and params.get(k, p.default) != avoid:
            refused = [g for g in params if k in declared[g].needs and avoid not in declared[g].needs[k]]
            hints.append(f"--set {k}={avoid}" + (f", leaving out --set {' and '.join(refused)}" if refused else ""))
    what = f"a plugin ({bad.type})" if plugin else f"a {bad.type} layer"
    without = f"without it ({' or '.join(hints)}) or " if hints else ""
    raise UnsupportedLayer(f"layer '{bad.name}' is {what}, which the CPU evaluator cannot compute: verify the "
                           f"network {without}without --cpu on a GPU")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
