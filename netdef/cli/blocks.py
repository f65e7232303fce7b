"""`netdef blocks`: the blocks architecture YAML files can use."""
from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef blocks` to the command line."""
    k = subparsers.add_parser("blocks", help="list the blocks architecture YAML files can use")
    k.set_defaults(func=cmd_blocks)
    return k


def cmd_blocks(a: argparse.Namespace) -> int:
    from ..registry import known_blocks
    from ..spec import block_help

    for name in known_blocks():
        print(block_help(name))
    return 0
