"""`netdef blocks`: the blocks architecture YAML files can use (netdef's own and those loaded), with module and
signature."""
from __future__ import annotations

import argparse
from typing import Any

from .options import add_blocks_option, load_blocks


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef blocks` to the command line."""
    k = subparsers.add_parser("blocks", help="list the blocks architecture YAML files can use")
    k.set_defaults(func=cmd_blocks)
    add_blocks_option(k)
    return k


def cmd_blocks(a: argparse.Namespace) -> int:
    from ..registry import known_blocks
    from ..spec import block_help

    load_blocks(a)
    described: dict[str, str] = {}  # a build parameter several blocks take is described once
    for name in known_blocks():
        print(block_help(name, described))
    return 0
