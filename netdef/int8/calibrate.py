"""`netdef calibrate`: activation ranges for INT8 builds, measured by running the FP32 network itself.

The network is defined with a `RecordingQuantizer` (every tensor that `--precision int8` will quantize
becomes an extra output `calib:<key>`), built as an FP32 engine at optimization level 0, and run over the
calibration set on the GPU; the values feed one `RangeCollector` per tensor, and the amax values
(max / percentile / entropy) are saved as a `CalibrationTable` tied to the network by its fingerprint.
No PyTorch model is needed. Where a PyTorch model with matching module names exists,
`calibrate_torch` collects the same ranges through forward hooks (no GPU, no engine).

Calibration data: a folder of images (searched recursively, resized to the network input with PIL,
RGB or grayscale by the channel count, scaled to [0, 1], then optional `mean`/`std`), or a .npy / .npz /
.pt array of shape (N, C, H, W), used as given (already preprocessed).
"""
from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import trt_api
from ..define import Identity, define_network, spec_for_weights, weights_identity
from ..compiler import compile_network
from ..defaults import IMAGE_SUFFIXES
from ..errors import NetdefError
from ..fileio import check_output, output_name
from ..network import Network
from ..options import BuildOptions
from ..registry import block_files
from ..spec import Spec
from ..tools.images import decoded, open_image
from .calibration import METHODS, TABLE_FILE, CalibrationTable, RangeCollector, compute_amax
from .quantize import CALIB_PREFIX, RecordingQuantizer, fingerprint, fingerprint_parts

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
DEFAULT_MAX_IMAGES = 512


# ---------------------------------------------------------------- calibration data

RESIZES = ("stretch", "letterbox")


def calibration_batches(data: str | Path, shape: Sequence[int], batch: int, *, max_images: int | None = None,
                        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        seed: int = 0, resize: str = "stretch") -> tuple[int, Iterator[np.ndarray]]:
    """(number of inputs, iterator of float32 batches of shape (<=batch, *shape)) from `data`; images brought to
    the input size by `resize` ("stretch", or "letterbox" as `netdef detect` feeds a YOLO detector).

    With more inputs than `max_images`, a fixed-seed random subset is used (folders are often sorted by class).
    """
    if resize not in RESIZES:
        raise NetdefError(f"calibration resize {resize!r}: use {' or '.join(RESIZES)}")
    if batch < 1:
        raise NetdefError(f"calibration batch size must be >= 1, got {batch}")
    if max_images is not None and max_images < 1:
        raise NetdefError(f"--max-images must be >= 1, got {max_images}")
    path = Path(data)
    shape = tuple(int(s) for s in shape)
    if path.is_dir():
        files = image_files(path)
        files = [files[i] for i in sorted(_subset(len(files), max_images, seed))]
        mean_a, std_a = _norm(mean, shape[0], "mean"), _norm(std, shape[0], "std")
        loader = (np.stack([load_image(f, shape, mean_a, std_a, resize) for f in files[i:i + batch]])
                  for i in range(0, len(files), batch))
        return len(files), loader
    if not path.is_file():
        raise NetdefError(f"calibration data {path} not found: give a folder of images or a .npy/.npz/.pt array")
    if mean is not None or std is not None or resize != "stretch":
        raise NetdefError(f"--mean/--std/--resize apply to image folders; the array {path} is used as given "
                          "(preprocess it)")
    arr = load_array(path, shape)
    idx = np.sort(_subset(len(arr), max_images, seed))
    return len(idx), (np.asarray(arr[idx[i:i + batch]], dtype=np.float32) for i in range(0, len(idx), batch))


def _subset(n: int, max_images: int | None, seed: int) -> np.ndarray:
    if max_images is None or n <= max_images:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:max_images]


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted; an error when there are none."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise NetdefError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def load_image(path: Path, shape: Sequence[int], mean: np.ndarray | None = None,
               std: np.ndarray | None = None, resize: str = "stretch") -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1] (then (x - mean) / std): resized (bilinear) to H, W, or
    letterboxed to it as YOLO's detectors take images (aspect kept, grey 114 around: `tools.preprocess`)."""
    c, h, w = shape
    if c not in (1, 3):
        raise NetdefError(f"image calibration data needs a 1- or 3-channel input, the network takes {c}; "
                          f"pass a (N, {c}, {h}, {w}) .npy array instead")
    if resize == "letterbox" and c != 3:
        raise NetdefError(f"letterboxed calibration images are RGB; the network takes {c} channel(s)")
    with open_image(path) as img:  # without Pillow: open_image's NetdefError, not an ImportError
        from PIL import Image

        if resize == "letterbox":
            from ..tools.preprocess import letterbox

            rgb = decoded(path, lambda: np.asarray(img.convert("RGB"), dtype=np.uint8))
            return _normalized(letterbox([rgb], (h, w), bgr=False, device="cpu")[0][0].numpy(), mean, std)
        x = decoded(path, lambda: np.asarray(img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR),
                                             dtype=np.float32)) / 255.0
    return _normalized(x[None] if c == 1 else x.transpose(2, 0, 1), mean, std)


def _normalized(x: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    """(C, H, W) `x` minus `mean`, divided by `std` (per channel, where given), as contiguous float32."""
    if mean is not None:
        x = x - mean[:, None, None]
    if std is not None:
        x = x / std[:, None, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def _norm(values: Sequence[float] | None, channels: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray([float(x) for x in values], np.float32)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise NetdefError(f"--{what} has {v.size} values; the network input has {channels} channels")
    if what == "std" and np.any(v <= 0):
        raise NetdefError(f"--std values must be positive, got {v.tolist()}")
    return v


def load_array(path: Path, shape: Sequence[int]) -> Any:
    """An (N, *shape) array from .npy (memory-mapped), .npz (its only array, or 'x'/'images') or .pt."""
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise NetdefError(f"calibration data {path}: expected a folder of images or a {'/'.join(ARRAY_SUFFIXES)} file")
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
        elif suffix == ".npz":
            with np.load(path) as z:
                names = [k for k in ("x", "images", "inputs") if k in z.files] or z.files
                if len(names) != 1:
                    raise NetdefError(f"{path} holds arrays {z.files}: name the calibration inputs 'x' or keep one")
                arr = z[names[0]]
        else:
            arr = _load_torch_array(path)
    except (OSError, ValueError) as e:
        raise NetdefError(f"cannot read calibration data {path}: {e}") from None
    shape = tuple(shape)
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape or arr.shape[0] == 0:
        raise NetdefError(f"calibration data {path} has shape {tuple(arr.shape)}; the network input needs "
                          f"(N, {', '.join(map(str, shape))}) with N >= 1")
    if arr.dtype.kind not in "fiu":
        raise NetdefError(f"calibration data {path} has dtype {arr.dtype}; expected numbers")
    return arr


def _load_torch_array(path: Path) -> np.ndarray:
    try:
        import torch
    except ImportError:
        raise NetdefError(f"reading {path} needs PyTorch; save the array with numpy.save instead") from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        obj = obj.get("x", tensors[0] if len(tensors) == 1 else None)
    if not isinstance(obj, torch.Tensor):
        raise NetdefError(f"{path} must hold a tensor (or a dict with one tensor, or key 'x')")
    return obj.detach().float().numpy()


# ---------------------------------------------------------------- the recording network

def recording_network(spec: Spec, weights: str | Path, *, input_hw: Sequence[int] | None = None,
                      strict: bool = True, identity: Identity | None = None) -> tuple[Network, dict[str, str]]:
    """The FP32 network with every quantization point exposed as output `calib:<key>`; (network, key -> kind).
    `identity`: the `weights_identity` taken before (the .wts read must be the file hashed then)."""
    rec = RecordingQuantizer()
    opts = BuildOptions(precision="fp32", input_hw=tuple(input_hw) if input_hw else None, strict=strict)
    net = define_network(spec, weights, opts, log=lambda msg: None, quantizer=rec, identity=identity)
    return net, dict(rec.points)


def quantization_points(arch: str | Path | Spec, weights: str | Path, input_hw: Sequence[int] | None = None,
                        strict: bool = True) -> dict[str, str]:
    """key -> kind ("conv", "linear", "residual") of every tensor an int8 build quantizes (no engine built)."""
    spec = spec_for_weights(arch, weights)
    return recording_network(spec, weights, input_hw=input_hw, strict=strict)[1]


def build_recording_engine(spec: Spec, weights: str | Path, output: str | Path, *, batch: int,
                           input_hw: Sequence[int] | None = None, strict: bool = True,
                           log: Callable[[str], None] | None = None, identity: Identity | None = None
                           ) -> dict[str, str]:
    """Build the recording network as an FP32 engine (level 0, batch 1..`batch`) at `output`; returns the points."""
    identity = identity or weights_identity(weights)
    net, points = recording_network(spec, weights, input_hw=input_hw, strict=strict, identity=identity)
    opts = BuildOptions(precision="fp32", batch=(1, batch, batch), input_hw=tuple(input_hw) if input_hw else None,
                        opt_level=0, tf32=False, strict=strict)
    source, sha = identity
    compile_network(net, opts, output, arch=spec.identity(), weights={"path": source, "sha256": sha},
                    log=log or _stderr, tag="calibrate", calibration_points=points)
    return points


# ---------------------------------------------------------------- calibration

def calibrate(arch: str | Path, weights: str | Path, data: str | Path, output_table: str | Path, *,
              method: str = "entropy", percentile: float = 99.99, batch: int = 16,
              max_images: int | None = DEFAULT_MAX_IMAGES, input_hw: Sequence[int] | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None, strict: bool = True,
              bins: int = 2048, resize: str | None = None,
              log: Callable[[str], None] | None = None) -> CalibrationTable:
    """Calibrate `arch` + `weights` on `data` with the FP32 engine and save the table at `output_table`. The engine
    is built and run on the current CUDA device (`with trt_api.use_device(N):` selects another). Images are
    brought to the input size by `resize` (`calibration_batches`), default "letterbox" for an architecture with
    a YOLO detection head (what `netdef detect` feeds it), else "stretch"."""
    log = log or _stderr
    kw = _method_options(method, percentile)
    spec = spec_for_weights(arch, weights)
    check_output(output_table, inputs=[weights, spec.path, *block_files(), data], what="the calibration table",
                 kind=TABLE_FILE, name=output_name(spec.name, "_table.json"))
    shape = spec.input_shape_for(tuple(input_hw) if input_hw else None)
    if resize is None and Path(data).is_dir():
        resize = "letterbox" if "conf_thres" in spec.build_params() else "stretch"  # a YOLO detector's, as detect
        how = f"letterboxed (grey 114 around, as netdef detect feeds {spec.name})" if resize == "letterbox" else \
            "resized"
        other = "stretch" if resize == "letterbox" else "letterbox"
        log(f"[netdef] calibration images {how} to {shape[1]}x{shape[2]} (--resize {other} for the other)")
    n, batches = calibration_batches(data, shape, batch, max_images=max_images, mean=mean, std=std,
                                     resize=resize or "stretch")
    # a missing .wts is reported before a missing GPU; the table records this hash, of the file the engine reads
    identity = weights_identity(weights)
    if not trt_api.can_run_engines():
        raise NetdefError(f"calibration runs the FP32 network on a CUDA GPU with full TensorRT (this is "
                          f"{trt_api.here()}): run `netdef "
                          f"calibrate` on the GPU machine, or, for a network whose every layer maps to a module (no "
                          f"residual adds), use netdef.int8.calibrate.calibrate_torch with the PyTorch model")
    from tqdm import tqdm

    from ..runtime import Engine

    with tempfile.TemporaryDirectory(prefix="netdef-calib-") as tmp:
        log(f"[netdef] building the FP32 calibration network of {spec.name} ...")
        points = build_recording_engine(spec, weights, Path(tmp) / "calib.engine", batch=batch,
                                        input_hw=input_hw, strict=strict, log=log, identity=identity)
        engine = Engine(Path(tmp) / "calib.engine")
        log(f"[netdef] calibrating {len(points)} tensors on {n} inputs from {data} ({method})")
        collectors = {k: RangeCollector(bins, name=k) for k in points}
        batches_run = 0
        for x in tqdm(batches, total=math.ceil(n / batch), desc="calibrating", unit="batch", file=sys.stderr):
            outs = engine.infer(x, as_numpy=True)
            for key, c in collectors.items():
                c.update(outs[CALIB_PREFIX + key])
            batches_run += 1
    return _save(spec, weights, identity, shape, collectors, method, kw, output_table, log,
                 {"images": n, "batches": batches_run, "batch": batch, "data": str(data), "source": "engine"})


def calibrate_torch(model: Any, arch: str | Path, weights: str | Path, batches: Iterable[Any],
                    output_table: str | Path, *, method: str = "entropy", percentile: float = 99.99,
                    input_hw: Sequence[int] | None = None, bins: int = 2048,
                    log: Callable[[str], None] | None = None) -> CalibrationTable:
    """Calibrate from a PyTorch model whose module names are the weight keys (no GPU, no engine).

    The model must hold the weights of `weights` (checked: the table is made for that file) and runs in eval
    mode (BatchNorm with its running statistics, as the engine; its mode is restored afterwards). Each
    quantization point is read as the input of the module named by its key (convolution and linear points);
    residual-add points have no module and need the engine (`calibrate`).
    """
    import torch

    log = log or _stderr
    kw = _method_options(method, percentile)
    spec = spec_for_weights(arch, weights)
    check_output(output_table, inputs=[weights, spec.path, *block_files()], what="the calibration table",
                 kind=TABLE_FILE, name=output_name(spec.name, "_table.json"))
    identity = weights_identity(weights)  # what the table records: the file read below must be this one
    net, points = recording_network(spec, weights, input_hw=input_hw, identity=identity)
    modules = dict(model.named_modules())
    missing = [k for k, kind in points.items() if kind == "residual" or k not in modules]
    if missing:
        raise NetdefError(f"calibrate_torch cannot observe {missing[:5]} (residual adds or names that are not "
                          f"modules of {type(model).__name__}); calibrate with the engine: `netdef calibrate`")
    _check_model_holds(model, net.weights, weights, net.derived, net.supplied)  # the arrays read once, as hashed
    shape = spec.input_shape_for(tuple(input_hw) if input_hw else None)
    collectors = {k: RangeCollector(bins, name=k) for k in points}
    hooks = [modules[k].register_forward_pre_hook(
        lambda m, inp, c=collectors[k]: c.update(inp[0].detach().float().cpu().numpy())) for k in points]
    n = nb = 0
    modes = {m: m.training for m in model.modules()}  # each module's own (a frozen BatchNorm stays frozen)
    try:
        model.eval()
        with torch.no_grad():
            for x in batches:
                x = torch.as_tensor(np.asarray(x, np.float32))
                if tuple(x.shape[1:]) != shape:  # ranges of another size, stamped with this one
                    other = (f", or input_hw=({x.shape[-2]}, {x.shape[-1]}) for tables of theirs"
                             if x.ndim == 4 and x.shape[1] == shape[0] else "")
                    raise NetdefError(f"calibrate_torch: batch {nb} has shape {tuple(x.shape)}, the table is made "
                                      f"for input {shape} (B, {', '.join(map(str, shape))}): give batches of that "
                                      f"shape{other}")
                model(x)
                n, nb = n + len(x), nb + 1
    finally:
        for m, mode in modes.items():
            m.training = mode
        for h in hooks:
            h.remove()
    return _save(spec, weights, identity, shape, collectors, method, kw, output_table, log,
                 {"images": n, "batches": nb, "source": "torch"})


def _check_model_holds(model: Any, tensors: Mapping[str, np.ndarray], weights: str | Path,
                       derived: Iterable[str] = (), supplied: Iterable[str] = ()) -> None:
    """NetdefError unless `model`'s state_dict holds `tensors`, the arrays of the .wts `weights` (same keys, values
    equal to float32 rounding): ranges measured with other weights would be stamped with this file's fingerprint.
    `derived` and `supplied` keys as `model_key_difference` takes them."""
    from ..verify.reference import model_key_difference

    state = model.state_dict()
    keys, extra, lacking = model_key_difference(state, tensors, derived, supplied)
    if extra or lacking:
        raise NetdefError(f"calibrate_torch: the model's keys are not those of {weights} (model only: "
                          f"{extra[:3]}, file only: {lacking[:3]}): give the model the file was exported from")
    for k in keys:
        have = state[k].detach().float().cpu().numpy().reshape(-1)
        if have.shape != tensors[k].shape or not np.allclose(have, tensors[k], rtol=1e-5, atol=1e-7):
            raise NetdefError(f"calibrate_torch: the model's '{k}' differs from {weights}'s (a freshly made model, "
                              "or another checkpoint?): load those weights into the model first")


def _save(spec: Spec, weights: str | Path, identity: Identity, shape: tuple[int, ...],
          collectors: dict[str, RangeCollector], method: str, kw: dict, output: str | Path,
          log: Callable[[str], None], meta: dict) -> CalibrationTable:
    """The table of the ranges `collectors` measured, for the weights hashed in `identity` (taken before they were
    read: not the file found at `weights` now, which another program may have replaced meanwhile), saved."""
    if not meta["images"]:
        raise NetdefError("no calibration inputs were fed")
    weights_sha = identity[1]
    table = CalibrationTable(fingerprint(spec, weights_sha, shape), method, compute_amax(collectors, method, **kw),
                             dict(meta, arch=spec.name, weights=str(weights), method_options=kw,
                                  tensors=len(collectors), **fingerprint_parts(spec, weights_sha, shape)))
    table.save(output)
    log(f"[netdef] wrote {output}: {len(table.amax)} ranges ({method}) from {meta['images']} inputs")
    return table


def _method_options(method: str, percentile: float) -> dict[str, Any]:
    if method not in METHODS:
        raise NetdefError(f"unknown calibration method '{method}': use one of {', '.join(METHODS)}")
    return {"percentile": float(percentile)} if method == "percentile" else {}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
