"""`preprocess.letterbox` as one CUDA kernel per image (netdef/plugins/letterbox/letterbox.cu), written to give the
same bits as the torch letterbox on the GPU, straight into the batch (an engine's bound input, float32 or float16),
in one launch where the torch version takes about twenty. Compiled with nvcc alone (no TensorRT) on first use,
cached like netdef's plugins (`plugins.compile`), and launched on the current torch stream, so a CUDA graph
captures it."""
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


@functools.lru_cache(maxsize=None)
def _library(arch: str) -> ctypes.CDLL:
    """The compiled kernel library for compute capability `arch` ("9.0"), compiled now on first use."""
    from ..plugins.compile import compile_plugin, find_toolchain

    try:
        lib = ctypes.CDLL(str(compile_plugin("letterbox", toolchain=find_toolchain(tensorrt=False, arch=arch)).path))
    except NetdefError as e:
        raise NetdefError(f"the letterbox kernel (letterbox_kernel=True, --letterbox-kernel) is not available: {e}\n"
                          f"(the torch letterbox, the default, needs no compiler)") from None
    except OSError as e:
        raise NetdefError(f"cannot load the letterbox kernel library: {e}") from None
    lib.netdef_letterbox.argtypes, lib.netdef_letterbox.restype = _ARGTYPES, ctypes.c_int
    lib.netdef_cuda_error_name.argtypes, lib.netdef_cuda_error_name.restype = (ctypes.c_int,), ctypes.c_char_p
    return lib


@functools.lru_cache(maxsize=None)
def kernel_library(device: Any) -> ctypes.CDLL:
    """The letterbox kernel's library for the CUDA `device` (a torch device), compiled on first use: call it early
    to hear of a missing toolchain before any image is read (kept per device: every letterbox call asks)."""
    import torch

    return _library("%d.%d" % torch.cuda.get_device_capability(device))


def letterbox_images(tensors: Sequence[Any], sizes: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]],
                     batch: Any, bgr: bool, fill: float, keep: list[Any] | None = None) -> None:
    """Write each (H, W, 3) uint8 CUDA tensor, resized to its (nh, nw) `sizes` and placed at its (top, left)
    `offsets`, into `batch[i]` (a (B, 3, h, w) float32 or float16 CUDA tensor or view with unit column stride, on
    the images' device), `fill` around it. `keep`: as `preprocess.letterbox`'s."""
    import torch

    from .preprocess import _device_taps

    if batch.device.type != "cuda":
        raise NetdefError(f"the letterbox kernel writes CUDA tensors, and the batch is on {batch.device}: letterbox "
                          f"on a CUDA device (device='cuda', CUDA images or a CUDA `out`)")
    if batch.dtype not in (torch.float32, torch.float16) or batch.ndim != 4 or batch.shape[1] != 3 \
            or batch.stride(3) != 1 or len(tensors) > batch.shape[0]:
        raise NetdefError(f"the letterbox kernel writes (B >= {len(tensors)}, 3, H, W) float32 or float16 batches "
                          f"with contiguous rows, got {tuple(batch.shape)} {batch.dtype} strides {batch.stride()}")
    for i, t in enumerate(tensors):
        if t.device != batch.device:
            raise NetdefError(f"letterbox kernel: image {i} is on {t.device}, the batch on {batch.device}")
    lib = kernel_library(batch.device)
    _, _, oh, ow = batch.shape
    with torch.cuda.device(batch.device):
        stream = torch.cuda.current_stream().cuda_stream
        for i, (t, (nh, nw), (top, left)) in enumerate(zip(tensors, sizes, offsets)):
            src = t.contiguous()
            h, w = src.shape[:2]
            cols = rows = None
            if (nh, nw) != (h, w):
                cols, rows = _device_taps(nw, w, False, batch.device), _device_taps(nh, h, True, batch.device)
            if keep is not None:  # what a CUDA graph of this reads
                keep += [v for v in (cols, rows) if v is not None] + ([src] if src is not t else [])
            err = lib.netdef_letterbox(src.data_ptr(), h, w, nh, nw, top, left, int(bgr),
                                       None if cols is None else cols.data_ptr(),
                                       None if rows is None else rows.data_ptr(), batch[i].data_ptr(),
                                       int(batch.dtype == torch.float16), batch.stride(1), batch.stride(2), oh, ow,
                                       fill, SCALE, stream)
            if err:
                name = (lib.netdef_cuda_error_name(err) or b"?").decode()
                raise NetdefError(f"the letterbox kernel failed on image {i}: CUDA error {err} ({name})")
