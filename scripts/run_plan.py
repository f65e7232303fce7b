"""Run a raw TensorRT plan (from `netdef export-plan`) with TensorRT and torch alone: no netdef import. What a
deployment script needs, and the check that an exported plan stands on its own.

    python scripts/run_plan.py model.plan --input x.npy --output out.npz
    python scripts/run_plan.py yolov5s.plan --plugin libyolo_decode_nms.so --batch 4

Plugin libraries are loaded by path before deserializing (their creators register themselves): the `--plugin`
ones, else those the sidecar `model.plan.json` lists. The input is a .npy (the first input) or a .npz keyed by
input names, cast to the engine's input type (floats for an integer input are refused); without --input, random
data of --batch at profile 0's OPT size (normal, or 0..255 for an integer input). The optimization profile is the
first whose batch range covers the batch. Works with TensorRT 8.6, 10 and 11 (named I/O tensors,
execute_async_v3), and with TensorRT-RTX plans through `tensorrt_rtx`.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def random_values(shape: list[int], dtype: type, rng: np.random.Generator) -> np.ndarray:
    """Random input of `dtype`: standard normal floats, or integers within 0..255 and the type's range for an
    integer input (a uint8 image: 0..255)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(0, info.min), min(255, info.max) + 1, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def as_input(name: str, value: np.ndarray, dtype: type) -> np.ndarray:
    """`value` as the engine's input type. Refused (the cast would wrap them): floats for an integer input, and
    integers outside its type's range."""
    value = np.asarray(value)
    if np.issubdtype(dtype, np.integer):
        kind = np.dtype(dtype).name
        if not np.issubdtype(value.dtype, np.integer):
            sys.exit(f"input {name} takes {kind} (an engine built with --input-dtype uint8 takes the images "
                     f"themselves, 0..255) and the given array is {value.dtype}: give {kind} values")
        info = np.iinfo(dtype)
        if value.size and (value.min() < info.min or value.max() > info.max):
            sys.exit(f"input {name} takes {kind} ({info.min}..{info.max}) and the given values span "
                     f"{value.min()}..{value.max()}")
    return np.ascontiguousarray(value, dtype)


def read_feeds(path: str, inputs: list[str], plan: Path) -> dict[str, np.ndarray]:
    """The inputs in `path`: an .npz keyed by input name, or an .npy of the only input; exits naming the file
    when it is neither, or lacks an input."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                missing = sorted(set(inputs) - set(data.files))
                if missing:
                    sys.exit(f"{path} lacks the input(s) {missing} (it has {data.files})")
                return {n: data[n] for n in inputs}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # empty, cut or another kind of file
        sys.exit(f"--input {path}: not a whole .npy or .npz numpy file ({type(e).__name__}: {e})")
    if len(inputs) > 1:
        sys.exit(f"{plan} takes {len(inputs)} inputs {inputs}: give them as an .npz keyed by name")
    return {inputs[0]: data}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("plan")
    p.add_argument("--plugin", action="append", default=[], help="plugin library to load first (repeatable)")
    p.add_argument("--input", help=".npy (the first input) or .npz (by input name)")
    p.add_argument("--batch", type=int, default=1, help="batch of the random input (without --input)")
    p.add_argument("--output", help="write every output to this .npz")
    a = p.parse_args(argv)

    plan = Path(a.plan)
    if not plan.is_file():
        sys.exit(f"no such plan file: {plan}")
    if a.batch < 1:
        sys.exit(f"--batch {a.batch}: must be >= 1")
    if a.input is not None and not Path(a.input).is_file():
        sys.exit(f"--input {a.input}: no such file (an .npy of the first input, or an .npz keyed by input name)")
    output = None if a.output is None else Path(a.output if a.output.endswith(".npz") else f"{a.output}.npz")
    if output is not None:  # checked before the run: np.savez would write over any file, an input too
        if not output.parent.is_dir():
            sys.exit(f"--output {output}: no folder {output.parent}")
        for read in (plan, Path(f"{plan}.json"), *(Path(p) for p in [a.input, *a.plugin] if p)):
            if output.exists() and read.exists() and os.path.samefile(output, read):
                sys.exit(f"--output {output} is also an input ({read}): writing it would destroy that input; "
                         "give another path")
    with open(plan, "rb") as f:  # 'vtrt': a TensorRT-RTX plan, which its own module reads; 'ftrt': TensorRT's
        magic = f.read(4)
    if magic not in (b"ftrt", b"vtrt"):  # a netdef engine (its header first), a sidecar: never "a TensorRT plan"
        sys.exit(f"{plan} is no TensorRT plan (it starts with {magic!r}, a plan with 'ftrt' or 'vtrt'): for a netdef "
                 "engine, write its plan with `netdef export-plan ENGINE -o PLAN` and give PLAN")
    rtx = magic == b"vtrt"
    trt = None
    for name in ("tensorrt_rtx", "tensorrt_rtx_bindings") if rtx else ("tensorrt",):
        try:
            trt = importlib.import_module(name)
            break
        except ImportError:
            continue
    if trt is None:
        sys.exit(f"{plan} is a {'TensorRT-RTX' if rtx else 'TensorRT'} plan, and its Python module "
                 f"({'tensorrt_rtx' if rtx else 'tensorrt'}) is not installed")
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"running {plan} needs a CUDA GPU (torch sees none)")
    sidecar = Path(f"{plan}.json")
    try:
        libraries = a.plugin or ([e["library"] for e in json.loads(sidecar.read_text())["plugins"]]
                                 if sidecar.is_file() else [])
    except (OSError, ValueError, LookupError, TypeError) as e:  # cut, edited by hand, or another tool's JSON
        sys.exit(f"{sidecar}: no plugin libraries to read from it ({type(e).__name__}: {e}); export the plan again "
                 "with `netdef export-plan`, or name the libraries with --plugin")
    for lib in libraries:  # relative sidecar paths are relative to the sidecar's folder
        ctypes.CDLL(str(sidecar.parent / lib) if not Path(lib).is_absolute() else lib, mode=ctypes.RTLD_GLOBAL)
    logger = trt.Logger(trt.Logger.WARNING)
    if hasattr(trt, "init_libnvinfer_plugins"):  # TensorRT's own plugins, where its plugin library is installed
        trt.init_libnvinfer_plugins(logger, "")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        sys.exit(f"TensorRT {trt.__version__} could not deserialize {plan} (see its messages above)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]

    def random_input(name: str) -> np.ndarray:
        shape = [a.batch if k == 0 else d for k, d in enumerate(engine.get_tensor_shape(name))]
        if min(shape) < 0:
            shape = [a.batch, *engine.get_tensor_profile_shape(name, 0)[1][1:]]  # the opt size
        return random_values(shape, trt.nptype(engine.get_tensor_dtype(name)), np.random.default_rng(0))

    if a.input is None:
        feeds = {n: random_input(n) for n in inputs}
    else:
        feeds = read_feeds(a.input, inputs, plan)
    feeds = {n: as_input(n, v, trt.nptype(engine.get_tensor_dtype(n))) for n, v in feeds.items()}
    batch = feeds[inputs[0]].shape[0]
    static = engine.get_tensor_shape(inputs[0])[0] >= 0  # a fixed batch: profile 0 (TensorRT checks the size)
    profile = 0 if static else next((k for k in range(engine.num_optimization_profiles)
                                     if engine.get_tensor_profile_shape(inputs[0], k)[0][0] <= batch
                                     <= engine.get_tensor_profile_shape(inputs[0], k)[2][0]), None)
    if profile is None:
        sys.exit(f"batch {batch} is outside every optimization profile of {plan}")

    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    context.set_optimization_profile_async(profile, stream.cuda_stream)
    buffers = {}
    for n in inputs:
        buffers[n] = torch.from_numpy(feeds[n]).cuda()
        if not context.set_input_shape(n, tuple(feeds[n].shape)):
            sys.exit(f"input {n} {tuple(feeds[n].shape)} is outside optimization profile {profile} of {plan}")
    for n in names:
        if n not in buffers:
            dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(n)))).dtype
            buffers[n] = torch.empty(tuple(context.get_tensor_shape(n)), dtype=dtype, device="cuda")
        context.set_tensor_address(n, buffers[n].data_ptr())
    torch.cuda.current_stream().synchronize()  # the inputs' copies, made on the default stream
    if not context.execute_async_v3(stream.cuda_stream):
        sys.exit("execute_async_v3 failed (see TensorRT's messages above)")
    stream.synchronize()
    outputs = {n: buffers[n].cpu().numpy() for n in names if n not in inputs}
    for n, v in outputs.items():
        print(f"{n}: shape {v.shape} {v.dtype}")
    if output is not None:
        save(output, outputs)
        print(f"wrote {output}")
    return 0


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file beside `path`, renamed over it: an error or Ctrl-C leaves the old file whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~mask)  # as np.savez's own file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
