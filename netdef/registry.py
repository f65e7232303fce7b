"""The block registry: YAML rows name blocks; researchers add blocks with `@block("Name")`.

A block is `fn(net, x, prefix, *args, **kwargs) -> tensor | dict[str, tensor]`, where `x` is one
tensor (or a list when the row has several `from` indices) and `prefix` is the row's weight-key prefix.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import NetdefError


@dataclass(frozen=True)
class Block:
    name: str
    fn: Callable[..., Any]
    width_args: tuple[str, ...] = ()  # channel arguments scaled by width_multiple (Ultralytics rows)
    repeat_arg: str | None = None  # argument that receives the row's `number` (scaled by depth_multiple)

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)


BLOCKS: dict[str, Block] = {}


def block(name: str, *, width_args: tuple[str, ...] = (), repeat_arg: str | None = None) -> Callable:
    """Register `fn` as block `name` for architecture YAML files.

    width_args: channel arguments that `width_multiple` scales (rounded up to a multiple of 8).
    repeat_arg: the argument that receives the row's `number` (scaled by `depth_multiple`); blocks
    without one are repeated as a sequence named `prefix.0`, `prefix.1`, ...
    """
    def register(fn: Callable) -> Callable:
        if name in BLOCKS and BLOCKS[name].fn is not fn:
            raise NetdefError(f"block '{name}' is registered twice ({BLOCKS[name].fn.__module__} and {fn.__module__})")
        BLOCKS[name] = Block(name, fn, tuple(width_args), repeat_arg)
        return fn
    return register


def get_block(name: str) -> Block:
    _load_builtin_blocks()
    return BLOCKS[name]


def known_blocks() -> list[str]:
    _load_builtin_blocks()
    return sorted(BLOCKS)


def _load_builtin_blocks() -> None:
    from . import blocks  # noqa: F401  (registers the built-in blocks on import)
