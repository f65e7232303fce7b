"""Serve an engine through Triton Inference Server (`netdef serve`), the server PyTriton bundles.

PyTriton (`pip install nvidia-pytriton`, or `netdef[serve]`) ships Triton with its Python backend: HTTP and gRPC,
the dynamic batcher, health (`/v2/health/ready`) and Prometheus metrics (`/metrics`). `serve` writes a model
repository (`write_repository`) and starts that Triton on it: each model instance is a Python backend stub that
runs `netdef.runtime.Engine` itself (`deploy.stub_model`), one instance per selected GPU, so a batch goes from
Triton to the engine with no process in between (PyTriton's own model binding, which `serve` used before, moves
every tensor to the binding process and back: docs/benchmarks.md compares the two).

`binding(meta, ...)` derives what is served from the engine's metadata, through the model configuration
`netdef triton` writes (`deploy.triton.model_config`): name, inputs and outputs (without the batch axis for a
batching engine), `max_batch_size` (0: a non-batching engine, whose smallest batch is above 1, takes whole
batches) and the batcher's preferred sizes (the profiles' OPT batches). `run_batch` runs a batch of any size:
split into chunks of at most the engine's largest batch, a chunk no profile covers (below the smallest batch of a
non-batching engine) padded up to the nearest batch one covers. These are pure functions: importable and testable
without pytriton or a GPU; so are `write_repository` and `stub_config`.

YOLO detection, segmentation and pose engines are served twice: as raw tensors (`NAME`) and as images ->
detections (`NAME_detect`, netdef detect's GPU pre- and post-processing: `deploy.serve_detect`).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import os
import re
import secrets
import socket
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import engine_file, trt_api
from ..errors import NetdefError, OptionError
from .triton import DATA_TYPES, Enum, TritonOptions, config_text, model_config

if TYPE_CHECKING:
    from .serve_detect import DetectSettings

INSTALL = "pip install nvidia-pytriton (or pip install 'netdef[serve]')"
SERVING = "Ctrl-C stops"  # the end of the line `serve` logs once it serves (clients may stop it from then on)
# Triton endpoints PyTriton (0.7 on) restricts to a token (DEFAULT_PROTECTED_ENDPOINTS); `serve` makes its own
PROTECTED_ENDPOINTS = ("shared-memory", "model-repository", "statistics", "trace", "logging")
# on Ctrl-C Triton gives open connections and requests this long, then unloads the models (their timing lines),
# within the 30 s PyTriton waits before it kills the server (Triton's own default, 30 s, left no time to unload)
EXIT_TIMEOUT_S = 10
ACCESS_HEADER = "triton-access-token"  # the header of PyTriton's token (its TRITON_ACCESS_HEADER)


@dataclass(frozen=True)
class TensorSpec:
    """One bound input or output: its name, numpy dtype name and shape (without the batch axis when batching)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    squeeze: bool = False  # an engine tensor (B,) served as (B, 1): Triton needs a dimension after the batch


@dataclass(frozen=True)
class Binding:
    """What `serve` serves of one engine: the model's name, tensors and batching (`binding`)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # 0: no batching (clients send whole batches, batch axis in the shapes)
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    profiles: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class Ports:
    """The server's ports: HTTP, gRPC and metrics."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def validate(self) -> None:
        named = {"--port": self.http, "--grpc-port": self.grpc, "--metrics-port": self.metrics}
        for option, port in named.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise OptionError(f"{option} {port}: a port is a number 1..65535")
        if len(set(named.values())) != len(named):
            raise OptionError("--port, --grpc-port and --metrics-port must differ, got "
                              + ", ".join(f"{o} {p}" for o, p in named.items()))

    def check_free(self) -> None:
        """An OptionError naming the first port another program listens on."""
        for option, port in {"--port": self.http, "--grpc-port": self.grpc, "--metrics-port": self.metrics}.items():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
                try:
                    s.bind(("", port))
                except OSError as e:
                    raise OptionError(f"{option} {port}: the port is in use ({e.strerror}): choose another") from None

    def endpoints(self, host: str, model: str) -> list[tuple[str, str]]:
        """(what, URL) of each endpoint the server offers for `model`."""
        http = f"http://{host}:{self.http}"
        return [("HTTP", f"{http}/v2/models/{model}/infer"), ("gRPC", f"{host}:{self.grpc}"),
                ("health", f"{http}/v2/health/ready"), ("metrics", f"http://{host}:{self.metrics}/metrics")]


def binding(meta: dict[str, Any], *, name: str | None = None, max_batch: int | None = None,
            max_queue_delay_us: int | None = None, preferred_batch: Sequence[int] | None = None) -> Binding:
    """What `serve` serves of an engine with metadata `meta` (see the module docstring). `max_batch` caps the
    batcher's batches (1..the engine's largest batch; a batching engine only); `max_queue_delay_us` is how long
    the batcher holds a request to form a batch (default 0); `preferred_batch` the batch sizes the batcher
    prefers (None: the profiles' OPT batches, as `netdef triton` writes them; (): none, the largest batch it can
    form)."""
    if max_queue_delay_us is not None and max_queue_delay_us < 0:
        raise OptionError(f"--max-queue-delay-us {max_queue_delay_us}: must be >= 0")
    config = model_config(meta, TritonOptions(name=name, max_queue_delay_us=max_queue_delay_us))
    profiles = tuple(engine_file.profiles(meta))
    hi = config["max_batch_size"]
    if max_batch is not None:
        if not hi:
            lo, top = min(p[0] for p in profiles), max(p[2] for p in profiles)
            raise OptionError(f"--max-batch {max_batch}: the engine's smallest batch is {lo}, so it is served without "
                              f"batching (clients send whole batches of {lo}..{top}); rebuild with --batch 1:OPT:MAX")
        if not 1 <= max_batch <= hi:
            raise OptionError(f"--max-batch {max_batch}: must be within the engine's batches 1..{hi}")
        hi = max_batch
    batcher = config.get("dynamic_batching", {})
    preferred = tuple(b for b in batcher.get("preferred_batch_size", []) if b <= hi)
    if preferred_batch is not None:
        wrong = [b for b in preferred_batch if not 1 <= b <= hi]
        if wrong or (preferred_batch and not hi):
            raise OptionError(f"--preferred-batch {','.join(map(str, preferred_batch))}: sizes must be within the "
                              f"batches the server forms, 1..{hi}" if hi else
                              "--preferred-batch: the engine is served without batching (its smallest batch is "
                              "above 1)")
        preferred = tuple(sorted(set(preferred_batch)))
    return Binding(name=config["name"], inputs=tuple(_spec(t) for t in config["input"]),
                   outputs=tuple(_spec(t) for t in config["output"]), max_batch_size=hi,
                   preferred_batch_sizes=preferred,
                   max_queue_delay_us=int(batcher.get("max_queue_delay_microseconds", 0)), profiles=profiles)


def _spec(tensor: dict[str, Any]) -> TensorSpec:
    dtype = next(k for k, v in DATA_TYPES.items() if v == str(tensor["data_type"]))
    return TensorSpec(tensor["name"], dtype, tuple(tensor["dims"]), squeeze="reshape" in tensor)


def chunks(n: int, profiles: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """How `run_batch` runs `n` items: (start, stop, run batch) per engine run, items [start, stop) padded up to
    `run batch` (the smallest batch >= stop - start that a profile covers). Chunks hold at most the largest
    batch."""
    if n < 1:
        raise OptionError(f"batch {n}: expected at least one item")
    top = max(p[2] for p in profiles)
    out = []
    for start in range(0, n, top):
        size = min(top, n - start)
        run = min((max(size, lo) for lo, _, hi in profiles if max(size, lo) <= hi))
        out.append((start, start + size, run))
    return out


def run_batch(infer: Callable[[dict[str, np.ndarray]], Mapping[str, Any]], feeds: Mapping[str, np.ndarray],
              profiles: Sequence[tuple[int, int, int]]) -> dict[str, np.ndarray]:
    """Outputs of `infer` (an `Engine.infer` with numpy in and out) on `feeds`, whose batch any size: run in the
    chunks `chunks` gives, each padded with copies of its last item where needed, outputs cut back and joined."""
    sizes = {int(np.shape(v)[0]) if np.ndim(v) else -1 for v in feeds.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise OptionError(f"inputs {sorted(feeds)} need one common batch axis, got shapes "
                          f"{[tuple(np.shape(v)) for v in feeds.values()]}")
    parts: dict[str, list[np.ndarray]] = {}
    for start, stop, run in chunks(sizes.pop(), profiles):
        chunk = {k: _pad(np.ascontiguousarray(v[start:stop]), run) for k, v in feeds.items()}
        for k, v in infer(chunk).items():
            parts.setdefault(k, []).append(np.asarray(v)[:stop - start])
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}


def _pad(x: np.ndarray, run: int) -> np.ndarray:
    if len(x) == run:
        return x
    return np.concatenate([x, np.repeat(x[-1:], run - len(x), axis=0)])


@dataclass
class CallTimes:
    """Where one model instance's time goes (Triton's `compute_infer` per execution is measured around it, in the
    server): its executions and items, the seconds in the model's `execute` (the requests' inputs read, the engine
    run, the responses made) and running the engine within it: `Engine.infer` (the raw model), netdef detect's
    Detector with its pre- and post-processing (`NAME_detect`)."""
    executions: int = 0
    items: int = 0
    callable_s: float = 0.0
    engine_s: float = 0.0

    def line(self, model: str, instance: str) -> str:
        """The line `serve` logs for an instance when it stops, TIMING_FORMAT filled in (`parse_timing_line` reads
        it back: `scripts/bench_serve.py`)."""
        n = max(self.executions, 1)
        return TIMING_FORMAT.format(model=repr(model), instance=repr(instance), executions=self.executions,
                                    items=self.items, callable_ms=1000 * self.callable_s / n,
                                    engine_ms=1000 * self.engine_s / n)


# the line `CallTimes.line` writes, its one definition: TIMING_LINE, which reads it back, is made from it
TIMING_FORMAT = ("timing   model {model} instance {instance}: {executions} executions of {items} items; "
                 "per execution {callable_ms:.3f} ms in netdef's execute, {engine_ms:.3f} ms of it running the engine")
_STR_REPR = r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""  # repr() of a str: a name with quotes, spaces
_TIMING_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {  # field -> (its regular expression, its reader)
    "model": (_STR_REPR, ast.literal_eval), "instance": (_STR_REPR, ast.literal_eval), "executions": (r"\d+", int),
    "items": (r"\d+", int), "callable_ms": (r"\d+\.\d+", float), "engine_ms": (r"\d+\.\d+", float)}
TIMING_LINE = re.compile("".join(re.escape(text) + (f"(?P<{field}>{_TIMING_FIELDS[field][0]})" if field else "")
                                 for text, field, _, _ in string.Formatter().parse(TIMING_FORMAT)))


def parse_timing_line(line: str) -> dict[str, Any] | None:
    """The fields of a line `CallTimes.line` wrote (model, instance: str; executions, items: int; callable_ms,
    engine_ms: float, per execution), None for another line."""
    m = TIMING_LINE.match(line)
    try:
        return None if m is None else {k: _TIMING_FIELDS[k][1](v) for k, v in m.groupdict().items()}
    except (SyntaxError, ValueError):  # a quoted name with an escape repr() never writes ('\\x'): not such a line
        return None


def import_pytriton() -> Any:
    """The `pytriton` package; a NetdefError saying how to install it where it is missing."""
    try:
        import pytriton.decorators  # noqa: F401
        import pytriton.model_config  # noqa: F401
        import pytriton.triton  # noqa: F401
    except ImportError as e:
        gpu = "" if trt_api.can_run_engines() else (
            f"; it also runs the engine on a CUDA GPU with full TensorRT, which this machine lacks (this is "
            f"{trt_api.here()}): serve on a GPU machine")
        raise NetdefError(f"netdef serve needs PyTriton, which bundles Triton Inference Server ({e}): "
                          f"{INSTALL}{gpu}") from None
    import pytriton

    return pytriton


def check_pytriton_install() -> None:
    """NetdefErrors, before any GPU work, for PyTriton installs whose server starts and then fails without saying
    why: libraries it cannot find (`_check_server_libraries`) and a numpy outside the range PyTriton declares."""
    _check_server_libraries()
    from importlib import metadata

    try:
        requires, version = metadata.requires("nvidia-pytriton") or [], metadata.version("nvidia-pytriton")
    except metadata.PackageNotFoundError:  # PyTriton not installed as a distribution: it declares nothing to check
        return
    wanted = numpy_outside(requires, np.__version__)
    if wanted:
        raise NetdefError(f"PyTriton {version} declares numpy{wanted} and this Python has numpy {np.__version__} "
                          f"({os.path.dirname(np.__file__)}): with it, Triton loads the models and then answers "
                          "each request with empty outputs (and the images -> detections model's Python stub "
                          "fails). Serve from an environment with a numpy PyTriton supports: "
                          f"pip install 'numpy{wanted}'")


def numpy_outside(requires: Sequence[str], numpy_version: str) -> str | None:
    """The numpy specifier among a distribution's `requires` (importlib.metadata's strings) that `numpy_version`
    falls outside, None where it fits (or none applies to this Python)."""
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:
        raise NetdefError("netdef serve checks PyTriton's requirements with 'packaging': pip install packaging "
                          "(or pip install 'netdef[serve]')") from None
    for line in requires:
        req = Requirement(line)
        applies = req.marker is None or req.marker.evaluate({"extra": ""})
        if canonicalize_name(req.name) == "numpy" and applies and \
                not req.specifier.contains(numpy_version, prereleases=True):
            return str(req.specifier)
    return None


def _check_server_libraries() -> None:
    """A NetdefError where PyTriton would start a Triton server that cannot load its libraries: PyTriton outside
    the interpreter's site-packages (pip --target, PYTHONPATH) counts as an editable install and looks for them in
    `pytriton/tritonserver/external_libs`; the server then fails to start and PyTriton times out after two
    minutes without saying why."""
    try:
        from pytriton.utils.distribution import get_libs_path
    except ImportError:  # another PyTriton layout: nothing to check
        return
    libs = get_libs_path()
    if not libs.is_dir():
        installed = libs.parent.parent.parent / "nvidia_pytriton.libs"  # pytriton/tritonserver/external_libs
        raise NetdefError(f"PyTriton looks for Triton's libraries in {libs}, which does not exist: PyTriton outside "
                          "this Python's site-packages (installed with pip --target or found through PYTHONPATH) "
                          "counts as an editable install. Install it into this Python's environment: "
                          f"{INSTALL}" + (f" (or link {libs} to {installed})" if installed.is_dir() else ""))


def serve(engine: str | os.PathLike, *, port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
          max_batch: int | None = None, max_queue_delay_us: int | None = None,
          preferred_batch: Sequence[int] | None = None, devices: Sequence[int] = (), instances: int = 1,
          cuda_graphs: bool = False, name: str | None = None, detect: bool | None = None,
          detect_settings: DetectSettings | None = None,
          names: Sequence[str] | None = None, names_from: str | os.PathLike | None = None,
          open_endpoints: Sequence[str] = (), log: Callable[[str], None] = print) -> None:
    """Serve `engine` (a netdef engine, or a raw plan) through Triton until Ctrl-C or the server stops: `instances`
    model instances per device in `devices` (default: the current device; a device listed twice gets twice as
    many), each running the engine inside Triton's Python stub (`deploy.stub_model`; `cuda_graphs`: replaying a CUDA
    graph per batch size). `detect`: also serve `NAME_detect`
    (`deploy.serve_detect`) with `detect_settings` (a `DetectSettings`) and class `names` (read from the file
    `names_from`; default: those the engine header records); None: where the engine is a YOLO detector, False:
    never, True: always (an error for other engines, as are settings or names for a model not served).
    `open_endpoints`: those of `PROTECTED_ENDPOINTS` served without the access token (statistics for a load test's
    queue and compute times). Options and the PyTriton install are checked before any GPU work (a raw plan
    without a sidecar is then loaded once for its metadata)."""
    from . import stub_model
    from .serve_detect import DetectSettings, detect_binding, engine_detectors

    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise OptionError(f"--instances {instances}: must be >= 1")
    ports = Ports(port, grpc_port, metrics_port)
    ports.validate()
    ports.check_free()
    unknown = [e for e in open_endpoints if e not in PROTECTED_ENDPOINTS]
    if unknown:
        raise OptionError(f"--open-endpoints {','.join(open_endpoints)}: {', '.join(unknown)} is not one of "
                          f"{', '.join(PROTECTED_ENDPOINTS)}")
    settings, configured = detect_settings or DetectSettings(), detect_settings is not None or bool(names)
    from ..runtime import Engine

    described = Engine.described(engine)  # None: a raw plan without a sidecar, whose metadata only TensorRT knows
    header = None if described is None else described.meta
    if header is None:
        pt = import_pytriton()
        check_pytriton_install()  # before the GPU work of loading the plan
    meta = header if header is not None else stub_model.engine_class()(engine).meta
    spec = binding(meta, name=name, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                   preferred_batch=preferred_batch)
    detecting = serves_detections(meta, detect, configured)
    if detecting and header is not None:  # the settings and --names against the header (class count): no GPU
        try:
            detector = engine_detectors(described, settings, names, names_from=names_from)(settings)
        except NetdefError as e:
            raise NetdefError(f"{e} (for model '{detect_binding(spec, settings.rows).name}'; --no-detect serves "
                              "the raw tensors alone)") from None
        # the rows the outputs are padded to: what the detector keeps (a plugin engine built to keep more than
        # the default padding filled more rows than the outputs had)
        settings = dataclasses.replace(settings, max_det=detector.max_det)
    if header is not None:  # a sidecar-less plan had them checked before it was loaded
        pt = import_pytriton()
        check_pytriton_install()
    with tempfile.TemporaryDirectory(prefix="netdef_serve_") as work:
        repo, timing = Path(work, "models"), Path(work, "timing")
        models = write_repository(repo, timing, Path(engine).resolve(), meta, devices, instances,
                                  name=name, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                                  preferred_batch=preferred_batch, detect=detecting, detect_settings=settings,
                                  names=names, names_from=names_from, cuda_graphs=cuda_graphs)
        token = secrets.token_hex(16)
        config = pt.triton.TritonConfig(http_port=ports.http, grpc_port=ports.grpc, metrics_port=ports.metrics,
                                        model_repository=repo, exit_on_error=False, strict_readiness=False,
                                        exit_timeout_secs=EXIT_TIMEOUT_S)
        served = False
        try:
            with _stub_environment(), \
                    pt.triton.Triton(config=config, **security_arguments(pt, open_endpoints, token)) as triton:
                _start(triton)
                wait_ready(ports.http, models, token)
                served = True
                _log_endpoints(log, ports, models, settings.rows)
                log(f"serving {engine} as model(s) {', '.join(repr(m) for m in models)}, "
                    f"{max(len(devices), 1) * instances} instance(s) each (device "
                    f"{', '.join(map(str, devices)) or 'current'}, {instances} per entry); {SERVING}")
                triton.serve()
        finally:  # the instances' timing lines, written as Triton unloaded them (also after a SIGTERM)
            for f in sorted(timing.glob("*.timing")) if served else ():
                log(f.read_text().strip())


@contextlib.contextmanager
def _stub_environment() -> Iterator[None]:
    """This process's environment, inherited by Triton and its Python stubs, with the stubs' sys.path
    (`stub_model.SYSPATH_ENV`) and LD_LIBRARY_PATH (`stub_library_path`) set; restored after."""
    from .stub_model import SYSPATH_ENV

    saved = {k: os.environ.get(k) for k in (SYSPATH_ENV, "LD_LIBRARY_PATH")}
    os.environ[SYSPATH_ENV] = os.pathsep.join(p for p in sys.path if p)
    library_path = stub_library_path(os.environ)
    if library_path is not None:
        os.environ["LD_LIBRARY_PATH"] = library_path
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start(triton: Any) -> None:
    """Start PyTriton's Triton; its failure to start as a NetdefError. Triton loads the models before it answers,
    and PyTriton waits for an answer for a limited time (120 s in 0.7): a slow load ends here too."""
    try:
        triton.run()
    except Exception as e:  # PyTriton's errors: the server did not start, or not in PyTriton's time
        raise NetdefError(f"Triton did not start: {_cause(e)} (it loads the engine in every model instance before "
                          "it answers; Triton's log above says how far it got)") from e


def _log_endpoints(log: Callable[[str], None], ports: Ports, models: Sequence[str], max_det: int) -> None:
    """The endpoints of the raw model (`models[0]`) and the HTTP endpoint of each other model."""
    for what, url in ports.endpoints("localhost", models[0]):
        log(f"{what:8} {url}")
    for model in models[1:]:
        log(f"{'HTTP':8} {ports.endpoints('localhost', model)[0][1]}")
        log(f"model '{model}': input 'image' (BYTES: one encoded image per item) -> num_dets, boxes, scores, "
            f"classes (padded to {max_det}), detections (JSON); request parameters conf, iou, max_det")


def write_repository(repo: Path, timing: Path, engine: Path, meta: dict[str, Any], devices: Sequence[int],
                     instances: int = 1, *, detect: bool = False, detect_settings: DetectSettings | None = None,
                     **raw: Any) -> list[str]:
    """Write the model repository `serve` has Triton load into `repo` (each model instance writes its timing line
    into the folder `timing` when it stops): the raw model (`raw`: name, max_batch,
    max_queue_delay_us as `binding` takes them) and, with `detect`, the images -> detections model (with
    `detect_settings`, and names / names_from in `raw`), each a `model.py` (`stub_model.MODEL_PY`) and a
    `config.pbtxt` (`stub_config`). Returns the models' names."""
    from .serve_detect import DetectSettings, detect_binding
    from .stub_model import ENGINE_ENV, MODEL_PY, Settings

    names, names_from = raw.pop("names", None), raw.pop("names_from", None)
    cuda_graphs = bool(raw.pop("cuda_graphs", False))
    spec = binding(meta, **raw)
    specs = [(spec, "raw")]
    base = detect_settings or DetectSettings()
    if detect:
        specs.append((detect_binding(spec, base.rows), "detect"))
    timing.mkdir(parents=True, exist_ok=True)
    kind = "KIND_CPU" if os.environ.get(ENGINE_ENV) else "KIND_GPU"  # a stand-in engine runs on the CPU
    for model, role in specs:
        settings = Settings(engine=str(engine), role=role, timing_dir=str(timing),
                            detect=dataclasses.asdict(base), names=list(names) if names else None,
                            names_from=None if names_from is None else str(Path(names_from).resolve()),
                            cuda_graphs=cuda_graphs, **raw)
        (repo / model.name / "1").mkdir(parents=True)
        (repo / model.name / "1" / "model.py").write_text(MODEL_PY)
        (repo / model.name / "config.pbtxt").write_text(config_text(stub_config(model, devices, kind, settings,
                                                                                instances)))
    return [m.name for m, _ in specs]


def stub_config(spec: Binding, devices: Sequence[int], kind: str, settings: Any, instances: int = 1
                ) -> dict[str, Any]:
    """The Triton model configuration of a model `serve` runs in the Python backend: `spec`'s tensors and batching,
    `instances` instances per entry of `devices` (KIND_GPU: a group per device with its count; () the current
    device; KIND_CPU: that many instances), `settings` (`stub_model.Settings`) as the model parameter 'netdef'."""
    from .stub_model import PARAMETER

    config: dict[str, Any] = {"name": spec.name, "backend": "python", "max_batch_size": spec.max_batch_size,
                              "input": [_stub_tensor(t) for t in spec.inputs],
                              "output": [_stub_tensor(t) for t in spec.outputs]}
    if spec.max_batch_size:
        batcher: dict[str, Any] = {"max_queue_delay_microseconds": spec.max_queue_delay_us}
        if spec.preferred_batch_sizes:
            batcher["preferred_batch_size"] = list(spec.preferred_batch_sizes)
        config["dynamic_batching"] = batcher
    if kind == "KIND_CPU":
        config["instance_group"] = [{"count": max(len(devices), 1) * instances, "kind": Enum("KIND_CPU")}]
    else:
        counts = Counter(devices or [trt_api.current_device()])
        config["instance_group"] = [{"count": n * instances, "kind": Enum("KIND_GPU"), "gpus": [d]}
                                    for d, n in counts.items()]
    config["parameters"] = [{"key": PARAMETER, "value": {"string_value": settings.to_json()}}]
    return config


def _stub_tensor(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "data_type": Enum("TYPE_STRING" if t.dtype == "bytes" else DATA_TYPES[t.dtype]),
            "dims": list(t.shape)}


def wait_ready(http_port: int, models: Sequence[str], token: str, timeout_s: float = 600) -> None:
    """Wait until Triton on `http_port` has loaded `models` (the raw model, then NAME_detect where served): a
    NetdefError with Triton's reason (the stub's exception) as soon as one fails, or after `timeout_s`."""
    import tritonclient.http as http

    client = http.InferenceServerClient(f"localhost:{http_port}")
    try:  # closed after: Triton waits for open connections when it stops
        _wait_loaded(client, models, {ACCESS_HEADER: token}, timeout_s)
    finally:
        client.close()


def _wait_loaded(client: Any, models: Sequence[str], headers: dict[str, str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        index = {m.get("name"): m for m in client.get_model_repository_index(headers=headers)}
        states = {m: str(index.get(m, {}).get("state", "")) for m in models}
        failed = [m for m, s in states.items() if s == "UNAVAILABLE"]
        if failed:
            reason = _cause(NetdefError(str(index[failed[0]].get("reason") or "")))
            hint = " (--no-detect serves the raw tensors alone)" if failed[0] in models[1:] else ""  # NAME_detect
            raise NetdefError(f"Triton could not load model '{failed[0]}': {reason}{hint}")
        if all(s == "READY" for s in states.values()):
            return
        if time.monotonic() > deadline:
            raise NetdefError(f"Triton had not loaded model(s) {states} after {timeout_s:.0f} s")
        time.sleep(0.2)


def stub_library_path(environ: Mapping[str, str], config: Callable[[str], Any] | None = None) -> str | None:
    """LD_LIBRARY_PATH with this interpreter's library directory added (after the entries there), so that
    Triton's Python stub, linked against libpythonX.Y.so.1.0, loads this Python's and not another X.Y's the loader
    finds first: a system 3.11.2 under a pyenv 3.11.7 fails in the 3.11.7 stdlib (pytriton issue 51,
    `_recursion_count`), a pyenv 3.12 with no system one is not found (the model load times out). None where
    nothing is to add: a Python without a shared library, one in a system directory (the loader's own; listed,
    it would come before the libraries Triton finds through its RUNPATH), or its directory listed already.
    `config`: `sysconfig.get_config_var`."""
    import sysconfig

    config = config or sysconfig.get_config_var
    libdir, soname = config("LIBDIR"), config("INSTSONAME")
    if not config("Py_ENABLE_SHARED") or not libdir or not soname or not os.path.isfile(os.path.join(libdir, soname)):
        return None
    system = {"/lib", "/usr/lib", "/lib64", "/usr/lib64", *(f"{d}/{config('MULTIARCH')}" for d in ("/lib", "/usr/lib")
                                                            if config("MULTIARCH"))}
    if os.path.realpath(libdir) in {os.path.realpath(d) for d in system}:
        return None
    current = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    return None if libdir in current else os.pathsep.join([*current, libdir])


def serves_detections(meta: dict[str, Any], detect: bool | None, configured: bool = False) -> bool:
    """Whether `serve` binds the images -> detections model: `detect` where given (True for an engine that is not
    a YOLO detector: an OptionError saying why), else whether the engine is one. `configured`: detection settings
    were given, an OptionError where the model is not served."""
    from .serve_detect import detector_error

    error = None if detect is False else detector_error(meta)
    if detect and error:
        raise OptionError(f"--detect: {error}")
    if configured and (detect is False or error):
        raise OptionError("--conf, --iou, --max-det and --names set the images -> detections model, which is not "
                          "served " + ("with --no-detect" if detect is False else f"for this engine: {error}"))
    return detect is not False and error is None


def security_arguments(pt: Any, open_endpoints: Sequence[str], token: str) -> dict[str, Any]:
    """PyTriton's `Triton` arguments that serve `open_endpoints` without a token and the others with `token`
    (`serve` reads the model repository's index with it); none where PyTriton restricts nothing (before 0.7)."""
    config = getattr(pt.triton, "TritonSecurityConfig", None)
    if config is None:
        return {}
    protected = getattr(pt.triton, "DEFAULT_PROTECTED_ENDPOINTS", PROTECTED_ENDPOINTS)
    return {"security_config": config(access_token=token,
                                      restricted_endpoints=[e for e in protected if e not in open_endpoints])}


def _cause(error: Exception) -> str:
    """The exception at the end of a model-load error (Triton's message ends with the Python stub's traceback)."""
    lines = [line.strip() for line in str(error).replace("\\n", "\n").splitlines() if line.strip(" ;")]
    raised = [m[1] for m in (re.search(r"(?:^|\s)([A-Za-z_.]*(?:Error|Exception)\b.*)", line) for line in lines) if m]
    last = (raised or lines or [type(error).__name__])[-1]
    if "_recursion_count" in last:  # pytriton issue 51: its bundled Python stub does not fit this Python's stdlib
        last += (" (PyTriton's Python backend stub does not match this Python's patch release, pytriton issue 51 "
                 "reports 3.11.7 failing where 3.11.5 works: serve from another Python)")
    elif last.startswith("ModuleNotFoundError"):
        last += (" (in Triton's Python backend stub, which imports PyTriton's dependencies from this Python's "
                 f"environment: install them there with {INSTALL}, not on PYTHONPATH alone)")
    return last
