"""`netdef run`: run an engine once on an input (random when none is given) and summarize its outputs."""
from __future__ import annotations

import argparse
import io
from types import SimpleNamespace
from typing import Any

from ..errors import OptionError
from ..fileio import read_npy
from .device import add_device_option, device_index
from .options import number, parse_hw


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef run` to the command line."""
    r = subparsers.add_parser("run", help="run an engine on an input (random when none is given)")
    r.set_defaults(func=cmd_run)
    r.add_argument("engine")
    r.add_argument("--input", help=".npy input (default: random, of the engine's input shape and type)")
    r.add_argument("--batch", type=number("--batch", minimum=1),
                   help="batch size of the random input (default: the profile's opt)")
    r.add_argument("--input-shape", metavar="HxW",
                   help="height and width of the random input, for an engine built with a dynamic input size "
                        "(default: the profile's opt); --input gives its own")
    r.add_argument("--output", help="write the outputs: .npy for one output, .npz for several")
    r.add_argument("--backend", default="auto", choices=("auto", "torch", "pycuda"))
    r.add_argument("--cuda-graph", action="store_true", help="capture and replay a CUDA graph (torch backend)")
    add_device_option(r)
    return r


def cmd_run(a: argparse.Namespace) -> int:
    import numpy as np

    from ..fileio import NUMPY_FILE, atomic_write, check_output, output_name
    from ..runtime import Engine, random_input

    device = device_index(a)  # before any work
    hw = parse_hw(a.input_shape)
    if a.input and hw:
        raise OptionError("--input gives the input's height and width: leave out --input-shape")
    # Files next: without a GPU, Engine() would report that before a missing --input.
    x = read_npy(a.input, "--input") if a.input else None
    if a.output:
        check_output(a.output, inputs=[a.engine, a.input], what="--output", name=output_name(a.engine, ".npy"))
        for count in _output_counts(a.engine):
            check_output(numpy_file(a.output, count), inputs=[a.engine, a.input], what="--output", kind=NUMPY_FILE)
    described = Engine.described(a.engine)  # what its header tells is checked before a GPU is needed
    if described is not None:
        feed = x if x is not None else SimpleNamespace(shape=_input_shape(described, a.batch, hw))
        described.check_feeds({described.inputs[0].name: feed})
    eng = Engine(a.engine, backend=a.backend, cuda_graph=a.cuda_graph, device=device)
    if x is None:
        x = random_input(_input_shape(eng, a.batch, hw), eng.inputs[0].dtype, np.random.default_rng(0))
    outs = eng.infer({eng.inputs[0].name: x}, as_numpy=True)
    for name, v in outs.items():
        print(f"{name}: shape {tuple(v.shape)} {v.dtype}  min {v.min():.4g} max {v.max():.4g} mean {v.mean():.4g}")
    if a.output:
        path = numpy_file(a.output, len(outs))
        buf = io.BytesIO()  # written whole, then renamed: never a part of the array over an earlier result
        if path.endswith(".npy"):
            np.save(buf, next(iter(outs.values())))
        else:
            np.savez(buf, **outs)
        atomic_write(path, buf.getbuffer())
        print(f"wrote {path}")
    return 0


def _input_shape(eng: Any, batch: int | None, hw: Any) -> tuple[int, ...]:
    """The shape of the engine's first input at `batch` (default: its profile's opt) and `hw`."""
    return eng.input_shape(eng.inputs[0], batch or eng.batch_range[1], hw)


def _output_counts(engine: str) -> tuple[int, ...]:
    """The engine's output count as its header or sidecar records it; (1, 2), both file names numpy might
    write, where none says (a raw plan without a sidecar, a header Engine() will refuse with its own error)."""
    from ..deploy.plan import read_any_meta
    from ..errors import NetdefError

    try:
        meta = read_any_meta(engine)
    except NetdefError:
        return (1, 2)
    return (len(meta["outputs"]),) if meta else (1, 2)


def numpy_file(path: str, outputs: int) -> str:
    """The file `--output PATH` writes: .npy for one output (unless PATH ends in .npz), else .npz; the suffix
    added when PATH lacks it, as numpy does."""
    suffix = ".npy" if outputs == 1 and not path.endswith(".npz") else ".npz"
    return path if path.endswith(suffix) else path + suffix
