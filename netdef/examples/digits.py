"""A real-data example: a LeNet-style CNN on scikit-learn's handwritten digits, from PyTorch to INT8 engines.

`run_digits(workdir)` trains the model in seconds on CPU (fixed seed, stratified train/test split; the 8x8
images are upscaled 2x to 16x16), exports it to .wts, calibrates on training images, builds FP32, FP16 and
INT8 engines from `architectures/lenet.yaml` and prints each engine's test accuracy next to PyTorch's.
Calibration uses the FP32 engine (`netdef.int8.calibrate.calibrate`) where engines can run; elsewhere the
ranges come from the PyTorch model's activations (`calibrate_torch`), so the INT8 engine still builds
(TensorRT-RTX builds Q/DQ networks without a GPU). Run: `python -m netdef.examples.digits --workdir out/digits`.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import trt_api
from ..build import BuildOptions, build_engine
from ..errors import NetdefError, OptionError
from ..fileio import atomic_write

ARCH = "lenet"
UPSCALE = 2  # 8x8 -> 16x16 (nearest)
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_BATCH = (1, 256, 512)  # the whole test split (360 images) runs as one batch


class LeNet(nn.Module):
    """conv-bn-relu, pool, conv-bn-relu, pool, linear-relu, linear (1x16x16 input, 10 classes)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def load_digits_data(seed: int = 0, test_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """scikit-learn's digits (1797 images) as float32 (N, 1, 16, 16) in [0, 1]; stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise NetdefError("the digits example needs scikit-learn (its data set ships inside it): "
                          "pip install scikit-learn") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x = x.repeat(UPSCALE, axis=2).repeat(UPSCALE, axis=3)
    y = d.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def train_lenet(x: np.ndarray, y: np.ndarray, *, epochs: int = 10, seed: int = 0, batch: int = 64,
                lr: float = 3e-3, log: Callable[[str], None] | None = None) -> LeNet:
    """Adam on the training split; returns the model in eval mode (on CPU). `log` gets a line per epoch."""
    torch.manual_seed(seed)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in torch.randperm(len(xt), generator=g).split(batch):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if log:
            log(f"   epoch {epoch}/{epochs}: training loss {total / len(xt):.4f} ({time.perf_counter() - t0:.1f} s)")
    return model.eval()


def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(axis=1) == y).mean())


def run_digits(workdir: str | Path, *, epochs: int = 10, seed: int = 0, method: str = "entropy",
               log: Any = print) -> dict[str, Any]:
    """Train, export, calibrate, build FP32/FP16/INT8 engines and (with a GPU) compare test accuracies."""
    from ..int8.calibrate import calibrate, calibrate_torch
    from ..export import export_wts

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runnable = trt_api.can_run_engines()
    log(f"netdef digits: {trt_api.here()}")
    t0 = time.perf_counter()
    data = load_digits_data(seed)
    calib, calib_bytes = workdir / "calib.npy", npy_bytes(data["x_train"][:512])
    check_own_file(calib, data["x_train"][:512])  # before training
    log(f"1. training LeNet on {len(data['y_train'])} images for {epochs} epochs (CPU) ...")
    model = train_lenet(data["x_train"], data["y_train"], epochs=epochs, seed=seed, log=_stderr)
    result: dict[str, Any] = {"torch_accuracy": accuracy(torch_logits(model, data["x_test"]), data["y_test"]),
                              "test_images": len(data["y_test"]), "train_seconds": round(time.perf_counter() - t0, 1)}
    log(f"   trained in {result['train_seconds']} s; PyTorch test accuracy {result['torch_accuracy']:.2%} "
        f"({result['test_images']} images)")

    wts = workdir / "lenet.wts"
    export_wts(model, wts)
    atomic_write(calib, calib_bytes)
    table = workdir / "lenet_calib.json"
    if runnable:
        calibrate(ARCH, wts, calib, table, method=method, batch=128, log=log)
        torch_table = calibrate_torch(model, ARCH, wts, [data["x_train"][:512]], workdir / "lenet_calib_torch.json",
                                      method="max", log=log)
        engine_max = calibrate(ARCH, wts, calib, workdir / "lenet_calib_max.json", method="max", batch=128, log=log)
        result["calibration_agreement"] = max(abs(engine_max.amax[k] / v - 1) for k, v in torch_table.amax.items())
        result["calibration"] = "engine"
    else:
        calibrate_torch(model, ARCH, wts, [data["x_train"][:512]], table, method=method, log=log)
        result["calibration"] = "torch"
    log(f"2. exported {wts}; calibrated ({method}, {result['calibration']}) on 512 training images -> {table}")

    result["engines"] = {}
    for precision in PRECISIONS:
        opts = BuildOptions(precision=precision, batch=ENGINE_BATCH, opt_level=0, tf32=False,
                            calibration=str(table) if precision == "int8" else None)
        _stderr(f"   building the {precision} engine ...")
        res = build_engine(ARCH, wts, workdir / f"lenet_{precision}.engine", opts, log=lambda m: None)
        result["engines"][precision] = str(res.path)
    log(f"3. built {', '.join(PRECISIONS)} engines with {trt_api.version_string()} in {workdir}")

    result["accuracy"] = {}
    if not runnable:
        log("4. engines cannot run here (they need a CUDA GPU and full TensorRT); on a GPU machine this example "
            "also prints each engine's test accuracy")
        return result
    from ..runtime import Engine

    for precision, path in result["engines"].items():
        out = Engine(path).infer(data["x_test"], as_numpy=True)["logits"]
        result["accuracy"][precision] = accuracy(out, data["y_test"])
    log("4. test accuracy:  PyTorch " + f"{result['torch_accuracy']:.2%}  " +
        "  ".join(f"{p} engine {a:.2%}" for p, a in result["accuracy"].items()))
    return result


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as np.save writes it."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def check_own_file(path: Path, like: np.ndarray) -> None:
    """An existing `path` is replaced only when it holds an array of `like`'s dtype and shape (an earlier run's, of
    any seed): `--workdir` naming a folder of the user's must not turn their calib.npy into this example's images."""
    if not path.exists():
        return
    try:
        old = np.load(path, mmap_mode="r", allow_pickle=False) if path.is_file() else None
    except (OSError, ValueError):  # not a .npy file
        old = None
    if not isinstance(old, np.ndarray) or old.dtype != like.dtype or old.shape != like.shape:
        raise OptionError(f"--workdir {path.parent}: {path} holds other data than this example's (yours?): the example "
                          f"writes over its own files only; give another --workdir or move {path.name} away")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m netdef.examples.digits`: errors as netdef's commands give them (one line, exit 1)."""
    from ..cli.guard import run_guarded
    from ..cli.options import checked, number

    p = argparse.ArgumentParser(prog="python -m netdef.examples.digits", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="out/digits")
    p.add_argument("--epochs", type=number("--epochs", minimum=1), default=10)
    p.add_argument("--method", default="entropy", choices=("entropy", "max", "percentile"))
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    a = p.parse_args(argv)

    def run() -> int:
        run_digits(checked(a).workdir, epochs=a.epochs, method=a.method)
        return 0

    return run_guarded(run, prog="netdef digits", debug=a.debug)


if __name__ == "__main__":
    sys.exit(main())
