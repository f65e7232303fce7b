#!/usr/bin/env python
"""Benchmark netdef.wts: write and read a ResNet-152-sized random .wts file.

    python scripts/bench_wts.py [--values 60192808] [--tensors 467] [--dir /tmp] [--repeat 3] [--layout cpp]

Each figure is the best of --repeat runs on a file in the page cache (a cold read also waits for the
disk), in MB of file per second of wall time, with the process's CPU time beside it (on a shared machine
the CPU figure is the steadier one):

- read_wts:    the whole reader: every value parsed, checked and converted to float32 arrays;
- wts_summary: the tensor headers only (names and counts; the values are skipped, not converted);
- write_wts:   float32 to hex text, written atomically (temporary file, fsync, rename).

--layout netdef is write_wts's layout (8 digits, one space: the reader's fast path); --layout cpp is
tensorrtx's C++ std::hex layout (no leading zeros; every 16th value is 0, written "0", so every line
takes the general path).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from netdef.wts import read_wts, wts_summary, write_wts  # noqa: E402


def make_tensors(total: int, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` tensors of log-uniformly varied sizes (1 .. ~2.4M) adding up to `total` values."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(1), np.log(2_400_000), count))
    sizes = np.maximum(1, (sizes * total / sizes.sum()).astype(np.int64))
    sizes[np.argmax(sizes)] += total - sizes.sum()
    flat = rng.standard_normal(total, dtype=np.float32)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    return {f"layer{i}.{'weight' if i % 3 else 'bias'}": flat[bounds[i]:bounds[i + 1]]
            for i in range(count)}


def best(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over `repeat` runs."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        result = None  # free the previous result before timing the next run
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), result


def to_cpp_layout(path: str) -> None:
    """Rewrite a write_wts file as C++ std::hex writes it: zero values as "0" (no leading zeros)."""
    with open(path, "rb") as f:
        text = f.read()
    with open(path, "wb") as f:
        f.write(text.replace(b" 00000000", b" 0"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=60_192_808, help="total float values (ResNet-152)")
    ap.add_argument("--tensors", type=int, default=467, help="number of tensors")
    ap.add_argument("--dir", default="/tmp", help="directory for the temporary .wts file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is reported")
    ap.add_argument("--layout", choices=("netdef", "cpp"), default="netdef", help="how the values are written")
    ap.add_argument("--keep", action="store_true", help="keep the .wts file")
    args = ap.parse_args()

    tensors = make_tensors(args.values, args.tensors)
    if args.layout == "cpp":
        for v in tensors.values():
            v[::16] = 0.0
    path = os.path.join(args.dir, f"bench_{os.getpid()}.wts")
    try:
        t_write, c_write, _ = best(lambda: write_wts(path, tensors), args.repeat)
        if args.layout == "cpp":
            to_cpp_layout(path)
        size_mb = os.path.getsize(path) / 1e6
        t_sum, c_sum, summary = best(lambda: wts_summary(path), args.repeat)
        t_read, c_read, got = best(lambda: read_wts(path), args.repeat)
        ok = list(got) == list(tensors) and all(
            np.array_equal(got[k].view(np.uint32), v.view(np.uint32)) for k, v in tensors.items())
        print(f"file: {path}  {args.layout} layout, {summary['tensors']} tensors, {summary['values']:,} values, "
              f"{size_mb:.1f} MB; {os.cpu_count()} CPUs; best of {args.repeat}, file in the page cache")
        rows = [("read_wts", "parse, check and convert every value", t_read, c_read),
                ("wts_summary", "tensor headers only, values skipped", t_sum, c_sum)]
        if args.layout == "netdef":
            rows.append(("write_wts", "float32 -> hex text, atomic write", t_write, c_write))
        for name, what, wall, cpu in rows:
            print(f"{name + ':':12} {wall:6.2f} s {size_mb / wall:7.1f} MB/s   (CPU {cpu:6.2f} s "
                  f"{size_mb / cpu:7.1f} MB/s)   {what}")
        print(f"read values equal written values (bit-exact): {ok}")
        return 0 if ok else 1
    finally:
        if not args.keep and os.path.exists(path):
            os.remove(path)


if __name__ == "__main__":
    sys.exit(main())
