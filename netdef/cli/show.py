"""`netdef show`: an architecture expanded row by row (Ultralytics' parse_model listing), with -w the keys each
row reads and the strict key report: a dry run before `netdef build`."""
from __future__ import annotations

import argparse
from typing import Any

from .build import parse_params
from .options import add_blocks_option, load_blocks


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef show` to the command line."""
    p = subparsers.add_parser(
        "show", help="list an architecture row by row (blocks, arguments, keys, shapes, parameters)",
        description="Defines the network (no engine build; TensorRT-RTX does it without a GPU) and prints one line "
                    "per YAML row: index, from, n after depth scaling, parameters, block, arguments after width "
                    "scaling, weight-key prefix, output shape. With --weights each row's keys and shapes follow, "
                    "and the strict key report (missing/unused keys) ends the listing; the exit status is 1 when a "
                    "strict build would refuse those weights.")
    p.set_defaults(func=cmd_show)
    p.add_argument("arch", help="architecture YAML or name")
    p.add_argument("--weights", "-w", help=".wts file to check against the architecture")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="block build parameter, as for `netdef build` (repeatable)")
    p.add_argument("--input-shape", help="HxW overriding the YAML's input size (e.g. 480x640), or MIN:OPT:MAX "
                                         "sizes of a dynamic input size as for `netdef build`")
    p.add_argument("--keys", action="store_true", help="list each row's keys and shapes also without --weights")
    add_blocks_option(p)
    return p


def cmd_show(a: argparse.Namespace) -> int:
    from ..options import BuildOptions, parse_input_shape
    from ..tools.show import show

    from ..errors import NetdefError

    load_blocks(a)
    input_hw, input_range = parse_input_shape(a.input_shape) if a.input_shape else (None, None)
    try:
        report = show(a.arch, a.weights, BuildOptions(input_hw=input_hw, input_range=input_range,
                                                      params=parse_params(a.set)))
    except NetdefError as e:
        if getattr(e, "shown", None):  # the rows built before the failing one: their shapes show where it went off
            print(e.shown, flush=True)
        raise
    print(report.format(keys=True if a.keys else None))
    return 0 if report.ok else 1
