"""Instance masks of YOLO segmentation heads, in torch on the GPU (CPU works too), and their JSON encoding.

`process_masks` is Ultralytics 8.4's predictor step (`ops.process_mask(..., upsample=True)`): mask coefficients x
prototypes, bilinear upsampling to the letterboxed input, threshold at logit 0 (sigmoid 0.5), crop to the box;
`netdef.tools.preprocess.scale_masks` then maps the masks to the original image.

In `detections.json` a mask is COCO's compressed RLE, as pycocotools' `mask.encode` writes it and
`mask.decode` / COCO evaluation read it: {"size": [h, w], "counts": "<string>"}. `rle_encode` and `rle_decode` are
pycocotools' encoder and decoder (the counts as a str, so the JSON holds them), the decoder checked.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import NetdefError


def crop_mask(masks: Any, boxes: Any) -> Any:
    """Zero (N, H, W) masks outside their (N, 4) x1y1x2y2 boxes, in place (pixel column c is kept when
    x1 <= c < x2, as Ultralytics' crop_mask); returns `masks`."""
    import torch

    boxes = boxes.to(masks.device)
    _, h, w = masks.shape
    x1, y1, x2, y2 = torch.chunk(boxes[:, :, None], 4, 1)  # each (N, 1, 1)
    cols = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, None, :]
    rows = torch.arange(h, device=masks.device, dtype=x1.dtype)[None, :, None]
    masks *= (cols >= x1) * (cols < x2)
    masks *= (rows >= y1) * (rows < y2)
    return masks


def process_masks(protos: Any, coefs: Any, boxes: Any, shape: tuple[int, int]) -> Any:
    """Binary (N, H, W) uint8 masks on the letterboxed input of size `shape` (H, W) from the (nm, h, w) prototypes,
    (N, nm) coefficients and (N, 4) x1y1x2y2 boxes in input pixels: upsample the logits, threshold, crop."""
    import torch
    import torch.nn.functional as F

    nm, mh, mw = protos.shape
    if coefs.ndim != 2 or coefs.shape[1] != nm:
        raise NetdefError(f"mask coefficients {tuple(coefs.shape)} do not fit {nm} prototypes {tuple(protos.shape)}")
    if coefs.shape[0] == 0:
        return torch.zeros((0, *shape), dtype=torch.uint8, device=protos.device)
    logits = (coefs.to(protos.device).float() @ protos.float().view(nm, -1)).view(-1, mh, mw)
    logits = F.interpolate(logits[None], tuple(shape), mode="bilinear")[0]
    return crop_mask(logits.gt_(0.0).byte(), boxes)


def rle_encode(masks: Any) -> list[dict[str, Any]]:
    """COCO compressed RLE ({"size": [h, w], "counts": str}) of each (N, H, W) mask (bool/uint8, torch or numpy),
    by pycocotools' `mask.encode`; the masks come to the host in one copy (`host_bits`), laid out as it wants them."""
    import torch

    coco_mask = _coco_mask()
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise NetdefError(f"rle_encode: expected (N, H, W) masks, got {tuple(masks.shape)}")
    n, h, w = masks.shape
    if n == 0:
        return []
    # column-major masks one after the other: (N, W, H) C-order is the (H, W, N) Fortran order pycocotools reads
    host = host_bits((masks != 0).transpose(1, 2).reshape(n, h * w)).reshape(n, w, h).transpose(2, 1, 0)
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}
            for r in coco_mask.encode(host)]


def host_bits(bits: Any, pack: bool | None = None) -> np.ndarray:
    """A (N, L) bool tensor as a (N, L) uint8 NumPy array. `pack` (default: for a tensor off the CPU) packs 8 values to
    a byte on the tensor's device first and unpacks them with NumPy: an eighth of the transfer."""
    import torch

    if not (bits.device.type != "cpu" if pack is None else pack):
        return bits.cpu().numpy().view(np.uint8)
    n, length = bits.shape
    eights = torch.nn.functional.pad(bits, (0, -length % 8)).view(n, -1, 8).to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    return np.unpackbits((eights * weights).sum(2, dtype=torch.uint8).cpu().numpy(), axis=1, count=length)


def rle_decode(rle: dict[str, Any], check: bool = True) -> np.ndarray:
    """The (h, w) bool mask of a COCO compressed RLE (`rle_encode`'s output), by pycocotools' `mask.decode`; a clear
    error for a damaged one (runs that do not cover the image exactly: pycocotools checks only an overrun, so
    the mask must encode back to the same string; `check=False` skips that for masks `rle_encode` just wrote)."""
    coco_mask = _coco_mask()
    try:
        (h, w), counts = (int(v) for v in rle["size"]), rle["counts"]
        coded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else bytes(counts)}
        with warnings.catch_warnings():  # its Cython array predates NumPy 2's __array__(copy=): a DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = coco_mask.decode(coded)
    except (KeyError, TypeError, ValueError, UnicodeError) as e:
        raise NetdefError(f"not a COCO compressed RLE mask ({type(e).__name__}: {e}): {str(rle)[:80]}") from None
    if check and coco_mask.encode(np.asfortranarray(mask != 0, dtype=np.uint8))["counts"] != coded["counts"]:
        raise NetdefError(f"not a COCO compressed RLE mask: its runs do not cover its {h}x{w} pixels exactly "
                          f"(a damaged or cut string): {str(rle)[:80]}")
    return mask.astype(bool)


def _coco_mask() -> Any:
    try:
        from pycocotools import mask
    except ImportError:
        raise NetdefError("COCO RLE masks need pycocotools (a netdef dependency): pip install pycocotools") from None
    return mask
