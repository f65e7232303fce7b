"""The one compile step: a TensorRT network definition (netdef's, or one parsed from ONNX) plus
`BuildOptions` -> a serialized plan, written as an engine file with its metadata.

Builder configuration (precision, target, workspace, optimization level, profiles), the timing cache,
build progress and the metadata header are written here once; the route-comparison script compiles
through `compile_engine`, and `netdef.build`, the INT8 calibration run, verification and `check_block`
compile a netdef `Network` through `compile_network`.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, engine_file, interrupts, trt_api
from .errors import OptionError, TensorRTError, WrittenMeanwhile
from .fileio import FileKey, FileKind, atomic_write, check_output, file_sha256, recognised
from .options import BuildOptions, format_hw_range, format_profiles, options_dict

if TYPE_CHECKING:
    from .network import Network

Log = Callable[[str], None]


def compile_network(net: Network, opts: BuildOptions, output: str | Path, *, arch: Mapping[str, Any],
                    weights: Mapping[str, Any], log: Log, tag: str = "netdef", **extra_meta: Any) -> dict[str, Any]:
    """`compile_engine` for a netdef `Network`: its builder, definition, typing and plugin libraries."""
    return compile_engine(net.builder, net.definition, opts, output, strongly_typed=net.strongly_typed, arch=arch,
                          weights=weights, plugins=net.plugins, log=log, tag=tag, made_by=net.made_by, **extra_meta)


def compile_engine(builder: Any, definition: Any, opts: BuildOptions, output: str | Path, *,
                   strongly_typed: bool, arch: Mapping[str, Any], weights: Mapping[str, Any],
                   plugins: list[dict[str, Any]] | None = None, log: Log, tag: str = "netdef",
                   made_by: Mapping[str, str] | None = None, before: FileKey | None | bool = False,
                   **extra_meta: Any) -> dict[str, Any]:
    """Build `definition` with `opts` and write the engine file `output` (atomically); returns its metadata.

    `arch` and `weights` ({name/path, sha256}) say what the engine was built from; `plugins` lists the plugin
    libraries its layers need; `extra_meta` adds keys to the header. `tag` starts each log message. `made_by`:
    layer name -> the YAML row that made it, named where a failed build's messages name the layer. `before`: the
    `fileio.path_key` of `output` as the caller found it (None: no file), where a file another program wrote there
    since is to be kept (`WrittenMeanwhile`: a second build of the same output finished first); False: not checked."""
    definition = getattr(definition, "raw", definition)  # netdef's NamingDefinition wraps the real one
    plugins = list(plugins or [])
    config = builder.create_builder_config()
    trt_api.configure_precision(config, opts.precision, strongly_typed, opts.tf32, definition)
    trt_api.configure_target(config, opts.compute_capability)
    trt_api.set_workspace(config, opts.workspace_mib)
    trt_api.set_optimization_level(config, opts.opt_level)
    if opts.detailed:
        trt_api.set_detailed_profiling(config)
    if opts.refittable:
        trt_api.set_refittable(config, definition)
    if plugins:
        trt_api.disable_library_tactics(config)
    add_profiles(builder, definition, config, opts, str(arch.get("name")))
    cache, cache_state = load_timing_cache(config, opts.timing_cache, log, tag)

    hw = f", input {format_hw_range(opts.input_range)}" if opts.input_range else ""
    with BuildProgress(config, log, tag=tag) as progress:
        log(f"[{tag}] building {arch.get('name')} ({opts.precision}, batch {format_profiles(opts.all_profiles)}{hw}, "
            f"{definition.num_layers} layers) with {trt_api.version_string()}{_on_gpu()} ...")
        t0 = time.perf_counter()
        mark = trt_api.error_mark()
        with interrupts.tensorrt_call(), interrupts.watched(log, tag):  # a signal is raised when the build returns
            plan = builder.build_serialized_network(definition, config)
    build_s = time.perf_counter() - t0
    if progress.error is not None:  # the caller's log raised while TensorRT built: nothing is written
        raise progress.error
    if progress.cancelled or interrupts.CANCEL.is_set():  # a signal the main thread took stopped a worker's build
        raise KeyboardInterrupt
    if plan is None:
        said = trt_api.errors_since(mark)
        short = opts.workspace_mib is not None and any("OutOfMemory" in e for e in said)
        raise TensorRTError(f"TensorRT could not build {arch.get('name')} (its messages above say why)" + (
            f": it asked for more memory than --workspace {opts.workspace_mib} MiB allows; raise --workspace or "
            "leave it out (TensorRT's own limit: the GPU's memory)" if short else _rows_named(said, made_by or {})))
    meta = engine_metadata(definition, opts, strongly_typed=strongly_typed, arch=arch, weights=weights,
                           plugins=plugins, build_seconds=build_s,
                           **({"timing_cache": cache_state} if cache_state else {}), **extra_meta)
    try:  # first: a cache that cannot be written keeps the engine
        meta = engine_file.write_engine(output, plan, meta, expect=None if before is False else {output: before})
    except WrittenMeanwhile:
        raise WrittenMeanwhile(output, f"{output} was written by another program while this build ran (another "
                                       f"netdef build of the same output?): nothing written, so that what it wrote "
                                       f"is kept; build again (it is then up to date, or rebuilt)") from None
    log(f"[{tag}] wrote {output} ({plan.nbytes / 2**20:.1f} MiB); TensorRT built it in {build_s:.1f} s")
    if cache is not None:
        try:
            atomic_write(opts.timing_cache, bytes(config.get_timing_cache().serialize()))
        except OSError as e:
            said = f"; the engine {output} was written, its timing cache not"
            raise (OSError(e.errno, e.strerror + said) if e.errno is not None else OSError(f"{e}{said}")) from e
    return meta


def build_key(arch_sha: str, weights_sha: str, opts: BuildOptions, target: Mapping[str, Any],
              names: Sequence[str] | None = None) -> str:
    """Everything that changes the engine (its header's class `names` too): an engine with the same key is not
    rebuilt. With weights_sha "" it is the key of everything but the weights (a refittable engine with the same one
    is refitted instead)."""
    calib = file_sha256(opts.calibration) if opts.calibration else None
    key = {"arch": arch_sha, "weights": weights_sha, "opts": options_dict(opts) | {"timing_cache": None},
           "tensorrt": trt_api.version_string(), "target": dict(target), "netdef": __version__, "calibration": calib}
    if names:  # engines without names keep the key they had
        key["names"] = list(names)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def engine_metadata(definition: Any, opts: BuildOptions, *, strongly_typed: bool, arch: Mapping[str, Any],
                    weights: Mapping[str, Any], plugins: list[dict[str, Any]], build_seconds: float,
                    **extra: Any) -> dict[str, Any]:
    """The engine file's header: what the engine is (I/O, profiles, precision) and what built it."""
    info = trt_api.info()
    io = [(definition.get_input(i), "inputs") for i in range(definition.num_inputs)] + \
         [(definition.get_output(i), "outputs") for i in range(definition.num_outputs)]
    meta = {
        "netdef_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tensorrt": {"flavor": info.flavor, "version": info.version, "strongly_typed": strongly_typed},
        "gpu": target_identity(opts),
        "precision": opts.precision,
        "options": options_dict(opts),
        "arch": dict(arch),
        "weights": dict(weights),
        "inputs": [_io(t) for t, kind in io if kind == "inputs"],
        "outputs": [_io(t) for t, kind in io if kind == "outputs"],
        "plugins": plugins,
        "layers": definition.num_layers,
        "structure": structure_digest(definition, plugins),
        "build_seconds": round(build_seconds, 2),
    }
    if opts.input_range:  # per profile, as add_profiles set them (a static build's header has no such key)
        meta["input_hw_ranges"] = [[list(hw) for hw in opts.input_range] for _ in opts.all_profiles]
    meta.update(extra)
    return meta


def structure_digest(definition: Any, plugins: list[dict[str, Any]]) -> str:
    """SHA-256 of what new weights must not change for a refit: every layer's name, type and output shapes,
    and the plugin layers' settings (their fields are baked into the plan)."""
    doc = {"layers": trt_api.network_structure(getattr(definition, "raw", definition)),
           "plugins": [{k: v for k, v in p.items() if k not in ("library", "sha256")} for p in plugins]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _io(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": trt_api.dtype_name(t.dtype)}


def _on_gpu() -> str:
    """' on GPU N (name)': the current CUDA device, the one TensorRT builds on; '' without a GPU."""
    gpu = trt_api.gpu_identity()
    return "" if gpu is None else f" on GPU {trt_api.current_device()} ({gpu[0]})"


def target_identity(opts: BuildOptions) -> dict[str, Any]:
    """The GPU an engine is built for: the current CUDA device (the builder's: `trt_api.use_device` selects it
    before the network and its builder are made), or TensorRT-RTX's target compute capability."""
    gpu = trt_api.gpu_identity()
    if gpu is not None and not opts.compute_capability:
        return {"name": gpu[0], "compute_capability": gpu[1]}
    return {"name": None, "compute_capability": opts.compute_capability or ("8.6" if gpu is None else gpu[1])}


def add_profiles(builder: Any, definition: Any, config: Any, opts: BuildOptions, where: str) -> None:
    """One optimization profile per entry of `opts.all_profiles`: the batch dimension from it, a dynamic height
    and width (the last two dimensions) from `opts.input_range`, the other dimensions as defined (static)."""
    for lo, opt, hi in opts.all_profiles:
        profile = builder.create_optimization_profile()
        for i in range(definition.num_inputs):
            t = definition.get_input(i)
            shapes = [[b, *tuple(t.shape)[1:]] for b in (lo, opt, hi)]
            if opts.input_range and len(shapes[0]) == 4:
                for shape, hw in zip(shapes, opts.input_range):
                    shape[2:] = [d if d >= 0 else v for d, v in zip(shape[2:], hw)]
            if any(d < 0 for d in shapes[0][1:]):
                hint = "; build with --input-shape MIN:OPT:MAX" if opts.input_range is None else ""
                raise OptionError(f"{where}: input {t.name} {tuple(t.shape)} is dynamic beyond the batch axis{hint}")
            profile.set_shape(t.name, *(tuple(s) for s in shapes))
        config.add_optimization_profile(profile)


TIMING_CACHE = FileKind("a TensorRT timing cache", lambda head: recognised(head) is None)  # its format is TensorRT's


def load_timing_cache(config: Any, path: str | None, log: Log, tag: str = "netdef") -> tuple[Any, str | None]:
    """Attach the timing cache at `path` (new when missing) to `config`. Returns the cache and what became of the
    file: "new", "loaded" or "refused" (TensorRT reported it would not use the file; it may keep the entries it
    could read: TensorRT 8.6 drops a cache's Myelin part); (None, None) when none is asked for, (None, "not used")
    where this TensorRT times no tactics (the engine header says so, not that the build had the cache)."""
    if not path:
        return None, None
    check_output(path, what="the timing cache", kind=TIMING_CACHE)  # read, then written over: never another file
    if not trt_api.timing_cache_supported():
        log(f"[{tag}] timing cache {path} not used: {trt_api.version_string()} without a GPU times no tactics")
        return None, "not used"
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    mark = trt_api.error_mark()
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        raise TensorRTError(f"timing cache {path} does not fit this TensorRT/GPU; delete it or pick another file")
    if not data:
        log(f"[{tag}] timing cache {path}: new")
        return cache, "new"
    # TensorRT logs an error and goes on with an empty cache when it cannot read the file
    kept = len(bytes(cache.serialize()))
    empty = len(bytes(config.create_timing_cache(b"").serialize()))
    if kept <= empty < len(data):  # a cache with entries that TensorRT dropped (an empty one stays empty)
        raise TensorRTError(f"TensorRT could not read the timing cache {path} ({len(data)} bytes; its message "
                            f"above says why): if it is a timing cache, delete it to start a new one")
    refused = trt_api.errors_since(mark)
    if refused:  # e.g. TensorRT 8.6 reading back the Myelin part of a cache it wrote: "will not be used"
        log(f"[{tag}] warning: TensorRT did not use all of the timing cache {path} ({len(data)} bytes; it said: "
            f"{' / '.join(refused)}): this build times again the tactics it could not take from it")
        return cache, "refused"
    if kept < len(data):
        log(f"[{tag}] warning: TensorRT kept {kept} of the {len(data)} bytes of timing cache {path}")
    log(f"[{tag}] timing cache {path}: loaded {len(data)} bytes")
    return cache, "loaded"


def _rows_named(messages: Sequence[str], made_by: Mapping[str, str]) -> str:
    """'; its messages name layer(s) L, M of FILE:LINE: row N (Block)' for the YAML rows (3 at most) that made
    the layers TensorRT's `messages` name; '' where they name none of theirs."""
    rows: dict[str, list[str]] = {}
    for word in dict.fromkeys(w.strip(":,;'\"()[]{}") for m in messages for w in m.split()):
        if word in made_by:
            rows.setdefault(made_by[word], []).append(word)
    return "".join(f"; its messages name layer{'s' if len(names) > 1 else ''} {', '.join(names)} of {where}"
                   for where, names in list(rows.items())[:3])


class BuildProgress:
    """Shows build progress: TensorRT's phases where it reports them (>= 10), elapsed time always.

    Ctrl-C or SIGTERM during the build (`netdef.interrupts.tensorrt_call`): netdef's handler sets
    `interrupts.CANCEL`, and the next progress step tells TensorRT to stop (`cancelled`); the caller then raises
    and writes nothing. TensorRT without progress callbacks (8.6) cannot cancel: the build runs to its end
    first (and is then dropped), unless a second signal ends the process (`interrupts.watched`). What the caller's
    `log` raises while TensorRT builds (in its callback or the ticking thread, where it would be lost) stops the
    build as a signal does, kept as `error` for the caller to raise."""

    def __init__(self, config: Any, log: Log, every: float = 15.0, tag: str = "netdef"):
        self.log, self.every, self.tag = log, every, tag
        self.cancelled = False  # TensorRT was told to stop (a progress step returned False)
        self.error: BaseException | None = None  # the first exception `log` raised during the build
        self._said = threading.Lock()  # TensorRT's callback and the ticking thread both log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        base = trt_api.progress_monitor_base()
        self.cancellable = base is not None
        if base is not None:
            trt_api.attach_progress(config, _make_monitor(base, self))

    def _tick(self) -> None:
        t0 = last = time.perf_counter()
        announced = False
        while not self._stop.wait(0.25):
            if interrupts.CANCEL.is_set() and not announced and not self.cancellable:
                announced = True
                self.say(f"[{self.tag}] interrupted: the build stops when TensorRT returns (it cannot cancel)")
            if time.perf_counter() - last >= self.every:
                last = time.perf_counter()
                self.say(f"[{self.tag}]   ... still building ({last - t0:.0f} s)")

    def say(self, text: str) -> None:
        """`log(text)`; what it raises is kept in `error` (the first only) and cancels the build."""
        with self._said:
            if self.error is not None:
                return
            try:
                self.log(text)
            except BaseException as e:  # noqa: B902 (a KeyboardInterrupt too: raised by the caller after the build)
                self.error, self.cancelled = e, True

    def __enter__(self) -> "BuildProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _make_monitor(base: type, progress: BuildProgress) -> Any:
    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        @interrupts.trt_callback
        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                progress.say(f"[{progress.tag}]   {phase_name} ({num_steps} steps)")

        @interrupts.trt_callback
        def step_complete(self, phase_name: str, step: int) -> bool:
            if interrupts.CANCEL.is_set() and not progress.cancelled:
                progress.cancelled = True
                progress.say(f"[{progress.tag}] interrupted: build cancelled")
            return not progress.cancelled  # False cancels the build

        @interrupts.trt_callback
        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()
