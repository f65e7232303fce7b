"""netdef engine files: a small JSON header (what the engine is, what built it) followed by the TensorRT plan.

Layout: b"NETDEF-ENGINE\\n", 8-byte little-endian header length, UTF-8 JSON header, plan bytes.
The header records the plan's length and SHA-256 (`plan_bytes`, `plan_sha256`): `read_meta` checks the
length (the file size) and, with `verify=True`, the checksum; `read_plan` checks both, then this TensorRT
and GPU (`check_compatible`). Every header field netdef reads is checked for presence and type by
`validate_meta`, so a damaged or cut file is one EngineFileError, never a KeyError or MemoryError.

Format 2 added `plan_bytes` and `plan_sha256`; `header_sha256` (the header's own fields, checked on every read
where present: engines of older netdefs lack it) makes a changed header value damage too; a raw plan's sidecar
records its own the same way (`sealed`, `header_changed`). Format 1 engines (no length, no checksum) are refused with
"rebuild it" rather than read unchecked: a header without those fields cannot be told from a damaged
one, an engine only loads in the TensorRT and GPU that built it anyway, and `netdef build` rebuilds an
engine whose header it cannot read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any, Callable, Mapping

from .class_names import valid_names
from .errors import EngineFileError, EngineMismatchError
from .fileio import FileKey, FileKind, atomic_write_all, printable, recognised, special_kind
from .trt_api import PLAN_MAGICS

MAGIC = b"NETDEF-ENGINE\n"
FORMAT = 2
MAX_HEADER_BYTES = 16 << 20  # a real header is a few KiB; anything larger is damage, not metadata
_PREFIX = len(MAGIC) + 8
_CHUNK = 1 << 22
# what an engine output may replace: a netdef engine (a cut one too) or a raw TensorRT plan
ENGINE_FILE = FileKind("a netdef engine or TensorRT plan",
                       lambda head: head.startswith(MAGIC) or MAGIC.startswith(head) or head[:4] in PLAN_MAGICS,
                       suffixes=(".engine", ".plan", ".trt"))
# what build and refit write: a netdef engine, never named as a bare plan (.plan, .trt), which it is not
NETDEF_ENGINE_FILE = dataclasses.replace(ENGINE_FILE, suffixes=(".engine",))


def write_engine(path: str | Path, plan: bytes | memoryview, meta: dict[str, Any], *,
                 expect: Mapping[str | os.PathLike, FileKey | None] | None = None) -> dict[str, Any]:
    """Write the engine file; returns its header as `read_meta` will give it back (JSON types).
    `expect`: {path: `fileio.path_key(path)` as read before} (None: no file then); a file another program wrote at
    `path` since is kept (`errors.WrittenMeanwhile`, checked right before the rename: `fileio.atomic_write_all`).

    Adds `format`, `plan_bytes` and `plan_sha256`; raises ValueError when `meta` lacks a field
    `validate_meta` requires (a bug in the caller: netdef never writes an engine it would refuse to read).
    """
    view = memoryview(plan).cast("B")
    meta = sealed(dict(meta, format=FORMAT, plan_bytes=view.nbytes, plan_sha256=hashlib.sha256(view).hexdigest()))
    header = json.dumps(meta, indent=1, sort_keys=True).encode()
    stored = json.loads(header)
    problem = meta_problem(stored)
    if problem is None and len(header) > MAX_HEADER_BYTES:
        problem = f"a {len(header)}-byte header, over the {MAX_HEADER_BYTES >> 20} MiB limit"
    if problem is not None:
        raise ValueError(f"cannot write engine {path}: bad metadata ({problem})")
    atomic_write_all({path: [MAGIC, struct.pack("<Q", len(header)), header, view]},
                     expect=expect)
    return stored


def profiles(meta: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The engine's optimization profiles (min, opt, max batch), in profile-index order."""
    return [tuple(p) for p in meta["options"].get("profiles") or [meta["options"]["batch"]]]  # type: ignore[misc]


def hw_ranges(meta: dict[str, Any]) -> list[tuple[tuple[int, int], ...]] | None:
    """Each profile's (min, opt, max) input (H, W), in profile-index order; None for a static input size."""
    ranges = meta.get("input_hw_ranges")
    return None if ranges is None else [tuple(tuple(hw) for hw in r) for r in ranges]


def is_engine_file(path: str | Path) -> bool:
    """Whether `path` starts with the netdef engine magic, or is a non-empty file cut inside it.

    Such a file is an engine (perhaps a damaged one) and is never to be read as a `.wts` file. A pipe or a device is
    none (never opened: reading a named pipe waits for a writer).
    """
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError:
        return False
    return head == MAGIC or (0 < len(head) < len(MAGIC) and MAGIC.startswith(head))


def read_meta(path: str | Path, *, verify: bool = False) -> dict[str, Any]:
    """The checked header of a netdef engine; `verify=True` also checks the plan's SHA-256 (`netdef info`).

    The plan's length is always checked (against the file size). Raises EngineFileError for anything
    that is not a complete netdef engine.
    """
    path = Path(path)
    with _open(path) as f:
        meta = _read_header(f, path)
        if verify:
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
            _check_sha256(meta, h.hexdigest(), path)
    return meta


def read_plan(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The checked header and the plan bytes (length and SHA-256 verified)."""
    path = Path(path)
    with _open(path) as f:
        meta = _read_header(f, path)
        plan = f.read(meta["plan_bytes"])
    if len(plan) != meta["plan_bytes"]:  # the file shrank since its size was read
        raise _damaged(path, f"the plan ends after {len(plan)} of {meta['plan_bytes']} bytes")
    _check_sha256(meta, hashlib.sha256(plan).hexdigest(), path)
    return meta, plan


def _open(path: Path) -> Any:
    """The engine file opened for reading; EngineFileError when there is none."""
    if not path.is_file():
        raise EngineFileError(f"{path} is {special_kind(path)}, not an engine file" if path.exists()
                              else f"engine not found: {path}")
    try:
        return open(path, "rb")
    except OSError as e:
        raise EngineFileError(f"cannot read engine {path}: {e.strerror}") from None


def _damaged(path: Path, what: str) -> EngineFileError:
    what = " ".join(what.split())  # one line, whatever the damage put into the message
    return EngineFileError(f"{path}: damaged netdef engine file ({what}), rebuild it")


def _header_sha256(meta: dict[str, Any]) -> str:
    """SHA-256 of a header's fields (as JSON types) but `header_sha256`: a changed value (a flipped digit in a shape)
    is damage, not another engine."""
    text = json.dumps({k: v for k, v in meta.items() if k != "header_sha256"}, indent=1, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sealed(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` as JSON types (`printable`) with its own `header_sha256` (an earlier one replaced): what an engine header
    or a plan's sidecar holds."""
    meta = json.loads(json.dumps(printable({k: v for k, v in meta.items() if k != "header_sha256"})))
    return dict(meta, header_sha256=_header_sha256(meta))


def header_changed(meta: dict[str, Any]) -> bool:
    """Whether `meta` records a `header_sha256` that its fields no longer give (those of older netdefs lack it)."""
    return "header_sha256" in meta and _header_sha256(meta) != meta["header_sha256"]


def _check_sha256(meta: dict[str, Any], digest: str, path: Path) -> None:
    if digest != meta["plan_sha256"]:
        raise _damaged(path, f"the plan's SHA-256 is {digest[:12]}..., the header says {meta['plan_sha256'][:12]}...")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:  # no real header value is this long; int() of megabytes of digits is slow
        raise ValueError(f"a {len(text)}-digit number")
    return int(text)


def _read_header(f: Any, path: Path) -> dict[str, Any]:
    """Read and check the header and the plan's length; leaves `f` at the start of the plan."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(_PREFIX)
    if not head.startswith(MAGIC):
        if head and MAGIC.startswith(head):
            raise _damaged(path, f"the file ends after {len(head)} bytes, inside the netdef magic")
        what = recognised(head)
        if what is not None and head[:4] not in PLAN_MAGICS:
            raise EngineFileError(f"{path} is not a netdef engine: it looks like {what}; give the engine `netdef "
                                  "build` wrote")
        raise EngineFileError(f"{path} is not a netdef engine (no netdef header): build it with `netdef build`; "
                              "a raw TensorRT plan runs with `netdef run` or `Engine(...)` (its metadata comes from "
                              "the sidecar `netdef export-plan` writes)")
    if len(head) < _PREFIX:
        raise _damaged(path, f"the file ends after {len(head)} bytes, inside the header length")
    (n,) = struct.unpack("<Q", head[len(MAGIC):])
    if n > MAX_HEADER_BYTES:
        raise _damaged(path, f"the header length {n} is over the {MAX_HEADER_BYTES >> 20} MiB limit")
    raw = f.read(n)
    if len(raw) < n:
        raise _damaged(path, f"the file ends after {_PREFIX + len(raw)} bytes, inside its {n}-byte header")
    try:
        meta = json.loads(raw.decode("utf-8"), parse_int=_bounded_int)
        json.dumps(meta, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\udc80) cannot be printed
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(path, f"the header is not JSON: {str(e)[:200]}") from None
    if not isinstance(meta, dict):
        raise _damaged(path, meta_problem(meta) or "")
    fmt = meta.get("format")
    if type(fmt) is not int or fmt != FORMAT:
        if type(fmt) is int and 1 <= fmt < FORMAT:
            raise EngineFileError(f"{path}: engine file format {fmt} (an older netdef) has no plan length or "
                                  f"checksum; this netdef reads format {FORMAT}: rebuild it")
        if type(fmt) is int and fmt > FORMAT:
            raise EngineFileError(f"{path}: engine file format {fmt} is newer than this netdef's {FORMAT}: "
                                  "upgrade netdef or rebuild it")
        raise _damaged(path, "no 'format'" if fmt is None else f"'format' is {_shown(fmt)}")
    problem = meta_problem(meta)
    if problem is not None:
        raise _damaged(path, problem)
    if header_changed(meta):
        raise _damaged(path, "the header's SHA-256 is not the one it records: a value in it was changed")
    plan_size, expected = size - _PREFIX - n, meta["plan_bytes"]
    if plan_size != expected:
        how = "the file was cut short" if plan_size < expected else "extra bytes follow it"
        raise _damaged(path, f"the plan is {plan_size} bytes, the header says {expected}: {how}")
    return meta


def validate_meta(meta: Any, path: str | Path) -> dict[str, Any]:
    """Return `meta` when it is a usable engine header, else raise EngineFileError naming the bad field."""
    problem = meta_problem(meta)
    if problem is not None:
        raise _damaged(Path(path), problem)
    return meta


# ---------------------------------------------------------------- the header's fields

_MAX_DIM = 2**31 - 1  # TensorRT dimensions and batch sizes are int32
_SHA256 = re.compile("[0-9a-f]{64}")


def _is_int(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_str_or_null(v: Any) -> bool:
    return v is None or type(v) is str


def _is_profile(v: Any) -> bool:
    return (type(v) is list and len(v) == 3 and all(_is_int(b, 1, _MAX_DIM) for b in v)
            and v[0] <= v[1] <= v[2])


def _is_hw_range(v: Any) -> bool:
    return (type(v) is list and len(v) == 3 and all(type(hw) is list and len(hw) == 2 and
                                                    all(_is_int(d, 1, _MAX_DIM) for d in hw) for hw in v)
            and all(v[0][d] <= v[1][d] <= v[2][d] for d in (0, 1)))


def _is_io(v: Any) -> bool:
    return (type(v) is dict and _is_str(v.get("name")) and _is_str(v.get("dtype"))
            and type(v.get("shape")) is list and len(v["shape"]) <= 8
            and all(_is_int(d, -1, _MAX_DIM) for d in v["shape"]))


def _is_plugin(v: Any) -> bool:
    layers = v.get("layers", []) if type(v) is dict else None
    return (type(v) is dict and _is_str(v.get("library")) and type(layers) is list
            and all(type(lay) is dict and ("conf_thres" not in lay or
                                           (_is_number(lay["conf_thres"]) and _is_number(lay.get("iou_thres"))))
                    for lay in layers))


MODEL_TASKS = ("detect", "segment", "pose", "classify", "end2end")  # the "model" field's tasks (the YOLO heads')


def _is_model(v: Any) -> bool:
    """The optional "model" field the heads record: {"task", "nc", "head"[, "kpt_shape" (pose), "nm" (segment),
    "stride" (the detection heads' largest stride)]}; YOLO26's end-to-end heads (task end2end) give kpt_shape or
    nm where their rows carry keypoints or mask coefficients."""
    if type(v) is not dict or v.get("task") not in MODEL_TASKS or not _is_int(v.get("nc"), 1, _MAX_DIM):
        return False
    kpt, task = v.get("kpt_shape"), v["task"]

    def given(key: str, own: str) -> bool:  # required for its own task, optional for end2end, else absent
        return (key in v) == (task == own) or (task == "end2end" and key in v)
    return (_is_str(v.get("head")) and given("kpt_shape", "pose") and given("nm", "segment")
            and not ("kpt_shape" in v and "nm" in v)
            and (kpt is None or (type(kpt) is list and len(kpt) == 2 and _is_int(kpt[0], 1, _MAX_DIM)
                                 and kpt[1] in (2, 3) and type(kpt[1]) is int))
            and ("nm" not in v or _is_int(v["nm"], 1, _MAX_DIM))
            and ("stride" not in v or _is_int(v["stride"], 1, _MAX_DIM)))


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: type(v) is list and all(check(x) for x in v)


# (dotted key, required, check, what a good value is): every field netdef's readers use (runtime.Engine,
# check_compatible, profiles, `netdef info`, build's up-to-date check, bench, profile, detect, refit);
# optional ones are checked when present. Other keys are kept, not checked.
_FIELDS: tuple[tuple[str, bool, Callable[[Any], bool], str], ...] = (
    ("plan_bytes", True, _is_int, "a non-negative integer"),
    ("plan_sha256", True, lambda v: _is_str(v) and _SHA256.fullmatch(v) is not None, "64 hex digits"),
    ("tensorrt.version", True, _is_str, "a string"),
    ("tensorrt.flavor", True, _is_str, "a string"),
    ("gpu.compute_capability", True, _is_str_or_null, "a string or null"),
    ("gpu.name", False, _is_str_or_null, "a string or null"),
    ("precision", True, lambda v: v in ("fp32", "fp16", "int8"), "fp32, fp16 or int8"),
    ("options.batch", True, _is_profile, "[min, opt, max] with 1 <= min <= opt <= max"),
    ("options.profiles", False, lambda v: v is None or _list_of(_is_profile)(v), "a list of [min, opt, max]"),
    ("options.input_hw", False, lambda v: v is None or (type(v) is list and len(v) == 2 and
                                                         all(_is_int(d, 1, _MAX_DIM) for d in v)), "null or [H, W]"),
    ("options.input_range", False, lambda v: v is None or _is_hw_range(v), "null or [[H, W], [H, W], [H, W]]"),
    ("options.input_dtype", False, lambda v: v in ("float32", "float16", "uint8"), "float32, float16 or uint8"),
    ("options.input_mean", False, lambda v: v is None or (_list_of(_is_number)(v) and bool(v)),
     "null or a list of numbers"),
    ("options.input_std", False, lambda v: v is None or (_list_of(lambda x: _is_number(x) and x > 0)(v) and bool(v)),
     "null or a list of positive numbers"),
    ("input_hw_ranges", False, _list_of(_is_hw_range), "a list of [[minH, minW], [optH, optW], [maxH, maxW]]"),
    ("arch.name", True, _is_str, "a string"),
    ("arch.path", False, _is_str_or_null, "a string or null"),
    ("arch.sha256", False, _is_str_or_null, "a string or null"),
    ("inputs", True, _list_of(_is_io), "a list of {name, shape, dtype}"),
    ("outputs", True, _list_of(_is_io), "a list of {name, shape, dtype}"),
    ("weights.path", True, _is_str, "a string"),
    ("weights.sha256", True, _is_str, "a string"),
    ("plugins", True, _list_of(_is_plugin), "a list of {name, library, layers}"),
    ("model", False, _is_model, "{task: one of " + ", ".join(MODEL_TASKS) + ", nc >= 1, head: a string, "
                                "kpt_shape: [n, 2 or 3] for pose (or end2end) alone, nm >= 1 for segment (or "
                                "end2end) alone}"),
    ("names", False, valid_names, "a non-empty list of class names (non-empty strings)"),
    ("layers", True, _is_int, "a non-negative integer"),
    ("created", True, _is_str, "a string"),
    ("build_seconds", True, lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    ("build_key", False, _is_str, "a string"),
    ("structure", False, _is_str, "a string"),
)

REQUIRED_KEYS = tuple(key for key, required, _, _ in _FIELDS if required)


def _shown(v: Any) -> str:
    try:
        text = json.dumps(v)
    except (ValueError, RecursionError):
        text = type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def meta_problem(meta: Any) -> str | None:
    """What makes `meta` unusable as an engine header (a short phrase), or None when it is fine."""
    if type(meta) is not dict:
        return f"the header is a {type(meta).__name__}, not an object"
    for key, required, check, good in _FIELDS:
        obj: Any = meta
        parts = key.split(".")
        for i, part in enumerate(parts):
            if type(obj) is not dict:
                return f"'{'.'.join(parts[:i])}' is not an object"
            if part not in obj:
                obj = None
                break
            obj = obj[part]
        else:
            if not check(obj):
                return f"'{key}' is {_shown(obj)}, expected {good}"
            continue
        if required:
            return f"no '{key}'"
    nc = (meta.get("model") or {}).get("nc")
    if "names" in meta and nc is not None and len(meta["names"]) != nc:
        return f"'names' holds {len(meta['names'])} class names, 'model' records {nc} classes"
    return None


def check_compatible(meta: dict[str, Any], path: str | Path, trt_version: str, flavor: str,
                     gpu: tuple[str, str] | None, warn: Callable[[str], None] | None = None) -> None:
    """Raise EngineMismatchError when the engine was built by another TensorRT or for another compute capability;
    `warn` (default: stderr) says so when it was built on another GPU model of the same compute capability, which
    TensorRT runs but did not tune for."""
    built = meta["tensorrt"]
    if built["version"] != trt_version or built["flavor"] != flavor:
        raise EngineMismatchError(
            f"{path} was built with {built['flavor']} {built['version']} but this is {flavor} {trt_version}: "
            "TensorRT engines only load in the version that built them; rebuild with `netdef build`")
    target = meta.get("gpu") or {}
    if gpu is not None and target.get("compute_capability") not in (None, gpu[1]):
        raise EngineMismatchError(
            f"{path} was built for compute capability {target['compute_capability']} ({target.get('name')}) "
            f"but this GPU is {gpu[0]} ({gpu[1]}); rebuild the engine on this GPU")
    if gpu is not None and target.get("name") not in (None, gpu[0]):
        (warn or _stderr)(f"[netdef] warning: {path} was built on {target['name']}, this GPU is {gpu[0]} (the same "
                          f"compute capability {gpu[1]}): it runs, with kernels chosen for the other model; "
                          "rebuild it here for this GPU's speed")


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)
