"""Benchmarking netdef engines: latency and throughput per batch size, one engine or several timed in turn.

Engines are stepped by the runtime (`Engine.prepare_step`: buffers bound once, optional CUDA graph and
host copies) and timed by `timing.time_callable` (CUDA events, one call at a time). The command line is
`netdef bench` (netdef.cli.bench); records, tables and charts are in `report`.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import engine_file, trt_api
from ..errors import NetdefError, OptionError
from .environment import tensorrt_version
from .timing import DEFAULT_MEASURE, DEFAULT_WARMUP, Budget, time_callable

if TYPE_CHECKING:
    from ..runtime import Engine

Log = Callable[[str], None]


@dataclass
class BenchSettings:
    """How each batch is timed: warm-up and measurement budgets, CUDA graph replays, host copies, and the input
    height and width (`hw`) for an engine built with a dynamic input size (default: its profile's opt)."""

    warmup: Budget = DEFAULT_WARMUP
    measure: Budget = DEFAULT_MEASURE
    cuda_graph: bool = False
    with_copies: bool = False
    hw: tuple[int, int] | None = None

    def record(self) -> dict[str, Any]:
        """How a benchmark was timed, for its JSON record."""
        out = {"warmup": asdict(self.warmup), "measure": asdict(self.measure), "cuda_graph": self.cuda_graph,
               "with_copies": self.with_copies}
        return out | ({"input_hw": list(self.hw)} if self.hw else {})

    def describe(self) -> str:
        """'CUDA graph, with H2D/D2H copies' and the like, for the header of a table."""
        return ("CUDA graph" if self.cuda_graph else "execute_async_v3") + \
            (", with H2D/D2H copies" if self.with_copies else "")


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]: positive, distinct, returned in increasing order."""
    items = [p.strip() for p in str(text).split(",")]
    try:
        batches = [int(p) for p in items]
    except ValueError:
        raise OptionError(f"--batch '{text}': expected a comma-separated list of batch sizes, e.g. 1,8,32") from None
    if any(b < 1 for b in batches):
        raise OptionError(f"--batch '{text}': batch sizes must be >= 1")
    if len(set(batches)) != len(batches):
        raise OptionError(f"--batch '{text}': a batch size is listed twice")
    return sorted(batches)


def check_batches(batches: Sequence[int], profile: Sequence[int], where: str) -> None:
    """NetdefError naming the engine when a batch size lies outside its optimization profile."""
    lo, _, hi = profile
    outside = [b for b in batches if not lo <= b <= hi]
    if outside:
        raise OptionError(f"{where}: batch size(s) {outside} outside the engine's profile {lo}..{hi}; rebuild it "
                          f"with `netdef build ... --batch {min(lo, *outside)}:{hi}:{max(hi, *outside)}` "
                          f"or bench batch sizes in {lo}..{hi}")


def check_rounds(rounds: int) -> None:
    if rounds < 1:
        raise OptionError(f"--rounds {rounds}: must be >= 1")


def require_gpu() -> Any:
    """torch, where engines can run and be timed here; else a NetdefError saying what is missing."""
    try:
        import torch
    except ImportError:
        raise NetdefError("timing an engine needs PyTorch with CUDA (device memory, streams, events)") from None
    if not torch.cuda.is_available() or not trt_api.can_run_engines():
        raise NetdefError(f"timing an engine needs a CUDA GPU and full TensorRT (PyTorch {torch.__version__} sees "
                          f"{'a GPU' if torch.cuda.is_available() else 'no GPU'}; TensorRT: "
                          f"{tensorrt_version()})")
    return torch


def load_for_timing(engine: str | Path | Engine, batches: Sequence[int], *, device: int | None = None) -> Engine:
    """`engine` as a `runtime.Engine` with the torch backend, loaded here (on CUDA device `device`, default the
    current one) when it is a path, once its batch profile is known to cover `batches`. Callers timing an
    engine repeatedly load it once with this."""
    if isinstance(engine, (str, Path)):
        path = Path(engine)
        check_batches(batches, engine_file.read_meta(path)["options"]["batch"], str(path))
        require_gpu()
        from ..runtime import Engine  # noqa: F811  (the class itself, not only its name for type hints)

        return Engine(path, backend="torch", device=device)
    check_batches(batches, engine.meta["options"]["batch"], str(engine.path))
    if device is not None and engine.device != device:
        raise OptionError(f"{engine.path} is loaded on CUDA device {engine.device}, not device {device}")
    if engine.backend.name != "torch":
        raise NetdefError(f"{engine.path}: timing needs an Engine loaded with backend='torch' "
                          f"(this one uses {engine.backend.name})")
    return engine


def bench_engine(engine: str | Path | Engine, batches: Sequence[int], settings: BenchSettings | None = None,
                 log: Log | None = None,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Time a netdef engine (a file, loaded on the current CUDA device; or a `runtime.Engine` already loaded)
    at each batch size; one dict of statistics per batch (see `timing.summarize`), also handed to `on_result` as
    soon as it is measured."""
    settings = settings or BenchSettings()
    log = log or _stderr
    eng = load_for_timing(engine, batches)
    results = []
    for b in batches:
        step = eng.prepare_step(b, settings.hw, cuda_graph=settings.cuda_graph, with_copies=settings.with_copies)
        stats = time_callable(step, step.stream, settings.warmup, settings.measure, batch=b)
        del step  # its buffers, before the next batch's
        stats.update(cuda_graph=settings.cuda_graph, with_copies=settings.with_copies)
        at = ""
        if eng.dynamic_hw:  # the size timed (the profile's opt unless settings.hw)
            shape = eng.input_shape(eng.inputs[0], b, settings.hw)
            stats["input_hw"], at = list(shape[-2:]), f" at {shape[-2]}x{shape[-1]}"
        log(f"[bench] {eng.path.name} batch {b}{at}: median {stats['median_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms, "
            f"{stats['throughput']:.1f} img/s ({stats['iters']} iters, CV {stats['cv']:.1%})")
        results.append(stats)
        if on_result is not None:
            on_result(stats)
    return results


def bench_interleaved(engines: dict[str, Path], batches: Sequence[int], settings: BenchSettings, rounds: int,
                      log: Log | None = None) -> list[dict[str, Any]]:
    """Each engine timed in turn, `rounds` times over, so slow drifts of the GPU (clocks, temperature) touch
    all of them alike; every result carries its engine's label and round. Each engine is loaded once, on the
    current CUDA device (`trt_api.use_device` selects another)."""
    check_rounds(rounds)
    loaded = {label: load_for_timing(path, batches) for label, path in engines.items()}
    results = []
    for rnd in range(1, rounds + 1):
        for label, eng in loaded.items():
            for r in bench_engine(eng, batches, settings, log=log):
                results.append(r | {"engine": label, "round": rnd})
    return results


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
