"""Compare engines with PyTorch: the error measure every netdef accuracy claim uses."""
from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np


def max_rel_error(out: Any, ref: Any) -> float:
    """max |out - ref| / max |ref|: the largest deviation relative to the reference's scale."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape {out.shape} != reference shape {ref.shape}")
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def check_tolerance(tol: Any, label: str) -> None:
    """An OptionError '`label` TOL: expected a number >= 0' for a tolerance that is no number >= 0 (None: a
    default is used)."""
    from ..errors import OptionError

    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0):
        raise OptionError(f"{label} {tol!r}: expected a number >= 0 (a max relative error)")


def cosine(out: Any, ref: Any) -> float:
    a = np.asarray(out, dtype=np.float64).ravel()
    b = np.asarray(ref, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """PyTorch's TF32 (matmul and cuDNN) off inside the block, as it was after it: exact fp32 references."""
    import torch

    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def torch_reference(model: Any, x: np.ndarray, device: str = "cuda") -> np.ndarray:
    """The model's fp32 output for x, with TF32 off so the reference itself is exact fp32."""
    import torch

    with tf32_off(), torch.no_grad():
        y = model.to(device).eval()(torch.from_numpy(x).to(device))
    return (y[0] if isinstance(y, (tuple, list)) else y).float().cpu().numpy()
