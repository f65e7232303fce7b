"""Build engines from an architecture YAML and weights: define the network (`netdef.define`), compile it
(`netdef.compiler`); keep an up-to-date engine, and refit a refittable one whose weights alone changed.

`BuildOptions`, the profile parsing and `define_network` are re-exported here (`from netdef.build import ...`).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import engine_file, trt_api
from .class_names import check_count, check_given, exported_names
from .compiler import TIMING_CACHE, build_key, compile_network, target_identity
from .define import Weights, check_stride, check_weights, define_network, identified  # noqa: F401  (re-exported)
from .define import spec_for_weights
from .errors import NetdefError, OptionError
from .fileio import check_output, output_name, path_key, read_head
from .options import BuildOptions, checked_options
from .options import format_profiles, parse_batch, parse_profiles  # noqa: F401  (re-exported)
from .registry import block_files
from .spec import Spec


@dataclass
class BuildResult:
    """What `build_engine` did: the engine `path`, its header `meta`, whether it was built, kept or refitted."""

    path: Path
    meta: dict[str, Any]
    built: bool  # False when an up-to-date engine was kept
    seconds: float
    refitted: bool = False  # True when a refittable engine got the new weights instead of a rebuild


def _check_not_a_deployed_plan(output: Path) -> None:
    """Refuse to write a netdef engine over a raw plan `netdef export-plan` wrote with its sidecar: the sidecar
    would describe a plan that is gone, and the file would no longer load in Triton or trtexec."""
    from .deploy.plan import RAW_PLAN_FILE, sidecar_path

    sidecar = sidecar_path(output)
    if output.is_file() and sidecar.is_file() and RAW_PLAN_FILE.test(read_head(output)):
        raise OptionError(f"{output} is a raw TensorRT plan with its sidecar {sidecar} (netdef export-plan): a netdef "
                          f"engine written there would leave the sidecar describing a plan that is gone, and Triton "
                          f"or trtexec could not load the file; give another -o (then `netdef export-plan` it), or "
                          f"remove both files first")


def build_engine(arch: str | Path | Spec, weights: Weights, output: str | Path, opts: BuildOptions | None = None,
                 *, force: bool = False, log: Callable[[str], None] | None = None,
                 progress: bool | None = None, names: Sequence[str] | None = None,
                 names_from: str | os.PathLike | None = None) -> BuildResult:
    """Build the engine for `arch` + `weights` at `output`; keep it when up to date, and refit it when it is
    refittable and only the weights changed (a GPU is needed for that; `force` always rebuilds). `log` gets the
    messages (default: stderr); `progress`: a bar while reading the .wts (default: when stderr is a terminal).
    The header records the class `names` (read from the file `names_from`, named in errors), default those
    `netdef export` wrote beside the .wts (`class_names.names_sidecar`); one per class of the model's head."""
    opts = checked_options(opts)
    if not isinstance(force, bool):
        raise OptionError(f"force {force!r}: expected True or False")
    check_given(names, names_from)
    check_weights(weights)
    trt_api.check_compute_capability(opts.compute_capability)  # before the weights are read
    log = log or _stderr
    t0 = time.perf_counter()
    spec = spec_for_weights(arch, weights)
    if opts.precision == "int8":
        from .int8.quantize import require_table

        require_table(spec, opts)
    builtin = Path(__file__).resolve().parent / "architectures"
    # the working folder's YAML shadows netdef's
    if isinstance(arch, str) and spec.path is not None and Path(arch).suffix not in (".yaml", ".yml") \
            and (builtin / spec.path.name).is_file() and builtin not in spec.path.resolve().parents:
        log(f"[netdef] {arch}: {spec.path} (the working folder's architectures/ comes before netdef's own)")
    inputs = [spec.path, *block_files(), None if isinstance(weights, Mapping) else weights, opts.calibration,
              names_from]
    output = check_output(output, inputs=[*inputs, opts.timing_cache], what="the engine output",
                          kind=engine_file.NETDEF_ENGINE_FILE, name=output_name(spec.name, ".engine"))
    _check_not_a_deployed_plan(output)
    if opts.timing_cache:  # read, then written over by the build: checked now, not after the weights are read
        check_output(opts.timing_cache, inputs=inputs, what="the timing cache", kind=TIMING_CACHE,
                     name=output_name(spec.name, ".timing"))
    weights, identity = identified(weights)  # the file read below must be the one hashed here
    source, weights_sha = identity
    if names is None and not isinstance(weights, Mapping):
        names, names_from = exported_names(Path(weights), weights_sha, log)
    target = target_identity(opts)
    key = build_key(spec.sha256, weights_sha, opts, target, names)
    refit_key = build_key(spec.sha256, "", opts, target, names) if opts.refittable else None
    before = path_key(output)  # a file another build writes there meanwhile is kept (WrittenMeanwhile)
    old = _old_meta(output) if output.is_file() and not force else {}
    if old.get("build_key") == key:
        log(f"[netdef] {output} is up to date (same .wts, YAML, options, TensorRT and GPU); --force rebuilds")
        return BuildResult(output, old, False, time.perf_counter() - t0)
    if refit_key and old.get("refit_key") == refit_key:
        if trt_api.can_run_engines():
            from .refit import refit_resolved

            log(f"[netdef] only the weights changed: refitting {output} instead of rebuilding (--force rebuilds)")
            meta, plan = engine_file.read_plan(output)  # hashed, names found and paths checked above: not again
            meta = refit_resolved(output, output, meta, plan, weights, identity, names, names_from, log, t0,
                                  spec, before=before)
            return BuildResult(output, meta, True, time.perf_counter() - t0, refitted=True)
        log(f"[netdef] only the weights of {output} changed, but refitting needs a CUDA GPU and full TensorRT "
            f"({trt_api.version_string()} here): rebuilding")

    if opts.refittable:  # what this TensorRT refuses, before the weights are read
        trt_api.check_refittable()
    net = define_network(spec, weights, opts, log, identity=identity, progress=progress)
    if opts.input_range and net.model.get("stride"):
        check_stride(opts.input_range, int(net.model["stride"]), spec.name)
    if names:
        check_count(names, names_from, net.model.get("nc", net.classes), source)
    extra = ({"refit_key": refit_key} if refit_key else {}) | ({"model": net.model} if net.model else {}) | \
        ({"names": list(names)} if names else {})
    meta = compile_network(net, opts, output, arch=spec.identity(), weights={"path": source, "sha256": weights_sha},
                           log=log, build_key=key, before=before, **extra)
    return BuildResult(output, meta, True, time.perf_counter() - t0)


def _old_meta(path: Path) -> dict[str, Any]:
    try:
        return engine_file.read_meta(path, verify=True)  # a damaged plan of the right length is rebuilt, not kept
    except NetdefError:
        return {}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
