"""Option values of netdef's commands: numbers checked at parse time but reported by the one error handler
(`netdef run: error: --batch 'abc': expected an integer`, exit 1, instead of argparse's usage message),
input shapes, lists of numbers."""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from ..errors import OptionError
from ..options import parse_input_shape


class Invalid:
    """What a `number` option holds for a value it cannot take: the error, raised by `checked`."""

    def __init__(self, error: OptionError):
        self.error = error


def number(option: str, kind: type = int, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> Callable[[str], Any]:
    """An argparse `type` for `option`: an int (or `kind` float) within [minimum, maximum] and > above."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
            if not math.isfinite(value):
                raise ValueError(text)
        except ValueError:
            return Invalid(OptionError(f"{option} '{text}': expected {'an integer' if kind is int else 'a number'}"))
        low = None if minimum is None else minimum <= value
        high = None if maximum is None else value <= maximum
        if low is False or high is False:
            bound = f"{minimum}..{maximum}" if low is not None and high is not None else \
                f">= {minimum}" if low is not None else f"<= {maximum}"
            return Invalid(OptionError(f"{option} {text}: must be {bound}"))
        if above is not None and not value > above:
            return Invalid(OptionError(f"{option} {text}: must be > {above}"))
        return value

    return convert


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """`args` itself, once no option holds an `Invalid` value; else that value's OptionError."""
    for value in vars(args).values():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, Invalid):
                raise v.error
    return args


def parse_hw(text: str | None, option: str = "--input-shape") -> tuple[int, int] | None:
    """'480,640' or '480x640' -> (480, 640), parsed as `netdef build --input-shape` parses a static size ('640':
    640x640); a MIN:OPT:MAX range is refused (running, benchmarking or calibrating takes one size); None stays None."""
    if text is None:
        return None
    hw, _ = parse_input_shape(text, option)
    if hw is None:
        raise OptionError(f"{option} '{text}': expected one size H,W or HxW such as 480x640; a MIN:OPT:MAX range "
                          "belongs to `netdef build --input-shape`")
    return hw


def parse_numbers(text: str, option: str, kind: type = float, count: int | None = None,
                  what: str | None = None) -> list:
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406]: `count` (or one or more) comma-separated numbers ('x' separates
    too: 17x3); an empty one ('1,', '1,,8', '1,x') is an error, not left out."""
    try:
        values = [kind(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count):
        what = what or f"{count or 'one or more'} comma-separated numbers"
        raise OptionError(f"{option} '{text}': expected {what}")
    return values


def optional_numbers(text: str | None, option: str, what: str | None = None) -> list | None:
    """`parse_numbers` of an option's text, None where the option is not given."""
    return None if text is None else parse_numbers(text, option, what=what)


def add_blocks_option(parser: argparse.ArgumentParser) -> None:
    """`--blocks MODULE|FILE.py` (repeatable): modules of the researcher's own blocks, loaded by `load_blocks`."""
    parser.add_argument("--blocks", action="append", default=[], metavar="MODULE",
                        help="a module of your own @block functions: a dotted name on sys.path (the working folder "
                             "included) or a .py file, which imports the modules beside it (repeatable; also "
                             "NETDEF_BLOCKS, a YAML's 'blocks:' and 'netdef.blocks' entry points)")


def load_blocks(args: argparse.Namespace) -> None:
    """Import the block modules installed (entry points, NETDEF_BLOCKS) and named by `--blocks`."""
    from ..block_modules import load_blocks as load

    load(args.blocks)
