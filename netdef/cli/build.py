"""`netdef build`: a TensorRT engine from an architecture YAML and a .wts file."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import OptionError
from .device import add_device_option, selected_device
from .options import add_blocks_option, load_blocks, number, optional_numbers


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef build` to the command line."""
    b = subparsers.add_parser("build", help="build a TensorRT engine from an architecture YAML and a .wts",
                              description="ARCH is a YAML file or an architecture name (see architectures/).")
    b.set_defaults(func=cmd_build)
    b.add_argument("arch")
    b.add_argument("--weights", "-w", required=True, help=".wts file (from `netdef export`)")
    b.add_argument("-o", "--output", required=True, help="engine file to write")
    b.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    b.add_argument("--batch", default="1",
                   help="N, or MIN:OPT:MAX for a dynamic-batch engine (MIN:MAX means MIN:MAX:MAX), or several "
                        "profiles such as 1:1:8,9:256:256 (each tuned for its OPT batch; the runtime picks one per "
                        "batch) (default 1)")
    b.add_argument("--input-shape", help="HxW overriding the YAML's input size (e.g. 480x640), or MIN:OPT:MAX "
                                         "sizes for a dynamic input size, e.g. 320x320:640x640:1280x1280 (every "
                                         "--batch profile gets this range)")
    add_input_dtype_options(b)
    b.add_argument("--workspace", type=number("--workspace", minimum=1), metavar="MiB",
                   help="builder workspace limit")
    b.add_argument("--opt-level", type=number("--opt-level", minimum=0, maximum=5),
                   help="builder optimization level 0..5 (lower builds faster)")
    b.add_argument("--timing-cache", help="persistent timing cache file (read and updated)")
    b.add_argument("--no-tf32", action="store_true", help="keep fp32 layers in full fp32 (no TF32)")
    b.add_argument("--no-strict", action="store_true", help="allow keys in the .wts that the architecture does not use")
    b.add_argument("--calibration", help="int8: calibration table (JSON) from `netdef calibrate`")
    b.add_argument("--int8-exclude", action="append", default=[], metavar="PATTERN",
                   help="int8: leave the layers whose names match PATTERN (fnmatch, e.g. 'model.24.*') "
                        "unquantized (repeatable)")
    b.add_argument("--fp32-rows", action="append", default=[], metavar="PATTERN", dest="fp32_rows",
                   help="fp16/int8: build the YAML rows whose key prefix matches PATTERN (fnmatch, e.g. 'model.22' "
                        "or 'layer4*') in float32 (repeatable)")
    b.add_argument("--detailed", action="store_true",
                   help="keep layer types, tactics and formats in the engine (shown by `netdef profile`)")
    b.add_argument("--compute-capability", help="TensorRT-RTX without a GPU: target, e.g. 8.6 (default)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="block build parameter, e.g. --set conf_thres=0.25 (repeatable)")
    b.add_argument("--refittable", action="store_true",
                   help="an engine whose weights `netdef refit` (or a later build with new weights) can replace "
                        "without a rebuild; it can run slower (TensorRT 8.6: YOLOv5s 1.5-1.8x, ResNet-50 not): "
                        "for deployment prefer a plain engine rebuilt with --timing-cache")
    b.add_argument("--names", metavar="FILE",
                   help="class names, one per line or a data.yaml's names:, recorded in the engine for `netdef "
                        "detect` and `netdef serve` (default: WEIGHTS.names.json, which `netdef export` writes for a "
                        "checkpoint with names)")
    b.add_argument("--force", action="store_true", help="rebuild even if the engine is up to date (or refittable)")
    add_device_option(b)
    add_blocks_option(b)
    return b


def build_options(a: argparse.Namespace) -> Any:
    """The BuildOptions the command line asks for."""
    from ..options import BuildOptions, parse_input_shape, parse_profiles

    batch, profiles = parse_profiles(a.batch)
    input_hw, input_range = parse_input_shape(a.input_shape) if a.input_shape else (None, None)
    return BuildOptions(precision=a.precision, batch=batch, profiles=profiles, input_hw=input_hw,
                        input_range=input_range,
                        workspace_mib=a.workspace, opt_level=a.opt_level, tf32=not a.no_tf32,
                        strict=not a.no_strict, timing_cache=a.timing_cache,
                        compute_capability=a.compute_capability, calibration=a.calibration,
                        int8_exclude=tuple(a.int8_exclude), fp32_rows=tuple(a.fp32_rows), detailed=a.detailed,
                        refittable=a.refittable,
                        params=parse_params(a.set), **input_dtype_options(a))


def add_input_dtype_options(p: argparse.ArgumentParser) -> None:
    """--input-dtype, --input-mean, --input-std (`build`, `verify`): the network input's type and normalization."""
    p.add_argument("--input-dtype", default="float32", choices=("float32", "float16", "uint8"),
                   help="the input's type (default float32). uint8: images of 0..255 (4x fewer bytes to copy than "
                        "float32), scaled to [0, 1] and normalized with --input-mean and --input-std inside the "
                        "network (layer INPUT/normalize); float16: half the bytes, cast inside")
    p.add_argument("--input-mean", metavar="M", help="uint8 input: per-channel mean of images scaled to [0, 1], "
                                                     "subtracted inside the network, e.g. 0.485,0.456,0.406")
    p.add_argument("--input-std", metavar="S", help="uint8 input: per-channel standard deviation of images scaled to "
                                                    "[0, 1], divided by inside the network, e.g. 0.229,0.224,0.225")


def input_dtype_options(a: argparse.Namespace) -> dict[str, Any]:
    """BuildOptions' input_dtype, input_mean and input_std of `add_input_dtype_options`' arguments."""
    what = "numbers such as 0.485,0.456,0.406"
    return {"input_dtype": a.input_dtype, "input_mean": optional_numbers(a.input_mean, "--input-mean", what),
            "input_std": optional_numbers(a.input_std, "--input-std", what)}


def parse_params(items: list[str]) -> dict[str, Any]:
    """['conf_thres=0.25', 'head=plugin'] -> {'conf_thres': 0.25, 'head': 'plugin'} (JSON values, else text)."""
    params: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise OptionError(f"--set '{item}': expected KEY=VALUE")
        if key in params:  # the last one silently won: a pasted command line's leftover, say
            earlier = next(i for i in items if i.partition("=")[0] == key)
            raise OptionError(f"--set {key} is given twice ({earlier}, {item}): give it once")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def cmd_build(a: argparse.Namespace) -> int:
    from ..build import build_engine
    from ..class_names import load_names

    on_device = selected_device(a)  # --device checked before any work
    names = load_names(a.names) if a.names else None
    load_blocks(a)
    with on_device:  # TensorRT builds on the current device
        res = build_engine(a.arch, a.weights, a.output, build_options(a), force=a.force, names=names,
                           names_from=a.names)
    if res.built:
        print(f"{'refitted' if res.refitted else 'built'} {res.path}: {res.seconds:.1f} s in all")
    return 0
