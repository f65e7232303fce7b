"""`netdef export-plan`: the bare TensorRT plan of an engine, for programs other than netdef, and its sidecar."""
from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "write an engine's bare TensorRT plan (for trtexec, Triton, DeepStream, C++) and its metadata sidecar"
DESCRIPTION = ("Writes the plan inside a netdef engine file, byte for byte, as OUTPUT (for trtexec --loadEngine, "
               "Triton, DeepStream, IRuntime::deserializeCudaEngine) and OUTPUT.json with netdef's metadata: TensorRT, "
               "GPU, I/O, profiles, plugin libraries and how to load them. netdef info and Engine(OUTPUT) read both.")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef export-plan` to the command line."""
    e = subparsers.add_parser("export-plan", help=HELP, description=DESCRIPTION)
    e.set_defaults(func=cmd_export_plan)
    e.add_argument("engine", help="netdef engine (or a raw plan with its sidecar)")
    e.add_argument("-o", "--output", required=True, help="plan file to write, e.g. model.plan (and model.plan.json)")
    return e


def cmd_export_plan(a: argparse.Namespace) -> int:
    from ..deploy.plan import export_plan, library_problem, sidecar_path

    meta = export_plan(a.engine, a.output)
    load = meta["sidecar"]["load"]
    print(f"wrote {a.output} ({meta['plan_bytes'] / 2**20:.1f} MiB, sha256 {meta['plan_sha256'][:12]}) and "
          f"{sidecar_path(a.output)}; needs {load['requires']}")
    for lib in meta["plugins"]:
        print(f"  plugin library {lib['library']} ({lib.get('name')}): load it before deserializing the plan")
    if "trtexec" in load:
        print(f"  trtexec: {load['trtexec']}")
    if "note" in load:  # a warning (a TensorRT-RTX plan): stderr
        print(f"note: {load['note']}", file=sys.stderr)
    # written all the same (the plan loads once the library is back); `netdef triton`, which copies it, refuses
    for problem in filter(None, (library_problem(lib, a.engine) for lib in meta["plugins"])):
        print(f"note: {problem}", file=sys.stderr)
    return 0
