"""The model `netdef serve` has Triton load: one `TritonPythonModel` per model instance, inside Triton's Python
backend stub.

`netdef serve` writes a model repository (`deploy.serve.write_repository`) whose `model.py` is `MODEL_PY`: it puts
the serving process's sys.path on the stub's (`NETDEF_STUB_SYSPATH`: the stub ignores PYTHONPATH) and takes the
class below. Each instance loads the engine on its own GPU (a KIND_GPU instance group per device: Triton gives the
instance its device) and runs the batches Triton's dynamic batcher forms in this process, with no proxy between
Triton and the engine. The requests' inputs are joined in pinned host memory (one copy of each item out of
Triton's shared memory), padded up to a batch a profile covers and sent to the GPU in one transfer per input
(`Batches`). The raw model does not wait for the GPU: `execute` hands the batch to the engine (`Engine.submit`)
and returns, and a thread of the instance answers the requests when the outputs are back, so that the next batch
is read and joined while the GPU runs this one (`RawModel`, `--in-flight` batches at most). What the model serves
comes as one JSON model parameter, `netdef` (`Settings`).

`NETDEF_STUB_ENGINE=module:Class` replaces `netdef.runtime.Engine` (a stand-in with its `meta`, `profiles`,
`infer`, `submit` and `host_buffer`: the tests serve without a GPU); the instances are then KIND_CPU.
"""
from __future__ import annotations

import importlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NetdefError
from .serve import Binding, CallTimes, binding, chunks, submit_batch

SYSPATH_ENV = "NETDEF_STUB_SYSPATH"
ENGINE_ENV = "NETDEF_STUB_ENGINE"
PARAMETER = "netdef"
MODEL_PY = f'''"""netdef serve's model: netdef.deploy.stub_model, found through the serving process's sys.path."""
import os
import sys

sys.path[:0] = [p for p in os.environ["{SYSPATH_ENV}"].split(os.pathsep) if p and p not in sys.path]

from netdef.deploy.stub_model import TritonPythonModel  # noqa: E402,F401
'''


@dataclass(frozen=True)
class Settings:
    """What one served model is: the engine, its role ('raw': the engine's tensors; 'detect': images ->
    detections) and the arguments `serve` took for it; `timing_dir` is where each instance writes its timing line
    when it stops."""

    engine: str
    role: str
    timing_dir: str
    name: str | None = None
    max_batch: int | None = None
    max_queue_delay_us: int | None = None
    preferred_batch: list[int] | None = None
    detect: dict[str, Any] = field(default_factory=dict)  # DetectSettings' fields
    names: list[str] | None = None
    names_from: str | None = None
    cuda_graphs: bool = False
    in_flight: int = 2  # the raw model's executions handed to the engine and not yet answered, at most

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> "Settings":
        """The settings in a model configuration Triton hands the stub (JSON: parameters as string_value)."""
        return cls(**json.loads(config["parameters"][PARAMETER]["string_value"]))

    def binding(self, meta: dict[str, Any]) -> Binding:
        """The raw model's binding (`serve.binding`), as the serving process made it."""
        return binding(meta, name=self.name, max_batch=self.max_batch, max_queue_delay_us=self.max_queue_delay_us,
                       preferred_batch=self.preferred_batch)


def engine_class() -> Any:
    """`netdef.runtime.Engine`, or the class `NETDEF_STUB_ENGINE` (module:Class) names."""
    target = os.environ.get(ENGINE_ENV)
    if not target:
        from ..runtime import Engine

        return Engine
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise NetdefError(f"{ENGINE_ENV}={target}: cannot import it ({e}); expected module:Class") from None


def timed(fn: Callable[..., Any], times: CallTimes) -> Callable[..., Any]:
    """`fn` with the seconds of each call added to `times.engine_s` (the detect model's Detector)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times.engine_s += time.perf_counter() - t0

    return call


class Batches:
    """The requests of one execution (inputs by name, each with its own batch axis) handed to the engine
    (`submit`: `Engine.submit`) as one batch: their items joined in pinned host buffers (`Engine.host_buffer`),
    padded there with copies of the last item up to a batch a profile covers, and submitted as `serve.submit_batch`
    submits a batch; returns the function that waits for the outputs of all items, in request order. The buffers
    are made for the largest batch and the items' shape (Triton joins only requests of one shape: an engine with a
    dynamic height and width gets new buffers when the shape changes); they hold the batch until its outputs are
    back."""

    def __init__(self, engine: Any, spec: Binding):
        self.engine, self.profiles = engine, spec.profiles
        self.dtypes = {t.name: t.dtype for t in spec.inputs}
        self.buffers: dict[str, np.ndarray] = {}

    def _buffers(self, rows: int, items: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Pinned buffers of at least `rows` items of the shapes `items` (name -> one item's shape)."""
        have = self.buffers
        if not have or any(len(v) < rows or v.shape[1:] != items[k] for k, v in have.items()):
            top = max(rows, max(p[2] for p in self.profiles))
            self.buffers = {k: self.engine.host_buffer((top, *items[k]), dtype) for k, dtype in self.dtypes.items()}
        return self.buffers

    def submit(self, requests: Sequence[Mapping[str, np.ndarray]]) -> Callable[[], dict[str, np.ndarray]]:
        n = sum(len(r[next(iter(self.dtypes))]) for r in requests)
        plan = chunks(n, self.profiles)
        rows = plan[-1][0] + plan[-1][2]  # the items and the last chunk's padding
        buffers = self._buffers(rows, {k: np.shape(requests[0][k])[1:] for k in self.dtypes})
        for name, buf in buffers.items():
            at = 0
            for r in requests:
                x = np.asarray(r[name])
                buf[at:at + len(x)] = x
                at += len(x)
            buf[n:rows] = buf[n - 1]
        joined = submit_batch(self.engine.submit, {k: v[:rows] for k, v in buffers.items()}, self.profiles)
        return lambda: {k: v[:n] for k, v in joined().items()}


class RawModel:
    """The raw model: requests (inputs as the binding serves them) -> per request its outputs. `submit(requests)`
    hands them to the engine and returns the function that waits for their answers, so that the next execution's
    inputs are joined while the GPU runs this one; at most `in_flight` executions are handed on (each in its own
    host buffers) and `submit` waits for one to be answered before it takes another. A batching engine's requests
    run together (`Batches`); a non-batching engine's each alone (a whole batch, padded up to the smallest the
    engine takes). Calling the model submits and waits. `times.engine_s` adds up each execution's time from its
    submission to its outputs back."""

    def __init__(self, engine: Any, spec: Binding, times: CallTimes, in_flight: int = 1):
        self.engine, self.spec, self.times = engine, spec, times
        self.free: queue.Queue[Batches] = queue.Queue()
        for _ in range(in_flight):
            self.free.put(Batches(engine, spec))
        self.squeeze = {t.name for t in spec.outputs if t.squeeze}
        self.names = [t.name for t in spec.outputs]

    def _served(self, outs: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: outs[k][start:stop, None] if k in self.squeeze else outs[k][start:stop] for k in self.names}

    def submit(self, requests: list[Request]) -> Callable[[], list[dict[str, np.ndarray]]]:
        t0 = time.perf_counter()
        batches = self.free.get()
        try:
            if self.spec.max_batch_size:
                whole = [batches.submit([r.inputs for r in requests])]
            else:
                whole = [submit_batch(self.engine.submit, r.inputs, self.spec.profiles) for r in requests]
        except BaseException:
            self.free.put(batches)
            raise

        def answers() -> list[dict[str, np.ndarray]]:
            try:
                outs = [joined() for joined in whole]
            finally:
                self.free.put(batches)
                self.times.engine_s += time.perf_counter() - t0
            if not self.spec.max_batch_size:
                return [self._served(o, 0, len(next(iter(o.values())))) for o in outs]
            got, at = [], 0
            for r in requests:
                k = len(next(iter(r.inputs.values())))
                got.append(self._served(outs[0], at, at + k))
                at += k
            return got

        return answers

    def __call__(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        return self.submit(requests)()


@dataclass
class Request:
    """One request as netdef's models take it: its inputs by name (numpy) and its parameters."""

    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.inputs[name]


def served_model(settings: Settings, device: int | None, times: CallTimes) -> tuple[Binding, Callable[..., Any]]:
    """The binding and execution function of the model `settings` describe, its engine loaded on `device` (the raw
    model with `settings.cuda_graphs`: replaying a CUDA graph per batch size, `Engine(cuda_graph=True)`, one kept
    for each batch the engine takes)."""
    graphs = settings.cuda_graphs and settings.role == "raw"
    engine = engine_class()(settings.engine, device=device, **({"cuda_graph": True} if graphs else {}))
    if graphs:
        engine.graph_cache = max(p[2] for p in engine.profiles)  # the batcher forms any size up to the largest
    spec = settings.binding(engine.meta)
    if settings.role == "raw":
        return spec, RawModel(engine, spec, times, settings.in_flight)
    from .serve_detect import DetectSettings, detect_binding, detect_function, engine_detectors

    base = DetectSettings(**settings.detect)
    detectors = engine_detectors(engine, base, settings.names, names_from=settings.names_from)
    return detect_binding(spec, base.max_det), detect_function(lambda s: timed(detectors(s), times), base)


class TritonPythonModel:
    """The Python backend's model class (Triton calls initialize, execute per batch, finalize)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb

        self.pb = pb
        config = json.loads(args["model_config"])
        self.settings = Settings.of_config(config)
        device = int(args["model_instance_device_id"]) if args.get("model_instance_kind") == "GPU" else None
        self.instance = args.get("model_instance_name", "0")
        self.times = CallTimes()
        self.spec, self.run = served_model(self.settings, device, self.times)
        self.inputs = [t.name for t in self.spec.inputs]
        self.squeezed = {t.name for t in self.spec.inputs if t.squeeze}
        # the raw model answers from a thread of its own (`_answer`), so that execute returns while the GPU runs
        self.answering: queue.Queue[tuple[Callable[[], list[Any]], list[Any]] | None] | None = None
        if isinstance(self.run, RawModel):
            self.answering = queue.Queue()
            self.answerer = threading.Thread(target=self._answer, name="netdef-answers", daemon=True)
            self.answerer.start()

    def _request(self, r: Any) -> Request:
        inputs = {}
        for name in self.inputs:
            x = self.pb.get_input_tensor_by_name(r, name).as_numpy()
            inputs[name] = x.reshape(len(x)) if name in self.squeezed else x
        params = r.parameters() if hasattr(r, "parameters") else ""
        return Request(inputs, json.loads(params) if params else {})

    def execute(self, requests: list[Any]) -> list[Any] | None:
        """The responses to `requests`; None where the raw model's answering thread sends them (through each
        request's response sender, as Triton lets a model that is not decoupled do once per request)."""
        t0 = time.perf_counter()
        try:
            got = [self._request(r) for r in requests]
            self.times.items += sum(len(next(iter(g.inputs.values()))) for g in got)
            try:
                if self.answering is not None:
                    wait = self.run.submit(got)
                    self.answering.put((wait, [r.get_response_sender() for r in requests]))
                    return None
                answers = self.run(got)
            except NetdefError as e:
                answers = [e] * len(requests)
            return [self._response(a) for a in answers]
        finally:
            self.times.executions += 1
            self.times.callable_s += time.perf_counter() - t0

    def _answer(self) -> None:
        """The raw model's answering thread: each execution's responses, sent when its outputs are back; a run
        that failed answers each of its requests with the error (this thread goes on to the next)."""
        assert self.answering is not None
        while (job := self.answering.get()) is not None:
            wait, senders = job
            try:
                answers: list[Any] = wait()
            except NetdefError as e:
                answers = [e] * len(senders)
            except Exception as e:  # noqa: BLE001 (any other failure: these requests', not the server's)
                answers = [NetdefError(f"{type(e).__name__}: {e}")] * len(senders)
            for sender, answer in zip(senders, answers):
                try:
                    sender.send(self._response(answer), flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                except Exception as e:  # noqa: BLE001 (a request Triton no longer holds: its client has gone)
                    print(f"netdef: instance {self.instance} could not answer a request: {e}", file=sys.stderr)

    def _response(self, answer: Any) -> Any:
        if isinstance(answer, NetdefError):
            return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(str(answer)))
        return self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(k, np.ascontiguousarray(v))
                                                         for k, v in answer.items()])

    def finalize(self) -> None:
        """Answer what is in flight, then write this instance's timing line (`serve` logs it when Triton has
        stopped)."""
        if self.answering is not None:
            self.answering.put(None)
            self.answerer.join()
        out = Path(self.settings.timing_dir) / f"{self.spec.name}.{self.instance}.timing"
        out.write_text(self.times.line(self.spec.name, self.instance) + "\n")
