"""`netdef profile`: time per engine layer, and two engines compared layer by layer (netdef.tools.profile)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import engine_file
from ..errors import NetdefError
from ..fileio import RESULTS_JSON, check_output, output_name
from ..tools import profile
from .device import add_device_option, selected_device
from .options import number, parse_hw


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef profile` to the command line."""
    p = subparsers.add_parser(
        "profile", help="time per engine layer (TensorRT profiler) and what each layer is (engine inspector)",
        description=profile.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_profile)
    p.add_argument("engine", help="netdef engine file")
    p.add_argument("--batch", type=number("--batch", minimum=1), nargs="+", default=None,
                   help="batch size(s) (default: the profile's opt batch)")
    p.add_argument("--runs", type=number("--runs", minimum=1), default=200,
                   help="executions averaged per batch (default 200)")
    p.add_argument("--warmup", type=number("--warmup", minimum=0), default=20,
                   help="executions before profiling (default 20)")
    p.add_argument("--top", type=number("--top", minimum=1), default=25,
                   help="layers listed per profile, slowest first, and with --compare the largest per-layer "
                        "differences (default 25)")
    p.add_argument("--compare", metavar="ENGINE", help="a second engine to profile and compare with")
    p.add_argument("--input-shape", metavar="HxW", help="input height and width, for an engine built with a "
                                                        "dynamic input size (default: the profile's opt)")
    p.add_argument("--json", metavar="FILE", help="write every layer's figures and the environment as JSON")
    add_device_option(p)
    return p


def cmd_profile(a: argparse.Namespace) -> int:
    with selected_device(a):  # loaded, profiled and recorded on --device (checked first)
        return _cmd_profile(a)


def _cmd_profile(a: argparse.Namespace) -> int:
    from ..tools.environment import environment
    from ..tools.report import write_json

    engines = [a.engine] + ([a.compare] if a.compare else [])
    hw = parse_hw(a.input_shape)
    for e in engines:
        if not Path(e).is_file():
            raise NetdefError(f"engine not found: {e}")
    if a.json:
        check_output(a.json, inputs=engines, what="--json", kind=RESULTS_JSON,  # before any profiling
                     name=output_name(a.engine, ".json"))
    batches = a.batch or [engine_file.read_meta(a.engine)["options"]["batch"][1]]
    doc: dict[str, Any] = {"environment": environment(), "command": " ".join(sys.argv), "profiles": []}
    for b in batches:
        profs = [profile.profile_engine(e, b, a.runs, a.warmup, hw=hw) for e in engines]
        for prof in profs:
            print(profile.format_profile(prof, a.top))
            print()
            if not prof["detailed"]:
                print(f"(layer types and tactics: rebuild {prof['engine']} with `netdef build ... --detailed`)\n")
        if len(profs) == 2:
            print(profile.format_comparison(*profs))
            print()
            print(profile.format_layer_differences(*profs, top=a.top))
            print()
        doc["profiles"] += profs
    if a.json:
        write_json(a.json, doc)
        print(f"wrote {a.json}")
    return 0
