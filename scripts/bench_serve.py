"""`netdef serve` under load, next to direct `Engine` calls on the same engine (GPU; pytriton and tritonclient).

Starts `netdef serve ENGINE` on free ports, waits until the model is ready, sends batch-1 requests over gRPC from
1, 8 and 64 concurrent clients (one tritonclient each, threads of up to 8 client processes) for a fixed time, and
prints one `RESULT` line per concurrency (throughput in items/s, p50 and p99 latency in ms), the direct `Engine`
throughput at batch 64 (host copies included, as the server's are) and the ratio of the two at the highest
concurrency. After each `RESULT serve` line a `RESULT serve-stats` line tells where the time went: Triton's
statistics over that concurrency (warm-up requests included; `netdef.deploy.serve_stats`): the batches the
batcher formed (`avg_batch`, `batches=SIZE:COUNT,...`), per request the server's time and its queue and compute
phases, per execution the model's time, the clients' mean latency less the server's (transport, clients) and
how busy the model instances were (compute seconds per second); a `RESULT serve-cpu` line then gives the CPU use
over the measured time in cores: the machine's, the server's (Triton, its stubs) and the clients'. When the server
stops, one `RESULT serve-callable` line per model instance (each runs the engine inside Triton's Python stub:
`netdef.deploy.stub_model`) splits the model's time over the whole run (every concurrency): per execution
netdef's `execute` and the engine's run within it (`Engine.infer`; for `NAME_detect`, netdef detect's Detector);
the rest of Triton's `compute_infer` is the Python backend moving the requests to the stub and back. Last, `RESULT
direct-mix` is the engine alone (host copies included) at each batch size the batcher formed at the last
concurrency given (the median of 30 runs each, weighted by the executions at that size): what those batch sizes
allow, whatever serving costs; `RESULT ratio-mix` is the served throughput over it (a low ratio: serving costs;
a low direct-mix against the batch-64 run: small batches):

    python scripts/bench_serve.py resnet50.engine --concurrency 1,8,64 --seconds 10 --max-queue-delay-us 500

With `--image photo.jpg` (a YOLO engine) the same for its `NAME_detect` model: batch-1 requests of the encoded
image against netdef detect's `Detector` on batches of the decoded one (pre- and post-processing included).

tests/test_serve.py uses `running_server`, `load_test` and `direct` on the GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netdef.cli.guard import run_guarded
from netdef.cli.options import checked
from netdef.cli.serve import add_serve_options
from netdef.deploy.plan import load_plan
from netdef.deploy.serve import SERVING, Binding, binding, parse_timing_line, serves_detections
from netdef.deploy.serve_detect import SUFFIX
from netdef.errors import NetdefError, OptionError
from netdef.runtime import random_input
from netdef.tools.timing import Budget, run_budget, summarize


@dataclass(frozen=True)
class Server:
    """A running `netdef serve`: its URLs, the binding of the engine's raw model and the names of all models it
    serves (a YOLO detector's `NAME_detect` too)."""

    http: str
    grpc: str
    metrics: str
    spec: Binding
    process: subprocess.Popen
    output: list[str]  # the server's stdout and stderr lines so far
    models: tuple[str, ...] = ()


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on this machine now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def running_server(engine: str | Path, *args: str, timeout_s: float = 300,
                   program: Sequence[str] = (sys.executable, "-m", "netdef.cli")) -> Iterator[Server]:
    """`netdef serve ENGINE ARGS` (`program` runs netdef's command line) in a subprocess on free ports, ready to
    answer (every model it serves ready); stopped with Ctrl-C (SIGINT) on leaving. A server that exits before it is
    ready is a NetdefError with the end of its output."""
    import tritonclient.http as http

    meta = load_plan(engine)[0]
    options = _binding_args(args)
    detecting = serves_detections(meta, options.pop("detect"))
    spec = binding(meta, **options)
    models = (spec.name, *([spec.name + SUFFIX] if detecting else []))
    port, grpc, metrics = free_ports(3)
    cmd = [*program, "serve", str(engine), "--port", str(port), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics), *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    client = http.InferenceServerClient(f"localhost:{port}")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise NetdefError(f"netdef serve exited with status {proc.returncode} before it was ready: "
                                  + " | ".join(lines[-20:]))
            with contextlib.suppress(Exception):  # not listening yet
                # ready, and serving: a Ctrl-C before `netdef serve` has logged its start ends it with status 130
                if client.is_server_ready() and all(client.is_model_ready(m) for m in models) and \
                        any(SERVING in line for line in lines):
                    break
            if time.monotonic() > deadline:
                raise NetdefError(f"netdef serve was not ready after {timeout_s:.0f} s: " + " | ".join(lines[-20:]))
            time.sleep(0.5)
        client.close()  # an open connection holds Triton up when it stops
        yield Server(f"localhost:{port}", f"localhost:{grpc}", f"localhost:{metrics}", spec, proc, lines, models)
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)


def _binding_args(args: Sequence[str]) -> dict[str, Any]:
    """The `binding` arguments among `netdef serve` options (what names the model and sizes its batches), and
    `detect` (--detect / --no-detect), parsed as the command parses them (a bad value is its OptionError)."""
    p = argparse.ArgumentParser(add_help=False)
    add_serve_options(p)
    known = checked(p.parse_known_args(list(args))[0])
    return {"name": known.name, "max_batch": known.max_batch, "max_queue_delay_us": known.max_queue_delay_us,
            "preferred_batch": known.preferred_batch, "detect": known.detect}


def sample_inputs(spec: Binding, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of `batch` items for a batching binding (fixed dims only): standard-normal floats, uint8
    images of 0..255."""
    if not spec.max_batch_size:
        raise OptionError(f"model '{spec.name}' takes whole batches (no dynamic batching): nothing to load-test")
    rng = np.random.default_rng(seed)
    out = {}
    for t in spec.inputs:
        if min(t.shape) < 0:
            raise OptionError(f"input '{t.name}' {t.shape} has dynamic dimensions: give an engine of fixed size")
        out[t.name] = random_input((batch, *t.shape), t.dtype, rng)
    return out


def request_tensors(protocol: Any, spec: Binding, feeds: dict[str, np.ndarray],
            data: bool = True) -> tuple[list[Any], list[Any]]:
    """The request's inputs (`feeds`; with `data`, their data set: else to be set, e.g. to shared memory) and the
    outputs it asks for, as tritonclient's module `protocol` (tritonclient.http or .grpc) makes them."""
    from tritonclient.utils import np_to_triton_dtype

    inputs = [protocol.InferInput(name, list(x.shape), np_to_triton_dtype(x.dtype)) for name, x in feeds.items()]
    for i, x in zip(inputs, feeds.values()) if data else ():
        i.set_data_from_numpy(x)
    return inputs, [protocol.InferRequestedOutput(t.name) for t in spec.outputs]


def infer(client: Any, protocol: Any, spec: Binding, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One request through a tritonclient `client` of module `protocol` (tritonclient.http or .grpc)."""
    inputs, outputs = request_tensors(protocol, spec, feeds)
    result = client.infer(spec.name, inputs, outputs=outputs)
    return {t.name: result.as_numpy(t.name) for t in spec.outputs}


DETECT_OUTPUTS = ("num_dets", "boxes", "scores", "classes", "detections")  # a NAME_detect model's


def image_tensors(protocol: Any, images: Sequence[bytes]) -> tuple[list[Any], list[Any]]:
    """A `NAME_detect` request's input (encoded `images`, one per batch item) and the outputs it asks for."""
    data = np.array([[x] for x in images], dtype=object)
    image = protocol.InferInput("image", list(data.shape), "BYTES")
    image.set_data_from_numpy(data)
    return [image], [protocol.InferRequestedOutput(n) for n in DETECT_OUTPUTS]


def detect(client: Any, protocol: Any, model: str, images: Sequence[bytes],
           parameters: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """One request of encoded `images` (one per batch item) to a `NAME_detect` model, with Triton request
    `parameters` (conf, iou, max_det): its outputs by name (`detections` as bytes, one JSON record each)."""
    inputs, outputs = image_tensors(protocol, images)
    result = client.infer(model, inputs, outputs=outputs, parameters=parameters)
    return {n: result.as_numpy(n) for n in DETECT_OUTPUTS}


@dataclass
class Client:
    """One load-test client: its gRPC connection, the inputs and outputs every request names (made once), and the
    system shared-memory region holding the inputs (None: they go over the wire)."""

    connection: Any
    inputs: list[Any]
    outputs: list[Any]
    region: Any = None
    region_name: str = ""

    def close(self) -> None:
        """Unregister and free the shared-memory region, if any."""
        if self.region is not None:
            import tritonclient.utils.shared_memory as shm

            with contextlib.suppress(Exception):  # the server may be gone: the region is freed here all the same
                self.connection.unregister_system_shared_memory(self.region_name)
            shm.destroy_shared_memory_region(self.region)
            self.region = None


@dataclass(frozen=True)
class Requests:
    """What one load-test client sends over gRPC, picklable for the client processes: batch-1 random inputs to
    the raw model, or with `image` (encoded) that image to the `NAME_detect` model. `shared_memory`: the raw
    model's inputs travel in system shared memory (client and server on one host, as perf_analyzer's
    `--shared-memory system`; outputs still over gRPC), which the server serves only with `--open-endpoints
    shared-memory`."""

    url: str
    spec: Binding
    image: bytes | None = None
    shared_memory: bool = False

    def client(self) -> Client:
        import tritonclient.grpc as grpc

        connection = grpc.InferenceServerClient(self.url)
        if self.image is not None:
            return Client(connection, *image_tensors(grpc, [self.image]))
        inputs, outputs = request_tensors(grpc, self.spec, self.feeds, data=not self.shared_memory)
        if not self.shared_memory:
            return Client(connection, inputs, outputs)
        import tritonclient.utils.shared_memory as shm

        size = sum(x.nbytes for x in self.feeds.values())
        name = f"netdef_bench_{os.getpid()}_{threading.get_ident()}"
        region = shm.create_shared_memory_region(name, "/" + name, size)
        client = Client(connection, inputs, outputs, region, name)
        try:
            shm.set_shared_memory_region(region, list(self.feeds.values()))
            connection.register_system_shared_memory(name, "/" + name, size)
        except BaseException as e:
            client.close()
            if "restricted" in str(e):
                raise NetdefError(f"the server at {self.url} keeps its shared-memory endpoint behind PyTriton's "
                                  f"token ({e}): serve with --open-endpoints shared-memory") from None
            raise
        offset = 0
        for i, x in zip(inputs, self.feeds.values()):
            i.set_shared_memory(name, x.nbytes, offset)
            offset += x.nbytes
        return client

    @functools.cached_property
    def feeds(self) -> dict[str, np.ndarray]:
        """The one batch-1 input every request of this process sends (made once)."""
        return sample_inputs(self.spec, 1)

    def model(self) -> str:
        return self.spec.name + ("" if self.image is None else SUFFIX)

    def __call__(self, client: Client) -> Any:
        return client.connection.infer(self.model(), client.inputs, outputs=client.outputs)

    @staticmethod
    def close(client: Client) -> None:
        client.close()


def load_test(server: Server, concurrency: int, seconds: float, warmup: int = 5,
              image: bytes | None = None, processes: int | None = None,
              shared_memory: bool = False) -> dict[str, Any]:
    """`concurrency` gRPC clients sending batch-1 requests back to back for `seconds`: throughput (items/s) and
    latency percentiles (ms). With `image` (encoded): requests of it to the `NAME_detect` model. The clients run
    as threads of `processes` client processes (default: up to 8), so that one Python's GIL does not cap what
    the server shows. `shared_memory`: see `Requests`."""
    if image is not None and server.spec.name + SUFFIX not in server.models:
        raise OptionError(f"--image: the server does not serve {server.spec.name + SUFFIX} (not a YOLO detector, "
                          "or --no-detect)")
    _check_shared_memory(image, shared_memory)
    return load_test_with(Requests(server.grpc, server.spec, image, shared_memory), concurrency, seconds, warmup,
                          processes, watch=server.process.pid)


def _check_shared_memory(image: bytes | None, shared_memory: bool) -> None:
    if image is not None and shared_memory:
        raise OptionError("--shared-memory system: the raw model's inputs only, not --image")


def load_test_with(requests: Any, concurrency: int, seconds: float, warmup: int = 5,
                   processes: int | None = None, watch: int | None = None) -> dict[str, Any]:
    """`load_test` for any picklable `requests` (`.client()` makes a client, `requests(client)` sends one,
    `requests.close(client)`, where it has one, frees what the client holds). CPU use over the measured time, in
    cores (CPU seconds per second): `client_cores` (the client processes), `busy_cores` (the machine), and with
    `watch` (a pid) `server_cores` (that process and its descendants); nan where there is no /proc."""
    import multiprocessing

    n = min(concurrency, processes or 8)
    shares = [concurrency // n + (i < concurrency % n) for i in range(n)]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA or gRPC state
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(requests, k, seconds, warmup, barrier, results,
                                                      i == 0, watch), daemon=True)
             for i, k in enumerate(shares)]
    for proc in procs:
        proc.start()
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds + 300
    try:
        while len(got) < n:
            try:
                got.append(results.get(timeout=1.0))
            except queue.Empty:
                failed = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise NetdefError(f"load test at concurrency {concurrency}: " + (
                        f"a client process failed (exit code {failed[0]}; its messages above)" if failed else
                        f"the client processes did not finish within {seconds + 300:.0f} s")) from None
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    errors = [g["error"] for g in got if g["error"]]
    if errors:
        raise NetdefError(f"load test at concurrency {concurrency}: {errors[0]}")
    flat = np.concatenate([np.asarray(g["latencies"], dtype=np.float64) for g in got])
    if flat.size == 0:
        raise NetdefError(f"load test at concurrency {concurrency}: no request finished in {seconds} s")
    stats = summarize(flat)
    elapsed = max(g["elapsed"] for g in got)
    first = next(g for g in got if "busy_s" in g)  # the first process's: the machine's and `watch`'s CPU time
    return {"concurrency": concurrency, "requests": int(flat.size), "throughput": flat.size / elapsed,
            "p50_ms": stats["median_ms"], "p99_ms": stats["p99_ms"], "mean_ms": stats["mean_ms"], "processes": n,
            "client_cores": sum(g["cpu_s"] for g in got) / elapsed, "busy_cores": first["busy_s"] / first["elapsed"],
            "server_cores": first["watch_s"] / first["elapsed"]}


def _client_process(requests: Any, clients: int, seconds: float, warmup: int, barrier: Any, results: Any,
                    probe: bool, watch: int | None) -> None:
    """One client process: `clients` threads, each its own client, `warmup` requests each, then (once every
    process is warm: `barrier`) requests back to back for `seconds`; puts on `results` the latencies (ms), the
    time taken (s), the first error or None and this process's CPU seconds meanwhile; with `probe` also the machine's
    busy CPU seconds and those of `watch`'s process tree (nan without a pid)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    warm = threading.Barrier(clients + 1)
    go = threading.Event()
    stop_at: list[float] = []

    def client_loop(i: int) -> None:
        client = None
        try:
            client = requests.client()
            for _ in range(warmup):
                requests(client)
        except BaseException as e:  # noqa: BLE001  reported by the parent
            errors.append(f"{type(e).__name__}: {e}")
        warm.wait()
        go.wait()
        try:
            while not errors and time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                try:
                    requests(client)
                except BaseException as e:  # noqa: BLE001
                    errors.append(f"{type(e).__name__}: {e}")
                    return
                latencies[i].append((time.perf_counter() - t0) * 1000.0)
        finally:
            if client is not None and hasattr(requests, "close"):
                requests.close(client)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    warm.wait()
    barrier.wait()
    watch0 = tree_cpu(watch) if probe else 0.0  # the /proc scan before the measured window
    host0 = host_busy() if probe else 0.0
    stop_at.append(time.perf_counter() + seconds)
    t0, cpu0 = time.perf_counter(), time.process_time()  # process_time: every thread of this process
    go.set()
    for t in threads:
        t.join()
    got = {"latencies": [x for lat in latencies for x in lat], "elapsed": time.perf_counter() - t0,
           "error": errors[0] if errors else None, "cpu_s": time.process_time() - cpu0}
    if probe:
        busy_s = host_busy() - host0
        got.update(busy_s=busy_s, watch_s=tree_cpu(watch) - watch0)
    results.put(got)


def host_busy() -> float:
    """This machine's busy CPU seconds since boot, summed over its cores (/proc/stat less idle and iowait); nan
    where there is no /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # guest time is within user


def tree_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` and its live descendants (/proc: Triton and its Python stubs
    under `netdef serve`); nan for no pid, or where there is no /proc."""
    if pid is None:
        return float("nan")
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return float("nan")
    tick, stats = os.sysconf("SC_CLK_TCK"), {}
    for entry in entries:
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended meanwhile
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()  # after the command name
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)  # ppid, utime + stime
    tree, more = set(), {pid}
    while more:
        tree |= more
        more = {p for p, (parent, _) in stats.items() if parent in more} - tree
    return sum(stats[p][1] for p in tree if p in stats)


def cpu_line(what: str, load: dict[str, Any]) -> str:
    """`RESULT serve-cpu WHAT ...` of a `load_test`: the machine's cores, how many were busy, and the server's and
    the clients' share, in cores (CPU seconds per second of the measured time). A machine near `cores` busy bounds
    what the server shows."""
    return (f"RESULT serve-cpu {what} cores={os.cpu_count()} busy_cores={load['busy_cores']:.2f} "
            f"server_cores={load['server_cores']:.2f} client_cores={load['client_cores']:.2f}")


def check_clients() -> None:
    """tritonclient with HTTP (the server's statistics and readiness) and gRPC (the load), else a NetdefError saying
    what to install (tritonclient raises a RuntimeError for a protocol installed without its extra)."""
    try:
        for part in ("tritonclient.grpc", "tritonclient.http"):
            importlib.import_module(part)
    except (ImportError, RuntimeError) as e:
        raise NetdefError(f"bench_serve.py needs tritonclient with HTTP and gRPC ({e}): pip install "
                          "'tritonclient[all]'") from None


def direct(engine: str | Path, batch: int) -> dict[str, Any]:
    """`Engine` at `batch` on the same engine, host copies included: netdef's benchmark statistics."""
    from netdef.tools.bench import BenchSettings, bench_engine

    return bench_engine(engine, [batch], BenchSettings(with_copies=True), log=lambda m: None)[0]


def direct_mix(engine: str | Path, batches: dict[int, int]) -> dict[str, Any]:
    """The engine alone, host copies included, on `batches` (size -> executions, as Triton's statistics count
    them): each size timed (median of 30 runs), then items/s if exactly those executions ran back to back."""
    from netdef.tools.bench import BenchSettings, bench_engine
    from netdef.tools.timing import Budget

    if not batches:
        raise NetdefError("no batch sizes to time: the server ran no execution")
    sizes = sorted(batches)
    settings = BenchSettings(warmup=Budget(iters=5), measure=Budget(iters=30), with_copies=True)
    timed = bench_engine(engine, sizes, settings, log=lambda m: None)
    seconds = sum(batches[b] * t["median_ms"] / 1000.0 for b, t in zip(sizes, timed))
    return {"throughput": sum(b * n for b, n in batches.items()) / seconds, "sizes": len(sizes),
            "executions": sum(batches.values())}


def direct_detect(engine: str | Path, image: bytes, batch: int, seconds: float, warmup: int = 3) -> dict[str, Any]:
    """netdef detect's `Detector` on `batch` copies of the decoded `image` for `seconds` (pre- and post-processing
    included, as the server's): throughput (images/s) and latency percentiles per call (ms)."""
    import io

    from netdef.tools.detect import engine_detector, read_image

    detector = engine_detector(engine)
    images = [read_image(io.BytesIO(image))] * batch

    def step() -> float:
        t0 = time.perf_counter()
        detector(images)
        return (time.perf_counter() - t0) * 1000.0

    if warmup > 0:
        run_budget(step, Budget(iters=warmup))
    times = run_budget(step, Budget(seconds=seconds))
    stats = summarize(times)
    return {"throughput": batch * len(times) / (sum(times) / 1000.0), "p50_ms": stats["median_ms"],
            "p99_ms": stats["p99_ms"]}


def callable_lines(output: Sequence[str]) -> list[str]:
    """`RESULT serve-callable` lines of the `timing` lines a stopped `netdef serve` logged (`CallTimes.line`)."""
    return [f"RESULT serve-callable model={m['model']} instance={m['instance']} executions={m['executions']} "
            f"items={m['items']} callable_ms={m['callable_ms']:.3f} engine_ms={m['engine_ms']:.3f}"
            for m in filter(None, map(parse_timing_line, output))]


def result_line(what: str, stats: dict[str, Any]) -> str:
    """`RESULT what throughput=... p50_ms=... p99_ms=...`, the form the GPU tests print."""
    p50 = stats.get("p50_ms", stats.get("median_ms"))
    return f"RESULT {what} throughput={stats['throughput']:.1f} p50_ms={p50:.3f} p99_ms={stats['p99_ms']:.3f}"


def run(engine: str | Path, concurrency: Sequence[int], seconds: float, serve_args: Sequence[str],
        direct_batch: int = 64, image: bytes | None = None, shared_memory: bool = False) -> list[str]:
    """The load test at each concurrency and the direct run at `direct_batch`: the RESULT lines, printed too
    (each serve line followed by its `serve-stats` and `serve-cpu` lines). With `image` (encoded): the
    `NAME_detect` model against `direct_detect` ("serve-detect", "direct-detect"). `shared_memory`: the inputs in
    system shared memory ("serve-shm"; `Requests`)."""
    from netdef.deploy import serve_stats

    check_clients()  # before the server starts
    _check_shared_memory(image, shared_memory)
    lines, served, formed = [], {}, {}
    kind = "-detect" if image is not None else "-shm" if shared_memory else ""
    endpoints = "statistics,shared-memory" if shared_memory else "statistics"
    with running_server(engine, "--open-endpoints", endpoints, *serve_args) as server:
        model = server.spec.name + (SUFFIX if image is not None else "")

        def counters() -> dict[str, int]:
            return serve_stats.counters(serve_stats.model_statistics(server.http, model), model)

        for c in concurrency:
            before, t0 = counters(), time.perf_counter()
            served = load_test(server, c, seconds, image=image, shared_memory=shared_memory)
            lines.append(result_line(f"serve{kind} concurrency={c}", served))
            got = serve_stats.summary(serve_stats.delta(before, counters()), served["mean_ms"],
                                      time.perf_counter() - t0)
            lines.append(serve_stats.stats_line(f"concurrency={c} model={model}", got))
            lines.append(cpu_line(f"concurrency={c}", served))
            formed = got["batches"]
            print(*lines[-3:], sep="\n", flush=True)
    timing = callable_lines(server.output)  # logged as the server stopped
    lines += timing
    print(*timing, sep="\n", flush=True)
    base = direct(engine, direct_batch) if image is None else direct_detect(engine, image, direct_batch, seconds)
    direct_kind = "-detect" if image is not None else ""
    lines.append(result_line(f"direct{direct_kind} batch={direct_batch}", base))
    lines.append(f"RESULT ratio{kind} serve_concurrency={concurrency[-1]}/direct_batch={direct_batch} "
                 f"{served['throughput'] / base['throughput']:.3f}")
    print(*lines[-2:], sep="\n", flush=True)
    if image is None and not server.spec.max_batch_size:
        print("RESULT direct-mix skipped: the engine's model does not batch requests", flush=True)
    elif image is None:
        mix = direct_mix(engine, formed)
        lines.append(f"RESULT direct-mix concurrency={concurrency[-1]} throughput={mix['throughput']:.1f} "
                     f"sizes={mix['sizes']} executions={mix['executions']}")
        lines.append(f"RESULT ratio-mix{kind} serve_concurrency={concurrency[-1]}/direct_mix "
                     f"{served['throughput'] / mix['throughput']:.3f}")
        print(*lines[-2:], sep="\n", flush=True)
    return lines


def parse_levels(text: str) -> list[int]:
    """--concurrency's client counts (1,8,64), each >= 1: an OptionError naming the option otherwise."""
    from netdef.cli.options import parse_numbers

    levels = parse_numbers(text, "--concurrency", int, what="client counts such as 1,8,64")
    if min(levels) < 1:
        raise OptionError(f"--concurrency {text}: counts must be >= 1")
    return levels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine")
    p.add_argument("--concurrency", default="1,8,64", help="comma-separated client counts (default 1,8,64)")
    p.add_argument("--seconds", type=float, default=10.0, help="time per concurrency (default 10)")
    p.add_argument("--direct-batch", type=int, default=64, help="batch of the direct Engine run (default 64)")
    p.add_argument("--max-queue-delay-us", default="500", help="the server's batcher delay (default 500)")
    p.add_argument("--preferred-batch", help="the server's --preferred-batch (default: its own, opt)")
    p.add_argument("--devices", help="the server's devices such as 0,1 (default: the current one)")
    p.add_argument("--instances", help="the server's model instances per device (default: its own, 1)")
    p.add_argument("--cuda-graphs", action="store_true", help="the server's --cuda-graphs")
    p.add_argument("--allow-shared-device", action="store_true",
                   help="let --devices list a device twice (one model instance per entry, e.g. 0,0)")
    p.add_argument("--image", help="an image file: load-test the YOLO engine's NAME_detect model with it (one "
                                   "encoded image per request) against netdef detect's Detector at --direct-batch")
    p.add_argument("--shared-memory", choices=("none", "system"), default="none",
                   help="system: the clients put the raw model's inputs in system shared memory, as "
                        "perf_analyzer's --shared-memory system (client and server on one host): the server's "
                        "cost without the inputs' network transfer (default none: over gRPC)")
    a = p.parse_args(argv)

    def go() -> None:
        levels = parse_levels(a.concurrency)
        extra = ["--max-queue-delay-us", a.max_queue_delay_us] + (["--devices", a.devices] if a.devices else []) + \
            (["--allow-shared-device"] if a.allow_shared_device else []) + \
            (["--preferred-batch", a.preferred_batch] if a.preferred_batch else []) + \
            (["--instances", a.instances] if a.instances else []) + (["--cuda-graphs"] if a.cuda_graphs else [])
        image = None
        if a.image is not None:
            try:
                image = Path(a.image).read_bytes()
            except OSError as e:
                raise OptionError(f"--image {a.image}: {e.strerror}") from None
        run(a.engine, levels, a.seconds, extra, a.direct_batch, image, a.shared_memory == "system")

    return run_guarded(go, prog="bench_serve.py")


if __name__ == "__main__":
    sys.exit(main())
