"""Refit: new weights for a refittable engine (`netdef build --refittable`) in seconds instead of a rebuild.

The new weights go through the very code the build used: `build.define_network` with the engine's own
options (BatchNorm folded into convolutions, fp16 conversion, transposes, INT8 weight scales), strict key
accounting included. The resulting network must have the build's structure (every layer's name, type and
output shapes, and the plugin layers' settings, such as YOLO anchors and the class count): weights that
change it need a rebuild. Every weight TensorRT lists as refittable is then handed over by layer name.
INT8 engines keep their calibration table's activation ranges; weight scales are computed anew.
"""
from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import engine_file, trt_api
from .class_names import check_count, check_given, exported_names, shown
from .compiler import build_key, structure_digest
from .define import Identity, Weights, check_weights, define_network, identified
from .errors import NetdefError, OptionError, WrittenMeanwhile
from .fileio import FileKey, check_output, output_name, path_key, shown_path
from .network import Network
from .options import BuildOptions
from .registry import block_files
from .spec import Spec, load_spec

Log = Callable[[str], None]


def refit_arrays(meta: dict[str, Any], weights: Weights, log: Log | None = None,
                 identity: tuple[str, str] | None = None, arch: str | Path | Spec | None = None
                 ) -> tuple[dict[tuple[str, str], np.ndarray], Spec, BuildOptions]:
    """The arrays a refit hands to TensorRT ((layer name, role) -> array) for the engine described by `meta`
    and the new `weights`, computed by the build's own network definition; and the spec and options used.
    `arch`: the architecture (`spec_of`), for one the header cannot find (given in Python, or moved)."""
    net, spec, opts = _refit_network(meta, weights, log, identity, arch)
    return trt_api.layer_weights(net.definition), spec, opts


def _refit_network(meta: dict[str, Any], weights: Weights, log: Log | None, identity: tuple[str, str] | None,
                   arch: str | Path | Spec | None = None) -> tuple[Network, Spec, BuildOptions]:
    """The network of the new `weights` defined as the build of the engine `meta` defined its own, checked to have
    that engine's structure; and the spec and options used."""
    opts = BuildOptions.from_meta(meta["options"])
    opts.validate()
    if not opts.refittable:
        raise OptionError("the engine was built without --refittable: rebuild it with --refittable to refit it")
    spec = spec_of(meta, arch)
    (log or _stderr)(f"[netdef] computing the new weights of {spec.name} ...")
    quantizer = None
    if opts.precision == "int8":  # the table belongs to the weights the engine was built from: ranges kept
        from .int8.quantize import Quantizer

        weights_from = meta["weights"]["path"]
        quantizer = Quantizer.for_build(spec, meta["weights"]["sha256"], opts, weights_from=weights_from)
    net = define_network(spec, weights, opts, log or _stderr, quantizer=quantizer, identity=identity)
    if structure_digest(net.definition, net.plugins) != meta.get("structure"):
        raise NetdefError(f"the new weights change the structure of {spec.name} (layer shapes, or settings baked "
                          f"into a plugin such as the class count or the anchors): rebuild with `netdef build`")
    return net, spec, opts


def spec_of(meta: dict[str, Any], given: str | Path | Spec | None = None) -> Spec:
    """The architecture an engine was built from: `given` (a Spec, name or path), else found by name, path, or
    name beside the path (a scaled name such as yolov8n-pose hashes equal only when loaded by that name); checked
    against the recorded hash."""
    arch = meta["arch"]
    name, path = arch.get("name"), arch.get("path")
    if given is not None:
        spec = load_spec(given)
        if spec.sha256 != arch.get("sha256"):
            raise NetdefError(f"architecture {spec.source} is not the one the engine was built from ({name}, "
                              f"{path or 'given in Python'}): {changed_sources(meta, spec)}")
        return spec
    if path is None:
        raise NetdefError(f"the engine records no architecture file (<{name}>, one given in Python: parse_spec): "
                          f"pass that architecture (`netdef refit --arch YAML`, refit_file(..., arch=spec), "
                          f"Engine.refit(weights, arch=spec))")
    beside = str(Path(path).parent / f"{name}.yaml") if name and path else None
    found: Spec | None = None
    failed: NetdefError | None = None  # the recorded file's own error (a block module not loaded, say)
    for ref in dict.fromkeys(filter(None, (name, path, beside))):
        try:
            spec = load_spec(ref)
        except NetdefError as e:
            failed = e if ref == path and Path(path).is_file() else failed
            continue
        if spec.sha256 == arch.get("sha256"):
            return spec
        found = found or spec
    if found is not None:
        raise NetdefError(f"architecture {name} ({path}) is not the one the engine was built from: "
                          f"{changed_sources(meta, found)}")
    if failed is not None:
        recorded = arch.get("blocks")
        built = f" (the engine was built with the blocks of {', '.join(recorded)})" if recorded else ""
        raise NetdefError(f"the engine's architecture {path} does not load{built}: {failed}") from None
    raise NetdefError(f"the engine's architecture {name} is gone: no file {path}, and no architecture named {name}: "
                      f"pass the YAML it was built from with `netdef refit --arch YAML` (if it moved), or rebuild the "
                      f"engine with `netdef build`")


def changed_sources(meta: Mapping[str, Any], spec: Spec) -> str:
    """What differs between the architecture the engine `meta` was built from and `spec`, as far as the header
    tells, and what to do. It records the names of the block modules outside netdef, and one hash of the YAML text,
    its scale and those blocks' sources (their files and the helper modules these import): a change of modules is
    named as such; otherwise every source is, and those modified after the build (by mtime) are said."""
    from .block_modules import helper_files

    arch = meta.get("arch") or {}
    own = {r.block.name: r.block for r in spec.rows if r.block.source_sha}
    files: dict[str, list[str]] = {}  # block file -> its blocks
    helpers: set[str] = set()
    for block_name, block in sorted(own.items()):
        try:
            file = inspect.getsourcefile(block.fn)
        except TypeError:  # a callable object without code
            file = None
        if file and os.path.isfile(file):
            files.setdefault(os.path.realpath(file), []).append(block_name)
        module = sys.modules.get(block.module)
        helpers.update(helper_files(module) if module is not None else ())
    helpers -= set(files)
    was, now = list(arch.get("blocks") or []), list(spec.identity().get("blocks") or [])
    fix = "rebuild the engine with `netdef build` (or put back the files it was built from)"
    if was != now:
        return (f"the engine was built with the blocks of {', '.join(was) or 'netdef alone'}, {spec.source} now uses "
                f"those of {', '.join(now) or 'netdef alone'}: {fix}")
    yaml = f"{spec.source}'s YAML text" + (f" (scale {spec.scale})" if spec.scale else "")
    blocks = [f"{shown_path(f)} ({', '.join(names)})" for f, names in files.items()] + \
        [shown_path(h) for h in sorted(helpers)]
    sources = f"{yaml} and the source of its blocks: {', '.join(blocks)}" if blocks else yaml
    newer = _modified_after(meta, [*([str(spec.path)] if spec.path else []), *files, *helpers])
    since = f" (modified after the build: {', '.join(map(shown_path, newer))})" if newer else ""
    return f"the engine's hash covers {sources}, and {'one of them' if blocks else 'it'} changed{since}: {fix}"


def _modified_after(meta: Mapping[str, Any], files: Sequence[str]) -> list[str]:
    """The `files` modified after the engine `meta` was built (its header's `created`, whole seconds), by mtime."""
    from datetime import datetime

    try:
        built = datetime.fromisoformat(str(meta.get("created"))).timestamp()
    except ValueError:
        return []
    newer = []
    for file in files:
        try:
            if os.stat(file).st_mtime >= built + 1:
                newer.append(file)
        except OSError:
            continue
    return newer


def refit_file(engine: str | Path, weights: Weights, output: str | Path | None = None, *,
               log: Log | None = None, names: Sequence[str] | None = None,
               names_from: str | os.PathLike | None = None, arch: str | Path | Spec | None = None) -> dict[str, Any]:
    """Refit the engine file `engine` with `weights` and write it to `output` (default: in place, atomically);
    returns the new metadata. Nothing is written when anything fails.
    The header records the class names of the new weights as `netdef build` would: `names` (read from the file
    `names_from`), else those `netdef export` wrote beside the .wts, else none; one per class of the model (its
    class count is part of the engine's structure). A change of the engine's names is said on `log`. `arch`: the
    engine's architecture where its header cannot find it (`spec_of`)."""
    log = log or _stderr
    check_given(names, names_from)
    t0 = time.perf_counter()
    engine = Path(engine)
    check_weights(weights)
    if not isinstance(weights, Mapping) and engine_file.is_engine_file(weights):
        raise OptionError(f"--weights {weights} is a netdef engine, not a .wts file: give the new weights' .wts")
    what = "the refitted engine"
    # in place, the engine itself is checked by reading it (next); another output must be an engine or plan
    output = check_output(output or engine, inputs=[None if isinstance(weights, Mapping) else weights, names_from],
                          what=what, kind=engine_file.NETDEF_ENGINE_FILE if output else None,
                          name=output_name(engine, ".engine"))
    before = path_key(output)  # before the engine is read: a write from now on is another program's
    meta, plan = engine_file.read_plan(engine)
    if not meta["options"].get("refittable"):  # named here, before the weights are hashed and read
        raise OptionError(f"{engine} was built without --refittable: rebuild it with `netdef build ... --refittable` "
                          "(on a GPU) to refit it")
    spec = spec_of(meta, arch)  # loads the block modules its YAML names: they are inputs too
    check_output(output, inputs=[spec.path, *block_files()], what=what)
    weights, identity = identified(weights)  # the file read by _refit_network must be the one hashed here
    if names is None and not isinstance(weights, Mapping):
        names, names_from = exported_names(Path(weights), identity[1], log)
    return refit_resolved(engine, output, meta, plan, weights, identity, names, names_from, log, t0, spec,
                          before=before)


def refit_resolved(engine: Path, output: Path, meta: dict[str, Any], plan: bytes, weights: Weights,
                   identity: Identity, names: Sequence[str] | None, names_from: str | os.PathLike | None,
                   log: Log, t0: float, arch: Spec | None = None, *, before: FileKey | None) -> dict[str, Any]:
    """`refit_file` once its arguments are checked and resolved: the engine's `meta` and `plan` read, `output`
    checked, the weights hashed (`identity`), their class names found (`names`, None: none). `build_engine`
    calls it with what it has already resolved itself. `before`: `fileio.path_key(output)` taken before the engine
    was read; a file another program wrote at `output` since (a build, another refit; checked right before the
    rename) is kept: the refit ends with an error instead of replacing it."""
    source, sha = identity
    net, spec, opts = _refit_network(meta, weights, log, identity, arch)
    if names:
        check_count(names, names_from, net.model.get("nc", net.classes), str(engine),
                    fix="give one name per class (the class count is part of the engine: a model of another count "
                        "needs a rebuild, `netdef build`)")
    arrays = trt_api.layer_weights(net.definition)
    if not trt_api.can_run_engines():
        raise NetdefError(f"refitting {engine} needs a CUDA GPU and full TensorRT (this is "
                          f"{trt_api.here()})")
    from .plugins import load_plugin_libraries

    load_plugin_libraries(meta.get("plugins", []), engine)
    t1 = time.perf_counter()
    _runtime, cuda_engine = trt_api.deserialize(plan)
    count = trt_api.refit_engine(cuda_engine, arrays)
    new_plan = trt_api.serialize(cuda_engine)
    refit_s = time.perf_counter() - t1
    new_meta = dict(meta, weights={"path": source, "sha256": sha},
                    build_key=build_key(spec.sha256, sha, opts, meta["gpu"], names),
                    refit={"from_weights": meta["weights"]["sha256"], "weights_set": count,
                           "seconds": round(time.perf_counter() - t0, 3), "refit_seconds": round(refit_s, 3)})
    new_meta.pop("names", None)
    if names:
        new_meta["names"] = list(names)
    if "refit_key" in meta:  # the key of everything but the weights: the names are part of it (`build_engine`)
        new_meta["refit_key"] = build_key(spec.sha256, "", opts, meta["gpu"], names)
    try:  # `before` checked right before the rename: a write up to then is seen
        new_meta = engine_file.write_engine(output, new_plan, new_meta, expect={output: before})
    except WrittenMeanwhile:
        raise WrittenMeanwhile(output, f"{output} was written by another program while this refit ran (a netdef "
                                       "build or refit?): nothing written, so that what it wrote is kept; refit "
                                       "again") from None
    log(f"[netdef] refitted {count} weights of {engine} from {source} in {time.perf_counter() - t0:.2f} s "
        f"(TensorRT refit {refit_s:.2f} s); wrote {output}")
    old = meta.get("names")
    if list(names or []) != list(old or []):
        log(f"[netdef] class names changed: {output} records "
            + (f"{shown(names)} (from {names_from or 'the names given'})" if names else
               f"none now ({source} comes without names: give --names FILE to record some)")
            + f"; it had {shown(old) if old else 'none'}")
    return new_meta


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
