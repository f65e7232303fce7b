"""Read and write tensorrtx ``.wts`` weight files.

Format: the first line holds the tensor count; each following line is
``name count v1 v2 ...`` where every value is the big-endian IEEE float32 bit
pattern in hex (1..8 digits, any case, separated by spaces or tabs).

Values are converted by C builtins (``bytes.fromhex`` / ``bytes.hex``) and numpy,
never by a Python loop per value.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .errors import NetdefError, WtsFormatError
from .fileio import atomic_write

__all__ = ["read_wts", "write_wts", "wts_summary"]

_WS = b" \t\r\f\v"  # whitespace allowed inside a line
# Optional name, optional count, then the whitespace before the payload.
_HEAD = re.compile(rb"[ \t\r\f\v]*(?:(\S+)(?:[ \t\r\f\v]+(\S+))?)?[ \t\r\f\v]*")
_ONLY_WS = re.compile(rb"\s*")
# Nibble value of each byte: 0..15 for hex digits, 16 for whitespace, 255 otherwise.
_NIB = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIB[_c] = _NIB[bytes([_c]).upper()[0]] = _i
_NIB[list(_WS)] = 16


def _progress(path: str, total: int, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(path))
        except ImportError:
            pass
    return None


def _scan(path: str, data: bytes, bar=None) -> Iterator[tuple[int, str, int, int, int]]:
    """Check the file structure; yield (line, name, count, payload_start, payload_end)."""
    if _ONLY_WS.match(data).end() == len(data):
        raise WtsFormatError(path, "empty file: expected the tensor count on line 1")
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    first = data[:end].strip()
    if not first.isdigit():
        shown = repr(first[:40])[2:-1]
        text = first.isascii() and first.decode("ascii").isprintable()
        hint = "" if text else " (this is not a text .wts file)"
        raise WtsFormatError(path, f"line 1 must be the tensor count, found '{shown}'{hint}", line=1)
    declared, pos, lineno, seen = int(first), end + 1, 1, {}
    last_line, last_key = 1, None
    for i in range(declared):
        rest = _ONLY_WS.match(data, pos).end()
        if rest >= len(data):
            raise WtsFormatError(path, f"truncated: the file declares {declared} tensors but ends after "
                                 f"{i}, at line {last_line}", line=last_line, key=last_key)
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        lineno += 1
        m = _HEAD.match(data, pos, end)
        name_b, count_b = m.group(1), m.group(2)
        if name_b is None:
            raise WtsFormatError(path, f"blank line where tensor {i + 1} of {declared} was expected", line=lineno)
        head = name_b + b" " + (count_b or b"")
        if not (head.isascii() and head.decode("ascii").isprintable()):
            raise WtsFormatError(path, "non-ASCII or control bytes in a tensor header: "
                                 "this is not a text .wts file", line=lineno)
        name = name_b.decode("ascii")
        if count_b is None or not count_b.isdigit():
            found = "nothing" if count_b is None else f"'{count_b[:40].decode('ascii')}'"
            raise WtsFormatError(path, f"the value count after the name must be a non-negative integer, "
                                 f"found {found}", line=lineno, key=name)
        if name in seen:
            raise WtsFormatError(path, f"key '{name}' at line {lineno} was already defined at line {seen[name]}",
                                 line=lineno, key=name)
        seen[name] = lineno
        pe = end
        while pe > m.end() and data[pe - 1] in _WS:
            pe -= 1
        yield lineno, name, int(count_b), m.end(), pe
        if bar is not None:
            bar.update(end + 1 - pos)
        pos, last_line, last_key = end + 1, lineno, name
    rest = _ONLY_WS.match(data, pos).end()
    if rest < len(data):
        extra = lineno + data.count(b"\n", pos, rest) + 1
        key = _HEAD.match(data, rest).group(1)[:80].decode("ascii", "backslashreplace")
        raise WtsFormatError(path, f"more tensor lines than the {declared} declared on line 1",
                             line=extra, key=key)


def _parse_values(path: str, data: bytes, line: int, key: str, count: int, ps: int, pe: int) -> np.ndarray:
    """Convert the hex payload data[ps:pe] (stripped) of one line to float32."""
    n = pe - ps
    if count == 0 or n == 0:
        if count == n == 0:
            return np.zeros(0, np.float32)
        found = 0 if n == 0 else len(data[ps:pe].split())
        raise WtsFormatError(path, f"declares {count} values, found {found}", line=line, key=key)
    seg = np.frombuffer(data, np.uint8, count=n, offset=ps)
    # Fast path: tokens of exactly 8 digits separated by single spaces.
    if n == 9 * count - 1 and (seg[8::9] == 32).all():
        try:
            raw = bytes.fromhex(str(memoryview(data)[ps:pe], "ascii"))
        except (ValueError, UnicodeDecodeError):
            raw = b""
        if len(raw) == 4 * count:
            return np.frombuffer(raw, ">u4").astype(np.uint32).view(np.float32)
    # General path: locate tokens with numpy, validate them, right-align to 8 digits.
    nib = _NIB[seg]
    ws = nib == 16
    starts = np.flatnonzero(ws[:-1] & ~ws[1:]) + 1
    starts = np.concatenate(([0], starts))
    ends = np.concatenate((np.flatnonzero(~ws[:-1] & ws[1:]) + 1, [n]))
    bad = np.flatnonzero(nib == 255)

    def token(i: int) -> str:
        return data[ps + starts[i]:ps + ends[i]][:40].decode("ascii", "backslashreplace")

    if bad.size:
        i = int(np.searchsorted(starts, bad[0], "right")) - 1
        raise WtsFormatError(path, f"value {i + 1} '{token(i)}' is not hexadecimal", line=line, key=key)
    lengths = ends - starts
    if len(starts) != count:
        raise WtsFormatError(path, f"declares {count} values, found {len(starts)}", line=line, key=key)
    long = np.flatnonzero(lengths > 8)
    if long.size:
        i = int(long[0])
        raise WtsFormatError(path, f"value {i + 1} '{token(i)}' has {lengths[i]} hex digits, more than 8",
                             line=line, key=key)
    digits = nib[~ws]
    dest = np.arange(digits.size) + np.repeat(8 * np.arange(1, count + 1) - np.cumsum(lengths), lengths)
    padded = np.zeros(8 * count, np.uint8)
    padded[dest] = digits
    pairs = padded.reshape(-1, 2)
    return ((pairs[:, 0] << 4) | pairs[:, 1]).view(">u4").astype(np.uint32).view(np.float32)


def read_wts(path: str | os.PathLike, *, progress: bool = False) -> dict[str, np.ndarray]:
    """Read a .wts file into an insertion-ordered dict of 1-D float32 arrays.

    Raises WtsFormatError (naming the file, 1-based line and key) on malformed input.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    bar = _progress(path, len(data), progress)
    try:
        return {name: _parse_values(path, data, line, name, count, ps, pe)
                for line, name, count, ps, pe in _scan(path, data, bar)}
    finally:
        if bar is not None:
            bar.close()


def wts_summary(path: str | os.PathLike) -> dict:
    """Summarise a .wts file from its headers, without converting (or checking) the values."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    keys = [(name, count) for _, name, count, _, _ in _scan(path, data)]
    return {"path": path, "size_bytes": len(data), "tensors": len(keys),
            "values": sum(c for _, c in keys), "keys": keys}


def _to_float32(key: str, value: Any) -> np.ndarray:
    """Flatten a numpy array, torch tensor or array-like to contiguous native float32."""
    if hasattr(value, "detach"):  # torch.Tensor without importing torch
        t = value.detach().cpu()
        try:
            value = t.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            value = t.float().numpy()
    try:
        arr = np.asarray(value)
        if np.iscomplexobj(arr):
            raise TypeError("complex values")
        return np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise NetdefError(f"tensor '{key}' cannot be converted to float32: {e}") from e


def write_wts(path: str | os.PathLike, tensors: Mapping[str, Any], *, progress: bool = False) -> None:
    """Write tensors to a .wts file atomically (temp file in the same directory, then os.replace).

    Values are flattened and converted to float32; each is written as 8 lowercase hex digits.
    """
    path = os.fspath(path)
    for key in tensors:
        if not isinstance(key, str) or not key or not (key.isascii() and key.isprintable()) or " " in key:
            raise NetdefError(f"cannot write {path}: key {key!r} must be a non-empty string of "
                              "printable ASCII without whitespace")
    bar = _progress(path, len(tensors), progress)

    def lines() -> Iterator[bytes]:
        yield b"%d\n" % len(tensors)
        for key, value in tensors.items():
            arr = _to_float32(key, value)
            yield f"{key} {arr.size}{' ' if arr.size else ''}".encode("ascii")
            yield arr.view(np.uint32).astype(">u4").tobytes().hex(" ", 4).encode("ascii")
            yield b"\n"
            if bar is not None:
                bar.update(1)

    try:
        atomic_write(path, lines())
    finally:
        if bar is not None:
            bar.close()
