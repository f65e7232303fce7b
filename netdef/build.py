"""Build engines from an architecture YAML and a .wts file: precision, dynamic batch, timing cache,
up-to-date check, progress, and atomically written engines carrying their metadata."""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import __version__, engine_file, trt_api
from .errors import NetdefError
from .network import Network
from .spec import Spec, build_network, load_spec
from .wts import read_wts


@dataclass
class BuildOptions:
    """How to build. `batch` is the optimization profile's (min, opt, max) batch size; with several
    `profiles` (each tuned for its own opt batch; the runtime picks one per batch) it is their overall range."""

    precision: str = "fp32"
    batch: tuple[int, int, int] = (1, 1, 1)
    profiles: tuple[tuple[int, int, int], ...] = ()
    input_hw: tuple[int, int] | None = None
    workspace_mib: int | None = None
    opt_level: int | None = None
    tf32: bool = True
    strict: bool = True
    timing_cache: str | None = None
    compute_capability: str | None = None  # TensorRT-RTX without a GPU: the target (default 8.6)
    calibration: str | None = None  # int8: calibration table (JSON)
    detailed: bool = False  # keep layer types, tactics and formats in the engine (netdef profile shows them)
    extra: dict[str, Any] = field(default_factory=dict)  # block-specific build parameters (e.g. NMS thresholds)

    @property
    def all_profiles(self) -> tuple[tuple[int, int, int], ...]:
        """The engine's optimization profiles: `profiles`, or the single `batch` profile."""
        return self.profiles or (self.batch,)

    def __post_init__(self) -> None:
        if self.profiles and tuple(self.batch) == (1, 1, 1):  # batch left out: the profiles' overall range
            self.batch = overall_range(self.profiles)

    def validate(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise NetdefError(f"unknown precision '{self.precision}': use fp32, fp16 or int8")
        for lo, opt, hi in (self.batch, *self.profiles):
            if not 1 <= lo <= opt <= hi:
                raise NetdefError(f"batch profile {lo}:{opt}:{hi} must satisfy 1 <= min <= opt <= max")
        if self.profiles:
            check_profiles(self.profiles)
            if tuple(self.batch) != overall_range(self.profiles):
                raise NetdefError(f"batch {format_profiles([self.batch])} must be the profiles' overall range "
                                  f"{format_profiles([overall_range(self.profiles)])} (or leave it out)")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise NetdefError(f"builder optimization level {self.opt_level} must be 0..5")
        if self.calibration and self.precision != "int8":
            raise NetdefError("--calibration is for --precision int8 only")
        if self.calibration and not Path(self.calibration).is_file():
            raise NetdefError(f"calibration table {self.calibration} not found: make it with `netdef calibrate "
                              "ARCH --weights W --data DATA -o TABLE.json` and pass --calibration TABLE.json")


@dataclass
class BuildResult:
    path: Path
    meta: dict[str, Any]
    built: bool  # False when an up-to-date engine was kept
    seconds: float


def parse_profiles(text: str, what: str = "--batch"
                   ) -> tuple[tuple[int, int, int], tuple[tuple[int, int, int], ...]]:
    """(batch, profiles) for BuildOptions: '1:8:32' -> one profile; '1:1:8,9:64:256' -> two profiles, each
    tuned for its opt batch, and their overall range (1, 64, 256) as the batch."""
    parts = [parse_batch(p, what) for p in str(text).split(",")]
    if len(parts) == 1:
        return parts[0], ()
    check_profiles(parts)
    return overall_range(parts), tuple(parts)


def overall_range(profiles: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """(smallest min, opt of the last profile, largest max)."""
    return min(p[0] for p in profiles), int(profiles[-1][1]), max(p[2] for p in profiles)


def check_profiles(profiles: Sequence[Sequence[int]]) -> None:
    """Profiles listed by increasing min that leave no batch size uncovered between them (overlaps are fine)."""
    covered = profiles[0][2]
    for a, b in zip(profiles, profiles[1:]):
        text = format_profiles([a, b])
        if b[0] <= a[0]:
            raise NetdefError(f"batch profiles {text}: list the profiles by increasing min batch")
        if b[0] > covered + 1:
            raise NetdefError(f"batch profiles {text}: batches {covered + 1}..{b[0] - 1} are in no profile; "
                              f"start the next one at {covered + 1} or lower")
        covered = max(covered, b[2])


def parse_batch(text: str, what: str = "--batch") -> tuple[int, int, int]:
    """'8' -> (8, 8, 8); '1:8:32' -> (1, 8, 32); '1:32' -> (1, 32, 32). `what` names the option in errors."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        raise NetdefError(f"{what} '{text}': expected N or MIN:OPT:MAX with integers") from None
    if len(parts) == 1:
        return parts[0], parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise NetdefError(f"{what} '{text}': expected N or MIN:OPT:MAX")


def format_profiles(profiles: Sequence[Sequence[int]], between: str = ",", within: str = ":") -> str:
    """[(1, 1, 4), (5, 32, 32)] -> '1:1:4,5:32:32' (the --batch form); with '_' and '-': a file-name tag."""
    return between.join(within.join(map(str, p)) for p in profiles)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def target_identity(opts: BuildOptions) -> dict[str, Any]:
    gpu = trt_api.gpu_identity()
    if gpu is not None and not opts.compute_capability:
        return {"name": gpu[0], "compute_capability": gpu[1]}
    return {"name": None, "compute_capability": opts.compute_capability or ("8.6" if gpu is None else gpu[1])}


def build_key(spec: Spec, weights_sha: str, opts: BuildOptions, target: dict[str, Any]) -> str:
    """Everything that changes the engine: an engine with the same key is not rebuilt."""
    calib = file_sha256(opts.calibration) if opts.calibration else None
    key = {"arch": spec.sha256, "weights": weights_sha, "opts": asdict(opts) | {"timing_cache": None},
           "tensorrt": trt_api.version_string(), "target": target, "netdef": __version__, "calibration": calib}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def build_engine(arch: str | Path, weights: str | Path, output: str | Path, opts: BuildOptions | None = None,
                 *, force: bool = False, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build (or keep, when up to date) the engine for `arch` + `weights` at `output`."""
    opts = opts or BuildOptions()
    opts.validate()
    log = log or _stderr
    t0 = time.perf_counter()
    spec = load_spec(arch)
    weights = Path(weights)
    if not weights.is_file():
        raise NetdefError(f"weights file not found: {weights} (create it with `netdef export`)")
    info = trt_api.info()
    target = target_identity(opts)
    key = build_key(spec, file_sha256(weights), opts, target)
    output = Path(output)
    if output.is_file() and not force:
        try:
            old = engine_file.read_meta(output)
        except NetdefError:
            old = {}
        if old.get("build_key") == key:
            log(f"[netdef] {output} is up to date (same .wts, YAML, options, TensorRT and GPU); --force rebuilds")
            return BuildResult(output, old, False, time.perf_counter() - t0)

    net = define_network(spec, weights, opts, log)
    config = net.builder.create_builder_config()
    trt_api.configure_precision(config, opts.precision, net.strongly_typed, opts.tf32)
    trt_api.configure_target(config, opts.compute_capability)
    trt_api.set_workspace(config, opts.workspace_mib)
    trt_api.set_optimization_level(config, opts.opt_level)
    if opts.detailed:
        trt_api.set_detailed_profiling(config)
    if getattr(net, "plugin_libraries", None):
        trt_api.disable_library_tactics(config)
    add_profile(net, config, opts)
    cache = load_timing_cache(config, opts.timing_cache, log)

    log(f"[netdef] building {spec.name} ({opts.precision}, batch {format_profiles(opts.all_profiles)}, "
        f"{net.definition.num_layers} layers) with {trt_api.version_string()} ...")
    tb = time.perf_counter()
    with BuildProgress(config, log):
        plan = net.builder.build_serialized_network(net.definition, config)
    build_s = time.perf_counter() - tb
    if plan is None:
        raise NetdefError(f"TensorRT could not build {spec.name} (its messages above say why)")
    if cache is not None:
        engine_file.atomic_write(opts.timing_cache, bytes(config.get_timing_cache().serialize()))

    meta = {
        "netdef_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tensorrt": {"flavor": info.flavor, "version": info.version, "strongly_typed": net.strongly_typed},
        "gpu": target,
        "precision": opts.precision,
        "options": asdict(opts),
        "arch": {"name": spec.name, "path": str(spec.path), "sha256": spec.sha256},
        "weights": {"path": str(weights), "sha256": key and file_sha256(weights)},
        "inputs": [_io(net.definition.get_input(i), opts) for i in range(net.definition.num_inputs)],
        "outputs": [_io(net.definition.get_output(i), opts) for i in range(net.definition.num_outputs)],
        "plugins": list(getattr(net, "plugin_libraries", [])),
        "layers": net.definition.num_layers,
        "build_seconds": round(build_s, 2),
        "build_key": key,
    }
    meta = engine_file.write_engine(output, plan, meta)
    log(f"[netdef] wrote {output} ({plan.nbytes / 2**20:.1f} MiB) in {build_s:.1f} s")
    return BuildResult(output, meta, True, time.perf_counter() - t0)


def define_network(spec: Spec, weights: Path, opts: BuildOptions, log: Callable[[str], None]) -> Network:
    """Read the weights and define the network (no engine build); checks the weight keys."""
    log(f"[netdef] reading {weights} ...")
    tensors = read_wts(weights, progress=sys.stderr.isatty())
    net = Network(tensors, precision=opts.precision, source=str(weights))
    net.build_options = opts
    if opts.precision == "int8":
        from .int8.quantize import Quantizer  # int8 only: needs a calibration table

        net.quantizer = Quantizer.for_build(spec, weights, opts)
    build_network(spec, net, opts.input_hw)
    unused = net.check_keys(strict=opts.strict)
    if unused:
        log(f"[netdef] warning: {len(unused)} unused key(s) in {weights}, e.g. {unused[:3]}")
    return net


def _io(t: Any, opts: BuildOptions) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": trt_api.dtype_name(t.dtype)}


def add_profile(net: Network, config: Any, opts: BuildOptions) -> None:
    """The optimization profiles from `opts` on netdef's network."""
    add_profiles(net.builder, net.definition, config, opts, "the network")


def add_profiles(builder: Any, definition: Any, config: Any, opts: BuildOptions, where: str) -> None:
    """One optimization profile per entry of `opts.all_profiles`: the batch dimension from it, the other
    dimensions as defined (they must be static)."""
    for lo, opt, hi in opts.all_profiles:
        profile = builder.create_optimization_profile()
        for i in range(definition.num_inputs):
            t = definition.get_input(i)
            rest = tuple(t.shape)[1:]
            if any(d < 0 for d in rest):
                raise NetdefError(f"{where}: input {t.name} {tuple(t.shape)} is dynamic beyond the batch axis")
            profile.set_shape(t.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)


def load_timing_cache(config: Any, path: str | None, log: Callable[[str], None], tag: str = "netdef") -> Any:
    """Attach the timing cache at `path` (new when missing) to `config`; None when not used. `tag` starts
    each message (the route being built)."""
    if not path:
        return None
    if not trt_api.timing_cache_supported():
        log(f"[{tag}] timing cache {path} not used: {trt_api.version_string()} without a GPU times no tactics")
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        raise NetdefError(f"timing cache {path} does not fit this TensorRT/GPU; delete it or pick another file")
    if data:  # TensorRT logs an error and goes on with an empty cache when it cannot read the file
        kept = len(bytes(cache.serialize()))
        empty = len(bytes(config.create_timing_cache(b"").serialize()))
        if kept <= empty:
            raise NetdefError(f"TensorRT could not read the timing cache {path} ({len(data)} bytes; its message "
                              f"above says why): delete the file to start a new one")
        if kept < len(data):
            log(f"[{tag}] warning: TensorRT kept {kept} of the {len(data)} bytes of timing cache {path}")
    log(f"[{tag}] timing cache {path}: {'loaded ' + str(len(data)) + ' bytes' if data else 'new'}")
    return cache


class BuildProgress:
    """Shows build progress: TensorRT's phases where it reports them (>= 10), elapsed time always; `tag`
    starts each message (the route being built)."""

    def __init__(self, config: Any, log: Callable[[str], None], every: float = 15.0, tag: str = "netdef"):
        self.log, self.every, self.tag = log, every, tag
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        base = trt_api.progress_monitor_base()
        if base is not None:
            trt_api.attach_progress(config, _make_monitor(base, log, tag))

    def _tick(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.every):
            self.log(f"[{self.tag}]   ... still building ({time.perf_counter() - t0:.0f} s)")

    def __enter__(self) -> "BuildProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _make_monitor(base: type, log: Callable[[str], None], tag: str) -> Any:
    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                log(f"[{tag}]   {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
