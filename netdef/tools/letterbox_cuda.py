"""`preprocess.letterbox` as one CUDA kernel per image (netdef/plugins/letterbox/letterbox.cu): the same pixels,
bit for bit, as the torch letterbox on the GPU, written straight into the batch (an engine's bound input, float32
or float16), in one launch where the torch version takes about twenty. Compiled with nvcc on first use like
netdef's plugins (`plugins.compile`), cached, and launched on the current torch stream, so a CUDA graph captures
it."""
from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import NetdefError

SCALE = float(np.float32(1) / np.float32(255))  # torch's CUDA x / 255.0 is x times this float32 reciprocal
_ARGTYPES = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
             ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
             ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_void_p)


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    """netdef_letterbox from the compiled library (compiled now on first use)."""
    from ..plugins import load_library
    from ..plugins.compile import compile_plugin

    fn = load_library(compile_plugin("letterbox").path).netdef_letterbox
    fn.argtypes, fn.restype = _ARGTYPES, ctypes.c_int
    return fn


@functools.lru_cache(maxsize=1024)
def _taps(n_out: int, n_in: int, vertical: bool, device: Any) -> Any:
    """The kernel's tap table along one axis: `_linear_taps`' i0, i1, a0, a1 as one int32 tensor on `device`."""
    import torch

    from .preprocess import _linear_taps

    return torch.from_numpy(np.concatenate(_linear_taps(n_out, n_in, vertical)).astype(np.int32)).to(device)


def letterbox_images(tensors: Sequence[Any], sizes: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]],
                     batch: Any, bgr: bool, fill: float, keep: list[Any] | None = None) -> None:
    """Write each (H, W, 3) uint8 CUDA tensor, resized to its (nh, nw) `sizes` and placed at its (top, left)
    `offsets`, into `batch[i]` (a (B, 3, h, w) float32 or float16 CUDA tensor or view with unit column stride),
    `fill` around it. `keep`: as `preprocess.letterbox`'s."""
    import torch

    if batch.device.type != "cuda":
        raise NetdefError(f"the CUDA letterbox writes CUDA tensors; the batch is on {batch.device}")
    if batch.dtype not in (torch.float32, torch.float16) or batch.stride(3) != 1:
        raise NetdefError(f"the CUDA letterbox writes float32 or float16 batches with contiguous rows, got "
                          f"{batch.dtype} strides {batch.stride()}")
    kernel = _kernel()
    _, _, oh, ow = batch.shape
    with torch.cuda.device(batch.device):
        stream = torch.cuda.current_stream().cuda_stream
        for i, (t, (nh, nw), (top, left)) in enumerate(zip(tensors, sizes, offsets)):
            src = t.contiguous()
            h, w = src.shape[:2]
            cols = rows = None
            if (nh, nw) != (h, w):
                cols, rows = _taps(nw, w, False, batch.device), _taps(nh, h, True, batch.device)
                if keep is not None:
                    keep += [cols, rows]
            if keep is not None and src is not t:
                keep.append(src)
            err = kernel(src.data_ptr(), h, w, nh, nw, top, left, int(bgr),
                         None if cols is None else cols.data_ptr(), None if rows is None else rows.data_ptr(),
                         batch[i].data_ptr(), int(batch.dtype == torch.float16), batch.stride(1), batch.stride(2),
                         oh, ow, fill, SCALE, stream)
            if err:
                raise NetdefError(f"the CUDA letterbox kernel failed on image {i} (CUDA error {err})")
