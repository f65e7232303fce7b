"""`netdef demo`: the embedded default job (netdef.examples.demo)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef demo` to the command line."""
    d = subparsers.add_parser("demo", help="the embedded default: export, build and (with a GPU) verify ResNet-18")
    d.set_defaults(func=cmd_demo)
    d.add_argument("--workdir", default="out/demo", help="where to write the .wts and engines")
    d.add_argument("--arch", default="resnet18",
                   help="a torchvision model netdef has an architecture of, e.g. resnet50, mobilenet_v2 "
                        "(default resnet18)")
    return d


def cmd_demo(a: argparse.Namespace) -> int:
    from ..examples.demo import run_demo

    return run_demo(Path(a.workdir), a.arch)
