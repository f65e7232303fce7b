"""Run netdef engines from Python: torch or numpy in, torch or numpy out, any batch (and, for an engine built
with a dynamic input size, any height and width) inside a profile.

Device memory comes from torch when it is installed (backend "torch"), or from pycuda ("pycuda").
Each profile has its own execution context (and its own activation memory, made on first use); an input runs on
the profile whose range holds its batch (and H, W) with the nearest opt. The torch backend can replay CUDA
graphs (`cuda_graph=True`): one per input shape seen, kept in a bounded cache (`graph_cache`, least recently
used out). A graph holds only for the context state it was captured with, so before a replay the profile's
context gets that graph's shapes and addresses back (host-side calls only). One context per profile: TensorRT
8.6 lets a profile belong to only one context at a time, so per-shape contexts are not an option there.
`Engine.prepare_step(batch, hw)` binds device buffers once and returns a `Step` that runs the engine again and
again on them (what benchmarks and profiles time); `Engine.capture(inputs, before=, after=)` captures your own
work around one run into the same CUDA graph (a whole pre-process, engine, copy-out pipeline as one launch).

An engine lives on one CUDA device (`device=N`, default the current one): it is deserialized there, and every
call that touches CUDA (memory, streams, events, CUDA graphs, TensorRT runs) makes that device current for its
duration (`trt_api.use_device`) and restores the caller's, so engines on several devices share one process.
"""
from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import engine_file, trt_api
from .errors import NetdefError, OptionError, TensorRTError, TensorRTUnavailable

if TYPE_CHECKING:
    from .spec import Spec

GRAPH_CACHE = 8  # CUDA graphs an Engine keeps (one per input shape), least recently used out


def random_input(shape: Sequence[int], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """A random array of `shape` for an engine input of `dtype`: standard-normal floats, uint8 images of 0..255."""
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, tuple(shape), dtype=np.uint8)
    return rng.standard_normal(tuple(shape)).astype(dtype)


@dataclass(frozen=True)
class TensorInfo:
    """An engine input or output: its name, shape (-1 for dynamic dimensions) and numpy dtype name."""

    name: str
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    dtype: str  # numpy dtype name


class Engine:
    """A loaded engine. `engine(x)` or `engine.infer({name: x})` returns {output name: tensor}.

    `path` is a netdef engine file or a raw TensorRT plan (no netdef magic, e.g. from `netdef export-plan`): the
    sidecar `PATH.json` supplies its metadata and plugin libraries, else the deserialized plan its I/O and profiles.
    `device` is the CUDA device index (counted among the devices CUDA_VISIBLE_DEVICES leaves visible); None: the
    current device when the engine is loaded."""

    def __init__(self, path: str | Path, *, backend: str = "auto", cuda_graph: bool = False,
                 device: int | None = None, graph_cache: int = GRAPH_CACHE):
        self.path = Path(path)
        if isinstance(graph_cache, bool) or not isinstance(graph_cache, int) or graph_cache < 1:
            raise OptionError(f"graph_cache={graph_cache!r}: the number of CUDA graphs kept (one per input shape) "
                              "must be a positive integer")
        self.graph_cache = graph_cache
        if device is not None:
            trt_api.check_device(device)  # before any work
        from .deploy.plan import read_any_plan

        meta, plan = read_any_plan(self.path)
        info = trt_api.info()
        if meta is not None:
            engine_file.check_compatible(meta, self.path, info.version, info.flavor, trt_api.gpu_identity(device))
        if not trt_api.can_run_engines():
            raise TensorRTUnavailable(f"cannot run {self.path} here: running engines needs a CUDA GPU and full TensorRT "
                                      f"(this is {trt_api.here()})")
        from .plugins import load_plugin_libraries

        load_plugin_libraries((meta or {}).get("plugins", []), self.path)  # before deserializing: the plan needs them
        self.device: int = trt_api.current_device() if device is None else device
        with trt_api.use_device(self.device):  # TensorRT deserializes on the current device; backends use it too
            self.backend = _make_backend(backend)
            self._init_engine(plan, meta, cuda_graph)

    def _init_engine(self, plan: bytes, meta: dict[str, Any] | None, cuda_graph: bool) -> None:
        """The rest of loading, with the engine's device current: deserialize the plan, read its metadata and I/O,
        make the first execution context."""
        self._runtime, self.engine = _deserialize(plan, self.path, raw=meta is None)
        if meta is None:  # a raw plan without a sidecar: what the deserialized engine says of itself
            from .deploy.plan import metadata_from_engine

            meta = metadata_from_engine(self.engine)
        self.meta = meta
        self.profiles = engine_file.profiles(meta)
        # each profile's (min, opt, max) (H, W) when the input size is dynamic, else None
        self.hw_ranges = engine_file.hw_ranges(meta)
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
        # (profile, input shapes) -> (graph, inputs, outputs), least recently used first; `graph_captures` counts
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self.graph_captures = 0
        # Calls from several threads take turns: one context per profile and its activation memory are shared,
        # so a run waits for the previous one (an event on its stream) even when the caller's stream differs.
        self._lock = threading.Lock()
        self._last: Any = None
        # id(context) -> a weak reference to the Step whose shapes and addresses the context holds (None: another
        # call's); a Step binds its own back before it runs when another call bound the context since
        self._io_owner: dict[int, Any] = {}
        self._refits = 0  # refits so far (a detector's CUDA graphs are made again after one)
        self._steps: weakref.WeakSet[Step] = weakref.WeakSet()  # this engine's live Steps (a refit ends them)

    @classmethod
    def described(cls, path: str | Path) -> "Engine | None":
        """The engine as its header (or a raw plan's sidecar) describes it, not loaded: no TensorRT, no GPU. Its
        inputs, outputs, profiles and checks (`input_shape`, `profile_for`, the feeds' shapes) report a caller's
        mistakes before a GPU is needed; it cannot run. None for a raw plan without a sidecar (only TensorRT
        knows it); any other file raises as loading would."""
        from .deploy.plan import read_any_meta

        meta = read_any_meta(path)
        if meta is None:
            return None
        eng = _Described.__new__(_Described)
        eng.path, eng.meta, eng.device, eng.cuda_graph = Path(path), meta, None, False
        eng.profiles, eng.hw_ranges = engine_file.profiles(meta), engine_file.hw_ranges(meta)
        eng.inputs = [TensorInfo(io["name"], tuple(io["shape"]), io["dtype"]) for io in meta["inputs"]]
        eng.outputs = [TensorInfo(io["name"], tuple(io["shape"]), io["dtype"]) for io in meta["outputs"]]
        return eng

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        """The engine's device current (and, pycuda, its context on pycuda's stack) for the `with` block, the
        caller's again after it; the engine's own calls do this themselves (for CUDA work of yours around them)."""
        with trt_api.use_device(self.device), self.backend.activate():
            yield

    def host_buffer(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A numpy array of `shape` and `dtype` in pinned (page-locked) host memory: inputs written there reach the
        engine's GPU in one DMA transfer, with no staging copy (`netdef serve` joins requests in such buffers)."""
        with self.on_device():
            return self.backend.host_buffer(tuple(int(d) for d in shape), np.dtype(dtype).name)

    def refit(self, weights: Any, *, log: Any = None, arch: str | Path | Spec | None = None) -> int:
        """Replace the engine's weights in this process (an engine built with --refittable): `weights` is a .wts
        path or a mapping key -> array (e.g. a training checkpoint's state_dict), defined by the build's own
        code and checked like a build. TensorRT forbids using contexts made before a refit, so every execution
        context and CUDA graph is made anew. Returns the number of weights set; the file is not changed. `arch`: the
        architecture (a Spec, name or path) where the header cannot find it (one given in Python: `parse_spec`)."""
        from .refit import refit_arrays

        arrays, _, _ = refit_arrays(self.meta, weights, log or (lambda msg: None), arch=arch)
        with self._lock, self.on_device():
            if self._last is not None:
                self._last.synchronize()  # runs still in flight use the old weights and contexts
            # Contexts made before a refit must not be used, and TensorRT lets an optimization profile belong to
            # one live context: the old ones (the engine's and its Steps') go, and new ones are made on first use,
            # each set to its profile (a context made while profile 0 is taken has none: "mOptimizationProfile >= 0")
            for step in list(self._steps):
                step._end()
            self._contexts.clear()
            self._graphs.clear()
            self._io_owner.clear()
            self._refits += 1
            self.context = None
            count = trt_api.refit_engine(self.engine, arrays)
        return count

    @property
    def batch_range(self) -> tuple[int, int, int]:
        """(min, opt, max) batch over all the engine's optimization profiles."""
        return tuple(self.meta["options"]["batch"])  # type: ignore[return-value]

    def __repr__(self) -> str:
        """`<Engine r50.engine: input (-1, 3, 224, 224) float32 -> logits (-1, 1000) float32, batch 1:8:32, fp16>`;
        `Engine.described` for one read from its header only."""
        def io(ts: list[TensorInfo]) -> str:
            return ", ".join(f"{t.name} {t.shape} {t.dtype}" for t in ts)

        kind = "Engine.described" if isinstance(self, _Described) else "Engine"
        batch = ":".join(str(b) for b in self.batch_range) if self.meta.get("options", {}).get("batch") else "?"
        precision = f", {self.meta['precision']}" if self.meta.get("precision") else ""
        return f"<{kind} {self.path.name}: {io(self.inputs)} -> {io(self.outputs)}, batch {batch}{precision}>"

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run once on the inputs given in the engine's input order (`engine(x)`) or by name (`engine(images=x)`):
        the outputs by name (`infer`)."""
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
        with self._lock, self.on_device():
            self.backend.wait(self._last)
            outs = self._graph_run(feeds) if self.cuda_graph else self.backend.run(self, feeds)
            self._last = self.backend.mark()
        return {k: self.backend.to_host(v) if as_numpy else self.backend.to_user(v) for k, v in outs.items()}

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """OptionError for feeds (arrays, or anything with a `.shape`) this engine cannot run: names, ranks, fixed
        dimensions, batch and (dynamic sizes) height and width within a profile and the model's stride; a uint8
        input given another type (a feed with no `.dtype` is checked for its shape alone)."""
        self._check_feeds(feeds)

    def _check_feeds(self, feeds: Mapping[str, Any]) -> None:
        names = {t.name for t in self.inputs}
        if set(feeds) != names:
            raise OptionError(f"{self.path.name} inputs are {sorted(names)}, got {sorted(feeds)}")
        lo, _, hi = self.batch_range
        for t in self.inputs:
            if not hasattr(feeds[t.name], "shape"):  # a list, a PIL image, None: one line, not an AttributeError
                raise OptionError(f"input '{t.name}' is a {type(feeds[t.name]).__name__}: give a numpy array or a "
                                  "torch tensor")
            shape = tuple(feeds[t.name].shape)
            fixed = [(a, b) for a, b in zip(shape[1:], t.shape[1:]) if b != -1]
            if len(shape) != len(t.shape) or any(a != b for a, b in fixed):
                raise OptionError(f"input '{t.name}' has shape {shape}; the engine expects {t.shape}")
            if not lo <= shape[0] <= hi:
                raise OptionError(f"input '{t.name}' batch {shape[0]} is outside the engine's profile "
                                  f"{lo}..{hi}; rebuild with --batch MIN:OPT:MAX")
            given = str(getattr(feeds[t.name], "dtype", "")).replace("torch.", "")  # '' for a shape alone
            if t.dtype == "uint8" and given and given != "uint8":  # a cast would wrap or truncate the values silently
                raise OptionError(f"input '{t.name}' takes uint8 images (0..255, normalized inside the engine), got "
                                  f"{given}: pass the images themselves, not scaled or normalized")
            if given.startswith("complex") or given == "bool":  # a cast would drop the imaginary part, or give 0/1
                raise OptionError(f"input '{t.name}' takes {t.dtype} values, got {given}")
        if self.dynamic_hw:  # a height and width outside every profile: the error naming the ranges
            self._profile_of(feeds)
            self._check_stride(feeds)

    def _check_stride(self, feeds: Mapping[str, Any]) -> None:
        """A model that records its stride (the YOLO heads) takes heights and widths that are multiples of it:
        other sizes pass TensorRT's profile check and fail inside the run."""
        stride = (self.meta.get("model") or {}).get("stride")
        for t in self.inputs if stride else ():
            hw = tuple(int(d) for d in feeds[t.name].shape[2:])
            if len(t.shape) == 4 and min(t.shape[2:]) < 0 and any(d % stride for d in hw):
                raise OptionError(f"input '{t.name}' is {hw[0]}x{hw[1]}: {self.path.name} takes heights and widths "
                                  f"that are multiples of its stride {stride} (letterbox to one, as `netdef detect "
                                  f"--rect` does)")

    @property
    def dynamic_hw(self) -> bool:
        """Whether the engine takes any input height and width within its profiles' ranges."""
        return self.hw_ranges is not None

    def input_shape(self, t: TensorInfo, batch: int, hw: tuple[int, int] | None = None) -> tuple[int, ...]:
        """The shape of input `t` at `batch` (and, dynamic H, W, at `hw`; default the opt H, W of the profile
        for `batch`)."""
        shape = [batch, *t.shape[1:]]
        if self.dynamic_hw and len(shape) == 4:
            if hw is None:
                hw = self.hw_ranges[self.profile_for(batch)][1]  # type: ignore[index]
            shape[2:] = [d if d >= 0 else int(v) for d, v in zip(shape[2:], hw)]
        elif hw is not None and tuple(hw) != tuple(shape[-2:]):
            raise OptionError(f"{self.path.name} was built for the input size {shape[-2]}x{shape[-1]} only, not "
                              f"{hw[0]}x{hw[1]}: rebuild with --input-shape {hw[0]}x{hw[1]} (or MIN:OPT:MAX sizes)")
        if any(d < 0 for d in shape):
            raise OptionError(f"{self.path}: input '{t.name}' {t.shape} has dynamic dimensions netdef cannot size")
        return tuple(shape)

    def _profile_of(self, inputs: Mapping[str, Any]) -> int:
        """The profile that runs `inputs` (their batch, and H, W where dynamic)."""
        batch = int(next(iter(inputs.values())).shape[0])
        hw = next((tuple(int(d) for d in inputs[t.name].shape[2:]) for t in self.inputs
                   if len(t.shape) == 4 and min(t.shape[2:]) < 0), None) if self.dynamic_hw else None
        return self.profile_for(batch, hw)  # type: ignore[arg-type]

    def profile_for(self, batch: int, hw: tuple[int, int] | None = None) -> int:
        """The optimization profile that runs `batch` (at input height and width `hw`, dynamic-size engines):
        of those covering it, the one whose opt is nearest by ratio (kernels tuned for 16 suit 5 better than
        kernels tuned for 1)."""
        ranges = self.hw_ranges if hw is not None and self.hw_ranges else [None] * len(self.profiles)
        fits = [i for i, ((lo, _, hi), r) in enumerate(zip(self.profiles, ranges))
                if lo <= batch <= hi and (r is None or all(r[0][d] <= hw[d] <= r[2][d] for d in (0, 1)))]
        if not fits:
            if hw is None or not self.hw_ranges:
                raise OptionError(f"batch {batch} is outside every profile of {self.path.name} ({self.profiles})")
            from .options import format_hw_range

            held = ", ".join(f"batch {lo}..{hi} at {format_hw_range(r)}" for (lo, _, hi), r in
                             zip(self.profiles, self.hw_ranges))
            raise OptionError(f"input batch {batch} at {hw[0]}x{hw[1]} is outside every profile of {self.path.name} "
                              f"({held}; HxW as min:opt:max): rebuild with --input-shape MIN:OPT:MAX covering it")

        def distance(i: int) -> float:
            d = abs(math.log(self.profiles[i][1] / batch))
            if hw is not None and self.hw_ranges:
                d += sum(abs(math.log(self.hw_ranges[i][1][k] / hw[k])) for k in (0, 1))
            return d

        return min(fits, key=distance)

    def bind(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None = None, *,
             stream: int) -> dict[str, Any]:
        """Make the context of the profile for the inputs' batch (and H, W) current (creating it, and setting its
        profile on `stream`, the stream the next run uses, the first time), set shapes and device addresses of
        the device-resident inputs; allocates outputs (of the shapes TensorRT infers) when not given. Returns
        the outputs. (A cached CUDA graph gets its own shapes and addresses back before it is replayed.)"""
        with self.on_device():
            return self._bind(inputs, outputs, stream)[1]

    def enqueue(self, inputs: Mapping[str, Any], *, stream: int) -> dict[str, Any]:
        """Bind device-resident `inputs` (see `bind`) and enqueue one run on `stream`; returns the outputs."""
        with self.on_device():
            context, outs = self._bind(inputs, None, stream)
            trt_api.execute(context, stream)
        return outs

    def _bind(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None, stream: int
              ) -> tuple[Any, dict[str, Any]]:
        """`bind`, returning the execution context it bound as well as the outputs."""
        profile = self._profile_of(inputs)
        if profile not in self._contexts:
            self._contexts[profile] = self._new_context(profile, stream)
        context = self.context = self._contexts[profile]
        outs = dict(outputs or {})
        self._set_io(context, inputs, outs)
        return context, outs

    def _new_context(self, profile: int, stream: int) -> Any:
        """A new execution context set to `profile` (on `stream`)."""
        context = trt_api.create_context(self.engine, self.path)
        trt_api.set_profile(context, profile, stream)
        return context

    def _set_io(self, context: Any, inputs: Mapping[str, Any], outs: dict[str, Any], owner: Any = None) -> None:
        """Set the inputs' shapes and addresses on `context`, then the outputs': those in `outs`, the others
        allocated (the shapes TensorRT infers for these inputs) and added to `outs`. `owner`: the Step these are
        (None for any other call)."""
        self._io_owner[id(context)] = None if owner is None else weakref.ref(owner)
        for name, t in inputs.items():
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, self.backend.ptr(t))
        for o in self.outputs:
            if o.name not in outs:
                outs[o.name] = self.backend.empty(tuple(context.get_tensor_shape(o.name)), o.dtype)
            context.set_tensor_address(o.name, self.backend.ptr(outs[o.name]))

    def prepare_step(self, batch: int, hw: tuple[int, int] | None = None, *, cuda_graph: bool = False,
                     with_copies: bool = False) -> Step:
        """Bind random device inputs of `batch` (and, dynamic-size engines, height and width `hw`, default the
        profile's opt) and outputs once and return the `Step` that runs the engine on them: plain enqueues, or
        CUDA graph replays; `with_copies` adds the input copies from pinned host memory and the output copies
        back to it. Needs the torch backend."""
        _require_torch(self, "stepping an engine")
        with self.on_device():
            import torch

            inputs = {}
            for t in self.inputs:
                x = self.backend.empty(self.input_shape(t, batch, hw), t.dtype)
                inputs[t.name] = x.normal_() if x.is_floating_point() else x.zero_()
            if not with_copies:
                return self._make_step(inputs, None, None, cuda_graph)
            host_in = {k: torch.empty_like(v, device="cpu").pin_memory().copy_(v.cpu()) for k, v in inputs.items()}
            host_out: dict[str, Any] = {}

            def copy_in() -> None:
                for k, v in inputs.items():
                    v.copy_(host_in[k], non_blocking=True)

            def copy_out(outs: Mapping[str, Any]) -> None:
                for k, v in outs.items():
                    if k not in host_out:  # the first (uncaptured) run allocates the host buffers
                        host_out[k] = torch.empty_like(v, device="cpu").pin_memory()
                    host_out[k].copy_(v, non_blocking=True)

            step = self._make_step(inputs, copy_in, copy_out, cuda_graph)
            step.keep(host_in, host_out)
            return step

    def capture(self, inputs: Mapping[str, Any], *, before: Callable[[], None] | None = None,
                after: Callable[[Mapping[str, Any]], None] | None = None) -> Step:
        """A CUDA graph of `before()`, one run of the engine on `inputs` and `after(outputs)`, as a `Step`:
        `inputs` are device tensors you keep (their addresses are bound once; `before` or your own copies write
        them), `step.outputs` the output tensors (allocated once, rewritten by every run; `after` may copy them
        on). Both callables enqueue work on the current stream (the step's) and are run once before the capture
        (allocate and warm up there); nothing in them may synchronize or call the engine. Every `step()` replays the whole graph as
        one launch on `step.stream`. Needs the torch backend and a GPU."""
        _require_torch(self, "capturing a CUDA graph")
        with self.on_device():
            return self._make_step(dict(inputs), before, after, True)

    def _make_step(self, inputs: dict[str, Any], before: Callable[[], None] | None,
                   after: Callable[[Mapping[str, Any]], None] | None, cuda_graph: bool) -> Step:
        """Bind `inputs` (device tensors) and outputs on a new stream and return the Step of before(), the run
        and after(outputs): run once, then captured when `cuda_graph`."""
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())  # the inputs are written on the current stream
        handle = stream.cuda_stream
        def body() -> None:
            if before is not None:
                before()
            trt_api.execute(context, handle)
            if after is not None:
                after(outs)

        with self._lock:  # no other run rebinds the context before the capture is done
            context, outs = self._bind(inputs, None, handle)
            if self._last is not None:
                stream.wait_event(self._last)  # the engine's previous run shares the context's memory
            step = Step(body, stream, context, self._profile_of(inputs), int(next(iter(inputs.values())).shape[0]),
                        (inputs, outs), self)
            self._io_owner[id(context)] = weakref.ref(step)
            self._steps.add(step)
            graph = _first_run(torch, stream, body, capture=cuda_graph)
        if graph is not None:
            step._run = graph.replay
            step.keep(graph)
        return step

    def _graph_run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Replay the CUDA graph of the inputs' shapes, captured on first sight of them (the least recently used
        graph makes room when `graph_cache` are kept). The profile's context is given the graph's shapes and
        addresses again first: a graph holds only for the context state it was captured with."""
        import torch

        profile = self._profile_of(feeds)
        key = (profile, tuple((n, tuple(v.shape)) for n, v in sorted(feeds.items())))
        entry = self._graphs.get(key)
        if entry is None:
            static_in = {t.name: self.backend.to_device(feeds[t.name], t.dtype).clone() for t in self.inputs}
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())  # the input copies and earlier runs come first
            context, outs = self._bind(static_in, None, stream.cuda_stream)
            graph = _first_run(torch, stream, lambda: trt_api.execute(context, stream.cuda_stream), capture=True)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph_captures += 1
            while len(self._graphs) >= self.graph_cache:
                self._graphs.popitem(last=False)
            self._graphs[key] = entry = (graph, static_in, outs)
        else:
            self._graphs.move_to_end(key)
            self.context = self._contexts[profile]
            self._set_io(self.context, entry[1], dict(entry[2]))  # the state the graph was captured with
        graph, static_in, outs = entry
        for t in self.inputs:
            static_in[t.name].copy_(self.backend.to_device(feeds[t.name], t.dtype))
        graph.replay()
        return {k: v.clone() for k, v in outs.items()}


class Step:
    """One engine run at a fixed batch on buffers bound once (`Engine.prepare_step`, `Engine.capture`): `step()`
    enqueues it (or replays its CUDA graph) on `step.stream`, with the engine's device current; `outputs` are the
    output tensors it writes. `context` is the execution context it runs (a profiler can be attached to it). Runs
    take turns with the engine's other runs (any stream, any thread) and follow the caller's stream's work; a call
    that bound the context to other buffers since (another step, `infer` of the same profile) costs the step a
    rebinding of its own first (host-side calls); a refit of the engine ends the step (and frees its context)."""

    def __init__(self, run: Callable[[], None], stream: Any, context: Any, profile: int, batch: int,
                 io: tuple[Mapping[str, Any], dict[str, Any]], engine: Engine):
        self._run, self.stream, self.context = run, stream, context
        self.profile, self.batch = profile, batch
        self._inputs, self.outputs = io
        self._engine = engine
        self._buffers: list[Any] = []
        self._done: Any = None  # an event after this step's last run
        import torch

        self._torch = torch  # (a step is called in timing loops: no import statement per call)

    def keep(self, *buffers: Any) -> None:
        """Keep `buffers` (host copies, the graph) alive as long as the step."""
        self._buffers.extend(buffers)

    def _end(self) -> None:
        """A refit of the engine ended this step: let go of its context, run and graph (calls now refuse)."""
        self.context, self._run = None, None
        self._buffers.clear()

    def __call__(self) -> None:
        torch = self._torch
        eng = self._engine
        with eng.on_device():
            caller = torch.cuda.current_stream()
            with torch.cuda.stream(self.stream), eng._lock:
                if self._run is None:  # `_end`: a refit of the engine
                    raise NetdefError(f"{eng.path}: this step was made before the engine was refitted (TensorRT "
                                      "forbids using its old contexts): make a new one")
                owner = eng._io_owner.get(id(self.context))
                if owner is None or owner() is not self:
                    eng.context = self.context
                    eng._set_io(self.context, self._inputs, dict(self.outputs), owner=self)
                if caller != self.stream:
                    self.stream.wait_stream(caller)  # inputs the caller wrote on its stream
                if eng._last is not None and eng._last is not self._done:
                    self.stream.wait_event(eng._last)  # another run of the engine (its context's memory)
                self._run()
                if self._done is None:
                    self._done = torch.cuda.Event()
                self._done.record(self.stream)
                eng._last = self._done

    def synchronize(self) -> None:
        """Wait for the runs enqueued so far."""
        self.stream.synchronize()


class _Described(Engine):
    """`Engine.described`: the checks of an engine without the engine."""

    def _not_loaded(self, *args: Any, **kwargs: Any) -> Any:
        raise TensorRTUnavailable(f"{self.path} is only described (Engine.described): load it with Engine(path)")

    infer = bind = enqueue = prepare_step = capture = refit = on_device = _not_loaded  # type: ignore[assignment]


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


def _require_torch(eng: Engine, what: str) -> None:
    if eng.backend.name != "torch":
        raise NetdefError(f"{eng.path}: {what} needs the torch backend (this one uses {eng.backend.name})")


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
    """The memory backend `name` on the current CUDA device."""
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
    """Device memory and streams from PyTorch, on the current device when it is made. A backend's methods (the
    pycuda one has the same): `to_device` copies a host or device array to a device buffer of a numpy dtype's name,
    `empty` and `host_buffer` (pinned) allocate, `ptr` is a buffer's device address, `run` runs the engine once,
    `wait` / `mark` order runs across streams, `to_host` copies back to numpy, `to_user` gives a result as the
    caller gets it."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", torch.cuda.current_device())

    @staticmethod
    def activate() -> Any:
        """Nothing beyond the engine's device (torch keeps no context stack)."""
        return contextlib.nullcontext()

    def _dtype(self, np_name: str) -> Any:
        return getattr(self.torch, {"bool": "bool"}.get(np_name, np_name))

    def to_device(self, x: Any, np_name: str) -> Any:
        t = x if isinstance(x, self.torch.Tensor) else self.torch.from_numpy(np.ascontiguousarray(x))
        with self._memory(tuple(t.shape), np_name):
            return t.to(self.device, self._dtype(np_name), non_blocking=True).contiguous()

    def host_buffer(self, shape: tuple[int, ...], np_name: str) -> np.ndarray:
        return self.torch.empty(shape, dtype=self._dtype(np_name), pin_memory=True).numpy()

    def empty(self, shape: tuple[int, ...], np_name: str) -> Any:
        with self._memory(shape, np_name):
            return self.torch.empty(shape, dtype=self._dtype(np_name), device=self.device)

    @contextlib.contextmanager
    def _memory(self, shape: tuple[int, ...], np_name: str) -> Any:
        """Running out of GPU memory for a tensor is a NetdefError (the process can go on with a smaller batch)."""
        try:
            yield
        except self.torch.cuda.OutOfMemoryError:
            free = self.torch.cuda.mem_get_info(self.device)[0] / 2**20
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
    """Device memory and streams from pycuda (no torch needed), on the current device when it is made; results
    come back as numpy arrays."""

    name = "pycuda"

    def __init__(self) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise TensorRTUnavailable("the pycuda backend needs pycuda: pip install pycuda (or install torch)") from None
        cuda.init()
        # The primary context is the one torch and the CUDA runtime use, so both can share memory.
        self.ctx = cuda.Device(trt_api.current_device()).retain_primary_context()
        self.cuda = cuda
        self.stream: Any = None
        self._pinned: list[Any] = []

    @contextlib.contextmanager
    def activate(self) -> Any:
        """The device's primary context on pycuda's context stack (its allocations need it there)."""
        self.ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def to_device(self, x: Any, np_name: str) -> Any:
        arr = np.ascontiguousarray(np.asarray(x.cpu() if hasattr(x, "cpu") else x, dtype=np_name))
        mem = DeviceArray(self.cuda, arr.shape, arr.dtype)
        self.cuda.memcpy_htod_async(mem.alloc, arr, self.stream)
        self._pinned.append(arr)  # keep the host array alive until the stream is synchronised
        return mem

    def host_buffer(self, shape: tuple[int, ...], np_name: str) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, np.dtype(np_name))

    def empty(self, shape: tuple[int, ...], np_name: str) -> Any:
        return DeviceArray(self.cuda, shape, np.dtype(np_name))

    @staticmethod
    def ptr(t: Any) -> int:
        return int(t.alloc)

    def run(self, engine: Engine, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """One run on a new stream, synchronised (the caller made the engine's device and context current)."""
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
