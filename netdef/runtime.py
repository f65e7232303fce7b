"""Run netdef engines from Python: torch or numpy in, torch or numpy out, any batch inside the profile.

Device memory comes from torch when it is installed (backend "torch"), or from pycuda ("pycuda").
The torch backend can replay CUDA graphs (`cuda_graph=True`): one per optimization profile, captured again
when the batch size within that profile changes. Each profile has its own execution context (and its own
activation memory, made on first use). `Engine.prepare_step(batch)` binds device buffers once and returns a
`Step` that runs the engine again and again on them (what benchmarks and profiles time).
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import engine_file, trt_api
from .errors import NetdefError, OptionError, TensorRTError, TensorRTUnavailable


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    dtype: str  # numpy dtype name


class Engine:
    """A loaded engine. `engine(x)` or `engine.infer({name: x})` returns {output name: tensor}.

    `path` is a netdef engine file or a raw TensorRT plan (no netdef magic, e.g. from `netdef export-plan`): the
    sidecar `PATH.json` supplies its metadata and plugin libraries, else the deserialized plan its I/O and profiles."""

    def __init__(self, path: str | Path, *, backend: str = "auto", cuda_graph: bool = False):
        self.path = Path(path)
        from .deploy.plan import read_any_plan

        meta, plan = read_any_plan(self.path)
        info = trt_api.info()
        if meta is not None:
            engine_file.check_compatible(meta, self.path, info.version, info.flavor, trt_api.gpu_identity())
        if not trt_api.can_run_engines():
            raise TensorRTUnavailable(f"cannot run {self.path} here: running engines needs a CUDA GPU and full TensorRT "
                              f"(this is {trt_api.version_string()}, GPU: {trt_api.gpu_identity() or 'none'})")
        from .plugins import load_plugin_libraries

        load_plugin_libraries((meta or {}).get("plugins", []), self.path)  # before deserializing: the plan needs them
        self.backend = _make_backend(backend)
        self._runtime, self.engine = _deserialize(plan, self.path, raw=meta is None)
        if meta is None:  # a raw plan without a sidecar: what the deserialized engine says of itself
            from .deploy.plan import metadata_from_engine

            meta = metadata_from_engine(self.engine)
        self.meta = meta
        self.profiles = engine_file.profiles(meta)
        # One execution context per optimization profile, made on first use and set to its profile once: a
        # context never changes profile, so CUDA graphs captured on it stay valid. `context` is the one bound last.
        self._contexts: dict[int, Any] = {0: trt_api.create_context(self.engine, self.path)}
        self.context = self._contexts[0]
        io = trt_api.io_tensors(self.engine)
        self.inputs = [TensorInfo(n, s, d) for n, is_in, s, d in io if is_in]
        self.outputs = [TensorInfo(n, s, d) for n, is_in, s, d in io if not is_in]
        if cuda_graph and self.backend.name != "torch":
            raise OptionError(f"CUDA graphs need the torch backend (this is {self.backend.name}): install torch "
                              "or run without --cuda-graph")
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, tuple] = {}  # profile -> (input shapes, graph, inputs, outputs) of its graph
        # Calls from several threads take turns: one context per profile and its activation memory are shared,
        # so a run waits for the previous one (an event on its stream) even when the caller's stream differs.
        self._lock = threading.Lock()
        self._last: Any = None

    def refit(self, weights: Any, *, log: Any = None) -> int:
        """Replace the engine's weights in this process (an engine built with --refittable): `weights` is a .wts
        path or a mapping key -> array (e.g. a training checkpoint's state_dict), defined by the build's own
        code and checked like a build. TensorRT forbids using contexts made before a refit, so every execution
        context and CUDA graph is made anew. Returns the number of weights set; the file is not changed."""
        from .refit import refit_arrays

        arrays, _, _ = refit_arrays(self.meta, weights, log or (lambda msg: None))
        with self._lock:
            if self._last is not None:
                self._last.synchronize()  # runs still in flight use the old weights and contexts
            self._contexts.clear()  # contexts (and steps from prepare_step) made before a refit must not be used
            self._graphs.clear()
            self.context = None
            count = trt_api.refit_engine(self.engine, arrays)
            self._contexts[0] = self.context = trt_api.create_context(self.engine, self.path)
        return count

    @property
    def batch_range(self) -> tuple[int, int, int]:
        return tuple(self.meta["options"]["batch"])  # type: ignore[return-value]

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args and kwargs:
            raise OptionError("pass inputs either by position or by name, not both")
        if len(args) > len(self.inputs):
            raise OptionError(f"{self.path.name} takes {len(self.inputs)} input(s), got {len(args)}")
        feeds = kwargs or {t.name: a for t, a in zip(self.inputs, args)}
        return self.infer(feeds)

    def infer(self, feeds: Mapping[str, Any] | Any, *, as_numpy: bool | None = None) -> dict[str, Any]:
        """Run once. `as_numpy=None` returns numpy for numpy inputs and torch tensors for torch inputs."""
        if not isinstance(feeds, Mapping):
            feeds = {self.inputs[0].name: feeds}
        self._check_feeds(feeds)
        if as_numpy is None:
            as_numpy = all(isinstance(v, np.ndarray) for v in feeds.values())
        with self._lock:
            self.backend.wait(self._last)
            outs = self._graph_run(feeds) if self.cuda_graph else self.backend.run(self, feeds)
            self._last = self.backend.mark()
        return {k: self.backend.to_host(v) if as_numpy else self.backend.to_user(v) for k, v in outs.items()}

    def _check_feeds(self, feeds: Mapping[str, Any]) -> None:
        names = {t.name for t in self.inputs}
        if set(feeds) != names:
            raise OptionError(f"{self.path.name} inputs are {sorted(names)}, got {sorted(feeds)}")
        lo, _, hi = self.batch_range
        for t in self.inputs:
            shape = tuple(feeds[t.name].shape)
            fixed = [(a, b) for a, b in zip(shape[1:], t.shape[1:]) if b != -1]
            if len(shape) != len(t.shape) or any(a != b for a, b in fixed):
                raise OptionError(f"input '{t.name}' has shape {shape}; the engine expects {t.shape}")
            if not lo <= shape[0] <= hi:
                raise OptionError(f"input '{t.name}' batch {shape[0]} is outside the engine's profile "
                                  f"{lo}..{hi}; rebuild with --batch MIN:OPT:MAX")

    def profile_for(self, batch: int) -> int:
        """The optimization profile that runs `batch`: of those covering it, the one whose opt batch is nearest
        by ratio (kernels tuned for 16 suit 5 better than kernels tuned for 1)."""
        fits = [i for i, (lo, _, hi) in enumerate(self.profiles) if lo <= batch <= hi]
        if not fits:
            raise OptionError(f"batch {batch} is outside every profile of {self.path.name} ({self.profiles})")
        return min(fits, key=lambda i: abs(math.log(self.profiles[i][1] / batch)))

    def bind(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None = None, *,
             stream: int) -> dict[str, Any]:
        """Make the context of the profile for the inputs' batch current (creating it, and setting its profile
        on `stream`, the stream the next run uses, the first time), set shapes and device addresses of the
        device-resident inputs; allocates outputs when not given. Returns the outputs. A binding changes the
        context's state, so the profile's CUDA graph is dropped (captured again on its next use)."""
        return self._bind(inputs, outputs, stream)[1]

    def enqueue(self, inputs: Mapping[str, Any], *, stream: int) -> dict[str, Any]:
        """Bind device-resident `inputs` (see `bind`) and enqueue one run on `stream`; returns the outputs."""
        context, outs = self._bind(inputs, None, stream)
        trt_api.execute(context, stream)
        return outs

    def _bind(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None, stream: int
              ) -> tuple[Any, dict[str, Any]]:
        """`bind`, returning the execution context it bound as well as the outputs."""
        profile = self.profile_for(int(next(iter(inputs.values())).shape[0]))
        if profile not in self._contexts:
            context = trt_api.create_context(self.engine, self.path)
            trt_api.set_profile(context, profile, stream)
            self._contexts[profile] = context
        context = self.context = self._contexts[profile]
        self._graphs.pop(profile, None)
        for name, t in inputs.items():
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, self.backend.ptr(t))
        outs = dict(outputs or {})
        for o in self.outputs:
            if o.name not in outs:
                outs[o.name] = self.backend.empty(tuple(context.get_tensor_shape(o.name)), o.dtype)
            context.set_tensor_address(o.name, self.backend.ptr(outs[o.name]))
        return context, outs

    def prepare_step(self, batch: int, *, cuda_graph: bool = False, with_copies: bool = False) -> Step:
        """Bind random device inputs of `batch` (and outputs) once and return the `Step` that runs the engine
        on them: plain enqueues, or CUDA graph replays; `with_copies` adds the input copies from pinned host
        memory and the output copies back to it. Needs the torch backend and inputs whose only dynamic
        dimension is the batch. The step stays valid until this profile is bound again (another step or an
        `infer` at a batch of the same profile)."""
        if self.backend.name != "torch":
            raise NetdefError(f"{self.path}: stepping an engine needs the torch backend "
                              f"(this one uses {self.backend.name})")
        import torch

        inputs = {}
        for t in self.inputs:
            if any(d == -1 for d in t.shape[1:]):
                raise OptionError(f"{self.path}: input '{t.name}' has dynamic dimensions besides the batch "
                                  f"{t.shape}; timing and profiling run batch profiles only")
            x = self.backend.empty((batch, *t.shape[1:]), t.dtype)
            inputs[t.name] = x.normal_() if x.is_floating_point() else x.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())  # the inputs are written on the current stream
        handle = stream.cuda_stream
        context, outs = self._bind(inputs, None, handle)

        def run() -> None:
            trt_api.execute(context, handle)

        body: Callable[[], None] = run
        buffers: tuple[Any, ...] = (inputs, outs)
        if with_copies:
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
        graph = _first_run(torch, stream, body, capture=cuda_graph)
        if graph is not None:
            body, buffers = graph.replay, buffers + (graph,)
        return Step(body, stream, context, self.profile_for(batch), batch, buffers)

    def _graph_run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Replay the CUDA graph of the batch's profile; capture it when there is none for these shapes (a graph
        holds only for the context state it was captured with; `bind` drops it)."""
        import torch

        key = tuple((n, tuple(v.shape)) for n, v in sorted(feeds.items()))
        profile = self.profile_for(int(next(iter(feeds.values())).shape[0]))
        entry = self._graphs.get(profile)
        if entry is None or entry[0] != key:
            static_in = {t.name: self.backend.to_device(feeds[t.name], t.dtype).clone() for t in self.inputs}
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())  # the input copies and earlier runs come first
            context, outs = self._bind(static_in, None, stream.cuda_stream)
            graph = _first_run(torch, stream, lambda: trt_api.execute(context, stream.cuda_stream), capture=True)
            torch.cuda.current_stream().wait_stream(stream)
            self._graphs[profile] = entry = (key, graph, static_in, outs)
        _, graph, static_in, outs = entry
        self.context = self._contexts[profile]
        for t in self.inputs:
            static_in[t.name].copy_(self.backend.to_device(feeds[t.name], t.dtype))
        graph.replay()
        return {k: v.clone() for k, v in outs.items()}


class Step:
    """One engine run at a fixed batch on buffers bound once (`Engine.prepare_step`): `step()` enqueues it on
    `step.stream`. `context` is the execution context it runs (a profiler can be attached to it); the
    device and host buffers (and the CUDA graph) live as long as the step."""

    def __init__(self, run: Callable[[], None], stream: Any, context: Any, profile: int, batch: int,
                 buffers: tuple[Any, ...]):
        self._run, self.stream, self.context = run, stream, context
        self.profile, self.batch = profile, batch
        self._buffers = buffers

    def __call__(self) -> None:
        self._run()

    def synchronize(self) -> None:
        """Wait for the runs enqueued so far."""
        self.stream.synchronize()


def _deserialize(plan: bytes, path: Path, *, raw: bool) -> tuple[Any, Any]:
    """`trt_api.deserialize`; for a raw plan without a sidecar, the error says what may be wrong with it."""
    try:
        return trt_api.deserialize(plan)
    except TensorRTError as e:
        if not raw:
            raise
        raise TensorRTError(f"{path}: {e}; a raw plan without a sidecar {path}.json: is it a TensorRT plan, built by "
                            f"this {trt_api.version_string()} for this GPU, with no plugin layers? (export it with "
                            "`netdef export-plan` for a sidecar that says)") from None


def _first_run(torch: Any, stream: Any, body: Callable[[], None], *, capture: bool) -> Any:
    """Run `body` once on `stream` outside any capture (TensorRT sets up shape-dependent state there) and
    wait for it; then, with `capture`, capture it into a CUDA graph and return the graph (else None)."""
    with torch.cuda.stream(stream):
        body()
    stream.synchronize()
    if not capture:
        return None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    return graph


# ---------------------------------------------------------------- memory backends

def _make_backend(name: str) -> Any:
    if name == "auto":
        try:
            import torch

            if torch.cuda.is_available():
                return TorchBackend()
        except ImportError:
            pass
        return PycudaBackend()
    if name == "torch":
        return TorchBackend()
    if name == "pycuda":
        return PycudaBackend()
    raise OptionError(f"unknown backend '{name}': use auto, torch or pycuda")


class TorchBackend:
    """Device memory and streams from PyTorch."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", torch.cuda.current_device())

    def _dtype(self, np_name: str) -> Any:
        return getattr(self.torch, {"bool": "bool"}.get(np_name, np_name))

    def to_device(self, x: Any, np_name: str) -> Any:
        t = x if isinstance(x, self.torch.Tensor) else self.torch.from_numpy(np.ascontiguousarray(x))
        with self._memory(tuple(t.shape), np_name):
            return t.to(self.device, self._dtype(np_name), non_blocking=True).contiguous()

    def empty(self, shape: tuple[int, ...], np_name: str) -> Any:
        with self._memory(shape, np_name):
            return self.torch.empty(shape, dtype=self._dtype(np_name), device=self.device)

    @contextlib.contextmanager
    def _memory(self, shape: tuple[int, ...], np_name: str) -> Any:
        """Running out of GPU memory for a tensor is a NetdefError (the process can go on with a smaller batch)."""
        try:
            yield
        except self.torch.cuda.OutOfMemoryError:
            free = self.torch.cuda.mem_get_info()[0] / 2**20
            raise NetdefError(f"out of GPU memory for a {np_name} tensor of shape {shape} ({free:.0f} MiB free): "
                              f"run a smaller batch or free GPU memory") from None

    @staticmethod
    def ptr(t: Any) -> int:
        return t.data_ptr()

    def run(self, engine: Engine, feeds: Mapping[str, Any]) -> dict[str, Any]:
        inputs = {t.name: self.to_device(feeds[t.name], t.dtype) for t in engine.inputs}
        stream = self.torch.cuda.current_stream().cuda_stream
        return engine.enqueue(inputs, stream=stream)

    def wait(self, event: Any) -> None:
        """Make the current stream wait for `event` (the engine's previous run, maybe on another stream)."""
        if event is not None:
            self.torch.cuda.current_stream().wait_event(event)

    def mark(self) -> Any:
        """An event after the work enqueued so far on the current stream."""
        event = self.torch.cuda.Event()
        event.record()
        return event

    def to_host(self, t: Any) -> np.ndarray:
        return t.cpu().numpy()

    @staticmethod
    def to_user(t: Any) -> Any:
        return t


class PycudaBackend:
    """Device memory and streams from pycuda (no torch needed); results come back as numpy arrays."""

    name = "pycuda"

    def __init__(self) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise TensorRTUnavailable("the pycuda backend needs pycuda: pip install pycuda (or install torch)") from None
        cuda.init()
        # The primary context is the one torch and the CUDA runtime use, so both can share memory.
        self.ctx = cuda.Device(0).retain_primary_context()
        self.cuda = cuda
        self.stream: Any = None
        self._pinned: list[Any] = []

    def _push(self) -> None:
        self.ctx.push()

    def to_device(self, x: Any, np_name: str) -> Any:
        arr = np.ascontiguousarray(np.asarray(x.cpu() if hasattr(x, "cpu") else x, dtype=np_name))
        mem = DeviceArray(self.cuda, arr.shape, arr.dtype)
        self.cuda.memcpy_htod_async(mem.alloc, arr, self.stream)
        self._pinned.append(arr)  # keep the host array alive until the stream is synchronised
        return mem

    def empty(self, shape: tuple[int, ...], np_name: str) -> Any:
        return DeviceArray(self.cuda, shape, np.dtype(np_name))

    @staticmethod
    def ptr(t: Any) -> int:
        return int(t.alloc)

    def run(self, engine: Engine, feeds: Mapping[str, Any]) -> dict[str, Any]:
        self._push()
        try:
            self.stream = self.cuda.Stream()
            inputs = {t.name: self.to_device(feeds[t.name], t.dtype) for t in engine.inputs}
            outs = engine.enqueue(inputs, stream=self.stream.handle)
            host = {}
            for name, dev in outs.items():
                host[name] = np.empty(dev.shape, dev.dtype)
                self.cuda.memcpy_dtoh_async(host[name], dev.alloc, self.stream)
            self.stream.synchronize()
            self._pinned.clear()
            return host
        finally:
            self.cuda.Context.pop()

    @staticmethod
    def to_host(a: np.ndarray) -> np.ndarray:
        return a

    @staticmethod
    def wait(event: Any) -> None:
        """Runs are synchronous here: nothing to wait for."""

    @staticmethod
    def mark() -> None:
        return None

    @staticmethod
    def to_user(a: np.ndarray) -> np.ndarray:
        return a


class DeviceArray:
    """A device allocation with a shape and dtype (pycuda backend)."""

    def __init__(self, cuda: Any, shape: Sequence[int], dtype: Any):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.alloc = cuda.mem_alloc(max(1, int(np.prod(self.shape)) * self.dtype.itemsize))
