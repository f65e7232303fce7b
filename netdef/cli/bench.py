"""`netdef bench`: latency and throughput of an engine, or of an architecture built first; with `--against`,
two engines timed in turn (netdef.tools.bench); with `--devices`, one instance per GPU timed at once
(netdef.tools.bench_devices)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import engine_file, trt_api
from ..errors import NetdefError, OptionError
from ..fileio import RESULTS_JSON, check_output, output_name
from ..tools import bench, bench_devices
from ..tools.timing import DEFAULT_MEASURE, DEFAULT_WARMUP, Budget, parse_budget
from .device import (add_device_option, add_devices_option, add_shared_device_option, parse_devices,
                     selected_device)
from .options import number, parse_hw


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef bench` to the command line."""
    p = subparsers.add_parser(
        "bench", help="latency and throughput of an engine (or of an architecture, built first)",
        description="TARGET is a netdef engine, or an architecture (YAML or name) with --weights, built first "
                    "(once: the engine is cached). Each batch is warmed up, then timed call by call with CUDA "
                    f"events around execute_async_v3. Defaults: warm-up {DEFAULT_WARMUP}, then at least "
                    f"{DEFAULT_MEASURE} per batch.")
    p.set_defaults(func=cmd_bench)
    p.add_argument("target", help="engine file, or architecture YAML / name (needs --weights)")
    p.add_argument("--batch", default=None, help="batch sizes, e.g. 1,8,32 (default: the profile's min, opt, max)")
    p.add_argument("--iters", type=number("--iters", minimum=1), help="measure at least N iterations per batch")
    p.add_argument("--seconds", type=number("--seconds", float, above=0.0), help="measure at least S seconds per batch")
    p.add_argument("--warmup", default=None, help="warm-up: N iterations, Ss seconds, or N,Ss (default 50,1s)")
    p.add_argument("--cuda-graph", action="store_true", help="capture the run once and time CUDA graph replays")
    p.add_argument("--with-copies", action="store_true",
                   help="include input H2D copies from pinned host memory and output D2H copies")
    p.add_argument("--against", metavar="ENGINE",
                   help="a second engine, timed in turn with TARGET at the same batches; prints TARGET/ENGINE "
                        "median latency ratios (e.g. the ONNX route's engine of the same model)")
    p.add_argument("--rounds", type=number("--rounds", minimum=1),
                   help="with --against: how often both are timed in turn "
                        "(default 2; the ratios of each round show the run's spread)")
    p.add_argument("--input-shape", metavar="HxW", help="input height and width, for an engine built with a "
                                                        "dynamic input size (default: the profile's opt)")
    p.add_argument("--json", metavar="FILE", help="write results, environment and engine metadata as JSON")
    p.add_argument("--chart", metavar="PNG", help="write a latency/throughput chart (needs matplotlib)")
    add_device_option(p)
    m = p.add_argument_group("several GPUs (docs/multi-gpu.md)")
    add_devices_option(m, "the plan deserialized on each, all timed at the same time from this process; "
                          "per-device and total throughput, after checking every device's outputs equal the "
                          "first's for the same input")
    m.add_argument("--workers", choices=bench_devices.WORKERS,
                   help="with --devices: drive each device from a thread of this process (default; TensorRT "
                        "releases the GIL in execute_async_v3) or from a process of its own (spawned)")
    add_shared_device_option(m, "two instances on one GPU, each with its own stream; for testing the several-GPU "
                                "path on one GPU, or to overlap two streams")
    m.add_argument("--baseline", action="store_true",
                   help="with --devices: first time the first device alone and report the scaling of the total")
    g = p.add_argument_group("building first (TARGET is an architecture)")
    g.add_argument("--weights", "-w", help=".wts file")
    g.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8"), help="default fp16")
    g.add_argument("--profile", help="MIN:OPT:MAX batch profile, or several: 1:1:8,9:256:256 "
                                     "(default: smallest:largest:largest batch)")
    g.add_argument("--opt-level", type=number("--opt-level", minimum=0, maximum=5),
                   help="builder optimization level 0..5 (TensorRT default 3)")
    g.add_argument("--timing-cache", help="persistent timing cache file")
    g.add_argument("--calibration", help="int8: calibration table from `netdef calibrate`")
    g.add_argument("--engine-out", help="engine path (default: a cache folder, $NETDEF_CACHE or ~/.cache/netdef)")
    g.add_argument("--force", action="store_true", help="rebuild even if the cached engine is up to date")
    return p


def settings_from_args(a: argparse.Namespace) -> bench.BenchSettings:
    """The timing settings the command line asks for (defaults where it names none)."""
    measure = DEFAULT_MEASURE if a.iters is None and a.seconds is None else Budget(a.iters or 0, a.seconds or 0.0)
    warmup = DEFAULT_WARMUP if a.warmup is None else parse_budget(a.warmup)
    return bench.BenchSettings(warmup, measure, a.cuda_graph, a.with_copies, parse_hw(a.input_shape))


def cmd_bench(a: argparse.Namespace) -> int:
    with selected_device(a):  # built, loaded, timed and recorded on --device (checked first)
        return _cmd_bench(a)


def _cmd_bench(a: argparse.Namespace) -> int:
    from ..tools.report import CHART_FILE, pyplot

    settings = settings_from_args(a)
    inputs = [a.target, a.against, a.weights, a.engine_out, a.timing_cache, a.calibration]
    for option, path, kind in (("--json", a.json, RESULTS_JSON), ("--chart", a.chart, CHART_FILE)):
        if path:
            check_output(path, inputs=inputs, what=option, kind=kind,  # before any building and timing
                         name=output_name(a.target, ".json" if option == "--json" else ".png"))
    if a.json and a.chart and Path(a.json).resolve() == Path(a.chart).resolve():  # the chart would replace the results
        raise OptionError(f"--json and --chart both name {a.json}: the chart would replace the results; give each "
                          "its own file")
    batches = bench.parse_batches(a.batch) if a.batch else None
    devices = _devices(a)
    against = _against(a, batches)
    if a.chart and trt_api.can_run_engines():  # (without a GPU, that is the error: said when the engine is run)
        pyplot()  # fail before building and measuring, not after
    engine = resolve_engine(a, batches)
    meta = engine_file.read_meta(engine)
    if batches is None:
        batches = sorted(set(meta["options"]["batch"]))
    if against is not None:
        return _bench_against(a.json, (engine, meta), against, batches, settings)
    if devices is not None:
        return _bench_devices(a, engine, meta, batches, settings, devices)
    return _bench_one(a, engine, meta, batches, settings)


def resolve_engine(a: argparse.Namespace, batches: list[int] | None) -> Path:
    """The engine to time: TARGET itself, or the engine built from TARGET + --weights (cached)."""
    target = Path(a.target)
    if target.is_file() and engine_file.is_engine_file(target):
        given = [f"--{k.replace('_', '-')}" for k in ("weights", "profile", "opt_level", "timing_cache",
                                                      "calibration", "engine_out") if getattr(a, k) is not None]
        if given:
            raise OptionError(f"{target} is an engine: {', '.join(given)} only apply when TARGET is an architecture")
        return target
    if target.suffix in (".engine", ".plan", ".trt"):
        if not target.is_file():
            raise NetdefError(f"engine not found: {target}")
        engine_file.read_meta(target)  # no engine: raises, saying what it is (a raw plan, a .wts) and what to do
    if not a.weights:
        raise OptionError(f"'{a.target}' is not an engine file, so it is taken as an architecture: "
                          "give its weights with --weights W.wts (or pass an engine)")
    return build_for_bench(a, batches)


def build_for_bench(a: argparse.Namespace, batches: list[int] | None) -> Path:
    """Build TARGET with --weights for the batches (or --profile) to time; the engine goes to --engine-out or
    the bench cache folder, and is kept while it is up to date."""
    from ..build import build_engine
    from ..fileio import cache_dir
    from ..options import BuildOptions, format_profiles, parse_profiles
    from ..spec import load_spec

    profiles: tuple = ()
    if a.profile:
        profile, profiles = parse_profiles(a.profile, "--profile")
    elif batches:
        profile = (batches[0], batches[-1], batches[-1])
    else:
        raise OptionError("building for a benchmark needs --batch (e.g. 1,8,32) or --profile MIN:OPT:MAX")
    if batches:
        bench.check_batches(batches, profile, f"--profile {a.profile or format_profiles([profile])}")
    opts = BuildOptions(precision=a.precision, batch=profile, profiles=profiles, opt_level=a.opt_level,
                        timing_cache=a.timing_cache, calibration=a.calibration)
    if a.engine_out:
        out = Path(a.engine_out)
    else:
        name = load_spec(a.target).name
        level = "" if a.opt_level is None else f"_o{a.opt_level}"
        tag = format_profiles(opts.all_profiles, "_", "-")
        out = cache_dir("bench") / f"{name}_{Path(a.weights).stem}_{a.precision}_b{tag}{level}.engine"
    opts.validate()
    bench.require_gpu()  # before a build whose engine could not be timed here
    build_engine(a.target, a.weights, out, opts, force=a.force, log=_stderr)
    return out


def _bench_one(a: argparse.Namespace, engine: Path, meta: dict[str, Any], batches: list[int],
               settings: bench.BenchSettings) -> int:
    from ..tools.environment import environment
    from ..tools.report import engine_summary, format_table, write_chart, write_json

    results = bench.bench_engine(engine, batches, settings)
    env = environment()
    print(f"{meta['arch']['name']} {meta['precision']} on {env['device']} ({env['tensorrt']}), {settings.describe()}")
    print(format_table(results))
    if a.json:
        write_json(a.json, {"environment": env, "command": " ".join(sys.argv), "engine": engine_summary(meta, engine),
                            "settings": settings.record(), "results": results})
        print(f"wrote {a.json}")
    if a.chart:
        write_chart(a.chart, results, f"{meta['arch']['name']} {meta['precision']} - {env['device']} - "
                                      f"{env['tensorrt']}")
        print(f"wrote {a.chart}")
    return 0


def _devices(a: argparse.Namespace) -> tuple[int, ...] | None:
    """--devices, checked with the options that go with it before anything is built or timed; None without it."""
    if a.devices is None:
        given = [o for o, v in (("--workers", a.workers), ("--allow-shared-device", a.allow_shared_device),
                                ("--baseline", a.baseline)) if v]
        if given:
            raise OptionError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --devices LIST")
        return None
    for option, value, why in (("--device", a.device is not None, "--devices 1 times one instance on device 1"),
                               ("--against", a.against is not None, "it times two engines in turn on one device"),
                               ("--chart", a.chart is not None, "it draws one engine on one device")):
        if value:
            raise OptionError(f"--devices and {option} do not go together: {why}")
    return parse_devices(a.devices, allow_repeat=a.allow_shared_device)


def _bench_devices(a: argparse.Namespace, engine: Path, meta: dict[str, Any], batches: list[int],
                   settings: bench.BenchSettings, devices: tuple[int, ...]) -> int:
    from ..tools.environment import environment
    from ..tools.report import engine_summary, format_table, write_json

    workers = a.workers or "thread"
    bench.check_batches(batches, meta["options"]["batch"], str(engine))
    bench.require_gpu()
    run = bench_devices.bench_devices(engine, devices, batches, settings, workers=workers, baseline=a.baseline,
                                      log=_stderr)
    env = environment()
    print(f"{meta['arch']['name']} {meta['precision']} on {len(devices)} instance(s), devices "
          f"{','.join(map(str, devices))} ({env['tensorrt']}), {settings.describe()}, one {workers} per instance")
    for inst in run["instances"]:
        print(f"instance {inst['instance']}: device {inst['device']} ({inst['gpu']})")
        print(format_table([r for r in run["results"] if r["instance"] == inst["instance"]]))
    if run["baseline"]:
        print(f"device {devices[0]} alone:")
        print(format_table(run["baseline"]))
    print("all instances together (img/s: sum of batch/median; wall img/s: images / common wall time):")
    print(bench_devices.format_totals(run["totals"]))
    if a.json:
        write_json(a.json, {"environment": env, "command": " ".join(sys.argv), "engine": engine_summary(meta, engine),
                            "settings": settings.record() | {"devices": list(devices), "workers": workers,
                                                             "baseline": a.baseline,
                                                             "allow_shared_device": a.allow_shared_device},
                            **run})
        print(f"wrote {a.json}")
    return 0


def _against(a: argparse.Namespace, batches: list[int] | None) -> tuple[Path, dict[str, Any], int] | None:
    """--against's engine, its metadata and the rounds, checked before anything is built or timed."""
    if a.against is None:
        if a.rounds is not None:
            raise OptionError("--rounds only applies with --against ENGINE")
        return None
    if a.chart:
        raise OptionError("--chart draws one engine; leave it out with --against")
    rounds = 2 if a.rounds is None else a.rounds
    other = Path(a.against)
    if not other.is_file():
        raise NetdefError(f"--against: engine not found: {other}")
    meta = engine_file.read_meta(other)  # no engine: says what it is (a raw plan, a .wts) and what to do
    if batches:
        bench.check_batches(batches, meta["options"]["batch"], str(other))
    return other, meta, rounds


def _bench_against(json_path: str | None, target: tuple[Path, dict[str, Any]],
                   against: tuple[Path, dict[str, Any], int], batches: list[int],
                   settings: bench.BenchSettings) -> int:
    from ..tools.environment import environment
    from ..tools.report import engine_summary, format_ratios, format_table, write_json

    (engine, meta), (other, other_meta, rounds) = target, against
    bench.check_batches(batches, other_meta["options"]["batch"], str(other))  # batches taken from TARGET's profile
    results = bench.bench_interleaved({"A": engine, "B": other}, batches, settings, rounds, log=_stderr)
    env = environment()
    print(f"A = {engine}\nB = {other}\non {env['device']} ({env['tensorrt']}), {settings.describe()}, "
          f"{rounds} round(s) in turn")
    for label in ("A", "B"):
        for n in range(1, rounds + 1):
            print(f"{label}, round {n}:")
            print(format_table([r for r in results if r["engine"] == label and r["round"] == n]))
    print(format_ratios(results, "A", "B"))
    if json_path:
        write_json(json_path, {"environment": env, "command": " ".join(sys.argv),
                               "engines": {"A": engine_summary(meta, engine), "B": engine_summary(other_meta, other)},
                               "settings": settings.record() | {"rounds": rounds}, "results": results})
        print(f"wrote {json_path}")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
