"""An engine served from inside Triton's Python backend stub, under bench_serve's load (GPU; pytriton, tritonclient).

`netdef serve` binds a Python callable through PyTriton: Triton's Python backend stub hands every batch to PyTriton's
proxy, which moves it to netdef's process and back (its own shared-memory store, ZMQ, JSON). This benchmark measures
the alternative design: Triton (PyTriton's bundled server, started with a model repository) loads a model.py that
runs `Engine.infer` in the stub itself, with no proxy. The clients, the statistics and the direct baseline are
bench_serve's, so the RESULT lines compare with `scripts/bench_serve.py`'s on the same engine:

    python scripts/bench_serve_in_stub.py r50.engine --instances 1 --concurrency 64 --seconds 10
    python scripts/bench_serve_in_stub.py r50.engine --instances 4 --concurrency 64 --seconds 10 --shared-memory

`--instances K`: K model instances (K stub processes, each with its own engine) on the current GPU.
`--stand-in`: the stub answers with numpy instead of an engine (each output column the mean of the item's first
input), so that the whole path runs on a CPU; no direct baseline then.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bs  # noqa: E402

from netdef import engine_file  # noqa: E402
from netdef.cli.guard import run_guarded  # noqa: E402
from netdef.deploy import serve_stats  # noqa: E402
from netdef.deploy.plan import read_any_meta  # noqa: E402
from netdef.deploy.serve import binding, import_pytriton, security_arguments, stub_library_path  # noqa: E402
from netdef.deploy.triton import Enum, TritonOptions, config_text, model_config  # noqa: E402
from netdef.errors import NetdefError  # noqa: E402

# the stub's model: it finds netdef and TensorRT through ENV_SYSPATH (the stub ignores PYTHONPATH)
MODEL_PY = '''
import json, os, sys
sys.path[:0] = [p for p in os.environ["NETDEF_STUB_SYSPATH"].split(os.pathsep) if p and p not in sys.path]
import numpy as np
import triton_python_backend_utils as pb_utils
from netdef.deploy.serve import run_batch


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["output"]]
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        if params.get("stand_in") == "1":  # each output filled with the mean of the item's first input
            self.profiles = json.loads(params["profiles"])
            dims = {t["name"]: [int(d) for d in t["dims"]] for t in config["output"]}

            def stand_in(feeds):
                x = feeds[self.inputs[0]]
                means = x.reshape(len(x), -1).mean(axis=1)  # once per batch, for every output
                return {n: np.broadcast_to(means.reshape(-1, *[1] * len(dims[n])), (len(x), *dims[n])).astype(d)
                        for n, d in self.outputs}
            self.infer = stand_in
        else:
            from netdef.runtime import Engine
            engine = Engine(params["engine"])
            self.profiles = list(engine.profiles)
            self.infer = lambda feeds: engine.infer(feeds, as_numpy=True)

    def execute(self, requests):
        got = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs] for r in requests]
        feeds = {n: np.concatenate([g[i] for g in got]) for i, n in enumerate(self.inputs)}
        outs = run_batch(self.infer, feeds, self.profiles)
        responses, start = [], 0
        for g in got:
            stop = start + len(g[0])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(n, np.ascontiguousarray(outs[n][start:stop])) for n, _ in self.outputs]))
            start = stop
        return responses
'''


def stub_config(meta: dict[str, Any], instances: int, delay_us: int, engine: Path, stand_in: bool) -> dict[str, Any]:
    """The engine's Triton model configuration (`netdef triton`'s) for the Python backend: `instances` instances
    of the stub on the CPU side (each loads the engine on the current GPU), the engine's path as a parameter."""
    config = copy.deepcopy(model_config(meta, TritonOptions(max_queue_delay_us=delay_us)))
    config.pop("platform")
    config = {"name": config.pop("name"), "backend": "python", **config}
    config["instance_group"] = [{"count": instances, "kind": Enum("KIND_CPU")}]
    config.pop("optimization", None)  # the TensorRT backend's CUDA graphs
    profiles = [list(p) for p in engine_file.profiles(meta)]
    config["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in
                            {"engine": str(engine), "stand_in": "1" if stand_in else "0",
                             "profiles": json.dumps(profiles)}.items()]
    return config


def run(engine: Path, instances: int, concurrency: list[int], seconds: float, delay_us: int, shared_memory: bool,
        stand_in: bool, direct_batch: int = 64) -> list[str]:
    """The load test at each concurrency against the stub-hosted engine, then (not with `stand_in`) the direct
    `Engine` run at `direct_batch`: the RESULT lines, printed too."""
    meta = read_any_meta(engine)
    if meta is None:
        raise NetdefError(f"{engine}: a raw plan without its sidecar: give the netdef engine or the plan's .json")
    spec = binding(meta, max_queue_delay_us=delay_us)
    with tempfile.TemporaryDirectory(prefix="netdef_stub_repo_") as repo:
        return _run(engine, meta, spec, Path(repo), instances, concurrency, seconds, delay_us, shared_memory, stand_in,
                    direct_batch)


def _run(engine: Path, meta: dict[str, Any], spec: Any, repo: Path, instances: int, concurrency: list[int],
         seconds: float, delay_us: int, shared_memory: bool, stand_in: bool, direct_batch: int) -> list[str]:
    (repo / spec.name / "1").mkdir(parents=True)
    (repo / spec.name / "config.pbtxt").write_text(config_text(stub_config(meta, instances, delay_us,
                                                                           engine.resolve(), stand_in)))
    (repo / spec.name / "1" / "model.py").write_text(MODEL_PY)
    os.environ["NETDEF_STUB_SYSPATH"] = os.pathsep.join(p for p in sys.path if p)
    library_path = stub_library_path(os.environ)
    if library_path is not None:
        os.environ["LD_LIBRARY_PATH"] = library_path
    pt = import_pytriton()
    http_port, grpc_port, metrics_port = bs.free_ports(3)
    config = pt.triton.TritonConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                    model_repository=repo)
    lines = []
    with pt.triton.Triton(config=config, **security_arguments(pt, ["statistics", "shared-memory"])) as triton:
        triton.run()
        http = f"localhost:{http_port}"
        _wait_ready(http, spec.name)
        import tritonclient.grpc as grpc

        feeds = bs.sample_inputs(spec, 3, seed=3)  # one batch of 3, answered before the load: checked below
        answers = bs.infer(grpc.InferenceServerClient(f"localhost:{grpc_port}"), grpc, spec, feeds)
        requests = bs.Requests(f"localhost:{grpc_port}", spec, shared_memory=shared_memory)
        for c in concurrency:
            before, t0 = serve_stats.counters(serve_stats.model_statistics(http, spec.name), spec.name), time.time()
            served = bs.load_test_with(requests, c, seconds)
            after = serve_stats.counters(serve_stats.model_statistics(http, spec.name), spec.name)
            got = serve_stats.summary(serve_stats.delta(before, after), served["mean_ms"], time.time() - t0)
            lines += [bs.result_line(f"serve-stub instances={instances} shm={int(shared_memory)} concurrency={c}",
                                     served),
                      serve_stats.stats_line(f"concurrency={c} model={spec.name}", got)]
            print(*lines[-2:], sep="\n", flush=True)
    lines.append(check_answers(engine, feeds, answers, stand_in))
    print(lines[-1], flush=True)
    if not stand_in:
        base = bs.direct(engine, direct_batch)
        lines += [bs.result_line(f"direct batch={direct_batch}", base),
                  f"RESULT ratio-stub serve_concurrency={concurrency[-1]}/direct_batch={direct_batch} "
                  f"{served['throughput'] / base['throughput']:.3f}"]
        print(*lines[-2:], sep="\n", flush=True)
    return lines


def check_answers(engine: Path, feeds: dict[str, Any], answers: dict[str, Any], stand_in: bool) -> str:
    """A RESULT line saying the served answers to `feeds` equal `Engine.infer`'s on the same engine (the stand-in's:
    the mean of each item's first input); a NetdefError naming the output where they differ."""
    import numpy as np

    source = "stand-in" if stand_in else "Engine.infer"
    if stand_in:
        x = next(iter(feeds.values()))
        means = x.reshape(len(x), -1).mean(axis=1)
        want = {n: np.broadcast_to(means.reshape(-1, *[1] * (a.ndim - 1)), a.shape) for n, a in answers.items()}
    else:
        from netdef.runtime import Engine

        want = Engine(engine).infer(feeds, as_numpy=True)
    if set(answers) != set(want):
        raise NetdefError(f"the stub answered outputs {sorted(answers)}, {source} gives {sorted(want)}")
    for name, got in answers.items():
        if got.shape != want[name].shape:
            raise NetdefError(f"output '{name}' served from the stub has shape {got.shape}, {source}'s "
                              f"{want[name].shape}")
        if not np.allclose(got, want[name], rtol=1e-5, atol=1e-6):
            raise NetdefError(f"output '{name}' served from the stub differs from {source} on the same inputs "
                              f"(largest difference {np.abs(got - want[name]).max():.3g})")
    return f"RESULT answers-stub batch={len(next(iter(feeds.values())))} equal={source}"


def _wait_ready(http: str, model: str, timeout_s: float = 300) -> None:
    """Wait until the server at `http` is live and `model` ready (a NetdefError with the repository index after
    `timeout_s`: the model failed to load)."""
    import tritonclient.http as client

    c, deadline = client.InferenceServerClient(http), time.time() + timeout_s
    while not (c.is_server_live() and c.is_model_ready(model)):
        if time.time() > deadline:
            raise NetdefError(f"model '{model}' was not ready after {timeout_s:.0f} s: "
                              f"{c.get_model_repository_index()}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); its exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine")
    p.add_argument("--instances", type=int, default=1, help="model instances (stub processes) on the GPU")
    p.add_argument("--concurrency", default="64", help="comma-separated client counts (default 64)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--shared-memory", action="store_true", help="the clients' inputs in system shared memory")
    p.add_argument("--stand-in", action="store_true", help="numpy instead of the engine (CPU; no direct run)")
    a = p.parse_args(argv)

    def go() -> None:
        run(Path(a.engine), a.instances, bs.parse_levels(a.concurrency), a.seconds, a.max_queue_delay_us,
            a.shared_memory, a.stand_in)

    return run_guarded(go, prog="bench_serve_in_stub.py")


if __name__ == "__main__":
    sys.exit(main())
