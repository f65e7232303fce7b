"""`netdef profile`: where an engine spends its time, layer by layer (TensorRT's IProfiler), and what each
layer is (engine inspector: type, tactic, formats; full detail for engines built with --detailed).

Engine layer names are the weight-key prefixes netdef gave the network's layers (fused layers join them
with ' + '), so each row points back to a PyTorch module. With `--compare OTHER` two engines are profiled
in the same process at the same batch and their summaries printed side by side (e.g. a netdef engine
and the ONNX route's engine of the same model).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import engine_file, trt_api
from .bench import BenchSettings, check_batches, engine_step, environment, require_gpu, write_json
from .errors import NetdefError

REFORMAT_WORDS = ("Reformat", "reformat", "CopyNode")
PROFILE_SUFFIX = re.compile(r" \[profile \d+\]$")  # TensorRT's mark on the layers of profiles 1, 2, ...


def profile_engine(path: str | Path, batch: int, runs: int = 200, warmup: int = 20) -> dict[str, Any]:
    """Mean time per engine layer over `runs` executions at `batch` (after `warmup`), with the inspector's
    description of each layer. Layer times come from TensorRT's per-layer events and exclude launch gaps."""
    if runs < 1 or warmup < 0:
        raise NetdefError(f"profile runs {runs} must be >= 1 and warm-up {warmup} >= 0")
    path = Path(path)
    meta = engine_file.read_meta(path)
    check_batches([batch], meta["options"]["batch"], str(path))
    torch = require_gpu()
    from .runtime import Engine

    eng = Engine(path, backend="torch")
    run, stream, buffers = engine_step(eng, batch, BenchSettings(), torch)
    for _ in range(warmup):
        run()
    stream.synchronize()
    totals: dict[str, float] = defaultdict(float)
    order: list[str] = []

    def on_layer(name: str, ms: float) -> None:
        if name not in totals:
            order.append(name)
        totals[name] += ms

    profiler = trt_api.attach_profiler(eng.context, on_layer)  # noqa: F841  (alive while the engine runs)
    for _ in range(runs):
        run()
        stream.synchronize()
    info = trt_api.layer_information(eng.engine, eng.context)
    layers = []
    for n in order:  # TensorRT 8.6 names profile k's layers "... [profile k]" in both reports; else the bare name
        bare = PROFILE_SUFFIX.sub("", n)
        layers.append({"name": bare, "ms": totals[n] / runs} | _describe(info.get(n) or info.get(bare)))
    total = sum(r["ms"] for r in layers)
    for r in layers:
        r["share"] = r["ms"] / total if total else 0.0
    del buffers
    detailed = any(isinstance(v, dict) and "LayerType" in v for v in info.values())
    return {"engine": str(path), "arch": meta["arch"]["name"], "precision": meta["precision"], "batch": batch,
            "profile": eng.profile_for(batch), "profiles": len(eng.profiles), "runs": runs, "total_ms": total,
            "layers": layers, "detailed": detailed}


def _describe(entry: Any) -> dict[str, Any]:
    """Type, tactic and output formats from one inspector entry (a name only for engines built without
    --detailed)."""
    if not isinstance(entry, dict):
        return {}
    out = {"type": entry.get("LayerType"), "tactic": entry.get("TacticName") or entry.get("TacticValue")}
    formats = [o.get("Format/Datatype") for o in entry.get("Outputs", []) if isinstance(o, dict)]
    if formats:
        out["outputs"] = formats
    return {k: v for k, v in out.items() if v is not None}


def kind_of(layer: dict[str, Any]) -> str:
    """A coarse kind for summaries: the inspector's layer type, else 'reformat' or 'layer' from the name."""
    if layer.get("type"):
        return str(layer["type"])
    return "reformat" if any(w in layer["name"] for w in REFORMAT_WORDS) else "layer"


def summary(prof: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """Totals per layer kind: {kind: (count, ms)}."""
    kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for layer in prof["layers"]:
        k = kinds[kind_of(layer)]
        k[0] += 1
        k[1] += layer["ms"]
    return {k: (int(c), ms) for k, (c, ms) in sorted(kinds.items(), key=lambda kv: -kv[1][1])}


def format_profile(prof: dict[str, Any], top: int = 25) -> str:
    """The `top` slowest layers of one profile, then the rest summed."""
    where = f", optimization profile {prof['profile']}" if prof.get("profiles", 1) > 1 else ""
    lines = [f"{prof['engine']} ({prof['arch']} {prof['precision']}, batch {prof['batch']}{where}, "
             f"{prof['runs']} runs): {len(prof['layers'])} engine layers, {prof['total_ms']:.3f} ms in layers"]
    lines.append(f"{'ms':>9} {'share':>6}  layer")
    for r in sorted(prof["layers"], key=lambda r: -r["ms"])[:top]:
        extra = f"  [{r['type']}{', ' + str(r['tactic']) if r.get('tactic') else ''}]" if r.get("type") else ""
        lines.append(f"{r['ms']:9.4f} {r['share']:6.1%}  {r['name']}{extra}")
    if len(prof["layers"]) > top:
        rest = sorted(prof["layers"], key=lambda r: -r["ms"])[top:]
        lines.append(f"{sum(r['ms'] for r in rest):9.4f} {sum(r['share'] for r in rest):6.1%}  "
                     f"({len(rest)} more layers)")
    return "\n".join(lines)


def format_comparison(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Per-kind counts and times of two profiles side by side, then totals and their ratio."""
    sa, sb = summary(a), summary(b)
    kinds = list(dict.fromkeys([*sa, *sb]))
    lines = [f"{'kind':<28} {'A layers':>8} {'A ms':>9} {'B layers':>8} {'B ms':>9} {'A-B ms':>9}"]
    for k in kinds:
        ca, ma = sa.get(k, (0, 0.0))
        cb, mb = sb.get(k, (0, 0.0))
        lines.append(f"{k[:28]:<28} {ca:8d} {ma:9.4f} {cb:8d} {mb:9.4f} {ma - mb:+9.4f}")
    ratio = a["total_ms"] / b["total_ms"] if b["total_ms"] else float("nan")
    lines.append(f"{'total':<28} {len(a['layers']):8d} {a['total_ms']:9.4f} {len(b['layers']):8d} "
                 f"{b['total_ms']:9.4f} {a['total_ms'] - b['total_ms']:+9.4f}  (A/B {ratio:.3f})")
    lines.insert(0, f"A = {a['engine']}\nB = {b['engine']}  (batch {a['batch']})")
    return "\n".join(lines)


# ---------------------------------------------------------------- the command line

def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef profile` to the netdef command line."""
    p = subparsers.add_parser(
        "profile", help="time per engine layer (TensorRT profiler) and what each layer is (engine inspector)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", help="netdef engine file")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch size(s) (default: the profile's opt batch)")
    p.add_argument("--runs", type=int, default=200, help="executions averaged per batch (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="executions before profiling (default 20)")
    p.add_argument("--top", type=int, default=25, help="layers listed per profile, slowest first (default 25)")
    p.add_argument("--compare", metavar="ENGINE", help="a second engine to profile and compare with")
    p.add_argument("--json", metavar="FILE", help="write every layer's figures and the environment as JSON")
    p.set_defaults(func=cmd_profile)
    return p


def cmd_profile(a: argparse.Namespace) -> int:
    engines = [a.engine] + ([a.compare] if a.compare else [])
    for e in engines:
        if not Path(e).is_file():
            raise NetdefError(f"engine not found: {e}")
    batches = a.batch or [engine_file.read_meta(a.engine)["options"]["batch"][1]]
    doc: dict[str, Any] = {"environment": environment(), "command": " ".join(sys.argv), "profiles": []}
    for b in batches:
        profs = [profile_engine(e, b, a.runs, a.warmup) for e in engines]
        for prof in profs:
            print(format_profile(prof, a.top))
            print()
            if not prof["detailed"]:
                print(f"(layer types and tactics: rebuild {prof['engine']} with `netdef build ... --detailed`)\n")
        if len(profs) == 2:
            print(format_comparison(*profs))
            print()
        doc["profiles"] += profs
    if a.json:
        write_json(a.json, doc)
        print(f"wrote {a.json}")
    return 0
