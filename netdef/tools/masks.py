"""Instance masks of YOLO segmentation heads, in torch on the GPU (CPU works too), and their JSON encoding.

`process_masks` is Ultralytics 8.4's predictor step (`ops.process_mask(..., upsample=True)`): mask coefficients x
prototypes, bilinear upsampling to the letterboxed input, threshold at logit 0 (sigmoid 0.5), crop to the box;
`netdef.tools.preprocess.scale_masks` then maps the masks to the original image.

In `detections.json` a mask is COCO's compressed RLE, as pycocotools' `mask.encode` writes it and
`mask.decode` / COCO evaluation read it: {"size": [h, w], "counts": "<string>"}, runs of 0s and 1s in column-major
(Fortran) order starting with a run of 0s, each run length delta-coded against the one two before (from the fourth
on) and written in 5-bit groups as characters from '0' (48). `rle_encode` computes the runs on the masks' device;
`rle_decode` reads one back as an (h, w) bool array (drawing, tests).
"""
from __future__ import annotations

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
    """COCO compressed RLE ({"size": [h, w], "counts": str}) of each (N, H, W) mask (bool/uint8, torch or numpy);
    the runs are found on the masks' device, one copy to the host for all masks."""
    import torch

    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise NetdefError(f"rle_encode: expected (N, H, W) masks, got {tuple(masks.shape)}")
    n, h, w = masks.shape
    if n == 0:
        return []
    flat = (masks != 0).transpose(1, 2).reshape(n, h * w)  # column-major, as COCO
    row, col = torch.nonzero(flat[:, 1:] != flat[:, :-1], as_tuple=True)  # run ends: row-major order
    packed = torch.cat((row, col + 1, flat[:, 0].long())).cpu().numpy()
    k = len(row)
    row, ends, first = packed[:k], packed[k:2 * k], packed[2 * k:]
    splits = np.searchsorted(row, np.arange(n + 1))
    out = []
    for i in range(n):
        edges = np.concatenate(([0], ends[splits[i]:splits[i + 1]], [h * w]))
        counts = np.diff(edges)
        if first[i]:  # COCO's runs start with the 0s
            counts = np.concatenate(([0], counts))
        out.append({"size": [int(h), int(w)], "counts": _counts_to_string(counts)})
    return out


def _counts_to_string(counts: np.ndarray) -> str:
    """COCO's rleToString: delta-code from the fourth count on, then 5-bit groups (bit 5: more follow) + 48."""
    x = counts.astype(np.int64)
    x[3:] = counts[3:] - counts[1:-2]
    groups = max(1, (int(np.abs(x).max()).bit_length() + 1 + 4) // 5)  # enough for the sign bit of each value
    chars = np.zeros((len(x), groups), np.uint8)
    used = np.zeros((len(x), groups), bool)
    alive = np.ones(len(x), bool)
    for g in range(groups):
        c = x & 0x1F
        x = x >> 5  # arithmetic: negative values end at -1
        more = np.where(c & 0x10, x != -1, x != 0)
        chars[:, g] = (c | (more << 5)) + 48
        used[:, g] = alive
        alive &= more
    return chars[used].tobytes().decode("ascii")


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """The (h, w) bool mask of a COCO compressed RLE (`rle_encode`'s output); a clear error for a damaged one."""
    try:
        (h, w), text = (int(v) for v in rle["size"]), rle["counts"]
        counts: list[int] = []
        p = 0
        while p < len(text):
            x, k, more = 0, 0, True
            while more:
                c = ord(text[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            if len(counts) > 2:
                x += counts[-2]
            counts.append(x)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise NetdefError(f"not a COCO compressed RLE mask ({type(e).__name__}: {e}): {str(rle)[:80]}") from None
    if min(counts, default=0) < 0 or sum(counts) != h * w:
        raise NetdefError(f"COCO RLE counts sum to {sum(counts)}, its size {h}x{w} needs {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T
