"""Timing primitives shared by every benchmark in netdef: budgets, statistics and one timing loop.

`time_callable` times any callable that enqueues GPU work (a TensorRT engine's step, PyTorch eager,
torch.compile; scripts/compare_routes.py), so all of them are timed the same way: each call is bracketed
by two CUDA events on the benchmark stream and waited for before the next one starts (latency of one
request at a time, launch overhead included when the GPU waits for it). Nothing here knows about engines.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import NetdefError, OptionError


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
            raise OptionError(f"{what} '{text}': expected N (iterations), Ss (seconds, e.g. 1.5s) or both "
                              "as N,Ss") from None
    if iters < 0 or seconds < 0:
        raise OptionError(f"{what} '{text}': iterations and seconds must not be negative")
    return Budget(iters, seconds)


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
