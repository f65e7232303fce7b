"""Data-parallel benchmark over several GPUs (`netdef bench ENGINE --devices 0,1`): one engine instance per listed
device, fed from one host process, timed at the same time; per-device and total throughput.

Each instance deserializes the plan on its own device (`runtime.Engine(path, device=N)`): engines, execution
contexts, streams and buffers are never shared across devices, and `Instance` checks it (its engine, memory
backend, step stream and outputs all on its device). Before timing, every instance runs the same seeded input
and its outputs are compared with the first instance's: bitwise equal where the GPU model is the same (the same
plan runs the same kernels), else the largest difference is recorded.

Workers: `thread` (default) drives each instance from a thread of this process. That scales because the calls
that wait release the GIL: TensorRT's Python binding of `execute_async_v3` is declared with
`py::call_guard<py::gil_scoped_release>` (NVIDIA/TensorRT python/src/infer/pyCore.cpp, 8.6), and torch releases
it in `Event.synchronize`. `process` drives each instance from its own process (multiprocessing spawn; the
children inherit this process's environment), for comparison when the host side of one thread per GPU is
suspected of holding the others back.

Per batch, every instance is prepared and warmed up, then all are measured at once (`timing.time_callable`,
one call at a time per instance). The totals: `throughput` = the sum of the instances' batch/median figures;
`wall_throughput` = all images the instances ran while measuring / the wall time from the first start to the
last end (host gaps between calls included).
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .. import trt_api
from ..errors import NetdefError, OptionError
from .bench import BenchSettings, Log, _stderr, load_for_timing
from .timing import Budget, time_callable

WORKERS = ("thread", "process")
CHECK_SEED = 20261204  # the seed of the inputs every instance runs before timing


def check_inputs(engine: Any, batch: int, hw: tuple[int, int] | None, seed: int = CHECK_SEED
                 ) -> dict[str, np.ndarray]:
    """The same host inputs for every instance: seeded normal values (zeros for integer inputs)."""
    rng = np.random.default_rng(seed + batch)
    feeds = {}
    for t in engine.inputs:
        shape, dtype = engine.input_shape(t, batch, hw), np.dtype(t.dtype)
        feeds[t.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return feeds


def compare_outputs(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[bool, float]:
    """(bitwise equal, largest absolute difference) of two runs' outputs."""
    if reference.keys() != got.keys() or any(reference[k].shape != got[k].shape for k in reference):
        raise NetdefError(f"outputs differ in names or shapes: {_shapes(reference)} vs {_shapes(got)}")
    equal = all(reference[k].dtype == got[k].dtype and reference[k].tobytes() == got[k].tobytes() for k in reference)
    if equal:
        return True, 0.0
    diffs = [np.abs(reference[k].astype(np.float64) - got[k].astype(np.float64)) for k in reference]
    worst = max((float(d.max()) for d in diffs if d.size), default=0.0)
    return False, worst if np.isfinite(worst) else float("inf")


def _shapes(outs: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in outs.items()}


class Runner(Protocol):
    """What the benchmark drives on each instance (an `Instance`, a `ProcessInstance` or a test's fake)."""

    device: int
    gpu: tuple[str, str]

    def outputs(self, batch: int, hw: tuple[int, int] | None) -> dict[str, np.ndarray]: ...
    def prepare(self, batch: int, settings: BenchSettings) -> dict[str, Any]: ...
    def measure(self, batch: int, settings: BenchSettings) -> dict[str, Any]: ...
    def close(self) -> None: ...


class Instance:
    """One engine instance on `device`, driven from the calling process: the plan deserialized there (its own
    engine, contexts, streams and buffers), checked to live on that device."""

    def __init__(self, path: str | Path, device: int, batches: Sequence[int]):
        self.device = device
        self.engine = load_for_timing(path, batches, device=device)
        self.gpu: tuple[str, str] = trt_api.visible_devices()[device]
        self._step: Any = None

    def _where(self, found: int | None, what: str) -> None:
        """NetdefError unless `what` is on this instance's device."""
        if found != self.device:
            raise NetdefError(f"{self.engine.path}: {what} of the instance for CUDA device {self.device} is on device "
                              f"{found}: an engine instance must live on its own device")

    def outputs(self, batch: int, hw: tuple[int, int] | None) -> dict[str, np.ndarray]:
        """The outputs for `check_inputs(batch)`, computed on this instance's device."""
        outs = self.engine.infer(check_inputs(self.engine, batch, hw), as_numpy=False)
        for name, t in outs.items():
            self._where(t.device.index, f"output '{name}'")
        return {k: v.cpu().numpy() for k, v in outs.items()}

    def prepare(self, batch: int, settings: BenchSettings) -> dict[str, Any]:
        """Bind a step of `batch` and warm it up; returns the warm-up figures."""
        self._step = None  # the previous batch's buffers first
        self._step = step = self.engine.prepare_step(batch, settings.hw, cuda_graph=settings.cuda_graph,
                                                     with_copies=settings.with_copies)
        self._where(step.stream.device.index, "the step's stream")
        if not (settings.warmup.iters or settings.warmup.seconds):
            return {"warmup_iters": 0, "warmup_s": 0.0}
        with self.engine.on_device():
            warm = time_callable(step, step.stream, Budget(), settings.warmup)
        return {"warmup_iters": warm["iters"], "warmup_s": warm["measured_s"]}

    def measure(self, batch: int, settings: BenchSettings) -> dict[str, Any]:
        """Time the prepared step (`timing.time_callable`), with the wall clock's start and end."""
        step = self._step
        if step is None or step.batch != batch:
            raise NetdefError(f"measure(batch {batch}) before prepare(batch {batch})")
        with self.engine.on_device():
            t0 = time.monotonic()
            stats = time_callable(step, step.stream, Budget(), settings.measure, batch=batch)
            t1 = time.monotonic()
        self._step = None
        return stats | {"start": t0, "end": t1}

    def close(self) -> None:
        self._step = None


class ProcessInstance:
    """An `Instance` in a process of its own (multiprocessing spawn), driven through a pipe: the same methods."""

    def __init__(self, path: str | Path, device: int, batches: Sequence[int]):
        self.device = device
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_instance, args=(child, str(path), device, list(batches)), daemon=True)
        self._proc.start()
        child.close()
        try:
            self.gpu, self.pid = self._reply()
        except NetdefError:
            self.close()
            raise

    def _reply(self) -> Any:
        try:
            kind, value = self._conn.recv()
        except EOFError:
            self._proc.join(10)
            raise NetdefError(f"the worker process for CUDA device {self.device} ended "
                              f"(exit code {self._proc.exitcode})") from None
        if kind == "error":
            raise NetdefError(f"CUDA device {self.device} (worker process): {value}")
        return value

    def _call(self, method: str, *args: Any) -> Any:
        self._conn.send((method, args))
        return self._reply()

    def outputs(self, batch: int, hw: tuple[int, int] | None) -> dict[str, np.ndarray]:
        return self._call("outputs", batch, hw)

    def prepare(self, batch: int, settings: BenchSettings) -> dict[str, Any]:
        return self._call("prepare", batch, settings)

    def measure(self, batch: int, settings: BenchSettings) -> dict[str, Any]:
        return self._call("measure", batch, settings)

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close", ()))
            except OSError:
                pass
            self._proc.join(30)
        self._conn.close()


def _serve_instance(conn: Any, path: str, device: int, batches: list[int]) -> None:
    """A worker process: load an `Instance`, then run the methods the parent sends until 'close' (or until the
    parent goes away or Ctrl-C, which the parent reports)."""
    try:
        inst = Instance(path, device, batches)
        conn.send(("ok", (inst.gpu, os.getpid())))
    except Exception as e:  # noqa: BLE001  sent to the parent, which raises it as a NetdefError
        conn.send(("error", _describe(e)))
        return
    try:
        while True:
            method, args = conn.recv()
            if method == "close":
                return
            try:
                conn.send(("ok", getattr(inst, method)(*args)))
            except Exception as e:  # noqa: BLE001
                conn.send(("error", _describe(e)))
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        inst.close()


def _describe(error: Exception) -> str:
    """A worker's error for the parent's message: a netdef error's own text, else the exception's type too."""
    return str(error) if isinstance(error, NetdefError) else f"{type(error).__name__}: {error}"


def make_runners(engine: str | Path, devices: Sequence[int], batches: Sequence[int], workers: str
                 ) -> list[Runner]:
    """One instance per entry of `devices`, each loaded on its device (threads: here; processes: in its own)."""
    if workers not in WORKERS:
        raise OptionError(f"--workers {workers}: expected one of {', '.join(WORKERS)}")
    kind = Instance if workers == "thread" else ProcessInstance
    runners: list[Runner] = []
    try:
        for d in devices:
            runners.append(kind(engine, d, batches))
    except BaseException:
        for r in runners:
            r.close()
        raise
    return runners


def check_outputs(runners: Sequence[Runner], batches: Sequence[int], hw: tuple[int, int] | None
                  ) -> list[dict[str, Any]]:
    """Run the same input on every instance, compare with the first: bitwise where the GPU model is the same
    (else a NetdefError), the largest difference recorded otherwise. One record per instance and batch."""
    records = []
    for b in batches:
        ref = runners[0].outputs(b, hw)
        for i, r in enumerate(runners[1:], 1):
            equal, diff = compare_outputs(ref, r.outputs(b, hw))
            same_model = r.gpu == runners[0].gpu
            if same_model and not equal:
                raise NetdefError(f"batch {b}: outputs of instance {i} (CUDA device {r.device}, {r.gpu[0]}) differ "
                                  f"from instance 0's (device {runners[0].device}) for the same input, max abs "
                                  f"difference {diff:.3g}: the same plan on the same GPU model must give equal results")
            records.append({"batch": b, "instance": i, "device": r.device, "gpu": r.gpu[0],
                            "same_gpu_model": same_model, "bitwise_equal": equal, "max_abs_diff": diff})
    return records


def time_together(runners: Sequence[Runner], batch: int, settings: BenchSettings) -> list[dict[str, Any]]:
    """Prepare and warm up every instance at `batch`, then measure all at once; one record per instance, with
    its wall-clock throughput (images / measured seconds)."""
    with ThreadPoolExecutor(max_workers=len(runners)) as pool:
        warm = list(pool.map(lambda r: r.prepare(batch, settings), runners))
        stats = list(pool.map(lambda r: r.measure(batch, settings), runners))
    out = []
    for i, (r, w, s) in enumerate(zip(runners, warm, stats)):
        wall = s["end"] - s["start"]
        out.append(s | w | {"instance": i, "device": r.device, "gpu": r.gpu[0], "wall_s": wall,
                            "wall_throughput": batch * s["iters"] / wall if wall > 0 else float("inf"),
                            "cuda_graph": settings.cuda_graph, "with_copies": settings.with_copies})
    return out


def totals(rows: Sequence[dict[str, Any]], baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """The instances of one batch together: summed throughput, wall throughput over the common window, the slowest
    median and worst p99 latency; with `baseline` (one instance alone), the scaling of both throughputs."""
    batch = rows[0]["batch"]
    window = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    images = sum(r["batch"] * r["iters"] for r in rows)
    out = {"batch": batch, "instances": len(rows), "throughput": sum(r["throughput"] for r in rows),
           "wall_throughput": images / window if window > 0 else float("inf"), "window_s": window,
           "median_ms": max(r["median_ms"] for r in rows), "p99_ms": max(r["p99_ms"] for r in rows)}
    if baseline is not None:
        out["baseline_throughput"] = baseline["throughput"]
        out["scaling"] = out["throughput"] / baseline["throughput"]
        out["wall_scaling"] = out["wall_throughput"] / baseline["wall_throughput"]
    return out


def bench_devices(engine: str | Path, devices: Sequence[int], batches: Sequence[int],
                  settings: BenchSettings | None = None, *, workers: str = "thread", baseline: bool = False,
                  make_runner: Callable[[str | Path, int, Sequence[int]], Runner] | None = None,
                  log: Log | None = None) -> dict[str, Any]:
    """Time `engine` on every device of `devices` at once (one instance each), after checking their outputs agree;
    with `baseline`, the first instance is first timed alone. Returns {"instances", "output_check", "baseline",
    "results" (per instance and batch), "totals" (per batch)}. `make_runner(engine, device, batches)` replaces
    the workers' instances (tests)."""
    settings = settings or BenchSettings()
    log = log or _stderr
    if make_runner is None:
        runners = make_runners(engine, devices, batches, workers)
    else:
        runners = [make_runner(engine, d, batches) for d in devices]
    try:
        check = check_outputs(runners, batches, settings.hw)
        if len(runners) > 1:
            log(f"[bench] outputs of {len(runners)} instances: "
                + ("bitwise equal" if all(c["bitwise_equal"] for c in check) else
                   f"max abs difference {max(c['max_abs_diff'] for c in check):.3g} (GPU models differ)"))
        alone, results, summed = [], [], []
        for b in batches:
            base = None
            if baseline:
                base = time_together(runners[:1], b, settings)[0]
                alone.append(base)
                log(f"[bench] batch {b} alone on device {base['device']}: {base['throughput']:.1f} img/s")
            rows = time_together(runners, b, settings)
            results.extend(rows)
            summed.append(totals(rows, base))
            each = ", ".join(f"device {r['device']}: {r['throughput']:.1f}" for r in rows)
            log(f"[bench] batch {b} on {len(rows)} instance(s): {summed[-1]['throughput']:.1f} img/s in total ({each})")
    finally:
        for r in runners:
            r.close()
    instances = [{"instance": i, "device": r.device, "gpu": r.gpu[0], "compute_capability": r.gpu[1]}
                 for i, r in enumerate(runners)]
    return {"instances": instances, "output_check": check, "baseline": alone, "results": results, "totals": summed}


def format_totals(summed: Sequence[dict[str, Any]]) -> str:
    """One row per batch: instances, summed and wall throughput, slowest median, worst p99 (and scaling)."""
    scaled = any("scaling" in t for t in summed)
    head = f"{'batch':>6} {'instances':>9} {'img/s':>11} {'wall img/s':>11} {'median ms':>10} {'p99 ms':>9}" + \
        (f" {'alone img/s':>12} {'scaling':>8} {'wall scaling':>12}" if scaled else "")
    rows = [f"{t['batch']:>6} {t['instances']:>9} {t['throughput']:>11.1f} {t['wall_throughput']:>11.1f} "
            f"{t['median_ms']:>10.3f} {t['p99_ms']:>9.3f}"
            + (f" {t['baseline_throughput']:>12.1f} {t['scaling']:>7.2f}x {t['wall_scaling']:>11.2f}x" if scaled
               else "") for t in summed]
    return "\n".join([head, *rows])
