"""`netdef run`: run an engine once on an input (random when none is given) and summarize its outputs."""
from __future__ import annotations

import argparse
from typing import Any

from .options import number


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef run` to the command line."""
    r = subparsers.add_parser("run", help="run an engine on an input (random when none is given)")
    r.set_defaults(func=cmd_run)
    r.add_argument("engine")
    r.add_argument("--input", help=".npy input (default: random normal of the engine's input shape)")
    r.add_argument("--batch", type=number("--batch", minimum=1),
                   help="batch size of the random input (default: the profile's opt)")
    r.add_argument("--output", help="write the outputs: .npy for one output, .npz for several")
    r.add_argument("--backend", default="auto", choices=("auto", "torch", "pycuda"))
    r.add_argument("--cuda-graph", action="store_true", help="capture and replay a CUDA graph (torch backend)")
    return r


def cmd_run(a: argparse.Namespace) -> int:
    import numpy as np

    from ..runtime import Engine

    eng = Engine(a.engine, backend=a.backend, cuda_graph=a.cuda_graph)
    if a.input:
        x = np.load(a.input)
    else:
        spec = eng.inputs[0]
        batch = a.batch or eng.batch_range[1]
        x = np.random.default_rng(0).standard_normal((batch, *spec.shape[1:])).astype(spec.dtype)
    outs = eng.infer({eng.inputs[0].name: x}, as_numpy=True)
    for name, v in outs.items():
        print(f"{name}: shape {tuple(v.shape)} {v.dtype}  min {v.min():.4g} max {v.max():.4g} mean {v.mean():.4g}")
    if a.output:
        if len(outs) == 1 and not a.output.endswith(".npz"):
            np.save(a.output, next(iter(outs.values())))
        else:
            np.savez(a.output, **outs)
        print(f"wrote {a.output}")
    return 0
