"""`--device N`, the CUDA device of the commands that use a GPU (build, calibrate, run, bench, profile, detect,
refit, verify without --cpu, serve's single device):
defined here once, checked before any work, and made current for the command (`trt_api.use_device`); and
`--devices LIST` and `--allow-shared-device` (bench, serve): several, parsed and checked by `parse_devices`."""
from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import OptionError
from .options import number

HELP = ("CUDA device index to build or run on (default: the current device, 0); indices count the devices "
        "CUDA_VISIBLE_DEVICES leaves visible (with CUDA_VISIBLE_DEVICES=2,3, --device 1 is GPU 3)")
SHARED_HINT = ("add --allow-shared-device to run several instances on one GPU (for testing, or to overlap streams "
               "on one GPU)")
_INDEX = re.compile(r"[0-9]+")


def add_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
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


def add_devices_option(group: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str) -> None:
    """Add `--devices LIST` to a command; `help_text` says what the command does on each device."""
    group.add_argument("--devices", metavar="LIST", help=f"CUDA devices such as 0,1 (or all): {help_text}")


def add_shared_device_option(group: argparse.ArgumentParser | argparse._ArgumentGroup, example: str) -> None:
    """Add `--allow-shared-device` (`parse_devices`'s allow_repeat) to a command; `example` says what --devices
    0,0 then runs."""
    group.add_argument("--allow-shared-device", action="store_true",
                       help=f"with --devices: allow a device listed twice (0,0: {example})")


def parse_devices(text: str, option: str = "--devices", *, allow_repeat: bool = False) -> tuple[int, ...]:
    """'0,1' -> (0, 1); 'all' -> every visible device. Each index must name a visible device (the error lists the
    visible ones); a device listed twice is an error unless `allow_repeat` (two instances on one GPU)."""
    from .. import trt_api

    if text.strip().lower() == "all":
        found = tuple(range(len(trt_api.visible_devices())))
        if not found:
            raise OptionError(f"{option} all: no CUDA device is visible here")
        return found
    found = parse_device_indices(text, option, allow_repeat=allow_repeat)
    for d in found:
        trt_api.check_device(d, option)
    return found


def parse_device_indices(text: str, option: str = "--devices", *, allow_repeat: bool = False,
                         repeat_hint: str = SHARED_HINT) -> tuple[int, ...]:
    """'0,1' -> (0, 1): comma-separated indices >= 0 and nothing else (no '0x1', '+1' or '1_0'), not checked
    against the devices visible here ('all' is the caller's); a device listed twice is an error ending in
    `repeat_hint` unless `allow_repeat`."""
    parts = [p.strip() for p in text.split(",")]
    if not all(_INDEX.fullmatch(p) for p in parts):
        if all(_INDEX.fullmatch(p.removeprefix("-")) for p in parts):
            raise OptionError(f"{option} '{text}': device indices must be >= 0")
        raise OptionError(f"{option} '{text}': expected device indices such as 0,1, or 'all'")
    found = tuple(int(p) for p in parts)
    repeated = sorted({d for d in found if found.count(d) > 1})
    if repeated and not allow_repeat:
        raise OptionError(f"{option} {text}: device(s) {repeated} listed more than once; {repeat_hint}")
    return found
