"""`netdef verify`: the first layer where a netdef network diverges from the PyTorch model (exit 1 if any)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import OptionError
from .build import add_input_dtype_options, input_dtype_options, parse_params
from .device import add_device_option, device_index, selected_device
from .options import add_blocks_option, load_blocks, number


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef verify` to the command line."""
    p = subparsers.add_parser(
        "verify", help="compare a network with its PyTorch model layer by layer; name the first divergent layer",
        description="Loads the .wts into the PyTorch model (its keys must be the model's state_dict keys) and into "
                    "the network, runs both on one input (random, or --input) and compares each layer with the "
                    "PyTorch module of its name (a convolution with BatchNorm folded in: the BatchNorm). Exit 0 when "
                    "every compared layer is within the tolerance, 1 otherwise.")
    p.set_defaults(func=cmd_verify)
    p.add_argument("arch", help="architecture YAML file or name")
    p.add_argument("--weights", "-w", required=True, help=".wts file (from `netdef export`)")
    p.add_argument("--model", required=True, metavar="SOURCE",
                   help="the PyTorch model: torchvision:NAME, package.module:callable, file.py:callable (each with the "
                        "builder's keyword arguments if wanted: \"torchvision:resnet18(num_classes=10)\"), or a "
                        "pickled-model checkpoint")
    p.add_argument("--cpu", action="store_true",
                   help="evaluate the network definition in float64 with torch on the CPU (no GPU, no TensorRT "
                        "runtime); default: build an engine with the compared tensors as outputs and run it")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    p.add_argument("--input-shape", help="HxW overriding the YAML's input size (e.g. 256x320), or MIN:OPT:MAX "
                                         "sizes of a dynamic input size as for `netdef build` (the network is "
                                         "then checked at each of the three sizes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="block build parameter (repeatable)")
    p.add_argument("--fp32-rows", action="append", default=[], metavar="PATTERN",
                   help="fp16: the YAML rows built in float32, as `netdef build --fp32-rows` (repeatable)")
    add_input_dtype_options(p)
    p.add_argument("--tol", type=number("--tol", float, above=0.0),
                   help="max relative error per layer (default 1e-5 with --cpu, 1e-4 for fp32 engines, 1e-2 fp16)")
    p.add_argument("--seed", type=number("--seed"), default=0, help="seed of the random input (default 0)")
    p.add_argument("--batch", type=number("--batch", minimum=1),
                   help="images in the random input (default 1; 2 or more catches blocks that mix the batch up)")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--input", metavar="FILE.npy",
                       help="the input as a .npy array of the network's input shape and type, e.g. a real image "
                            "preprocessed as the model expects (default: random; its batch and, for a dynamic "
                            "input size, its size are the ones checked)")
    given.add_argument("--input-scale", type=number("--input-scale", float, above=0.0), metavar="S",
                       help="standard deviation of the random float input (default 1): a clamp such as ReLU6's at "
                            "6 acts only on values that reach it; 10 makes them common")
    add_device_option(p)
    add_blocks_option(p)
    return p


def cmd_verify(a: argparse.Namespace) -> int:
    from ..options import BuildOptions, parse_input_shape
    from ..verify import verify
    from ..verify.reference import load_model

    if a.cpu and a.device is not None:
        raise OptionError(f"--device {a.device} with --cpu: verify --cpu uses no GPU; leave out one of them")
    device_index(a)  # checked before any work
    load_blocks(a)
    input_hw, input_range = parse_input_shape(a.input_shape) if a.input_shape else (None, None)
    opts = BuildOptions(precision=a.precision, input_hw=input_hw, input_range=input_range,
                        params=parse_params(a.set), fp32_rows=tuple(a.fp32_rows), **input_dtype_options(a))
    model = a.model
    sizes = [None] if a.input or not input_range else input_range  # a dynamic size: its MIN, OPT and MAX in turn
    if len(set(sizes)) > 1:  # checked at three sizes: the model loaded once
        print(f"[netdef] loading {model} with PyTorch ...", file=sys.stderr, flush=True)
        model = load_model(model)
    ok = True
    with selected_device(a):  # the engine and the PyTorch model on --device (torch's current device)
        for size in dict.fromkeys(sizes):
            report = verify(a.arch, a.weights, model, cpu=a.cpu, opts=opts, tol=a.tol, seed=a.seed,
                            batch=a.batch, size=size, input_data=a.input, input_scale=a.input_scale)
            first = report.first_failure
            if first is not None:
                why = first.note if first.error is None else \
                    f"max rel error {first.error:.3g} > {report.tol:g} {first.note}".rstrip()
                print(f"first divergent layer: {first.layer} (PyTorch module {first.module}): {why}")
                if first.where:  # the YAML row that made it, as a build error names it
                    print(f"  made by {first.where}")
                rows = "; ".join(report.unchecked_before)  # row outputs no module could check, since the last pass
                err = report.input_error  # the failing layer's input against its module's
                if report.input_matches:
                    print(f"  its input matches PyTorch's (max rel error {err:.3g}): the layer itself computes "
                          "otherwise (its weights' layout, its arguments)")
                elif report.input_differs:
                    inner = report.unchecked_layers
                    print(f"  its input differs already from PyTorch's (max rel error {err:.3g}): the divergence "
                          "begins before it" + (f", at a row whose output no PyTorch module of its name could check: "
                                                f"{rows}" if rows else
                                                f", among layers no PyTorch module checks: {', '.join(inner[:8])}"
                                                + (", ..." if len(inner) > 8 else "") if inner else ""))
                elif rows:
                    print(f"  the divergence may begin before it, at a row whose output no PyTorch module of its name "
                          f"could check: {rows}")
            print(report.table())
            print(report.summary())
            ok = ok and report.ok
    return 0 if ok else 1
