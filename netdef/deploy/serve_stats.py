"""Where a served request's time goes: Triton's per-model inference statistics over a stretch of load.

Triton counts per request `success` (receipt to response: the server's whole time), `queue` (in the dynamic
batcher, waiting for a batch and a free model instance), `compute_input` (inputs handed to the backend: into the
Python stub's shared memory), `compute_infer` (the model: `netdef serve`'s stub joins the requests, runs the engine
with its host copies and makes the responses: `deploy.stub_model`) and `compute_output` (outputs out of the
backend); per execution (one batch the batcher formed) `batch_stats` by
batch size. `netdef serve` keeps them behind its access token unless it runs with `--open-endpoints statistics`.

`model_statistics` reads them as tritonclient.http's JSON, `counters` flattens that, `delta` is what a stretch
added, `summary` the means (ms) and `stats_line` a `RESULT serve-stats` line of them (scripts/bench_serve.py).
"""
from __future__ import annotations

from typing import Any

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def model_statistics(url: str, model: str) -> dict[str, Any]:
    """`model`'s statistics from the server's HTTP endpoint `url` (host:port), as tritonclient.http gives them."""
    import tritonclient.http as http

    return http.InferenceServerClient(url).get_inference_statistics(model)


def counters(stats: dict[str, Any], model: str) -> dict[str, int]:
    """The cumulative counters of `model` (all its versions together) in `stats` (tritonclient's JSON; gRPC's
    `as_json=True` form, whose 64-bit numbers are strings, too), flat: 'inference_count', 'execution_count',
    'PHASE.count' and 'PHASE.ns' for success, fail and `PHASES`, and per batch size the executions
    ('batch.SIZE.count'), their compute_infer ('batch.SIZE.ns') and compute_input + compute_output
    ('batch.SIZE.io_ns')."""
    out: dict[str, int] = {}

    def add(key: str, value: Any) -> None:
        out[key] = out.get(key, 0) + int(value or 0)

    entries = [m for m in stats.get("model_stats", []) if m.get("name") == model]
    if not entries:
        have = [m.get("name") for m in stats.get("model_stats", [])]
        raise KeyError(f"no statistics for model '{model}' (the server's: {have})")
    for m in entries:
        add("inference_count", m.get("inference_count"))
        add("execution_count", m.get("execution_count"))
        for phase in ("success", "fail", *PHASES):
            got = m.get("inference_stats", {}).get(phase, {})
            add(f"{phase}.count", got.get("count"))
            add(f"{phase}.ns", got.get("ns"))
        for b in m.get("batch_stats", []):
            key, infer = f"batch.{int(b['batch_size'])}", b.get("compute_infer", {})
            add(f"{key}.count", infer.get("count"))
            add(f"{key}.ns", infer.get("ns"))
            add(f"{key}.io_ns", sum(int(b.get(p, {}).get("ns") or 0) for p in ("compute_input", "compute_output")))
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What the stretch between two `counters` added."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def summary(d: dict[str, int], client_mean_ms: float | None = None, seconds: float | None = None) -> dict[str, Any]:
    """Means of a `delta`: requests, failures, executions, items per execution (`avg_batch`), per request the
    server's time (`server_ms`) and each phase's (`PHASE_ms`), per execution the model's time
    (`infer_per_exec_ms`), executions by batch size (`batches`); with the clients' mean latency, `client_ms` and
    `overhead_ms` (client minus server: transport and the clients' own work); with the stretch's length,
    `busy`: the model instances' compute (input, infer, output) per second of it (near the instance count: they
    are the bottleneck; well below: requests do not reach them fast enough)."""
    def mean_ms(ns: int, count: int) -> float:
        return ns / count / 1e6 if count else float("nan")

    batches = {int(k.split(".")[1]): v for k, v in d.items() if k.startswith("batch.") and k.endswith(".count") and v}
    executions = d.get("execution_count", 0)
    out: dict[str, Any] = {
        "requests": d.get("success.count", 0), "failed": d.get("fail.count", 0), "executions": executions,
        "avg_batch": d.get("inference_count", 0) / executions if executions else float("nan"),
        "server_ms": mean_ms(d.get("success.ns", 0), d.get("success.count", 0)),
        **{f"{p}_ms": mean_ms(d.get(f"{p}.ns", 0), d.get(f"{p}.count", 0)) for p in PHASES},
        "infer_per_exec_ms": mean_ms(sum(d.get(f"batch.{b}.ns", 0) for b in batches), sum(batches.values())),
        "batches": dict(sorted(batches.items())),
    }
    if client_mean_ms is not None:
        out["client_ms"], out["overhead_ms"] = client_mean_ms, client_mean_ms - out["server_ms"]
    if seconds:
        out["busy"] = sum(d.get(f"batch.{b}.ns", 0) + d.get(f"batch.{b}.io_ns", 0) for b in batches) / seconds / 1e9
    return out


def stats_line(what: str, s: dict[str, Any]) -> str:
    """`RESULT serve-stats WHAT key=value ...` of a `summary` (times in ms; batches as SIZE:EXECUTIONS,...)."""
    values = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if k != "batches"]
    batches = ",".join(f"{b}:{n}" for b, n in s["batches"].items()) or "-"
    return f"RESULT serve-stats {what} {' '.join(values)} batches={batches}"
