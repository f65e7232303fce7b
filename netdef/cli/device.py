"""`--device N`, the CUDA device of the commands that use a GPU (build, calibrate, run, bench, profile, detect):
defined here once, checked before any work, and made current for the command (`trt_api.use_device`)."""
from __future__ import annotations

import argparse
from typing import Any

from .options import number

HELP = ("CUDA device index to build or run on (default: the current device, 0); indices count the devices "
        "CUDA_VISIBLE_DEVICES leaves visible (with CUDA_VISIBLE_DEVICES=2,3, --device 1 is GPU 3)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """Add `--device N` to a command."""
    parser.add_argument("--device", type=number("--device", minimum=0), metavar="N", help=HELP)


def device_index(a: argparse.Namespace) -> int | None:
    """The command's --device, checked: an index no visible device has is an OptionError listing the visible
    ones (call this before any work); None without --device."""
    from .. import trt_api

    return None if a.device is None else trt_api.check_device(a.device, "--device")


def selected_device(a: argparse.Namespace) -> Any:
    """A context manager with the command's --device current inside it (nothing changes without --device); the
    index is checked when this is called."""
    from .. import trt_api

    return trt_api.use_device(device_index(a), "--device")
