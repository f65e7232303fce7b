"""`netdef profile`: where an engine spends its time, layer by layer (TensorRT's IProfiler), and what each
layer is (engine inspector: type, tactic, formats; full detail for engines built with --detailed).

Engine layer names are the weight-key prefixes netdef gave the network's layers (fused layers join them
with ' + '), so each row points back to a PyTorch module. With `--compare OTHER` two engines are profiled
in the same process at the same batch, their summaries printed side by side (e.g. a netdef engine and
the ONNX route's engine of the same model), then their layers matched by module name, largest time
differences first, with both kernels where they differ.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .. import interrupts, trt_api
from ..errors import OptionError
from .bench import load_for_timing

REFORMAT_WORDS = ("Reformat", "reformat", "CopyNode")
PROFILE_SUFFIX = re.compile(r" \[profile \d+\]$")  # TensorRT's mark on the layers of profiles 1, 2, ...


def profile_engine(path: str | Path, batch: int, runs: int = 200, warmup: int = 20, *,
                   hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """Mean time per engine layer over `runs` executions at `batch` (after `warmup`), with the inspector's
    description of each layer, on the current CUDA device; `hw`: the input height and width for an engine built
    with a dynamic input size (default its profile's opt). Layer times come from TensorRT's per-layer events and
    exclude launch gaps."""
    if runs < 1 or warmup < 0:
        raise OptionError(f"profile runs {runs} must be >= 1 and warm-up {warmup} >= 0")
    # its own engine: the profiler attached below cannot be detached again
    eng = load_for_timing(path, [batch])
    step = eng.prepare_step(batch, hw)
    for _ in range(warmup):
        step()
    step.synchronize()
    totals: dict[str, float] = defaultdict(float)
    order: list[str] = []

    def on_layer(name: str, ms: float) -> None:
        if name not in totals:
            order.append(name)
        totals[name] += ms

    profiler = trt_api.attach_profiler(step.context, on_layer)  # noqa: F841  (alive while the engine runs)
    with interrupts.tensorrt_call():  # the profiler is called back during the runs
        for _ in range(runs):
            step()
            step.synchronize()
    with eng.on_device():
        info = trt_api.layer_information(eng.engine, step.context)
    layers = []
    for n in order:  # TensorRT 8.6 names profile k's layers "... [profile k]" in both reports; else the bare name
        bare = PROFILE_SUFFIX.sub("", n)
        layers.append({"name": bare, "ms": totals[n] / runs} | _describe(info.get(n) or info.get(bare)))
    total = sum(r["ms"] for r in layers)
    for r in layers:
        r["share"] = r["ms"] / total if total else 0.0
    step_profile = step.profile
    del step
    detailed = any(isinstance(v, dict) and "LayerType" in v for v in info.values())
    return {"engine": str(eng.path), "arch": eng.meta["arch"]["name"], "precision": eng.meta["precision"],
            "batch": batch, "profile": step_profile, "profiles": len(eng.profiles), "runs": runs,
            "total_ms": total, "layers": layers, "detailed": detailed} | \
        ({"input_hw": list(eng.input_shape(eng.inputs[0], batch, hw)[-2:])} if eng.dynamic_hw else {})


def _describe(entry: Any) -> dict[str, Any]:
    """Type, tactic and output formats from one inspector entry (a name only for engines built without
    --detailed)."""
    if not isinstance(entry, dict):
        return {}
    out = {"type": entry.get("LayerType"), "tactic": entry.get("TacticName") or entry.get("TacticValue")}
    formats = [f for f in map(trt_api.inspector_output_format, entry.get("Outputs", [])) if f]
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
    slowest = sorted(prof["layers"], key=lambda r: -r["ms"])
    for r in slowest[:top]:
        extra = f"  [{r['type']}{', ' + str(r['tactic']) if r.get('tactic') else ''}]" if r.get("type") else ""
        lines.append(f"{r['ms']:9.4f} {r['share']:6.1%}  {r['name']}{extra}")
    rest = slowest[top:]
    if rest:
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


# ---------------------------------------------------------------- layer by layer

UNMATCHED_KINDS = ("reformat", "noop", "constant")  # copies and no-time layers: no module's own work
COPY_MARKS = (" copy", "_copy_output")  # TensorRT's copies, named after the tensors they copy
UNNAMED = re.compile(r"\(Unnamed Layer\* \d+\) \[[^\]]*\]")  # a layer nobody named (e.g. the ONNX parser's)
NAME_TOKEN = re.compile(r"[^\s(),+|]+")


def module_key(layer_name: str) -> str | None:
    """The PyTorch module an engine layer comes from, as a dotted path: netdef names layers after weight-key
    prefixes (`layer3.1.conv2 + layer3.1.conv2/relu` -> `layer3.1.conv2`); the ONNX exporter after module
    scopes (`/m/layer3/layer3.1/conv2/Conv` -> `m.layer3.1.conv2`). None for the copies and reformats
    TensorRT inserts."""
    if any(w in layer_name for w in REFORMAT_WORDS + COPY_MARKS):
        return None
    for token in NAME_TOKEN.findall(UNNAMED.sub(" ", layer_name)):
        if token == "PWN":  # TensorRT's pointwise fusion wrapper
            continue
        if not token.startswith("/"):
            return token.split("/")[0].split("#")[0]
        path: list[str] = []
        for part in [p for p in token.split("/") if p][:-1]:  # the last part is the ONNX node's own name
            if path and part.startswith(path[-1] + "."):  # a container's child scope repeats the container
                path[-1] = part
            else:
                path.append(part)
        return ".".join(path) or None
    return None


def _without_wrapper(keys: list[str | None]) -> list[str | None]:
    """The keys without a first component they all share (a wrapper module such as compare_routes' `m`);
    a key that is only the wrapper becomes None."""
    firsts = {k.split(".")[0] for k in keys if k}
    if len(firsts) != 1:
        return keys
    cut = len(firsts.pop()) + 1
    return [k[cut:] or None if k else None for k in keys]


def _aligned_keys(ka: list[str | None], kb: list[str | None]) -> tuple[list[str | None], list[str | None]]:
    """Module keys of both engines made comparable: one side's wrapper prefix dropped if that makes more
    keys equal."""
    def shared(option: tuple[list[str | None], list[str | None]]) -> int:
        return len(set(filter(None, option[0])) & set(filter(None, option[1])))

    return max([(ka, kb), (ka, _without_wrapper(kb)), (_without_wrapper(ka), kb)], key=shared)


def _parent(key: str | None) -> str | None:
    return key.rsplit(".", 1)[0] if key and "." in key else None


def match_layers(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs (layer of A, layer of B) from the same module, in three passes over the layers still unpaired:
    (1) one kind, in order, where both engines have as many layers of that kind for the module; (2) a
    module's only layer left on each side, whatever its kind (a convolution may run as another kind of
    kernel); (3) as (1) on the parent module (netdef names an activation after its convolution,
    `model.0.conv/silu`, the exporter after its own module, `model.0/act`). Copies, no-ops, constants and
    modules the two engines split differently (e.g. a detection head made of other operations) stay
    unmatched."""
    def keys(p: dict[str, Any]) -> list[str | None]:
        return [None if kind_of(l).lower() in UNMATCHED_KINDS else module_key(l["name"]) for l in p["layers"]]

    ka, kb = _aligned_keys(keys(a), keys(b))
    kinds_a, kinds_b = [kind_of(l) for l in a["layers"]], [kind_of(l) for l in b["layers"]]
    pairs: dict[int, int] = {}
    for key_a, key_b, same_kind, only_one in ((ka, kb, True, False), (ka, kb, False, True),
                                              ([_parent(k) for k in ka], [_parent(k) for k in kb], True, False)):
        size_a, size_b = Counter(key_a), Counter(key_b)
        for i, k in enumerate(key_a):
            if k is None or i in pairs:
                continue
            taken = set(pairs.values())
            options = [j for j, kj in enumerate(key_b) if kj == k and j not in taken
                       and (kinds_b[j] == kinds_a[i] or not same_kind)]
            siblings = [n for n, kn in enumerate(key_a) if kn == k and n not in pairs
                        and (kinds_a[n] == kinds_a[i] or not same_kind)]
            # several of a kind are paired in order only where both engines split the module alike
            alike = len(options) == 1 or size_a[k] == size_b[k]
            if options and len(options) == len(siblings) and alike and (not only_one or len(options) == 1):
                pairs[i] = options[0]
    return [(a["layers"][i], b["layers"][j]) for i, j in sorted(pairs.items())]


def format_layer_differences(a: dict[str, Any], b: dict[str, Any], top: int = 15) -> str:
    """The `top` matched layers whose times differ most, with both kernels where they differ, then how much
    time the matched and the unmatched layers take on each side."""
    pairs = match_layers(a, b)
    lines = [f"layer by layer (matched by module name: {len(pairs)} of {len(a['layers'])} A layers, "
             f"{len(pairs)} of {len(b['layers'])} B layers), largest differences first:",
             f"{'A ms':>9} {'B ms':>9} {'A-B ms':>9}  module: A layer | B layer"]
    for la, lb in sorted(pairs, key=lambda p: -abs(p[0]["ms"] - p[1]["ms"]))[:top]:
        fused = "" if la["name"].count(" + ") == lb["name"].count(" + ") else "  (fused differently)"
        lines.append(f"{la['ms']:9.4f} {lb['ms']:9.4f} {la['ms'] - lb['ms']:+9.4f}  "
                     f"{module_key(la['name'])}: {la['name']} | {lb['name']}{fused}")
        if la.get("tactic") and lb.get("tactic") and la["tactic"] != lb["tactic"]:
            lines.append(f"{'':31}A: {la.get('type', '')} {la['tactic']}")
            lines.append(f"{'':31}B: {lb.get('type', '')} {lb['tactic']}")
    matched_a, matched_b = sum(p[0]["ms"] for p in pairs), sum(p[1]["ms"] for p in pairs)
    lines.append(f"matched layers: A {matched_a:.4f} ms, B {matched_b:.4f} ms ({matched_a - matched_b:+.4f}); "
                 f"unmatched: A {a['total_ms'] - matched_a:.4f} ms in {len(a['layers']) - len(pairs)} layers, "
                 f"B {b['total_ms'] - matched_b:.4f} ms in {len(b['layers']) - len(pairs)} layers")
    return "\n".join(lines)
