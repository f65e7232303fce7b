"""Raw TensorRT plans: the bare plan of a netdef engine, which trtexec, Triton, DeepStream and C++ programs
deserialize, and its sidecar `PLAN.json` (the plan's path plus ".json") with netdef's metadata.

The sidecar is the engine's own header (`netdef.engine_file`: TensorRT version, GPU, precision, I/O, profiles,
plugin libraries, the plan's length and SHA-256) plus a "sidecar" entry saying where the plan came from and how
each kind of program loads it. A plan is byte-identical to the one inside its engine file; a sidecar that does
not describe the plan beside it (another length or SHA-256) is an error, never a silent mismatch. Plugin library
paths in a sidecar may be relative to its folder (a Triton repository's are).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .. import __version__, engine_file, trt_api
from ..errors import EngineFileError
from ..fileio import (CHECKPOINT_STARTS, HEAD_BYTES, FileKind, atomic_write_all, check_output, describe_head, json_kind,
                      file_sha256, not_a_file, output_name, read_head)
from ..options import overall_range

SIDECAR_FORMAT = 1
SIDECAR_FILE = json_kind("a netdef plan sidecar", lambda d: isinstance(d, dict) and isinstance(d.get("sidecar"), dict))
# what export-plan's output may replace: a raw plan (an earlier export's), never a netdef engine (of another model,
# maybe the only one: `-o y.engine` for `-o y.plan`)
RAW_PLAN_FILE = FileKind("a raw TensorRT plan", lambda head: head[:4] in trt_api.PLAN_MAGICS,
                         suffixes=(".plan", ".trt", ".engine"))  # .engine: what trtexec users name plans
PLAN_SUFFIXES = engine_file.ENGINE_FILE.suffixes  # names `netdef info` reads as a plan (a wrong one: a clear error)


def sidecar_path(plan: str | os.PathLike) -> Path:
    """The sidecar of a raw plan: `model.plan` -> `model.plan.json` (a name too long for the file system: no such
    file, `fileio.SideFile`)."""
    from ..fileio import side_file

    return side_file(plan, ".json")


def is_raw_plan(path: str | os.PathLike) -> bool:
    """Whether `path` is a file to be read as a raw plan: no netdef engine, but a plan's first bytes, a sidecar
    or a plan's name."""
    path = Path(path)
    return (path.is_file() and not engine_file.is_engine_file(path)
            and (read_head(path)[:4] in trt_api.PLAN_MAGICS or sidecar_path(path).exists()
                 or path.suffix.lower() in PLAN_SUFFIXES))


def _other_file(path: Path, head: bytes, f: Any) -> str:
    """What a file that does not start with a known plan magic is instead, as far as its bytes tell."""
    from ..wts import WTS_FILE

    n = int.from_bytes(head[:4], "little")
    if not head:
        return "it is empty"
    if WTS_FILE.test(head):
        return "it is a .wts file: build an engine from it with `netdef build ARCH -w FILE`"
    if head[4:5] == b"{" and 0 < n < path.stat().st_size - 8:
        f.seek(4 + n)
        if f.read(4) in trt_api.PLAN_MAGICS:
            return ("it is an Ultralytics engine (JSON metadata before the plan): build one with netdef from the "
                    "checkpoint's weights (`netdef export CHECKPOINT.pt`, then `netdef build`)")
    if head.startswith(CHECKPOINT_STARTS):
        return f"{describe_head(head)}: export its weights with `netdef export`"
    if head.lstrip()[:1] == b"{":
        return "it is JSON, perhaps a sidecar: give the plan itself"
    if path.suffix.lower() == ".onnx":
        return "it is an ONNX model: netdef builds engines from .wts weights (`netdef export`, then `netdef build`)"
    if path.suffix.lower() in (".yaml", ".yml", ".py"):
        what = "Python source, blocks perhaps" if path.suffix.lower() == ".py" else "YAML, an architecture perhaps"
        return f"it is {what}: an engine of an architecture is built with `netdef build ARCH -w WEIGHTS -o OUT.engine`"
    magic = engine_file.MAGIC
    if len(head) >= len(magic) and 0 < sum(a != b for a, b in zip(head, magic)) <= 3:  # a few bytes off netdef's
        return "its header is a netdef engine's but its first bytes are damaged: build the engine again"
    return (f"its first bytes {head[:8]!r} are not a plan's: a damaged file, or another format; build the engine "
            "again, or export the plan again with `netdef export-plan`")


def _not_a_plan(path: Path, looks: str) -> EngineFileError:
    """The error for a file read as a plan that is recognisably something else."""
    magics = " or ".join(f"{m.decode()!r} ({flavor})" for m, flavor in trt_api.PLAN_MAGICS.items())
    return EngineFileError(f"{path} is neither a netdef engine nor a TensorRT plan ({looks}); a plan starts "
                           f"with {magics}")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """A sidecar's checked metadata, with plugin library paths made absolute (relative ones are relative to
    the sidecar's folder). EngineFileError for anything that is not a netdef sidecar."""
    path = Path(path)
    redo = "export the plan again with `netdef export-plan`"
    kind = not_a_file(path)  # a folder or a named pipe where the sidecar belongs: never "no sidecar", never read
    if kind:
        raise EngineFileError(f"{path} is {kind} where a plan's sidecar belongs (the file `netdef export-plan` writes "
                              "beside the plan): move it away")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EngineFileError(f"cannot read sidecar {path}: {e.strerror}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise EngineFileError(f"{path}: not a netdef sidecar (not JSON: {str(e)[:200]}): {redo}") from None
    problem = engine_file.meta_problem(meta)
    side = meta.get("sidecar") if isinstance(meta, dict) else None
    if problem is None and not (isinstance(side, dict) and side.get("format") == SIDECAR_FORMAT):
        problem = f"no 'sidecar' entry of format {SIDECAR_FORMAT}"
    if problem is None and engine_file.header_changed(meta):  # a flipped digit in a shape; older sidecars lack it
        problem = "its SHA-256 is not the one it records: a value in it was changed"
    if problem is not None:
        raise EngineFileError(f"{path}: not a usable netdef sidecar ({problem}): {redo}")
    for entry in meta["plugins"]:
        entry["library"] = os.path.normpath(path.parent.absolute() / entry["library"])
    return meta


def read_raw_plan(path: str | os.PathLike) -> tuple[dict[str, Any] | None, bytes]:
    """(sidecar metadata or None when there is no sidecar, plan bytes) of a raw plan. The sidecar must describe
    this plan: its length and SHA-256 are checked."""
    path = Path(path)
    if not path.is_file():
        raise EngineFileError(f"plan not found: {path}")
    _check_plan_head(path)  # what the file is, before reading all of it
    try:
        plan = path.read_bytes()
    except OSError as e:
        raise EngineFileError(f"cannot read plan {path}: {e.strerror}") from None
    side = sidecar_path(path)
    if not side.exists():
        return None, plan
    meta = read_sidecar(side)
    digest = hashlib.sha256(plan).hexdigest()
    if len(plan) != meta["plan_bytes"] or digest != meta["plan_sha256"]:
        raise EngineFileError(f"{side} describes another plan ({meta['plan_bytes']} bytes, SHA-256 "
                              f"{meta['plan_sha256'][:12]}...) than {path} ({len(plan)} bytes, {digest[:12]}...): "
                              "export the plan and its sidecar again with `netdef export-plan`")
    return meta, plan


def read_any_plan(path: str | os.PathLike) -> tuple[dict[str, Any] | None, bytes]:
    """(metadata, plan bytes) of a netdef engine (checked header), or of any other file read as a raw plan
    (its sidecar's metadata, None without one)."""
    path = Path(path)
    if engine_file.is_engine_file(path) or not path.is_file():
        return engine_file.read_plan(path)
    return read_raw_plan(path)


def read_any_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """`read_any_plan`'s metadata without reading or hashing the plan (for a caller whose `Engine` checks it): a
    netdef engine's checked header, or a raw plan's sidecar (None without one)."""
    path = Path(path)
    if engine_file.is_engine_file(path) or not path.is_file():
        return engine_file.read_meta(path)
    _check_plan_head(path)
    side = sidecar_path(path)
    return read_sidecar(side) if side.exists() else None


def _check_plan_head(path: Path) -> None:
    """EngineFileError (saying what it is instead) for a file that does not start as a plan does."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if head[:4] not in trt_api.PLAN_MAGICS:
                raise _not_a_plan(path, _other_file(path, head, f))
    except OSError as e:
        raise EngineFileError(f"cannot read plan {path}: {e.strerror}") from None


def load_plan(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """(metadata, plan bytes) of a netdef engine, or of a raw plan with its sidecar (checked either way)."""
    path = Path(path)
    meta, plan = read_any_plan(path)
    if meta is None:
        raise EngineFileError(f"{path} is a raw TensorRT plan without netdef's metadata (no sidecar "
                              f"{sidecar_path(path)}): export it from its netdef engine with `netdef export-plan`")
    return meta, plan


def library_problem(entry: dict[str, Any], engine: str | os.PathLike) -> str | None:
    """Why the plugin library of `entry` (one of `engine`'s plugins) is not the one the engine was built with:
    missing, or changed since; None when it is."""
    lib = Path(entry["library"])
    if not lib.is_file():
        return (f"{engine} needs plugin library {lib} ({entry.get('name')}), which is missing: run the engine once "
                "(`netdef run`, which compiles it again) or rebuild it with `netdef build`")
    if entry.get("sha256") and file_sha256(lib) != entry["sha256"]:
        return (f"plugin library {lib} changed since {engine} was built (its SHA-256 differs from the recorded one): "
                "rebuild the engine with `netdef build`")
    return None


def metadata_from_engine(engine: Any) -> dict[str, Any]:
    """What a deserialized engine tells of itself, in the engine header's form (the fields `Engine` and
    `netdef info` read): I/O tensors, optimization profiles, layer count, and the TensorRT and GPU here."""
    profiles = trt_api.profile_batches(engine)
    io = trt_api.io_tensors(engine)
    i = trt_api.info()
    gpu = trt_api.gpu_identity()
    hw = trt_api.profile_hw(engine)
    return {
        "tensorrt": {"flavor": i.flavor, "version": i.version},
        "gpu": {"name": gpu[0] if gpu else None, "compute_capability": gpu[1] if gpu else None},
        "options": {"batch": list(overall_range(profiles)),
                    "profiles": [list(p) for p in profiles] if len(profiles) > 1 else None},
        "inputs": [{"name": n, "shape": list(s), "dtype": d} for n, is_in, s, d in io if is_in],
        "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, is_in, s, d in io if not is_in],
        "plugins": [],
        "layers": int(engine.num_layers),
        "source": "the deserialized plan (no sidecar)",
        **({"input_hw_ranges": hw} if hw else {}),
    }


def load_hints(meta: dict[str, Any], plan: str, libraries: list[str]) -> dict[str, str]:
    """How each kind of program loads the plan `plan` (as named to it) needing the plugin `libraries`."""
    t = meta["tensorrt"]
    cc = (meta.get("gpu") or {}).get("compute_capability")
    hints = {"requires": f"{t['flavor']} {t['version']}" + (f" on a GPU of compute capability {cc}" if cc else ""),
             "python": f"netdef.runtime.Engine({str(plan)!r}) reads this sidecar and loads the plugin libraries"}
    preload = "dlopen(LIBRARY, RTLD_NOW | RTLD_GLOBAL) each plugin library (its creators register themselves), " \
              "then " if libraries else ""
    if t["flavor"] != "tensorrt":
        hints["c++"] = f"{preload}IRuntime::deserializeCudaEngine of {t['flavor']} {t['version']}"
        hints["note"] = (f"a {t['flavor']} plan: only the {t['flavor']} runtime loads it, not TensorRT, trtexec or "
                         "Triton's TensorRT backend")
        return hints
    hints["c++"] = f"{preload}IRuntime::deserializeCudaEngine"
    hints["trtexec"] = " ".join([f"trtexec --loadEngine={plan}", *(f"--staticPlugins={lib}" for lib in libraries)])
    if libraries:
        hints["triton"] = (f'--backend-config=tensorrt,plugins="{";".join(libraries)}" '
                           f'(or LD_PRELOAD={":".join(libraries)})')
    return hints


def write_plan(output: str | os.PathLike, plan: bytes, meta: dict[str, Any], *, source: str | os.PathLike,
               plugins: list[dict[str, Any]] | None = None, hints: dict[str, str] | None = None,
               also: dict[Path, bytes] | None = None) -> dict[str, Any]:
    """Write the raw plan `output` and its sidecar (atomically, both renamed once both are written); returns the
    sidecar's content.
    `plugins` replaces the plugin entries (e.g. with paths relative to the sidecar); `hints`, the load hints; `also`,
    files that belong with them (a Triton model's configuration), written and renamed together with them.
    The sidecar holds no time of export: the same engine gives the same files (a repository CI writes again is
    unchanged)."""
    output = Path(output)
    side = engine_file.sealed(dict(meta, plugins=meta["plugins"] if plugins is None else plugins, sidecar={
        "format": SIDECAR_FORMAT, "plan": output.name, "exported_from": str(source), "netdef_version": __version__,
        "load": hints or load_hints(meta, output.name, [str(p["library"]) for p in meta["plugins"]]),
    }))  # its own header_sha256 (the engine's covers other fields: no plugins paths, no sidecar entry)
    text = json.dumps(side, indent=1, sort_keys=True)
    atomic_write_all({output: plan, sidecar_path(output): text.encode() + b"\n", **(also or {})})  # all, or none
    return side


def export_plan(engine: str | os.PathLike, output: str | os.PathLike) -> dict[str, Any]:
    """Write the plan of `engine` (a netdef engine, or a raw plan with its sidecar) as the raw plan `output`
    with the sidecar `output.json`; returns the sidecar's content. Neither may be the engine itself."""
    engine = Path(engine)
    inputs = [engine, sidecar_path(engine)]  # `output` as given: `-o plans/` names a folder, Path() drops the '/'
    output = check_output(output, inputs=inputs, what="plan", kind=RAW_PLAN_FILE, name=output_name(engine, ".plan"))
    check_output(sidecar_path(output), inputs=inputs, what="sidecar", kind=SIDECAR_FILE, belongs=output)
    meta, plan = load_plan(engine)
    return write_plan(output, plan, meta, source=engine)
