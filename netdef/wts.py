"""Read and write tensorrtx ``.wts`` weight files.

Format: the first line holds the tensor count; each following line is
``name count v1 v2 ...`` where every value is the big-endian IEEE float32 bit
pattern in hex (1..8 digits, any case, separated by spaces or tabs). Blank lines
between tensor lines are skipped, as tensorrtx's C++ reader (``std::ifstream >>``) skips them.

The file is memory-mapped; values are converted by C builtins (``binascii.unhexlify``,
``bytes.translate``) and numpy, never by a Python loop per value. NaN and infinite values
are refused unless asked for (``allow_nonfinite=True``): an engine built from them computes NaN.
"""
from __future__ import annotations

import binascii
import hashlib
import mmap
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .errors import NetdefError, WtsFormatError
from .fileio import (CHECKPOINT_STARTS, UTF8_BOM, FileKind, atomic_write_all, check_output, describe_head, file_key,
                     recognised, utf16)

__all__ = ["read_wts", "write_wts", "wts_summary"]

_WS = b" \t\r\f\v"  # whitespace allowed inside a line
# Optional name, optional count, then the whitespace before the payload.
_HEAD = re.compile(rb"[ \t\r\f\v]*(?:(\S+)(?:[ \t\r\f\v]+(\S+))?)?[ \t\r\f\v]*")
_ONLY_WS = re.compile(rb"\s*")
# bytes.translate table classifying a payload byte: 0 hex digit, 1 whitespace, 2 anything else.
_CLASS = bytearray(b"\2" * 256)
for _c in b"0123456789abcdefABCDEF":
    _CLASS[_c] = 0
for _c in _WS:
    _CLASS[_c] = 1
_CLASS = bytes(_CLASS)
_ZEROS8 = np.uint64(0x3030303030303030)  # "00000000"
_YAML_START = re.compile(rb"---|[A-Za-z_][\w.-]*:(\s|$)")  # an architecture's first line (name: ...)
WTS_FILE = FileKind("a .wts file", lambda head: head.removeprefix(UTF8_BOM).split(b"\n", 1)[0].strip().isdigit(),
                    suffixes=(".wts",))


def _progress(path: str, total: int, enabled: bool, unit: str = "B"):
    """A tqdm bar on stderr (bytes read, or `unit` such as tensors written), or None."""
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=os.path.basename(path))
        except ImportError:
            pass
    return None


def _load(path: str, expect: tuple | None = None) -> bytes | mmap.mmap:
    """The file's bytes: a read-only memory map (no copy), or the bytes read where mapping is impossible.
    `expect`: the `fileio.file_key` the file must have (the file whose SHA-256 the caller took); a file replaced or
    written since is an error, not weights other than those the caller hashed.

    netdef replaces files atomically, so a mapped file never changes under the reader; another program
    truncating it in place during the read would end the process (SIGBUS).
    """
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise NetdefError(f"{path}: is a directory, not a .wts file") from None
    except FileNotFoundError:
        raise NetdefError(f"{path}: no such .wts file") from None
    except OSError as e:
        raise NetdefError(f"{path}: cannot read the .wts file ({e.strerror or e})") from None
    with f:
        if expect is not None and file_key(os.fstat(f.fileno())) != expect:
            raise NetdefError(f"{path} changed while netdef was reading it (written again by another program, a "
                              "`netdef export` say): run the command again once it is written")
        try:
            if hasattr(mmap, "MAP_POPULATE"):  # Linux: map the pages now, not one fault at a time
                return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # an empty file, a pipe
            try:
                return f.read()
            except OSError as e:
                raise NetdefError(f"{path}: cannot read the .wts file ({e.strerror or e})") from None


def _scan(path: str, data: bytes | mmap.mmap, bar=None) -> Iterator[tuple[int, str, int, int, int]]:
    """Check the file structure; yield (line, name, count, payload_start, payload_end)."""
    if _ONLY_WS.match(data).end() == len(data):
        raise WtsFormatError(path, "empty file: expected the tensor count on line 1")
    start = len(UTF8_BOM) if data[:3] == UTF8_BOM else 0
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    first = data[start:end].strip()
    if not first.isdigit() and utf16(bytes(data[:64])):
        raise WtsFormatError(path, "the file is UTF-16 text (as PowerShell 5's `>` and Out-File write it), not the "
                             "ASCII text of a .wts: re-save it as ASCII or UTF-8 (PowerShell: `Get-Content IN | "
                             "Set-Content -Encoding ascii OUT`), or write it from Python (`netdef export`, "
                             "gen_wts.py) instead of redirecting printed output", line=1)
    if not first.isdigit():
        text = first.isascii() and first.decode("ascii").isprintable()
        shown = repr(first[:40 if text else 8])[2:-1]
        head = bytes(data[:64])
        what = recognised(head)
        yaml_text = text and what is None and _YAML_START.match(first) is not None
        hint = (" (this is not a .wts file: it looks like YAML text, an architecture?: give that as the architecture "
                "and the .wts as the weights)" if yaml_text else
                "" if text and what in (None, "a netdef engine") else
                f" (this is not a {'.wts' if text else 'text .wts'} file: {describe_head(head)})") + (
            ": export a checkpoint's weights with `netdef export CHECKPOINT -o WEIGHTS.wts`"
            if head.startswith(CHECKPOINT_STARTS) else
            " (a netdef engine, not weights)" if head.startswith(b"NETDEF-ENGINE") else "")
        raise WtsFormatError(path, f"line 1 must be the tensor count, found '{shown}'{hint}", line=1)
    declared, pos, lineno, seen = int(first), end + 1, 1, {}
    last_line, last_key = 1, None
    for i in range(declared):
        rest = _ONLY_WS.match(data, pos).end()
        if rest >= len(data):
            last = f" (the last, '{last_key}', at line {last_line})" if last_key is not None else ""
            raise WtsFormatError(path, f"truncated: the file declares {declared} tensors but ends after {i}{last}: a "
                                 "copy cut short, or a count line larger than the number of tensors written",
                                 line=last_line)
        blank = data.rfind(b"\n", pos, rest)  # the end of blank lines before the tensor's (tensorrtx skips them)
        start = pos if blank < 0 else blank + 1
        lineno += data[pos:start].count(b"\n") + 1
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        m = _HEAD.match(data, start, end)
        name_b, count_b = m.group(1), m.group(2)
        try:  # UTF-8 (gen_wts.py writes a non-ASCII key so; tensorrtx's `>> name` takes its bytes as they are)
            name, count_s = name_b.decode("utf-8"), (count_b or b"").decode("utf-8")
            text = (name + count_s).isprintable()
        except UnicodeDecodeError:
            text = False
        if not text:
            raise WtsFormatError(path, "bytes that are not UTF-8 text, or control characters, in a tensor header: "
                                 "this is not a text .wts file", line=lineno)
        if count_b is None or not count_b.isdigit():
            found = "nothing" if count_b is None else f"'{count_s[:40]}'"
            raise WtsFormatError(path, f"the value count after the name must be a non-negative integer, "
                                 f"found {found}", line=lineno, key=name)
        if name in seen:
            raise WtsFormatError(path, f"key '{name}' at line {lineno} was already defined at line {seen[name]}",
                                 line=lineno, key=name)
        seen[name] = lineno
        pe = end
        while pe > m.end() and data[pe - 1] in _WS:
            pe -= 1
        if _ONLY_WS.match(data, end).end() == len(data) and (end == len(data) or i < declared - 1):
            _check_not_cut(path, data, m.end(), pe, int(count_b), lineno, name, (i + 1, declared))
        yield lineno, name, int(count_b), m.end(), pe
        if bar is not None:
            bar.update(end + 1 - pos)
        pos, last_line, last_key = end + 1, lineno, name
    rest = _ONLY_WS.match(data, pos).end()
    if rest < len(data):
        extra = lineno + data[pos:rest].count(b"\n") + 1
        key = _HEAD.match(data, rest).group(1)[:80].decode("utf-8", "backslashreplace")
        if not key.isprintable():  # NUL padding of a copy, binary data appended: no key to name
            raise WtsFormatError(path, f"bytes that are not text after the {declared} tensors declared on line 1 "
                                 f"({repr(bytes(data[rest:rest + 8]))[2:-1]}...): a damaged or padded copy? "
                                 "write or copy it again", line=extra)
        raise WtsFormatError(path, f"more tensor lines than the {declared} declared on line 1",
                             line=extra, key=key)


def _check_not_cut(path: str, data: bytes | mmap.mmap, ps: int, pe: int, count: int, line: int, key: str,
                   tensor: tuple[int, int]) -> None:
    """The file ends in this line, tensor `tensor` = (number, of the declared), without a newline, or with tensors
    declared after it. A line of fewer than its `count` values was cut short (more are left to the count check).
    Where it holds them, it ends without a newline or trailing blank, and every value but the last has 8 digits and
    single spaces, the last fewer and not all zeros (an unpadded writer's 0.0 is '0'), the file was cut inside that
    value; only lengths and a strided view are looked at there."""
    solid = np.frombuffer(data[ps:pe].translate(_CLASS), np.uint8) != 1  # the payload's bytes outside separators
    found = int(np.count_nonzero(solid[1:] & ~solid[:-1])) + bool(solid.size)
    if found < count:
        raise WtsFormatError(path, f"truncated: declares {count} values, found {found} before the file ends (tensor "
                             f"{tensor[0]} of the {tensor[1]} declared on line 1): a copy cut short; write or copy it "
                             "again", line=line, key=key)
    if count < 2 or pe != len(data):
        return
    last = pe - ps - 9 * (count - 1)  # the last value's digits, if the others have 8 and single spaces
    if not 0 < last < 8 or data[pe - last - 1] != 32:
        return
    if not (np.ndarray((count - 1,), np.uint8, data, ps + 8, (9,)) == 32).all():
        return
    digits = bytes(data[pe - last:pe])
    if digits.strip(b"0"):
        shown = digits.decode("ascii", "replace")
        raise WtsFormatError(path, f"truncated: the file ends inside the last value ('{shown}', "
                             f"{last} hex digit{'s' if last > 1 else ''} where the line's others have 8) without a "
                             "final newline: write or copy it again (if it is complete, end it with a newline)",
                             line=line, key=key)


def _words_to_float32(words: np.ndarray) -> np.ndarray:
    """8 hex digits per little-endian uint64 (as in the file) -> float32; ValueError on a non-hex digit."""
    return np.frombuffer(binascii.unhexlify(words), ">u4").astype(np.uint32).view(np.float32)


def _parse_values(path: str, data: bytes | mmap.mmap, line: int, key: str, count: int, ps: int,
                  pe: int) -> np.ndarray:
    """Convert the hex payload data[ps:pe] (stripped) of one line to float32."""
    n = pe - ps
    if count == 0 or n == 0:
        if count == n == 0:
            return np.zeros(0, np.float32)
        found = 0 if n == 0 else len(data[ps:pe].split())
        raise WtsFormatError(path, f"declares {count} values, found {found}", line=line, key=key)
    # Fast path (netdef's and gen_wts.py's layout): 8 digits per value, single spaces, read in place.
    if n == 9 * count - 1 and (np.ndarray((count - 1,), np.uint8, data, ps + 8, (9,)) == 32).all():
        try:
            return _words_to_float32(np.ndarray((count,), "<u8", data, ps, (9,)).copy())
        except ValueError:
            pass  # a non-hex digit: the general path says which
    # General path: split at spaces first (tabs and other bytes then fail the conversion), else at
    # every whitespace byte; the tokens are right-aligned in 8 digits and converted together.
    u8 = np.frombuffer(data, np.uint8, n, ps)
    starts, ends = _split(n, u8 == 32)
    values = _convert(data, ps, n, count, starts, ends)
    if values is None:
        starts, ends = _split(n, np.frombuffer(data[ps:pe].translate(_CLASS), np.uint8) == 1)
        values = _convert(data, ps, n, count, starts, ends)
        if values is None:
            raise _value_error(path, data[ps:pe], line, key, count, starts, ends)
    _check_no_lost_digit(path, values, line, key, starts, ends)
    return values


def _check_no_lost_digit(path: str, values: np.ndarray, line: int, key: str, starts: np.ndarray,
                         ends: np.ndarray) -> None:
    """A value of 7 hex digits in a line whose others all have 8 lost one (a damaged copy, an edit): it would read
    as a tiny number (3f800000, 1.0, as 3f80000, 1.46e-36). A writer that does not pad writes 7 digits for positive
    numbers below 2.5e-29, and shorter ones (0 as '0') beside them: a line with any value of fewer than 7 digits is
    such a writer's, and is left alone."""
    lengths = ends - starts
    short = np.flatnonzero((lengths == 7) & (values != 0))
    if short.size and (lengths == 8).any() and not (lengths < 7).any():
        i = int(short[0])
        raise WtsFormatError(path, f"value {i + 1} has 7 hex digits where the line's others have 8: it would read as "
                             f"{float(values[i]):.3g} (a digit lost in a copy or an edit?); write the file again",
                             line=line, key=key)


def _split(n: int, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the tokens (runs between whitespace) of a stripped payload of n bytes."""
    sep = np.flatnonzero(ws)
    gap = np.diff(sep) > 1  # gap[k]: sep[k] ends a whitespace run, sep[k + 1] starts the next
    if gap.all():  # single separators
        return np.concatenate(([0], sep + 1)), np.concatenate((sep, [n]))
    return (np.concatenate(([0], sep[np.concatenate((gap, [True]))] + 1)),
            np.concatenate((sep[np.concatenate(([True], gap))], [n])))


def _convert(data: bytes | mmap.mmap, ps: int, n: int, count: int, starts: np.ndarray,
             ends: np.ndarray) -> np.ndarray | None:
    """The tokens' values, or None when they are not `count` tokens of 1..8 hex digits."""
    lengths = ends - starts
    if len(starts) != count or lengths.max() > 8:
        return None
    # The 8 bytes ending at each token, with '0' over those before the token.
    if ps >= 8:
        windows = np.ndarray((n + 1,), "<u8", data, ps - 8, (1,))
    else:
        windows = np.ndarray((n + 1,), "<u8", np.frombuffer(b"0" * 8 + data[ps:ps + n], np.uint8), 0, (1,))
    words = windows[ends]
    short = np.flatnonzero(lengths < 8)
    if short.size:
        low = (np.uint64(1) << (8 * (8 - lengths[short])).astype(np.uint64)) - np.uint64(1)
        words[short] = (words[short] & ~low) | (_ZEROS8 & low)
    try:
        return _words_to_float32(words)
    except ValueError:  # a byte that is neither a hex digit nor a separator
        return None


def _value_error(path: str, seg: bytes, line: int, key: str, count: int, starts: np.ndarray,
                 ends: np.ndarray) -> WtsFormatError:
    """The first problem of a payload the general path refused, in the order a reader looks for it."""
    def token(i: int) -> str:
        return seg[starts[i]:ends[i]][:40].decode("ascii", "backslashreplace")

    bad = seg.translate(_CLASS).find(b"\2")
    if bad >= 0:
        i = int(np.searchsorted(starts, bad, "right")) - 1
        return WtsFormatError(path, f"value {i + 1} '{token(i)}' is not hexadecimal", line=line, key=key)
    if len(starts) != count:
        return WtsFormatError(path, f"declares {count} values, found {len(starts)}", line=line, key=key)
    i = int(np.argmax(ends - starts > 8))
    return WtsFormatError(path, f"value {i + 1} '{token(i)}' has {ends[i] - starts[i]} hex digits, more than 8",
                          line=line, key=key)


def first_nonfinite(out: np.ndarray, source: np.ndarray | None = None) -> tuple[int, Any] | None:
    """(flat index, value) of the first NaN or infinity in the float32 array `out`, None where all are finite; the
    value is `source`'s (what `out` was converted from) where given: finite there, it was beyond float32's range."""
    finite = np.isfinite(out)
    if finite.all():
        return None
    i = int(np.argmin(finite.reshape(-1)))
    src = out.reshape(-1)[i] if source is None else source.reshape(-1)[i]
    return i, src


EXPONENT = np.uint32(0x7F800000)  # float32's exponent bits: all set, NaN or inf; none, zero or subnormal


def only_subnormal(values: np.ndarray, top: int | None = None) -> bool:
    """Whether the float32 `values` hold a non-zero value and every non-zero one is subnormal (below 1.2e-38): what
    another encoding read as float32 hex gives. By their bits (a flush-to-zero CPU mode hides subnormals from
    comparisons); `top`: the largest of `values`' exponent bits, where the caller has it."""
    bits = values.view(np.uint32)
    top = _top_exponent(bits) if top is None else top
    return top == 0 and bool((bits & np.uint32(0x7FFFFFFF)).any())


def _top_exponent(bits: np.ndarray) -> int:
    """The largest exponent field (masked, unshifted) of float32 bit patterns: EXPONENT where one is NaN or inf, 0
    where all are zero or subnormal."""
    return int((bits & EXPONENT).max()) if bits.size else 0


def _check_values(path: str, line: int, key: str, values: np.ndarray) -> None:
    """Refuse NaN or infinite values, and a tensor whose non-zero values are all below float32's smallest normal
    number (1.2e-38): no trained weight is, but other encodings read as big-endian float32 hex are (float16 bit
    patterns of 4 hex digits, struct.pack('>e'): 3c00 for 1.0 reads as 2.2e-41; decimal numbers: '2' reads as
    2.8e-45). One reduction over the exponent bits finds both."""
    top = _top_exponent(values.view(np.uint32))
    if top == EXPONENT:
        i = first_nonfinite(values)[0]  # type: ignore[index]
        raise WtsFormatError(path, f"value {i + 1} of {values.size} is {values[i]} ({values.view(np.uint32)[i]:08x}): "
                             "an engine built from it outputs NaN or inf; fix the weights (from Python, "
                             "read_wts(..., allow_nonfinite=True) reads them as they are)", line=line, key=key)
    if only_subnormal(values, top):
        raise WtsFormatError(path, f"every non-zero value of the {values.size} is below float32's smallest normal "
                             f"number (1.2e-38; the largest is {float(np.abs(values).max()):.3g}): these are not the "
                             "big-endian float32 hex of gen_wts.py (struct.pack('>f', v).hex()) but another encoding, "
                             "such as float16 (4 hex digits, '>e') or decimal numbers; export the weights again "
                             "(netdef export)", line=line, key=key)


class NonFiniteAllowed(dict):
    """Weights (key -> array) whose NaN and infinite values are meant: a build or refit given this mapping takes
    them as they are, where it refuses them in any other mapping or .wts file. `read_wts(...,
    allow_nonfinite=True)` returns one."""


def read_wts(path: str | os.PathLike, *, progress: bool = False,
             allow_nonfinite: bool = False, expect: tuple | None = None) -> dict[str, np.ndarray]:
    """Read a .wts file into an insertion-ordered dict of 1-D float32 arrays.

    Raises WtsFormatError (naming the file, 1-based line and key) on malformed input and, unless
    `allow_nonfinite` (the dict is then a `NonFiniteAllowed`, which builds take as it is), on NaN or infinite
    values and on tensors of nothing but subnormal values (another encoding read as float32 hex); NetdefError
    when the path is not a readable file, or not the file `expect` (a `fileio.file_key`, from
    `fileio.file_sha256_and_key`) says.
    """
    path = os.fspath(path)
    data = _load(path, expect)
    bar = _progress(path, len(data), progress)
    try:
        tensors = {}
        for line, name, count, ps, pe in _scan(path, data, bar):
            values = _parse_values(path, data, line, name, count, ps, pe)
            if not allow_nonfinite:  # else taken as they are
                _check_values(path, line, name, values)
            tensors[name] = values
        return NonFiniteAllowed(tensors) if allow_nonfinite else tensors
    finally:
        if bar is not None:
            bar.close()


def wts_summary(path: str | os.PathLike, *, checked: bool = False, progress: bool = False) -> dict:
    """Summarise a .wts file from its headers, without converting (or checking) the values; `checked`: from the
    values read as a build reads them (every value checked; `progress` shows a bar)."""
    path = os.fspath(path)
    if checked:
        keys = [(name, int(v.size)) for name, v in read_wts(path, progress=progress).items()]
        size = os.path.getsize(path)
    else:
        data = _load(path)
        keys = [(name, count) for _, name, count, _, _ in _scan(path, data)]
        size = len(data)
    return {"path": path, "size_bytes": size, "tensors": len(keys),
            "values": sum(c for _, c in keys), "keys": keys}


def torch_values(t: Any) -> np.ndarray:
    """A torch tensor's values as numpy (detached, on the CPU; bfloat16 and the other dtypes numpy lacks as float32),
    without importing torch; a TypeError saying why a tensor has none to give (a meta tensor) or how to get them (a
    quantized or sparse one)."""
    if getattr(t, "is_meta", False):
        raise TypeError("it is a meta tensor, a shape without values (a model made on the 'meta' device): load the "
                        "trained weights into it first (load_state_dict(..., assign=True))")
    if getattr(t, "is_quantized", False):
        raise TypeError("it is a quantized tensor: give the float model's weights, or call .dequantize() on it")
    if str(getattr(t, "layout", "torch.strided")) != "torch.strided":
        raise TypeError(f"it is a {str(t.layout).removeprefix('torch.')} tensor: call .to_dense() on it")
    t = t.detach().cpu()
    try:
        return t.numpy()
    except TypeError:  # bfloat16 and other dtypes numpy lacks
        return t.float().numpy()


def _to_float32(path: str, key: str, value: Any, allow_nonfinite: bool) -> np.ndarray:
    """Flatten a numpy array, torch tensor or array-like of numbers to contiguous native float32."""
    if value is None:
        raise NetdefError(f"cannot write {path}: tensor '{key}' is None, not an array of numbers")
    try:
        if hasattr(value, "detach"):  # torch.Tensor without importing torch
            value = torch_values(value)
        arr = np.asarray(value)
        if np.iscomplexobj(arr):
            raise TypeError("complex values")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"its values are not numbers (dtype {arr.dtype})")
        with np.errstate(over="ignore"):  # float64 beyond float32's range: reported below
            out = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise NetdefError(f"cannot write {path}: tensor '{key}' cannot be converted to float32: {e}") from e
    if arr.dtype.kind in "iu" and out.size and not key.endswith("num_batches_tracked"):  # a counter may round
        wide = arr.reshape(-1)
        exact = wide.astype(np.float64)  # exact up to 2**53 in magnitude; beyond, no float32 is exact anyway
        lost = np.flatnonzero((out.astype(np.float64) != exact) | (np.abs(exact) > 2.0 ** 53))
        if lost.size:
            i = int(lost[0])
            raise NetdefError(f"cannot write {path}: tensor '{key}' ({arr.dtype}): value {i + 1} ({int(wide[i])}) has "
                              f"no exact float32 ({int(out[i])}); a .wts holds float32 only (integers up to 2**24 "
                              "exactly)")
    top = None if allow_nonfinite else _top_exponent(out.view(np.uint32))  # one reduction finds both, as the reader's
    if top == EXPONENT:  # an inf or NaN in float32: first_nonfinite finds the first
        i, src = first_nonfinite(out, arr)
        src = float(src)
        what = f"({src}) is beyond float32's range" if np.isfinite(src) else f"is {src}"
        raise NetdefError(f"cannot write {path}: tensor '{key}': value {i + 1} of {out.size} {what}; an engine "
                          "built from it outputs NaN or inf (fix the weights; from Python, write_wts(..., "
                          "allow_nonfinite=True) writes them as they are)")
    if top is not None and only_subnormal(out, top):
        raise NetdefError(f"cannot write {path}: tensor '{key}': every non-zero value of the {out.size} is below "
                          "float32's smallest normal number (1.2e-38), which read_wts refuses as another encoding "
                          "read as float32 hex; check the weights (from Python, write_wts(..., allow_nonfinite=True) "
                          "writes them as they are)")
    return out


def _wts_size(tensors: Mapping[str, Any], path: str) -> dict[str, int]:
    """{path: the bytes `write_wts` writes for `tensors`}, told from their value counts (torch tensors, numpy arrays);
    {} where a value's count is not known without converting it (a list)."""
    total = len(b"%d\n" % len(tensors))
    for key, value in tensors.items():
        n = value.numel() if hasattr(value, "numel") else getattr(value, "size", None)
        if not isinstance(n, int):
            return {}
        total += len(key) + len(str(n)) + 9 * n + 2  # 'key n' + (' ' + 8 hex digits) per value, less a space, '\n'
    return {path: total}


def write_wts(path: str | os.PathLike, tensors: Mapping[str, Any], *, progress: bool = False,
              allow_nonfinite: bool = False,
              beside: Mapping[str | os.PathLike, Callable[[str], bytes]] | None = None,
              drop: Mapping[str | os.PathLike, str] | None = None) -> list[str | os.PathLike]:
    """Write tensors to a .wts file atomically (temp file in the same directory, then os.replace).

    Values are flattened and converted to float32; each is written as 8 lowercase hex digits.
    None, non-numeric values and (unless `allow_nonfinite`) NaN, infinities and values beyond
    float32's range are refused with a NetdefError naming the key; the target is then left as it was.
    `beside`: files that belong to the .wts (its class names), each path's bytes made by its function from the
    SHA-256 (hex) of the bytes written (hashing the file afterwards could hash another process's file that replaced
    it meanwhile), written and renamed together with it (all or none). `drop`: files that belonged to the .wts
    written over (its class names) with the SHA-256 they belong to, removed right after the rename unless it is that
    of the bytes written (names of these very bytes still belong to them). Returns the files removed. A file of
    another kind at `path` (an engine, a checkpoint) is never written over, nor is a name of another kind's
    suffix (.engine, .pt, ...) written: an OptionError (`fileio.check_output`).
    """
    path = os.fspath(path)
    check_output(path, what="the .wts output", kind=WTS_FILE)
    for key in tensors:
        if not isinstance(key, str) or not key or not (key.isascii() and key.isprintable()) or " " in key:
            raise NetdefError(f"cannot write {path}: key {key!r} must be a non-empty string of "
                              "printable ASCII without whitespace")
    bar = _progress(path, len(tensors), progress, unit=" tensors")

    def lines() -> Iterator[bytes]:
        yield b"%d\n" % len(tensors)
        for key, value in tensors.items():
            arr = _to_float32(path, key, value, allow_nonfinite)
            yield f"{key} {arr.size}{' ' if arr.size else ''}".encode("ascii")
            yield arr.view(np.uint32).astype(">u4").tobytes().hex(" ", 4).encode("ascii")
            yield b"\n"
            if bar is not None:
                bar.update(1)

    digest = hashlib.sha256() if beside or drop else None

    def hashed(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            digest.update(chunk)  # type: ignore[union-attr]
            yield chunk

    def made(fn: Callable[[str], bytes]) -> Iterator[bytes]:  # run after the .wts's chunks: files go in order
        yield fn(digest.hexdigest())  # type: ignore[union-attr]

    removed: list[str | os.PathLike] = []

    def stale() -> list[str | os.PathLike]:
        removed.extend(p for p, sha in (drop or {}).items() if sha != digest.hexdigest())  # type: ignore[union-attr]
        return removed

    try:
        atomic_write_all({path: hashed(lines()) if digest is not None else lines(),
                          **{other: made(fn) for other, fn in (beside or {}).items()}}, sizes=_wts_size(tensors, path),
                          remove=stale if drop else None)
    finally:
        if bar is not None:
            bar.close()
    return removed
