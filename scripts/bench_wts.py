#!/usr/bin/env python
"""Benchmark netdef.wts: write and read a ResNet-152-sized random .wts file.

    python scripts/bench_wts.py [--values 60192808] [--tensors 467] [--dir /tmp] [--repeat 3]
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


def best(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        result = None  # free the previous result before timing the next run
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=60_192_808, help="total float values (ResNet-152)")
    ap.add_argument("--tensors", type=int, default=467, help="number of tensors")
    ap.add_argument("--dir", default="/tmp", help="directory for the temporary .wts file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is reported")
    ap.add_argument("--keep", action="store_true", help="keep the .wts file")
    args = ap.parse_args()

    tensors = make_tensors(args.values, args.tensors)
    path = os.path.join(args.dir, f"bench_{os.getpid()}.wts")
    try:
        t_write, _ = best(lambda: write_wts(path, tensors), args.repeat)
        size_mb = os.path.getsize(path) / 1e6
        t_sum, summary = best(lambda: wts_summary(path), args.repeat)
        t_read, got = best(lambda: read_wts(path), args.repeat)
        ok = list(got) == list(tensors) and all(
            np.array_equal(got[k].view(np.uint32), v.view(np.uint32)) for k, v in tensors.items())
        print(f"file: {path}  {summary['tensors']} tensors, {summary['values']:,} values, {size_mb:.1f} MB")
        print(f"write_wts:   {t_write:6.2f} s  {size_mb / t_write:7.1f} MB/s")
        print(f"read_wts:    {t_read:6.2f} s  {size_mb / t_read:7.1f} MB/s")
        print(f"wts_summary: {t_sum:6.2f} s  {size_mb / t_sum:7.1f} MB/s")
        print(f"read values equal written values (bit-exact): {ok}")
        return 0 if ok else 1
    finally:
        if not args.keep and os.path.exists(path):
            os.remove(path)


if __name__ == "__main__":
    sys.exit(main())
