"""The block registry: YAML rows name blocks; researchers add blocks with `@block("Name")`.

A block is `fn(net, x, prefix, *args, **kwargs) -> tensor | dict[str, tensor]`, where `x` is one
tensor (or a list when the row has several `from` indices) and `prefix` is the row's weight-key prefix.
A block that reads build parameters (`netdef build --set KEY=VALUE`) declares them with `params=`; a
`--set` key that no block of the architecture declares is an error. The built-in blocks live in
`netdef.blocks` (importing it registers them); this module imports no block.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import marshal
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import NetdefError, OptionError
from .fileio import file_sha256


@dataclass(frozen=True, eq=False)
class Param:
    """A build parameter a block reads with `net.param(name)`: its default, type and allowed values."""

    default: Any
    kind: type | None = None  # default: the default's type (int accepted where float is asked)
    choices: Sequence[Any] | None = None
    help: str = ""
    # (test, what it asks: "a positive number"); compared by its text, so equal declarations are equal
    valid: tuple[Callable[[Any], bool], str] | None = field(default=None, compare=False, repr=False)
    needs: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # given only with these values of others
    # a converter for values no plain kind takes ("5,3" or [5, 3] -> (5, 3)); ValueError for a bad one
    parse: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)

    @property
    def asks(self) -> str | None:
        return None if self.valid is None else self.valid[1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Param):
            return NotImplemented
        return ((self.default, self.kind, self.choices, self.help, dict(self.needs), self.asks)
                == (other.default, other.kind, other.choices, other.help, dict(other.needs), other.asks))

    __hash__ = None  # type: ignore[assignment]  # equal by value, holds a mapping

    def convert(self, name: str, value: Any) -> Any:
        """`value` as this parameter's type; an OptionError naming `name` otherwise."""
        kind = self.kind or type(self.default)
        if self.parse is not None:
            try:
                out = self.parse(value)
            except (TypeError, ValueError):
                raise OptionError(f"--set {name}={value!r}: expected {self.asks or 'another value'}") from None
            if self.valid is not None and not self.valid[0](out):
                raise OptionError(f"--set {name}={value!r}: expected {self.valid[1]}")
            return out
        try:
            if kind is bool and not isinstance(value, bool):
                raise ValueError
            out = kind(value) if kind in (int, float, str) else value
            if kind is int and (isinstance(value, bool) or float(value) != out):
                raise ValueError
        except (TypeError, ValueError):
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            spelt = ": true or false" if kind is bool else ""  # --set values are JSON: True is the text 'True'
            raise OptionError(f"--set {name}={value!r}: expected {article} {kind.__name__}{spelt}") from None
        if self.choices is not None and out not in self.choices:
            raise OptionError(f"--set {name}={value!r}: use one of {', '.join(map(str, self.choices))}")
        if self.valid is not None and out is not None and not self.valid[0](out):
            raise OptionError(f"--set {name}={value!r}: expected {self.valid[1]}")
        return out


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """inspect.signature(fn), kept: each row of each architecture loaded asks for its block's several times."""
    return inspect.signature(fn)


@dataclass(frozen=True)
class Block:
    name: str
    fn: Callable[..., Any]
    width_args: tuple[str, ...] = ()  # channel arguments scaled by width_multiple (Ultralytics rows)
    repeat_arg: str | None = None  # argument that receives the row's `number` (scaled by depth_multiple)
    params: Mapping[str, Param] = field(default_factory=dict)  # build parameters (`--set`) the block reads
    source_sha: str = ""  # a block outside netdef: its module file's SHA-256 when it registered (see Spec.sha256)

    @property
    def signature(self) -> inspect.Signature:
        """The block function's signature: (net, x, prefix, *the row's arguments)."""
        return _signature(self.fn)

    @property
    def module(self) -> str:
        return self.fn.__module__

    @property
    def source_file(self) -> str | None:
        """The file defining the block function (None where it has none)."""
        return _source_file(self.fn)

    @property
    def origin(self) -> str:
        """The defining module, with its file: `my_blocks (/home/me/my_blocks.py)`."""
        return _origin(self.fn)



# torch's argument names -> the short ones of netdef's blocks (Ultralytics'): a row written from nn.Conv2d's
_TORCH_NAMES = {"kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d", "groups": "g",
                "out_channels": "c2", "out_features": "c2"}


def _near_argument(name: str, names: Sequence[str]) -> str:
    """': did you mean ...?' for a misspelt argument `name` of a block taking `names` (torch's names too: `stride`
    is `s`); '' where nothing is near."""
    if name in ("in_channels", "in_features", "c1") and "c2" in names:
        return ": a block takes its input channels from its input"
    near = difflib.get_close_matches(name, names, n=1)
    if near:
        return f": did you mean '{near[0]}'?"
    torch_name = (difflib.get_close_matches(name, list(_TORCH_NAMES), n=1) or [""])[0]
    return f": did you mean '{_TORCH_NAMES[torch_name]}' (torch's {torch_name})?" \
        if _TORCH_NAMES.get(torch_name) in names else ""


def bad_arguments(name: str, signature: inspect.Signature, prefix: str, args: Sequence[Any],
                  kwargs: Mapping[str, Any]) -> str | None:
    """None where block NAME (`signature`: net, x, prefix, ...) takes `args` and `kwargs`, else `bad arguments for
    NAME: <why>; NAME takes (<its arguments after net, x, prefix>)`."""
    try:
        signature.bind(None, None, prefix, *args, **kwargs)
    except TypeError as error:
        params = list(signature.parameters.values())[3:]
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in kwargs if k not in signature.parameters]
        why = str(error)
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):  # a misspelt name, before what it left out
            why = f"got an unexpected keyword argument '{unknown[0]}'{_near_argument(unknown[0], names)}"
        return f"bad arguments for {name}: {why}{_first_three(signature)}; {name} takes ({', '.join(map(str, params))})"
    return None


def _first_three(signature: inspect.Signature) -> str:
    """Where a block function's third parameter is not `prefix` (fn(net, x, c2, ...): the row's arguments start one
    place early), a note saying what its first three receive; '' otherwise."""
    first = list(signature.parameters)[:3]
    return "" if first[2:] == ["prefix"] else (f" (a block is fn(net, x, prefix, ...): its first three parameters, "
                                               f"({', '.join(first)}), receive the network, the input and the row's "
                                               "key prefix)")


def _unnamed_kind(what: str, param: inspect.Parameter | None) -> str:
    """Why a block's `param` cannot be its width_args/repeat_arg (`what`), or '' where it can. A row's number is
    passed by keyword where the row gives fewer arguments before it, so a repeat_arg must not be positional-only
    (a width_args one is scaled where the row gives it, by position); `*args`/`**kwargs` are no one argument."""
    if param is None or param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
        return ""
    if param.kind is param.VAR_POSITIONAL:
        return f"*{param.name}, the extra positional arguments, not one argument"
    if param.kind is param.VAR_KEYWORD:
        return f"**{param.name}, the extra keyword arguments, not one argument"
    return "positional-only, but a row's number is passed by keyword where the row gives fewer arguments before it" \
        if what == "repeat_arg" else ""


def _is_builtin(fn: Callable) -> bool:
    """Whether `fn` is one of netdef's own blocks."""
    return (getattr(fn, "__module__", None) or "").startswith("netdef.")


def _same_definition(old: Callable, new: Callable) -> bool:
    """Whether `new` is `old` defined again (a notebook cell run again, an edited block file imported again): the
    same module and qualified name. It then replaces `old`."""
    return (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == \
        (getattr(new, "__module__", None), getattr(new, "__qualname__", None))


def _origin(fn: Callable) -> str:
    path = _source_file(fn)
    return f"{fn.__module__} ({path})" if path else fn.__module__


def _source_file(fn: Callable) -> str | None:
    try:
        return inspect.getsourcefile(fn)
    except TypeError:  # a builtin or a callable object without code
        return None


def _source_sha(fn: Callable) -> str:
    """'' for netdef's own blocks; else the SHA-256 of the file that defines `fn` (of its code object where there
    is no file, e.g. a notebook cell), so an engine built with an edited block is out of date."""
    if fn.__module__ == "netdef" or fn.__module__.startswith("netdef."):
        return ""
    path = _source_file(fn)
    if path and os.path.isfile(path):
        return file_sha256(path)
    code = getattr(fn, "__code__", None)
    return hashlib.sha256(marshal.dumps(code) if code is not None else repr(fn).encode()).hexdigest()


BLOCKS: dict[str, Block] = {}
WIDTH_EXEMPTIONS: list[Callable[[Mapping[str, Any]], int | None]] = []


def width_exemption(fn: Callable[[Mapping[str, Any]], int | None]) -> Callable:
    """Register `fn(top-level YAML keys) -> channel count | None`: a channel count `width_multiple` leaves
    alone (Ultralytics' parse_model keeps its head's output channels, e.g. YOLOv5's na * (nc + 5))."""
    WIDTH_EXEMPTIONS.append(fn)
    return fn


def unscaled_channels(params: Mapping[str, Any]) -> set[int]:
    """The channel counts that the registered width exemptions keep for a YAML with these top-level keys."""
    return {c for fn in WIDTH_EXEMPTIONS if (c := fn(params)) is not None}


def block(name: str, *, width_args: tuple[str, ...] = (), repeat_arg: str | None = None,
          params: Mapping[str, Param] | None = None, replaces: bool = False) -> Callable:
    """Register `fn` as block `name` for architecture YAML files.

    width_args: channel arguments that `width_multiple` scales (rounded up to a multiple of 8).
    repeat_arg: the argument that receives the row's `number` (scaled by `depth_multiple`); blocks
    without one are repeated as a sequence named `prefix.0`, `prefix.1`, ... Both name parameters a row can give
    by name (not *args or **kwargs; a repeat_arg not positional-only).
    params: build parameters the block reads with `net.param(name)` (set with `netdef build --set`).
    replaces: a block of one's own takes the place of netdef's block of that name (a YAML keeps Ultralytics'
    block names); without it, or for another module's block, a name registered twice is an error.
    """
    if not isinstance(name, str) or not name.strip():
        raise NetdefError(f"@block({name!r}): a block's name is a non-empty string, the name YAML rows use")

    def register(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        first = list(sig.parameters.values())[:3]
        if not any(p.kind is p.VAR_POSITIONAL for p in first) and (
                len(first) < 3 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in first)):
            raise NetdefError(f"block '{name}' of {_origin(fn)}: {getattr(fn, '__name__', fn)}"
                              f"{sig} does not take (net, x, prefix) first: a block is "
                              "fn(net, x, prefix, ...), called with the network, the row's input and its key prefix")
        old = BLOCKS.get(name)
        if old is not None and old.fn is not fn and not _same_definition(old.fn, fn) and \
                not (replaces and _is_builtin(old.fn)):
            how = f"rename yours, or register it with @block({name!r}, replaces=True) to build it in place of " \
                  "netdef's" if _is_builtin(old.fn) else "rename one of them"
            raise NetdefError(f"block '{name}' is registered twice: by {old.origin} and by {_origin(fn)} ({how})")
        takes = list(sig.parameters.values())[3:]
        named = [("width_args", a) for a in width_args] + ([("repeat_arg", repeat_arg)] if repeat_arg else [])
        for what, arg in named:  # else silently not scaled, or a row's number passed as an unknown keyword
            if arg not in [p.name for p in takes] and not any(p.kind is p.VAR_KEYWORD for p in takes):
                raise NetdefError(f"block '{name}' of {_origin(fn)}: {what} names '{arg}', which {getattr(fn, '__name__', fn)} does "
                                  f"not take after (net, x, prefix): ({', '.join(map(str, takes))})"
                                  f"{_first_three(sig)}")
            why = _unnamed_kind(what, next((p for p in takes if p.name == arg), None))
            if why:
                raise NetdefError(f"block '{name}' of {_origin(fn)}: {what} names '{arg}', which is {why}: give "
                                  f"{getattr(fn, '__name__', fn)} a parameter '{arg}' that a row can name (not *, **, "
                                  "nor before /)")
        for key, p in (params or {}).items():  # a default its own kind, choices or test refuse: used unchecked
            if isinstance(p, Param) and p.default is not None and p.parse is None:
                try:
                    p.convert(key, p.default)
                except OptionError as e:
                    raise NetdefError(f"block '{name}' of {_origin(fn)}: build parameter '{key}' has the default "
                                      f"{p.default!r}, which its declaration refuses ({str(e).split(': ', 1)[1]})") \
                        from None
        for key, p in (params or {}).items():  # one parameter, one declaration (`--set KEY` sets it for all)
            owner = next((b for b in BLOCKS.values() if b.name != name and b.params.get(key, p) != p), None)
            if owner is not None:
                raise NetdefError(f"block '{name}' of {_origin(fn)} declares build parameter '{key}' as {p}, block "
                                  f"'{owner.name}' of {owner.origin} as {owner.params[key]}: a parameter is one "
                                  f"setting for every block (`--set {key}=...`); declare it alike or name yours "
                                  "differently")
        BLOCKS[name] = Block(name, fn, tuple(width_args), repeat_arg, dict(params or {}), _source_sha(fn))
        return fn
    return register


UNBUILT: dict[str, str] = {}


def not_built(reason: str, *names: str) -> None:
    """Record that blocks `names` of a model family netdef reads are knowingly not built, and why: an
    architecture file naming one gets that reason instead of a bare 'unknown block'."""
    for name in names:
        UNBUILT[name] = reason


def get_block(name: str) -> Block:
    """The registered block `name` (KeyError when there is none)."""
    return BLOCKS[name]


def block_files() -> list[str]:
    """The source files of the registered blocks outside netdef: what a command reads besides its YAML, so its
    outputs must be none of them."""
    files = {_source_file(b.fn) for b in BLOCKS.values() if b.source_sha}
    return sorted(p for p in files if p and os.path.isfile(p))


def known_blocks() -> list[str]:
    """The names of the registered blocks, sorted."""
    return sorted(BLOCKS)


def declared_params(blocks: Sequence[Block] | None = None) -> dict[str, Param]:
    """The build parameters `blocks` (default: every registered block) declare, by name."""
    out: dict[str, Param] = {}
    for b in BLOCKS.values() if blocks is None else blocks:
        out.update(b.params)
    return out
