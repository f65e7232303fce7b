"""The model `netdef serve` has Triton load: one `TritonPythonModel` per model instance, inside Triton's Python
backend stub.

`netdef serve` writes a model repository (`deploy.serve.write_repository`) whose `model.py` is `MODEL_PY`: it puts
the serving process's sys.path on the stub's (`NETDEF_STUB_SYSPATH`: the stub ignores PYTHONPATH) and takes the
class below. Each instance loads the engine on its own GPU (a KIND_GPU instance group per device: Triton gives the
instance its device) and runs the batches Triton's dynamic batcher forms in this process, with no proxy between
Triton and the engine. The requests' inputs are joined in pinned host memory (one copy of each item out of
Triton's shared memory), padded up to a batch a profile covers and sent to the GPU in one transfer per input
(`Batches`). What the model serves comes as one JSON model parameter, `netdef` (`Settings`).

`NETDEF_STUB_ENGINE=module:Class` replaces `netdef.runtime.Engine` (a stand-in with its `meta`, `profiles`,
`infer` and `host_buffer`: the tests serve without a GPU); the instances are then KIND_CPU.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NetdefError
from .serve import Binding, CallTimes, binding, chunks, run_batch

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
    """`fn` with the seconds of each call added to `times.engine_s` (the engine's run, or the Detector's)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times.engine_s += time.perf_counter() - t0

    return call


class Batches:
    """The engine (`infer`: numpy in and out) on the requests of one execution (inputs by name, each with its own
    batch axis): their items joined in pinned host buffers (`Engine.host_buffer`), padded there with copies of the
    last item up to a batch a profile covers, and run as `serve.run_batch` runs a batch; the outputs of all items
    in request order. The buffers are made for the largest batch and the items' shape (Triton joins only requests
    of one shape: an engine with a dynamic height and width gets new buffers when the shape changes)."""

    def __init__(self, engine: Any, infer: Callable[[dict[str, np.ndarray]], Mapping[str, Any]], spec: Binding):
        self.engine, self.infer, self.profiles = engine, infer, spec.profiles
        self.dtypes = {t.name: t.dtype for t in spec.inputs}
        self.buffers: dict[str, np.ndarray] = {}

    def _buffers(self, rows: int, items: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Pinned buffers of at least `rows` items of the shapes `items` (name -> one item's shape)."""
        have = self.buffers
        if not have or any(len(v) < rows or v.shape[1:] != items[k] for k, v in have.items()):
            top = max(rows, max(p[2] for p in self.profiles))
            self.buffers = {k: self.engine.host_buffer((top, *items[k]), dtype) for k, dtype in self.dtypes.items()}
        return self.buffers

    def __call__(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        n = sum(r.items for r in requests)
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
        outs = run_batch(self.infer, {k: v[:rows] for k, v in buffers.items()}, self.profiles)
        return {k: v[:n] for k, v in outs.items()}


def raw_model(engine: Any, spec: Binding, times: CallTimes) -> Callable[[list[Request]], list[Any]]:
    """The raw model's execution: requests (inputs as the binding serves them) -> per request its outputs. A
    batching engine's requests run together (`Batches`); a non-batching engine's each alone (a whole batch, padded
    up to the smallest the engine takes)."""
    infer = timed(lambda feeds: engine.infer(feeds, as_numpy=True), times)
    batches = Batches(engine, infer, spec)
    squeeze = {t.name for t in spec.outputs if t.squeeze}
    names = [t.name for t in spec.outputs]

    def served(outs: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: outs[k][start:stop, None] if k in squeeze else outs[k][start:stop] for k in names}

    def run(requests: list[Request]) -> list[Any]:
        if not spec.max_batch_size:
            return [served(run_batch(infer, r.inputs, spec.profiles), 0, r.items) for r in requests]
        outs = batches(requests)
        answers, at = [], 0
        for r in requests:
            answers.append(served(outs, at, at + r.items))
            at += r.items
        return answers

    return run


@dataclass
class Request:
    """One request as netdef's models take it: its inputs by name (numpy) and its parameters."""

    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.inputs[name]

    @property
    def items(self) -> int:
        """The request's batch: the length of its inputs' first axis."""
        return len(next(iter(self.inputs.values())))


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
        return spec, raw_model(engine, spec, times)
    from .serve_detect import DetectSettings, detect_binding, detect_function, engine_detectors

    base = DetectSettings(**settings.detect)
    detectors = engine_detectors(engine, base, settings.names, names_from=settings.names_from)
    return detect_binding(spec, base.rows), detect_function(lambda s: timed(detectors(s), times), base)


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

    def _request(self, r: Any) -> Request:
        inputs = {}
        for name in self.inputs:
            x = self.pb.get_input_tensor_by_name(r, name).as_numpy()
            inputs[name] = x.reshape(len(x)) if name in self.squeezed else x
        params = r.parameters() if hasattr(r, "parameters") else ""
        return Request(inputs, json.loads(params) if params else {})

    def execute(self, requests: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        try:
            got = [self._request(r) for r in requests]
            self.times.items += sum(g.items for g in got)
            try:
                answers = self.run(got)
            except NetdefError as e:
                answers = [e] * len(requests)
            return [self._response(a) for a in answers]
        finally:
            self.times.executions += 1
            self.times.callable_s += time.perf_counter() - t0

    def _response(self, answer: Any) -> Any:
        if isinstance(answer, NetdefError):
            return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(str(answer)))
        return self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(k, np.ascontiguousarray(v))
                                                         for k, v in answer.items()])

    def finalize(self) -> None:
        """Write this instance's timing line (`serve` logs it when Triton has stopped)."""
        out = Path(self.settings.timing_dir) / f"{self.spec.name}.{self.instance}.timing"
        out.write_text(self.times.line(self.spec.name, self.instance) + "\n")
