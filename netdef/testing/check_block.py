"""Cross-validate a block against PyTorch (in the style of torch2trt's `cross_validate`): build the block alone
as a network with the torch module's own weights, run it with TensorRT on random input, compare.

    from netdef.testing.check_block import check_block
    check_block("LayerNorm", torch.nn.LayerNorm(32), (2, 8, 32), kwargs={"normalized_shape": 32})
    check_block(lambda net, x, p: net.gelu(x, p, "tanh"), torch.nn.GELU("tanh"), (2, 3, 8, 8), precision="fp16")

Running the engine needs a CUDA GPU and full TensorRT; `define_block` (the definition alone) does not.
"""
from __future__ import annotations

import difflib
import numbers
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BlockError, NetdefError, OptionError
from ..network import Network
from ..spec import returns_tensors
from ..tools.verify import check_tolerance, max_rel_error

TOLERANCE = {"fp32": 1e-5, "fp16": 2e-2}  # max |trt - torch| / max |torch|
PREFIX = "m"  # the weight-key prefix the block is built under: the torch module's keys are `m.<name>`


def _block_fn(block_or_fn: str | Callable[..., Any]) -> Callable[..., Any]:
    """A registered block's function (by name or `Block`), or `block_or_fn` itself."""
    if isinstance(block_or_fn, str):
        from .. import blocks  # noqa: F401  (registers the built-in blocks)
        from ..block_modules import HOW_TO_LOAD
        from ..errors import SpecError
        from ..registry import get_block, known_blocks

        try:
            return get_block(block_or_fn).fn
        except KeyError:
            near = difflib.get_close_matches(block_or_fn, known_blocks(), n=1, cutoff=0.8)
            meant = f": did you mean '{near[0]}'?" if near else ""
            raise SpecError(f"unknown block '{block_or_fn}'{meant}; known blocks: {', '.join(known_blocks())}. Import "
                            f"the module that registers it first, or {HOW_TO_LOAD}") from None
    fn = getattr(block_or_fn, "fn", block_or_fn)
    if not callable(fn):
        raise OptionError(f"check_block: block {block_or_fn!r}: expected a block's name or a function "
                          "fn(net, x, prefix, *args, **kwargs)")
    return fn


def _check_arguments(block_or_fn: str | Callable[..., Any], fn: Callable[..., Any], prefix: str, args: Sequence[Any],
                     kwargs: Mapping[str, Any]) -> None:
    """SpecError for `args`/`kwargs` the block does not take (a misspelt keyword), worded as a YAML row's error,
    before the block runs; a function without a signature (a builtin) is left to its call."""
    import inspect

    from ..errors import SpecError
    from ..registry import bad_arguments

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    name = block_or_fn if isinstance(block_or_fn, str) else getattr(block_or_fn, "name", None) or \
        getattr(fn, "__name__", "the block")
    bad = bad_arguments(name, signature, prefix, args, kwargs)
    if bad:
        raise SpecError(f"check_block: {bad}")


def module_weights(torch_module: Any, prefix: str = PREFIX) -> dict[str, np.ndarray]:
    """The module's state_dict as flat float32 arrays under `prefix.` (what a .wts export of it would hold)."""
    state = torch_module.state_dict() if hasattr(torch_module, "state_dict") else {}
    return {f"{prefix}.{k}": v.detach().cpu().float().numpy().ravel() for k, v in state.items()}


def define_block(block_or_fn: str | Callable[..., Any], input_shapes: Sequence[Sequence[int]],
                 weights: Mapping[str, np.ndarray], *, precision: str = "fp32", args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, prefix: str = PREFIX) -> Network:
    """A network of one block: inputs `x0, x1, ...` (batch dynamic) -> the block (prefix `prefix`) -> output `y`.
    Every weight key must be used (strict) and TensorRT must accept each layer: a layer it rejected is a
    TensorRTError naming it, also where the block then failed on that layer's output."""
    fn = _block_fn(block_or_fn)
    _check_arguments(block_or_fn, fn, prefix, args, kwargs or {})
    net = Network(weights, precision=precision, source="the torch module's weights")
    xs = [net.input(f"x{i}", (-1, *shape[1:])) for i, shape in enumerate(input_shapes)]
    net.scope = prefix
    try:
        y = fn(net, xs if len(xs) > 1 else xs[0], prefix, *args, **dict(kwargs or {}))
    except Exception as e:  # noqa: BLE001  the block failed on a layer TensorRT rejected: name it, as a YAML row does
        if not isinstance(e, NetdefError):
            net.check_layers()
        raise
    net.check_layers()
    if y is None:
        raise BlockError(f"check_block: {getattr(fn, '__qualname__', fn)} returned None: a block returns its output "
                         "tensor (`return y`)")
    if not returns_tensors(net, y):
        raise BlockError(f"check_block: {getattr(fn, '__qualname__', fn)} returned {type(y).__name__}, not a tensor: "
                         "a block returns the tensor its last net.* call made (net.constant(array, name) makes one of "
                         "an array)")
    net.output(y, "y")
    net.check_keys(strict=True)
    return net


def _check_precision(precision: str) -> None:
    """An OptionError for a precision a block cannot be checked in alone: int8 (no calibration scales: it would
    run unquantized)."""
    if precision not in TOLERANCE:
        raise OptionError(f"check_block: precision '{precision}': use fp32 or fp16 (an int8 block's scales come "
                          "from calibrating the whole model with `netdef calibrate`: compare that engine's outputs "
                          "with PyTorch's)")


def _shapes(input_shape: Any) -> list[tuple[int, ...]]:
    """The input shapes of `input_shape`: one shape (the batch first), or a list of them for a block of several
    inputs; an OptionError for anything else."""
    def shape(s: Any) -> tuple[int, ...] | None:
        ok = isinstance(s, Sequence) and not isinstance(s, str) and len(s) > 0 and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in s)
        return tuple(int(n) for n in s) if ok else None

    one = shape(input_shape)
    if one is not None:
        return [one]
    many = [shape(s) for s in input_shape] if isinstance(input_shape, Sequence) and not isinstance(
        input_shape, str) and len(input_shape) > 0 else [None]
    if None in many:
        raise OptionError(f"check_block: input_shape {input_shape!r}: expected a shape of positive integers, the "
                          "batch first ((2, 16, 32, 32)), or a list of them for a block of several inputs")
    return many


def block_case(block_or_fn: str | Callable[..., Any], torch_module: Callable[..., Any],
               input_shape: Sequence[int] | Sequence[Sequence[int]], precision: str, args: Sequence[Any],
               kwargs: Mapping[str, Any] | None, weights: Mapping[str, np.ndarray] | None,
               seed: int) -> tuple[list[tuple[int, ...]], list[np.ndarray], Any]:
    """What `check_block` and its CPU mode compare on: the input shapes, random normal inputs (seeded) and the
    block's Network defined with the module's weights."""
    _check_precision(precision)
    shapes = _shapes(input_shape)
    if weights is not None and not isinstance(weights, Mapping):
        raise OptionError(f"check_block: weights: expected a mapping key -> array (keys under prefix '{PREFIX}.'), "
                          f"got {type(weights).__name__}")
    if len({s[0] for s in shapes}) != 1:
        raise NetdefError(f"check_block: the inputs' batch sizes differ: {shapes}")
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    net = define_block(block_or_fn, shapes, module_weights(torch_module) if weights is None else weights,
                       precision=precision, args=args, kwargs=kwargs)
    return shapes, xs, net


def check_block(block_or_fn: str | Callable[..., Any], torch_module: Callable[..., Any],
                input_shape: Sequence[int] | Sequence[Sequence[int]], *, precision: str = "fp32",
                args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                weights: Mapping[str, np.ndarray] | None = None, tolerance: float | None = None,
                seed: int = 0, cpu: bool = False) -> float:
    """Build `block_or_fn` (a block name, or `fn(net, x, prefix, *args, **kwargs)`) with `torch_module`'s weights
    (its state_dict under prefix `m.`, or `weights`), run it with TensorRT on random normal input of
    `input_shape` (the batch included; a list of shapes for a block of several inputs) and compare with
    `torch_module` on the same input in float32. Returns the max relative error; raises AssertionError where the
    output shapes differ or above `tolerance` (default 1e-5 for fp32, built without TF32, and 2e-2 for fp16;
    int8 is refused: a block alone has no calibration scales).
    `cpu=True`: no GPU needed, the block's network definition is evaluated in float64 on the CPU
    (netdef.verify.block.check_block_cpu) and compared with a float64 copy of `torch_module`."""
    _check_precision(precision)  # before a GPU is asked for
    check_tolerance(tolerance, "check_block: tolerance")
    if cpu:
        from ..verify.block import check_block_cpu

        return check_block_cpu(block_or_fn, torch_module, input_shape, precision=precision, args=args,
                               kwargs=kwargs, weights=weights, tolerance=tolerance, seed=seed)
    import torch

    from .. import trt_api
    from ..compiler import compile_network
    from ..errors import TensorRTUnavailable
    from ..options import BuildOptions
    from ..runtime import Engine

    if not trt_api.can_run_engines():  # before the build: the engine would be built only to be refused
        raise TensorRTUnavailable(f"check_block runs the block's engine, which needs a CUDA GPU and full TensorRT "
                                  f"(this is {trt_api.here()}); "
                                  "cpu=True evaluates its network definition on the CPU instead")
    shapes, xs, net = block_case(block_or_fn, torch_module, input_shape, precision, args, kwargs, weights, seed)
    batch = shapes[0][0]
    opts = BuildOptions(precision=precision, batch=(batch, batch, batch), opt_level=0, tf32=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "block.engine"
        compile_network(net, opts, path, arch={"name": "check_block"},
                        weights={"path": "the torch module's weights", "sha256": ""}, log=lambda msg: None)
        out = Engine(path).infer({f"x{i}": x for i, x in enumerate(xs)}, as_numpy=True)["y"]
    with torch.no_grad():
        if hasattr(torch_module, "eval"):
            torch_module.eval()
        ref = torch_module(*(torch.from_numpy(x) for x in xs))
    return compared(out, module_output(ref).detach().cpu().float().numpy(), precision, tolerance)



def module_output(ref: Any) -> Any:
    """The tensor the block is compared with: the module's output, or the first tensor of a tuple or list it returns
    (nn.MultiheadAttention's (output, weights)), as `netdef verify` compares such a module."""
    if isinstance(ref, (tuple, list)) and ref and hasattr(ref[0], "detach"):
        return ref[0]
    if not hasattr(ref, "detach"):
        raise NetdefError(f"check_block: the torch module returned {type(ref).__name__}, not a tensor (or a tuple or "
                          "list starting with one) to compare the block's output with")
    return ref


def compared(out: np.ndarray, ref: np.ndarray, precision: str, tolerance: float | None, mode: str = "") -> float:
    """The max relative error of the block's output `out` against the torch module's `ref`. AssertionError (raised,
    not asserted: `python -O` must not pass a broken block) where their shapes differ or the error is above
    `tolerance` (default `TOLERANCE[precision]`); `mode` follows the precision in the message (" (CPU)")."""
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"{precision}{mode}: the block's output has shape {tuple(out.shape)}, the torch "
                             f"module's {tuple(ref.shape)}")
    limit = TOLERANCE[precision] if tolerance is None else tolerance
    err = max_rel_error(out, ref)
    if not err <= limit:
        raise AssertionError(f"{precision}{mode}: max relative error {err:.3g} > {limit:g} (output {tuple(out.shape)})")
    return err
