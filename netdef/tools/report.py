"""Benchmark records, tables and charts: JSON records, the per-batch table, latency ratios of two engines,
a latency/throughput chart."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import NetdefError
from ..fileio import FileKind, atomic_write


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    """Write a record as indented JSON, atomically."""
    atomic_write(path, (json.dumps(doc, indent=2, default=str) + "\n").encode())


def engine_summary(meta: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The part of an engine's metadata a benchmark record keeps."""
    keep = ("arch", "precision", "tensorrt", "gpu", "inputs", "outputs", "layers", "build_seconds", "created", "route")
    out = {k: meta[k] for k in keep if k in meta}
    opts = meta.get("options", {})
    out["options"] = {k: opts.get(k) for k in ("batch", "opt_level", "input_hw", "tf32", "workspace_mib")}
    out["path"] = str(path)
    return out


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per batch: latency percentiles, spread, iterations and throughput."""
    head = f"{'batch':>6} {'median ms':>10} {'p90 ms':>9} {'p99 ms':>9} {'min ms':>9} {'mean ms':>9} " \
           f"{'CV':>6} {'iters':>7} {'img/s':>10}"
    rows = [f"{r['batch']:>6} {r['median_ms']:>10.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['min_ms']:>9.3f} "
            f"{r['mean_ms']:>9.3f} {r['cv']:>6.1%} {r['iters']:>7} {r['throughput']:>10.1f}" for r in results]
    return "\n".join([head, *rows])


def format_ratios(results: Sequence[dict[str, Any]], a: str, b: str) -> str:
    """Median latency of engine `a` over engine `b` per batch and round (below 1: `a` is faster)."""
    rounds = sorted({r["round"] for r in results})
    median = {(r["engine"], r["round"], r["batch"]): r["median_ms"] for r in results}
    batches = sorted({r["batch"] for r in results})
    lines = [f"{'batch':>6} " + " ".join(f"{f'{a}/{b} r{n}':>14}" for n in rounds)]
    for bt in batches:
        lines.append(f"{bt:>6} " + " ".join(f"{median[(a, n, bt)] / median[(b, n, bt)]:>14.3f}" for n in rounds))
    return "\n".join(lines)


# what --chart may replace: a chart, a PNG whose first chunk after the header names Matplotlib as its writer (as in
# every chart netdef drew), never any PNG image (a photo, a screenshot)
CHART_FILE = FileKind("a Matplotlib chart (PNG)",
                      lambda head: head.startswith(b"\x89PNG") and b"tEXtSoftware\x00Matplotlib" in head)


def write_chart(path: str | Path, results: Sequence[dict[str, Any]], title: str) -> None:
    """Latency (median with p90/p99) and throughput against batch size, as a PNG."""
    plt = pyplot()
    b = [r["batch"] for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(b, [r["median_ms"] for r in results], "o-", label="median")
    ax1.plot(b, [r["p90_ms"] for r in results], "x--", label="p90")
    ax1.plot(b, [r["p99_ms"] for r in results], "+:", label="p99")
    ax1.set(xlabel="batch", ylabel="latency (ms)", xscale="log", yscale="log", title="latency")
    ax1.legend()
    ax2.plot(b, [r["throughput"] for r in results], "o-")
    ax2.set(xlabel="batch", ylabel="images / s", xscale="log", title="throughput")
    for ax in (ax1, ax2):
        ax.set_xticks(b, [str(v) for v in b])
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def pyplot() -> Any:
    """matplotlib.pyplot (Agg backend); a NetdefError saying how to install it when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NetdefError("--chart needs matplotlib: pip install matplotlib (or leave out --chart)") from None
    return plt
