"""`netdef info`: an engine's metadata, a raw plan's (from its sidecar, else from TensorRT), a .wts summary or a
calibration table's."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .. import engine_file
from ..class_names import shown
from ..errors import NetdefError
from ..fileio import JSON_FILE, is_kind, read_head, special_kind


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef info` to the command line."""
    i = subparsers.add_parser("info", help="show an engine's or a raw plan's metadata, or a .wts summary "
                                                  "(every value checked)")
    i.set_defaults(func=cmd_info)
    i.add_argument("file")
    i.add_argument("--json", action="store_true",
                   help='machine-readable output: an object whose "kind" is "engine" (the header\'s fields), '
                        '"raw_plan" (plan, plan_bytes, plan_sha256, sidecar, metadata), "wts" (tensors, values, '
                        'size_bytes, keys) or "calibration_table" (method, ranges, fingerprint, meta); an '
                        'engine\'s and a raw plan\'s "profiles" list the optimization '
                        'profiles as [min, opt, max] batches in profile-index order (null where not known), '
                        '"input_hw_ranges" their input sizes where dynamic')
    return i


def cmd_info(a: argparse.Namespace) -> int:
    path = Path(a.file)
    if not path.is_file():
        raise NetdefError(f"{path} is {special_kind(path)}, not a file: give an engine, a raw plan or a .wts file"
                          if path.exists() else f"no such file: {path}")
    if engine_file.is_engine_file(path):  # a damaged or cut engine too: never read as a .wts
        meta = engine_file.read_meta(path, verify=True)
        print(json.dumps({**meta, "kind": "engine", "profiles": engine_file.profiles(meta)}, indent=2) if a.json
              else format_engine(meta, path))
        return 0
    from ..deploy.plan import is_raw_plan
    from ..deploy.triton import OPTIONS_NAME

    if is_raw_plan(path):  # a plan's first bytes, a sidecar beside it, or a plan's name (.plan, .engine, .trt)
        r = raw_plan_info(path)
        profiles = None if r["metadata"] is None else engine_file.profiles(r["metadata"])
        print(json.dumps({**r, "kind": "raw_plan", "profiles": profiles}, indent=2) if a.json
              else format_raw_plan(r, path))
        return 0
    from ..int8.calibration import TABLE_FILE, CalibrationTable

    if is_kind(path, TABLE_FILE):
        table = CalibrationTable.load(path)  # every value checked, as a build reads it
        fields = {"method": table.method, "ranges": len(table.amax), "fingerprint": table.fingerprint,
                  "meta": table.meta}
        print(json.dumps({"kind": "calibration_table", **fields}, indent=2) if a.json else format_table(table, path))
        return 0
    if JSON_FILE.test(read_head(path)):  # a plan's sidecar, given for its plan: no .wts error about line 1
        plan = path.with_suffix("") if path.suffix.lower() == ".json" else None
        raise NetdefError(f"{path} is JSON, not an engine, a raw plan or a .wts file" + (
            f": a plan's sidecar is read with its plan, `netdef info {plan}`" if plan and plan.is_file() else ""))
    triton_files = {"config.pbtxt": "a Triton model configuration", OPTIONS_NAME: "the server options of a Triton model"}
    if path.name in triton_files:  # a file of a Triton model `netdef triton` wrote: its plans are what netdef describes
        plans = sorted(str(p) for p in path.parent.glob("*/model.plan"))
        raise NetdefError(f"{path} is {triton_files[path.name]}, not an engine, a raw plan or a .wts file: give "
                          + (f"a version's plan, e.g. `netdef info {plans[0]}`" if plans else "a version's model.plan"))
    if path.suffix.lower() in (".yaml", ".yml", ".py"):  # an architecture or blocks, not weights
        python = path.suffix.lower() == ".py"
        hint = f"for blocks, `netdef blocks --blocks {path}` lists them" if python else \
            f"for an architecture, `netdef show {path}` shows its rows"
        raise NetdefError(f"{path} is {'Python source' if python else 'YAML'}, not an engine, a raw plan or a .wts "
                          f"file: {hint}")
    if path.suffix.lower() == ".onnx":  # else the .wts reader's error about its first line
        raise NetdefError(f"{path} is an ONNX model, not an engine, a raw plan or a .wts file: netdef builds engines "
                          "from .wts weights (`netdef export`, then `netdef build`)")
    from ..wts import wts_summary

    s = wts_summary(path, checked=True, progress=not a.json and sys.stderr.isatty())  # info passes what builds pass
    print(json.dumps({**s, "kind": "wts"}, indent=2) if a.json else format_wts(s, path))
    return 0


def format_table(table: Any, path: Path) -> str:
    """A calibration table: what it was made for and how; the build that uses it."""
    m = table.meta
    made = [f"{m['arch']}" if "arch" in m else "", f"weights {m['weights']}" if "weights" in m else "",
            f"input {m['input_shape']}" if "input_shape" in m else "",
            f"from {m['images']} inputs" if "images" in m else ""]
    made = ", ".join(p for p in made if p)
    return "\n".join([f"calibration table {path}: {len(table.amax)} activation ranges ({table.method})"
                      + (f" for {made}" if made else ""),
                      f"  used by: netdef build ARCH -w WEIGHTS --precision int8 --calibration {path} (the same "
                      "architecture, weights and input shape)"])


def format_engine(meta: dict[str, Any], path: Path) -> str:
    """What an engine is, what built it, its profiles, inputs, outputs, model (task), weights and plugins."""
    from ..options import format_profiles

    t = meta["tensorrt"]
    engine_profiles = engine_file.profiles(meta)
    lines = [f"engine {path}: {meta['arch']['name']} {meta['precision']}, built by {t['flavor']} {t['version']} "
             f"for {meta['gpu'].get('name') or 'compute capability'} {meta['gpu']['compute_capability']}",
             f"  batch profile{'s' if len(engine_profiles) > 1 else ''} {format_profiles(engine_profiles)}, "
             f"{meta['layers']} layers, built {meta['created']} in {meta['build_seconds']} s"]
    lines += hw_lines(meta)
    lines += io_lines(meta)
    lines += model_lines(meta)
    lines += set_lines(meta)
    lines += build_option_lines(meta)
    arch = meta["arch"]
    where = arch.get("path") or f"<{arch.get('name')}> (given in Python: no file)"
    lines.append(f"  architecture {where} sha256 {str(arch.get('sha256'))[:12]} (YAML, scale and own "
                 "blocks)" + (f", blocks from {', '.join(arch['blocks'])}" if arch.get("blocks") else ""))
    lines.append(f"  weights {meta['weights']['path']} sha256 {meta['weights']['sha256'][:12]}")
    lines += [f"  plugin {p.get('name')}: {p.get('library')}" for p in meta.get("plugins", [])]
    return "\n".join(lines)


def raw_plan_info(path: Path) -> dict[str, Any]:
    """What is known of a raw plan: its sidecar's metadata; without one, what TensorRT reads from the plan where it
    can deserialize it here, else `not_shown` saying what cannot be shown and why."""
    import hashlib

    from .. import trt_api
    from ..deploy.plan import metadata_from_engine, read_raw_plan, sidecar_path
    from ..errors import TensorRTError

    meta, plan = read_raw_plan(path)
    side = sidecar_path(path)
    out: dict[str, Any] = {"plan": str(path), "plan_bytes": len(plan), "plan_sha256": hashlib.sha256(plan).hexdigest(),
                           "sidecar": str(side) if meta is not None else None, "metadata": meta}
    if meta is not None:
        return out
    what = "its inputs, outputs, optimization profiles, layers and the TensorRT that built it"
    if not trt_api.can_deserialize():
        out["not_shown"] = (f"{what}: reading them means deserializing the plan, which needs a CUDA GPU and "
                            f"TensorRT (this is {trt_api.here()}); without them only a sidecar {side} "
                            "(`netdef export-plan`) can tell them")
        return out
    try:
        _, engine = trt_api.deserialize(plan)
    except TensorRTError as e:
        out["not_shown"] = (f"{what}: {trt_api.version_string()} could not deserialize it ({e}; built by another "
                            "TensorRT or for another GPU, or with plugin layers whose library is not loaded)")
        return out
    out["metadata"] = metadata_from_engine(engine)
    return out


def format_raw_plan(r: dict[str, Any], path: Path) -> str:
    """A raw plan: size and checksum, then its sidecar's metadata, what TensorRT read from it, or what is missing."""
    from ..options import format_profiles

    head = f"raw TensorRT plan {path}: {r['plan_bytes'] / 2**20:.1f} MiB, sha256 {r['plan_sha256'][:12]}"
    meta = r["metadata"]
    if r["sidecar"]:
        return f"{head}, metadata from its sidecar {r['sidecar']}\n" + format_engine(meta, path)
    if meta is None:
        return f"{head}, no sidecar\n  not shown: {r['not_shown']}"
    t = meta["tensorrt"]
    lines = [f"{head}, no sidecar: read by {t['flavor']} {t['version']} on {meta['gpu']['name'] or 'this GPU'}",
             f"  batch profile{'s' if meta['options']['profiles'] else ''} "
             f"{format_profiles(engine_file.profiles(meta))}, {meta['layers']} layers"]
    return "\n".join(lines + hw_lines(meta) + io_lines(meta))


def hw_lines(meta: dict[str, Any]) -> list[str]:
    """The dynamic input height and width of each profile (none for a static input size)."""
    from ..options import format_hw_range

    ranges = engine_file.hw_ranges(meta) or []
    return [f"  input HxW {format_hw_range(r)} (min:opt:max) in profile {i} "
            f"(batch {':'.join(map(str, p))})" for i, (r, p) in enumerate(zip(ranges, engine_file.profiles(meta)))]


def model_lines(meta: dict[str, Any]) -> list[str]:
    """What the head computes, as it recorded it (task, classes, head, kpt_shape / nm), and the class names the
    header records (`build --names` gives them to an engine without that record too); none for older engines."""
    m = meta.get("model")
    names = [f"  names  {shown(meta['names'], 10)}"] if meta.get("names") else []
    if not m:
        return names
    extra = "".join(f", {k} {v}" for k, v in (("kpt_shape", "x".join(map(str, m.get("kpt_shape") or []))),
                                              ("nm", m.get("nm"))) if v)
    head = m["head"] + (" (top-k, no NMS)" if m["task"] == "end2end" and m["head"] == "decode" else "")
    return [f"  model  {m['task']}, {m['nc']} class{'' if m['nc'] == 1 else 'es'}, head {head}{extra}"] + names


def set_lines(meta: dict[str, Any]) -> list[str]:
    """The build parameters given to the build (`--set`; a YAML's own `set:` belongs to its architecture), as --set
    takes them; none where none was given."""
    params = meta.get("options", {}).get("params") or {}
    shown_params = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(params.items()))
    return [f"  set    {shown_params}"] if params else []


def build_option_lines(meta: dict[str, Any]) -> list[str]:
    """The build's options that change what was built, beyond precision, profiles and sizes (shown above), as the
    command line gives them: the calibration table, --int8-exclude, --fp32-rows, the builder's settings; none where the
    build used the defaults."""
    opts, shown = meta.get("options", {}), []
    if opts.get("calibration"):
        shown.append(f"--calibration {opts['calibration']}")
    shown += [f"--int8-exclude {shlex.quote(p)}" for p in opts.get("int8_exclude") or ()]
    shown += [f"--fp32-rows {shlex.quote(p)}" for p in opts.get("fp32_rows") or ()]
    if opts.get("opt_level") is not None:
        shown.append(f"--opt-level {opts['opt_level']}")
    if opts.get("workspace_mib") is not None:
        shown.append(f"--workspace {opts['workspace_mib']}")
    if opts.get("tf32") is False:
        shown.append("--no-tf32")
    if opts.get("timing_cache"):
        state = meta.get("timing_cache")
        shown.append(f"--timing-cache {opts['timing_cache']}" + (f" ({state})" if state else ""))
    shown += [flag for flag in ("--refittable", "--detailed") if opts.get(flag[2:])]
    return [f"  built with {' '.join(shown)}"] if shown else []


def io_lines(meta: dict[str, Any]) -> list[str]:
    """One line per input and output: name, dtype, shape (-1: dynamic); a uint8 input with the normalization the
    engine applies to it."""
    opts = meta.get("options", {})
    norm = f"  (x / 255 - {_values(opts.get('input_mean'), 0)}) / {_values(opts.get('input_std'), 1)} inside"
    return [f"  {kind[:-1]:6} {io['name']:12} {io['dtype']:8} {io['shape']}"
            + (norm if kind == "inputs" and io["dtype"] == "uint8" and opts.get("input_dtype") == "uint8" else "")
            for kind in ("inputs", "outputs") for io in meta[kind]]


def _values(values: list[float] | None, default: float) -> str:
    return str(default) if values is None else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def format_wts(s: dict[str, Any], path: Path) -> str:
    """A .wts summary: tensor and value counts, size, the first 20 keys."""
    lines = [f"wts {path}: {s['tensors']} tensors, {s['values']:,} values, {s['size_bytes'] / 2**20:.1f} MiB"]
    lines += [f"  {name:50} {count:>10,}" for name, count in s["keys"][:20]]
    if len(s["keys"]) > 20:
        lines.append(f"  ... {len(s['keys']) - 20} more")
    return "\n".join(lines)
