"""`netdef bench`: latency and throughput of an engine per batch size, measured with CUDA events.

One timing loop (`time_callable`) serves every benchmark in netdef, so TensorRT engines, PyTorch eager
and torch.compile are timed the same way (scripts/compare_routes.py): each iteration is bracketed by
two CUDA events on the benchmark stream and waited for before the next one starts (latency of one
request at a time, launch overhead included when the GPU waits for it).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .. import __version__, engine_file, trt_api
from ..errors import NetdefError

if TYPE_CHECKING:
    from ..runtime import Engine

Log = Callable[[str], None]


# ---------------------------------------------------------------- budgets and statistics

@dataclass(frozen=True)
class Budget:
    """Run until BOTH at least `iters` iterations and at least `seconds` of wall time are done."""

    iters: int = 0
    seconds: float = 0.0

    def done(self, n: int, elapsed: float) -> bool:
        return n >= self.iters and elapsed >= self.seconds

    def __str__(self) -> str:
        parts = ([f"{self.iters} iters"] if self.iters else []) + ([f"{self.seconds:g} s"] if self.seconds else [])
        return " and ".join(parts) or "none"


DEFAULT_WARMUP = Budget(50, 1.0)
DEFAULT_MEASURE = Budget(200, 2.0)


def parse_budget(text: str, what: str = "--warmup") -> Budget:
    """'50' -> 50 iterations; '1.5s' -> 1.5 seconds; '50,1s' -> both (whichever takes longer)."""
    iters, seconds = 0, 0.0
    for part in str(text).replace(" ", "").split(","):
        try:
            if part.endswith("s"):
                seconds = float(part[:-1])
            else:
                iters = int(part)
        except ValueError:
            raise NetdefError(f"{what} '{text}': expected N (iterations), Ss (seconds, e.g. 1.5s) or both "
                              "as N,Ss") from None
    if iters < 0 or seconds < 0:
        raise NetdefError(f"{what} '{text}': iterations and seconds must not be negative")
    return Budget(iters, seconds)


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]: positive, distinct, returned in increasing order."""
    items = [p.strip() for p in str(text).split(",")]
    try:
        batches = [int(p) for p in items]
    except ValueError:
        raise NetdefError(f"--batch '{text}': expected a comma-separated list of batch sizes, e.g. 1,8,32") from None
    if any(b < 1 for b in batches):
        raise NetdefError(f"--batch '{text}': batch sizes must be >= 1")
    if len(set(batches)) != len(batches):
        raise NetdefError(f"--batch '{text}': a batch size is listed twice")
    return sorted(batches)


def check_batches(batches: Sequence[int], profile: Sequence[int], where: str) -> None:
    """NetdefError naming the engine when a batch size lies outside its optimization profile."""
    lo, _, hi = profile
    outside = [b for b in batches if not lo <= b <= hi]
    if outside:
        raise NetdefError(f"{where}: batch size(s) {outside} outside the engine's profile {lo}..{hi}; rebuild it "
                          f"with `netdef build ... --batch {min(lo, *outside)}:{hi}:{max(hi, *outside)}` "
                          f"or bench batch sizes in {lo}..{hi}")


def summarize(samples_ms: Sequence[float], batch: int | None = None) -> dict[str, Any]:
    """Latency statistics in ms (percentiles interpolate linearly, as numpy's default);
    cv = sample standard deviation / mean; throughput = batch / median, in items per second."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise NetdefError("no timing samples to summarize")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise NetdefError("timing samples must be finite and non-negative")
    median, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    out = {"iters": int(a.size), "median_ms": median, "p90_ms": p90, "p99_ms": p99, "min_ms": float(a.min()),
           "max_ms": float(a.max()), "mean_ms": mean, "std_ms": std, "cv": std / mean if mean > 0 else 0.0}
    if batch is not None:
        out["batch"] = int(batch)
        out["throughput"] = batch * 1000.0 / median if median > 0 else float("inf")
    return out


def run_budget(step: Callable[[], float], budget: Budget, *, clock: Callable[[], float] = time.perf_counter,
               max_iters: int = 1_000_000) -> list[float]:
    """Call `step` (returns one sample) until `budget` is met; at least one call. Returns the samples."""
    samples: list[float] = []
    t0 = clock()
    while not samples or not budget.done(len(samples), clock() - t0):
        samples.append(step())
        if len(samples) >= max_iters:
            break
    return samples


def time_callable(fn: Callable[[], Any], stream: Any = None, warmup: Budget = DEFAULT_WARMUP,
                  measure: Budget = DEFAULT_MEASURE, batch: int | None = None) -> dict[str, Any]:
    """Time `fn` (which enqueues GPU work on the current stream) with CUDA events on `stream`
    (default: a new stream), one call at a time. Returns `summarize(...)` plus warm-up figures."""
    import torch

    stream = stream or torch.cuda.Stream()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def step() -> float:
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    with torch.cuda.stream(stream):
        torch.cuda.synchronize()
        tw = time.perf_counter()
        warm = run_budget(step, warmup) if warmup.iters or warmup.seconds else []
        tw = time.perf_counter() - tw
        tm = time.perf_counter()
        samples = run_budget(step, measure)
        tm = time.perf_counter() - tm
    stats = summarize(samples, batch)
    stats.update(warmup_iters=len(warm), warmup_s=round(tw, 3), measured_s=round(tm, 3))
    return stats


# ---------------------------------------------------------------- environment

def environment() -> dict[str, Any]:
    """Device, driver and library versions for a benchmark record (None where unknown)."""
    env: dict[str, Any] = {"netdef": __version__, "python": platform.python_version(), "host": platform.node(),
                           "platform": platform.platform()}
    env["tensorrt"] = _trt_or_none()
    gpu = trt_api.gpu_identity()
    env["device"], env["compute_capability"] = gpu if gpu else (None, None)
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_runtime"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        env["torch"] = None
    env["driver"] = _driver_version()
    return env


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        v = cuda.get_driver_version()
        return f"CUDA driver API {v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001  pycuda missing or no driver: the version stays unknown
        return None


def engine_summary(meta: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The part of an engine's metadata a benchmark record keeps."""
    keep = ("arch", "precision", "tensorrt", "gpu", "inputs", "outputs", "layers", "build_seconds", "created", "route")
    out = {k: meta[k] for k in keep if k in meta}
    opts = meta.get("options", {})
    out["options"] = {k: opts.get(k) for k in ("batch", "opt_level", "input_hw", "tf32", "workspace_mib")}
    out["path"] = str(path)
    return out


# ---------------------------------------------------------------- benchmarking engines

@dataclass
class BenchSettings:
    warmup: Budget = DEFAULT_WARMUP
    measure: Budget = DEFAULT_MEASURE
    cuda_graph: bool = False
    with_copies: bool = False


def bench_engine(engine: str | Path | Engine, batches: Sequence[int], settings: BenchSettings | None = None,
                 log: Log | None = None, on_result: Callable[[dict[str, Any]], None] | None = None
                 ) -> list[dict[str, Any]]:
    """Time a netdef engine (a file, or a `runtime.Engine` already loaded) at each batch size; one dict of
    statistics per batch (see `summarize`), also handed to `on_result` as soon as it is measured."""
    settings = settings or BenchSettings()
    log = log or _stderr
    eng = load_for_timing(engine, batches)
    torch = require_gpu()
    results = []
    for b in batches:
        fn, stream, buffers = engine_step(eng, b, settings, torch)  # buffers: bound memory, alive while timed
        stats = time_callable(fn, stream, settings.warmup, settings.measure, batch=b)
        del fn, buffers
        stats.update(cuda_graph=settings.cuda_graph, with_copies=settings.with_copies)
        log(f"[bench] {eng.path.name} batch {b}: median {stats['median_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms, "
            f"{stats['throughput']:.1f} img/s ({stats['iters']} iters, CV {stats['cv']:.1%})")
        results.append(stats)
        if on_result is not None:
            on_result(stats)
    return results


def load_for_timing(engine: str | Path | Engine, batches: Sequence[int]) -> Engine:
    """`engine` as a `runtime.Engine` with the torch backend, loaded here when it is a path, once its batch
    profile is known to cover `batches`. Callers timing an engine repeatedly load it once with this."""
    if isinstance(engine, (str, Path)):
        path = Path(engine)
        check_batches(batches, engine_file.read_meta(path)["options"]["batch"], str(path))
        require_gpu()
        from ..runtime import Engine  # noqa: F811  (the class itself, not only its name for type hints)

        return Engine(path, backend="torch")
    check_batches(batches, engine.meta["options"]["batch"], str(engine.path))
    if engine.backend.name != "torch":
        raise NetdefError(f"{engine.path}: timing needs an Engine loaded with backend='torch' "
                          f"(this one uses {engine.backend.name})")
    return engine


def engine_step(eng: Any, batch: int, settings: BenchSettings, torch: Any
                ) -> tuple[Callable[[], Any], Any, tuple[Any, ...]]:
    """(callable running the engine once at `batch`, its stream, the buffers it uses): device buffers are
    allocated and bound once; the caller keeps the buffers alive while it calls."""
    inputs = {}
    for t in eng.inputs:
        if any(d == -1 for d in t.shape[1:]):
            raise NetdefError(f"{eng.path}: input '{t.name}' has dynamic dimensions besides the batch "
                              f"{t.shape}; netdef bench times batch profiles only")
        dtype = getattr(torch, t.dtype)
        shape = (batch, *t.shape[1:])
        x = torch.randn(shape, device="cuda").to(dtype) if dtype.is_floating_point else \
            torch.zeros(shape, dtype=dtype, device="cuda")
        inputs[t.name] = x
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the inputs are written on the current stream
    handle = stream.cuda_stream
    outs = eng.bind(inputs, stream=handle)
    context = eng.context  # the context of this batch's profile

    def run() -> None:
        trt_api.execute(context, handle)

    body: Callable[[], None] = run
    buffers: tuple[Any, ...] = (inputs, outs)
    if settings.with_copies:
        host_in = {k: torch.empty_like(v, device="cpu").pin_memory().copy_(v.cpu()) for k, v in inputs.items()}
        host_out = {k: torch.empty_like(v, device="cpu").pin_memory() for k, v in outs.items()}

        def copy_run_copy() -> None:
            for k, v in inputs.items():
                v.copy_(host_in[k], non_blocking=True)
            run()
            for k, v in outs.items():
                host_out[k].copy_(v, non_blocking=True)

        body = copy_run_copy
        buffers += (host_in, host_out)

    with torch.cuda.stream(stream):
        body()  # first run outside any capture: TensorRT sets up shape-dependent state here
    stream.synchronize()
    if not settings.cuda_graph:
        return body, stream, buffers
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    return graph.replay, stream, buffers + (graph,)


def require_gpu() -> Any:
    """torch, where engines can run and be timed here; else a NetdefError saying what is missing."""
    try:
        import torch
    except ImportError:
        raise NetdefError("benchmarks need PyTorch with CUDA (device memory, streams, events)") from None
    if not torch.cuda.is_available() or not trt_api.can_run_engines():
        raise NetdefError(f"benchmarks need a CUDA GPU and full TensorRT (PyTorch {torch.__version__} sees "
                          f"{'a GPU' if torch.cuda.is_available() else 'no GPU'}; TensorRT: "
                          f"{_trt_or_none()})")
    return torch


def _trt_or_none() -> str:
    try:
        return trt_api.version_string()
    except NetdefError:
        return "none"


# ---------------------------------------------------------------- records, tables, charts

def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    engine_file.atomic_write(path, (json.dumps(doc, indent=2, default=str) + "\n").encode())


def format_table(results: Sequence[dict[str, Any]]) -> str:
    head = f"{'batch':>6} {'median ms':>10} {'p90 ms':>9} {'p99 ms':>9} {'min ms':>9} {'mean ms':>9} " \
           f"{'CV':>6} {'iters':>7} {'img/s':>10}"
    rows = [f"{r['batch']:>6} {r['median_ms']:>10.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['min_ms']:>9.3f} "
            f"{r['mean_ms']:>9.3f} {r['cv']:>6.1%} {r['iters']:>7} {r['throughput']:>10.1f}" for r in results]
    return "\n".join([head, *rows])


def bench_interleaved(engines: dict[str, Path], batches: Sequence[int], settings: BenchSettings, rounds: int,
                      log: Log | None = None) -> list[dict[str, Any]]:
    """Each engine timed in turn, `rounds` times over, so slow drifts of the GPU (clocks, temperature) touch
    all of them alike; every result carries its engine's label and round. Each engine is loaded once."""
    check_rounds(rounds)
    loaded = {label: load_for_timing(path, batches) for label, path in engines.items()}
    results = []
    for rnd in range(1, rounds + 1):
        for label, eng in loaded.items():
            for r in bench_engine(eng, batches, settings, log=log):
                results.append(r | {"engine": label, "round": rnd})
    return results


def check_rounds(rounds: int) -> None:
    if rounds < 1:
        raise NetdefError(f"--rounds {rounds}: must be >= 1")


def format_ratios(results: Sequence[dict[str, Any]], a: str, b: str) -> str:
    """Median latency of engine `a` over engine `b` per batch and round (below 1: `a` is faster)."""
    rounds = sorted({r["round"] for r in results})
    median = {(r["engine"], r["round"], r["batch"]): r["median_ms"] for r in results}
    batches = sorted({r["batch"] for r in results})
    lines = [f"{'batch':>6} " + " ".join(f"{f'{a}/{b} r{n}':>14}" for n in rounds)]
    for bt in batches:
        lines.append(f"{bt:>6} " + " ".join(f"{median[(a, n, bt)] / median[(b, n, bt)]:>14.3f}" for n in rounds))
    return "\n".join(lines)


def write_chart(path: str | Path, results: Sequence[dict[str, Any]], title: str) -> None:
    """Latency (median with p90/p99) and throughput against batch size, as a PNG."""
    plt = _pyplot()
    b = [r["batch"] for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(b, [r["median_ms"] for r in results], "o-", label="median")
    ax1.plot(b, [r["p90_ms"] for r in results], "x--", label="p90")
    ax1.plot(b, [r["p99_ms"] for r in results], "+:", label="p99")
    ax1.set(xlabel="batch", ylabel="latency (ms)", xscale="log", yscale="log", title="latency")
    ax1.legend()
    ax2.plot(b, [r["throughput"] for r in results], "o-")
    ax2.set(xlabel="batch", ylabel="images / s", xscale="log", title="throughput")
    for ax in (ax1, ax2):
        ax.set_xticks(b, [str(v) for v in b])
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    engine_file.atomic_write(path, buf.getvalue())


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NetdefError("--chart needs matplotlib: pip install matplotlib (or leave out --chart)") from None
    return plt


# ---------------------------------------------------------------- the command line

def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef bench` to the netdef command line."""
    p = subparsers.add_parser(
        "bench", help="latency and throughput of an engine (or of an architecture, built first)",
        description="TARGET is a netdef engine, or an architecture (YAML or name) with --weights, built first "
                    "(once: the engine is cached). Each batch is warmed up, then timed call by call with CUDA "
                    f"events around execute_async_v3. Defaults: warm-up {DEFAULT_WARMUP}, then at least "
                    f"{DEFAULT_MEASURE} per batch.")
    p.add_argument("target", help="engine file, or architecture YAML / name (needs --weights)")
    p.add_argument("--batch", default=None, help="batch sizes, e.g. 1,8,32 (default: the profile's min, opt, max)")
    p.add_argument("--iters", type=int, help="measure at least N iterations per batch")
    p.add_argument("--seconds", type=float, help="measure at least S seconds per batch")
    p.add_argument("--warmup", default=None, help="warm-up: N iterations, Ss seconds, or N,Ss (default 50,1s)")
    p.add_argument("--cuda-graph", action="store_true", help="capture the run once and time CUDA graph replays")
    p.add_argument("--with-copies", action="store_true",
                   help="include input H2D copies from pinned host memory and output D2H copies")
    p.add_argument("--against", metavar="ENGINE",
                   help="a second engine, timed in turn with TARGET at the same batches; prints TARGET/ENGINE "
                        "median latency ratios (e.g. the ONNX route's engine of the same model)")
    p.add_argument("--rounds", type=int, help="with --against: how often both are timed in turn "
                                              "(default 2; the ratios of each round show the run's spread)")
    p.add_argument("--json", metavar="FILE", help="write results, environment and engine metadata as JSON")
    p.add_argument("--chart", metavar="PNG", help="write a latency/throughput chart (needs matplotlib)")
    g = p.add_argument_group("building first (TARGET is an architecture)")
    g.add_argument("--weights", "-w", help=".wts file")
    g.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8"), help="default fp16")
    g.add_argument("--profile", help="MIN:OPT:MAX batch profile, or several: 1:1:8,9:256:256 "
                                     "(default: smallest:largest:largest batch)")
    g.add_argument("--opt-level", type=int, help="builder optimization level 0..5 (TensorRT default 3)")
    g.add_argument("--timing-cache", help="persistent timing cache file")
    g.add_argument("--calibration", help="int8: calibration table from `netdef calibrate`")
    g.add_argument("--engine-out", help="engine path (default: a cache folder, $NETDEF_CACHE or ~/.cache/netdef)")
    g.add_argument("--force", action="store_true", help="rebuild even if the cached engine is up to date")
    p.set_defaults(func=cmd_bench)
    return p


def settings_from_args(a: argparse.Namespace) -> BenchSettings:
    if a.iters is not None and a.iters < 1:
        raise NetdefError(f"--iters {a.iters}: must be >= 1")
    if a.seconds is not None and a.seconds <= 0:
        raise NetdefError(f"--seconds {a.seconds}: must be > 0")
    measure = DEFAULT_MEASURE if a.iters is None and a.seconds is None else Budget(a.iters or 0, a.seconds or 0.0)
    warmup = DEFAULT_WARMUP if a.warmup is None else parse_budget(a.warmup)
    return BenchSettings(warmup, measure, a.cuda_graph, a.with_copies)


def resolve_engine(a: argparse.Namespace, batches: list[int] | None, log: Log) -> Path:
    """The engine to time: TARGET itself, or the engine built from TARGET + --weights."""
    target = Path(a.target)
    if target.is_file() and _is_engine(target):
        given = [f"--{k.replace('_', '-')}" for k in ("weights", "profile", "opt_level", "timing_cache",
                                                      "calibration", "engine_out") if getattr(a, k) is not None]
        if given:
            raise NetdefError(f"{target} is an engine: {', '.join(given)} only apply when TARGET is an architecture")
        return target
    if target.suffix in (".engine", ".plan", ".trt"):
        raise NetdefError(f"engine not found: {target}" if not target.is_file() else
                          f"{target} is not a netdef engine; build it with `netdef build`")
    if not a.weights:
        raise NetdefError(f"'{a.target}' is not an engine file, so it is taken as an architecture: "
                          "give its weights with --weights W.wts (or pass an engine)")
    from ..build import BuildOptions, build_engine, format_profiles, parse_profiles
    from ..spec import load_spec

    profiles: tuple = ()
    if a.profile:
        profile, profiles = parse_profiles(a.profile, "--profile")
    elif batches:
        profile = (batches[0], batches[-1], batches[-1])
    else:
        raise NetdefError("building for a benchmark needs --batch (e.g. 1,8,32) or --profile MIN:OPT:MAX")
    if batches:
        check_batches(batches, profile, f"--profile {a.profile or format_profiles([profile])}")
    opts = BuildOptions(precision=a.precision, batch=profile, profiles=profiles, opt_level=a.opt_level,
                        timing_cache=a.timing_cache, calibration=a.calibration)
    if a.engine_out:
        out = Path(a.engine_out)
    else:
        name = load_spec(a.target).name
        level = "" if a.opt_level is None else f"_o{a.opt_level}"
        tag = format_profiles(opts.all_profiles, "_", "-")
        out = cache_dir() / f"{name}_{Path(a.weights).stem}_{a.precision}_b{tag}{level}.engine"
    opts.validate()
    require_gpu()  # before a build whose engine could not be timed here
    build_engine(a.target, a.weights, out, opts, force=a.force, log=log)
    return out


def cache_dir() -> Path:
    base = os.environ.get("NETDEF_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                          os.path.expanduser("~/.cache"), "netdef")
    return Path(base) / "bench"


def _is_engine(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(engine_file.MAGIC)) == engine_file.MAGIC


def cmd_bench(a: argparse.Namespace) -> int:
    settings = settings_from_args(a)
    batches = parse_batches(a.batch) if a.batch else None
    against = _against(a, batches)
    if a.chart:
        _pyplot()  # fail before building and measuring, not after
    engine = resolve_engine(a, batches, _stderr)
    meta = engine_file.read_meta(engine)
    if batches is None:
        batches = sorted(set(meta["options"]["batch"]))
    if against is not None:
        return _bench_against(a.json, (engine, meta), against, batches, settings)
    results = bench_engine(engine, batches, settings)
    env = environment()
    print(f"{meta['arch']['name']} {meta['precision']} on {env['device']} ({env['tensorrt']}), {_mode(settings)}")
    print(format_table(results))
    if a.json:
        doc = {"environment": env, "command": " ".join(sys.argv), "engine": engine_summary(meta, engine),
               "settings": settings_record(settings),
               "results": results}
        write_json(a.json, doc)
        print(f"wrote {a.json}")
    if a.chart:
        write_chart(a.chart, results, f"{meta['arch']['name']} {meta['precision']} - {env['device']} - "
                                      f"{env['tensorrt']}")
        print(f"wrote {a.chart}")
    return 0


def settings_record(settings: BenchSettings) -> dict[str, Any]:
    """How a benchmark was timed, for its JSON record."""
    return {"warmup": asdict(settings.warmup), "measure": asdict(settings.measure),
            "cuda_graph": settings.cuda_graph, "with_copies": settings.with_copies}


def _mode(settings: BenchSettings) -> str:
    return ("CUDA graph" if settings.cuda_graph else "execute_async_v3") + \
        (", with H2D/D2H copies" if settings.with_copies else "")


def _against(a: argparse.Namespace, batches: list[int] | None) -> tuple[Path, dict[str, Any], int] | None:
    """--against's engine, its metadata and the rounds, checked before anything is built or timed."""
    if a.against is None:
        if a.rounds is not None:
            raise NetdefError("--rounds only applies with --against ENGINE")
        return None
    if a.chart:
        raise NetdefError("--chart draws one engine; leave it out with --against")
    rounds = 2 if a.rounds is None else a.rounds
    check_rounds(rounds)
    other = Path(a.against)
    if not other.is_file():
        raise NetdefError(f"--against: engine not found: {other}")
    if not _is_engine(other):
        raise NetdefError(f"--against: {other} is not a netdef engine; build it with `netdef build`")
    meta = engine_file.read_meta(other)
    if batches:
        check_batches(batches, meta["options"]["batch"], str(other))
    return other, meta, rounds


def _bench_against(json_path: str | None, target: tuple[Path, dict[str, Any]],
                   against: tuple[Path, dict[str, Any], int], batches: list[int], settings: BenchSettings) -> int:
    (engine, meta), (other, other_meta, rounds) = target, against
    check_batches(batches, other_meta["options"]["batch"], str(other))  # batches taken from TARGET's profile
    results = bench_interleaved({"A": engine, "B": other}, batches, settings, rounds, log=_stderr)
    env = environment()
    print(f"A = {engine}\nB = {other}\non {env['device']} ({env['tensorrt']}), {_mode(settings)}, "
          f"{rounds} round(s) in turn")
    for label in ("A", "B"):
        for n in range(1, rounds + 1):
            print(f"{label}, round {n}:")
            print(format_table([r for r in results if r["engine"] == label and r["round"] == n]))
    print(format_ratios(results, "A", "B"))
    if json_path:
        doc = {"environment": env, "command": " ".join(sys.argv),
               "engines": {"A": engine_summary(meta, engine), "B": engine_summary(other_meta, other)},
               "settings": settings_record(settings) | {"rounds": rounds}, "results": results}
        write_json(json_path, doc)
        print(f"wrote {json_path}")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":  # `python -m netdef.bench ...` works before the subcommand is wired into netdef.cli
    _parser = argparse.ArgumentParser(prog="netdef")
    _parser.add_argument("--debug", action="store_true")
    register(_parser.add_subparsers(dest="command"))
    _args = _parser.parse_args(["bench", *sys.argv[1:]])
    try:
        sys.exit(_args.func(_args))
    except NetdefError as _e:
        if _args.debug:
            raise
        print(f"netdef bench: error: {_e}", file=sys.stderr)
        sys.exit(1)
