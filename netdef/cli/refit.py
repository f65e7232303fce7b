"""`netdef refit`: new weights for a refittable engine, without a rebuild."""
from __future__ import annotations

import argparse
from typing import Any

from .device import add_device_option, device_index, selected_device
from .options import add_blocks_option, load_blocks


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef refit` to the command line."""
    r = subparsers.add_parser(
        "refit", help="replace the weights of a refittable engine (built with --refittable) without a rebuild",
        description="Defines the network from the new .wts with the engine's own architecture and options (the "
                    "same code as the build: BatchNorm folding, fp16, INT8 weight scales), checks every key and "
                    "shape, and hands each refittable weight to TensorRT by layer name. Needs a CUDA GPU.")
    r.set_defaults(func=cmd_refit)
    r.add_argument("engine", help="engine built with `netdef build --refittable`")
    r.add_argument("--weights", "-w", required=True, help="the new .wts file (same architecture)")
    r.add_argument("-o", "--output", help="engine file to write (default: the engine itself, atomically)")
    r.add_argument("--names", metavar="FILE",
                   help="class names of the new weights, one per line or a data.yaml's names:, recorded in the "
                        "engine as `netdef build` records them (default: WEIGHTS.names.json, which `netdef export` "
                        "writes for a checkpoint with names; without either the engine records none)")
    r.add_argument("--arch", metavar="YAML",
                   help="the engine's architecture, where its header cannot find it (one built from a YAML that "
                        "moved, or from a parse_spec architecture saved as YAML); checked against the header's hash")
    add_device_option(r)
    add_blocks_option(r)
    return r


def cmd_refit(a: argparse.Namespace) -> int:
    from ..class_names import load_names
    from ..refit import refit_file

    device_index(a)  # checked before any work
    names = load_names(a.names) if a.names else None
    load_blocks(a)
    with selected_device(a):
        meta = refit_file(a.engine, a.weights, a.output, names=names, names_from=a.names, arch=a.arch)
    print(f"refitted {a.output or a.engine}: {meta['refit']['weights_set']} weights in {meta['refit']['seconds']:.2f} s")
    return 0
