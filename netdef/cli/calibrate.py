"""`netdef calibrate`: INT8 activation ranges measured with an FP32 engine (netdef.int8.calibrate)."""
from __future__ import annotations

import argparse
from typing import Any

from ..int8 import calibrate as calibration_run
from ..int8.calibration import METHODS
from .device import add_device_option, selected_device
from .options import add_blocks_option, load_blocks, number, optional_numbers, parse_hw


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef calibrate` to the command line."""
    p = subparsers.add_parser(
        "calibrate", help="measure INT8 activation ranges (a calibration table for --precision int8)",
        description="Runs the FP32 network over calibration data on the GPU and writes the activation ranges "
                    "that `netdef build --precision int8 --calibration TABLE` needs. DATA: a folder of images "
                    "(resized to the input, RGB/grayscale, /255, optional --mean/--std) or a .npy/.npz/.pt "
                    "array (N, C, H, W) used as given.")
    p.set_defaults(func=cmd_calibrate)
    p.add_argument("arch", help="architecture YAML or name")
    p.add_argument("--weights", "-w", required=True, help=".wts file (from `netdef export`)")
    p.add_argument("--data", "-d", required=True, help="image folder or .npy/.npz/.pt array")
    p.add_argument("-o", "--output", required=True, help="calibration table to write (JSON)")
    p.add_argument("--method", default="entropy", choices=METHODS, help="how ranges are chosen (default entropy)")
    p.add_argument("--percentile", type=number("--percentile", float, maximum=100.0, above=0.0), default=99.99,
                   help="for --method percentile (default 99.99)")
    p.add_argument("--batch", type=number("--batch", minimum=1), default=16, help="inputs per engine run (default 16)")
    default_max = calibration_run.DEFAULT_MAX_IMAGES
    p.add_argument("--max-images", type=number("--max-images", minimum=1), default=default_max,
                   help=f"use at most this many inputs, a fixed random subset (default {default_max})")
    p.add_argument("--input-shape", help="H,W overriding the YAML's input size (build with the same value)")
    p.add_argument("--mean", help="per-channel mean subtracted from images scaled to [0,1], e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel std dividing images, e.g. 0.229,0.224,0.225")
    p.add_argument("--resize", choices=("stretch", "letterbox"),
                   help="how images are brought to the input size (default: letterbox, aspect kept and grey 114 "
                        "around as `netdef detect` feeds it, for a YOLO detector; stretch for the others)")
    p.add_argument("--no-strict", action="store_true", help="allow keys in the .wts that the architecture does not use")
    add_device_option(p)
    add_blocks_option(p)
    return p


def cmd_calibrate(a: argparse.Namespace) -> int:
    on_device = selected_device(a)  # --device checked before any work
    load_blocks(a)
    hw = parse_hw(a.input_shape)
    with on_device:  # the FP32 network is built and run on the current device
        table = calibration_run.calibrate(
            a.arch, a.weights, a.data, a.output, method=a.method, percentile=a.percentile, batch=a.batch,
            max_images=a.max_images, input_hw=list(hw) if hw else None, mean=optional_numbers(a.mean, "--mean"),
            std=optional_numbers(a.std, "--std"), strict=not a.no_strict, resize=a.resize)
    shape = f" --input-shape {a.input_shape}" if a.input_shape else ""
    print(f"wrote {a.output}: {len(table.amax)} ranges from {table.meta['images']} inputs\n"
          f"next: netdef build {a.arch} --weights {a.weights}{shape} --precision int8 --calibration {a.output} "
          f"-o ENGINE")
    return 0
