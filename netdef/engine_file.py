"""netdef engine files: a small JSON header (what the engine is, what built it) followed by the TensorRT plan.

Layout: b"NETDEF-ENGINE\\n", 8-byte little-endian header length, UTF-8 JSON header, plan bytes.
`netdef info` reads the header alone; `read_plan` checks it against this TensorRT and GPU first.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .errors import EngineMismatchError, NetdefError
from .fileio import atomic_write

MAGIC = b"NETDEF-ENGINE\n"
FORMAT = 1


def write_engine(path: str | Path, plan: bytes | memoryview, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the engine file; returns its header as `read_meta` will give it back (JSON types)."""
    header = json.dumps(dict(meta, format=FORMAT), indent=1, sort_keys=True).encode()
    atomic_write(path, [MAGIC, struct.pack("<Q", len(header)), header, memoryview(plan)])
    return json.loads(header)


def profiles(meta: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The engine's optimization profiles (min, opt, max batch), in profile-index order."""
    return [tuple(p) for p in meta["options"].get("profiles") or [meta["options"]["batch"]]]  # type: ignore[misc]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The header of a netdef engine; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise NetdefError(f"engine not found: {path}")
    with open(path, "rb") as f:
        meta, _ = _read_header(f, path)
    return meta


def read_plan(path: str | Path) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    if not path.is_file():
        raise NetdefError(f"engine not found: {path}")
    with open(path, "rb") as f:
        meta, _ = _read_header(f, path)
        return meta, f.read()


def _read_header(f: Any, path: Path) -> tuple[dict[str, Any], int]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise NetdefError(f"{path} is not a netdef engine (no netdef header): build it with `netdef build`; "
                          "raw TensorRT plans can be run with trtexec --loadEngine")
    (n,) = struct.unpack("<Q", f.read(8))
    try:
        meta = json.loads(f.read(n))
    except ValueError as e:
        raise NetdefError(f"{path}: damaged netdef engine header ({e}); rebuild it") from None
    if meta.get("format") != FORMAT:
        raise NetdefError(f"{path}: engine file format {meta.get('format')} is not {FORMAT}; rebuild it")
    return meta, len(MAGIC) + 8 + n


def check_compatible(meta: dict[str, Any], path: str | Path, trt_version: str, flavor: str,
                     gpu: tuple[str, str] | None) -> None:
    """Raise EngineMismatchError when the engine was built by another TensorRT or for another GPU."""
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
