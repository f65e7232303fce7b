"""YOLOv5 letterbox on the GPU (torch; CPU works too) and its inverse for boxes, keypoints and masks.

`letterbox` reproduces YOLOv5's `utils.augmentations.letterbox` + `cv2.resize(INTER_LINEAR)` + BGR->RGB,
HWC->CHW, /255 for a batch of images of different sizes; `scale_boxes`, `scale_keypoints` and `scale_masks` map
boxes, keypoints and masks on the letterboxed image back to the original image. `classify_batch` makes a
classifier's input as Ultralytics' or YOLOv5's classification predictor does (resize, centre crop, normalise).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from ..errors import NetdefError

RatioPad = tuple[float, tuple[float, float]]  # (scale, (left, top) padding in pixels)
ImageLike = Union[np.ndarray, Any]  # HxWx3 uint8 numpy array or torch tensor


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise NetdefError("pre/post-processing needs PyTorch: pip install torch") from None
    return torch


def _hw(shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, int):
        return shape, shape
    h, w = (int(v) for v in shape)
    return h, w


def letterbox_plan(h: int, w: int, new_shape: int | Sequence[int] = (640, 640), stride: int = 32,
                   auto: bool = False, scaleup: bool = True) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """YOLOv5's sizes for one image: (ratio, (resized h, w), (padded h, w))."""
    H, W = _hw(new_shape)
    r = min(H / h, W / w)
    if not scaleup:
        r = min(r, 1.0)
    nh, nw = int(round(h * r)), int(round(w * r))
    if auto:  # minimum rectangle: pad only to a multiple of the stride
        return r, (nh, nw), (nh + (H - nh) % stride, nw + (W - nw) % stride)
    return r, (nh, nw), (H, W)


def pad_offsets(resized: tuple[int, int], padded: tuple[int, int]) -> tuple[int, int]:
    """(top, left) where YOLOv5 places the image: round(d/2 - 0.1) (the odd pixel goes bottom/right)."""
    dh, dw = (padded[0] - resized[0]) / 2, (padded[1] - resized[1]) / 2
    return int(round(dh - 0.1)), int(round(dw - 0.1))


def letterbox_size(shapes: Sequence[Sequence[int]], new_shape: int | Sequence[int] = (640, 640), stride: int = 32,
                   auto: bool = False, scaleup: bool = True) -> tuple[int, int]:
    """The (height, width) `letterbox` gives a batch of images of these (h, w[, c]) shapes."""
    return _batch_hw([letterbox_plan(s[0], s[1], new_shape, stride, auto, scaleup) for s in shapes])


def _batch_hw(plans: Sequence[Any]) -> tuple[int, int]:
    """The batch's (height, width): the largest padded size of the images' `letterbox_plan`s."""
    return max(p[2][0] for p in plans), max(p[2][1] for p in plans)


def letterbox(images: Sequence[ImageLike], new_shape: int | Sequence[int] = (640, 640), stride: int = 32,
              auto: bool = False, color: int = 114, *, scaleup: bool = True, bgr: bool = True,
              device: Any = None, out: Any = None, keep: list[Any] | None = None,
              kernel: bool = False) -> tuple[Any, list[RatioPad]]:
    """Letterbox a batch: returns ((B, 3, h, w) float32 in [0, 1] RGB, [(ratio, (pad_w, pad_h))] per image).

    images: HxWx3 uint8 numpy arrays or torch tensors, BGR like cv2.imread (`bgr=False` for RGB, e.g. PIL).
    Each image keeps its aspect ratio, is resized like cv2.resize(INTER_LINEAR) (`resize_linear`) and centred on a `color` canvas. With `auto`, the batch is
    padded only to the smallest stride multiple that holds every image. pad_w/pad_h are the actual left/top
    offsets in pixels (what `scale_boxes` subtracts). device: where to compute (default: the first tensor's
    device, else the CPU); numpy images are uploaded as uint8. `out`: a tensor (or view) of the batch's shape to
    write instead of a new one (any float dtype, with `kernel` float32 or float16; its device is the default), e.g.
    an engine's bound input.
    `keep`: a list the resize tables used are added to (a CUDA graph of this must keep them: they live in a cache).
    `kernel`: on a CUDA device, one fused kernel per image (`letterbox_cuda`, written to give the same bits;
    compiled with nvcc on first use) instead of about twenty torch operations.
    """
    torch = _torch()

    if len(images) == 0:
        raise NetdefError("letterbox: no images")
    if device is None:
        first = out if out is not None else images[0]
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise NetdefError(f"letterbox: device {device}, but this PyTorch sees no CUDA GPU: letterbox on the CPU "
                          f"(device='cpu') or run where a GPU is")
    tensors = [_as_uint8_tensor(im, i, device, torch, bgr) for i, im in enumerate(images)]
    plans = [letterbox_plan(t.shape[0], t.shape[1], new_shape, stride, auto, scaleup) for t in tensors]
    bh, bw = _batch_hw(plans)
    if out is not None and (tuple(out.shape) != (len(tensors), 3, bh, bw) or not out.is_floating_point()):
        raise NetdefError(f"letterbox: out is {tuple(out.shape)} {out.dtype}; this batch needs "
                          f"{(len(tensors), 3, bh, bw)} floats")
    sizes = [size for _, size, _ in plans]
    offsets = [pad_offsets(size, (bh, bw)) for size in sizes]
    ratio_pads = [(r, (float(left), float(top))) for (r, _, _), (top, left) in zip(plans, offsets)]
    if kernel:
        from .letterbox_cuda import letterbox_images

        batch = out if out is not None else torch.empty((len(tensors), 3, bh, bw), dtype=torch.float32, device=device)
        letterbox_images(tensors, sizes, offsets, batch, bgr, color / 255.0, keep)
        return batch, ratio_pads
    if out is None:
        batch = torch.full((len(tensors), 3, bh, bw), color / 255.0, dtype=torch.float32, device=device)
    else:
        batch = out.fill_(color / 255.0)
    for i, (t, (nh, nw), (top, left)) in enumerate(zip(tensors, sizes, offsets)):
        x = t.permute(2, 0, 1)
        if bgr:
            x = x.flip(0)
        if (nh, nw) != tuple(t.shape[:2]):
            x = resize_linear(x, nh, nw, keep)
        batch[i, :, top:top + nh, left:left + nw] = x.float() / 255.0
    return batch, ratio_pads


def _linear_taps(n_out: int, n_in: int, vertical: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR source indices and 11-bit fixed-point weights along one axis.

    Horizontally cv2 moves the taps at the borders onto the edge pixel (weight 1); vertically it keeps the
    weights and clamps the row indices (both taps then read the edge row).
    """
    f = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0.astype(np.float32)
    if vertical:
        i1 = np.clip(i0 + 1, 0, n_in - 1)
        i0 = np.clip(i0, 0, n_in - 1)
    else:
        low, high = i0 < 0, i0 >= n_in - 1
        frac[low | high] = 0
        i0[low], i0[high] = 0, n_in - 1
        i1 = np.minimum(i0 + 1, n_in - 1)
    a0 = np.round((np.float32(1) - frac) * np.float32(2048)).astype(np.int32)
    a1 = np.round(frac * np.float32(2048)).astype(np.int32)
    return i0, i1, a0, a1


@functools.lru_cache(maxsize=1024)
def _device_taps(n_out: int, n_in: int, vertical: bool, device: Any) -> Any:
    """`_linear_taps` as one (4, n_out) int32 tensor on `device` (rows i0, i1, a0, a1; what the letterbox kernel
    reads too), kept: a camera stream resizes the same sizes again and again."""
    torch = _torch()
    return torch.from_numpy(np.stack(_linear_taps(n_out, n_in, vertical)).astype(np.int32)).to(device)


def resize_linear(x: Any, nh: int, nw: int, keep: list[Any] | None = None) -> Any:
    """Resize a (C, H, W) uint8 tensor like cv2.resize(INTER_LINEAR) (its fixed-point uint8 arithmetic).

    Half-pixel centres, cv2's edge handling, 11-bit weights, a horizontal then a vertical pass with the
    rounding of cv2's vectorised uint8 path. Returns uint8 (C, nh, nw). `keep`: see `letterbox`.
    """
    torch = _torch()
    columns, rows_taps = _device_taps(nw, x.shape[2], False, x.device), _device_taps(nh, x.shape[1], True, x.device)
    if keep is not None:
        keep += [columns, rows_taps]
    x0, x1, a0, a1 = columns
    y0, y1, b0, b1 = rows_taps
    xi = x.to(torch.int32)
    rows = xi[:, :, x0] * a0 + xi[:, :, x1] * a1  # (C, H, nw), scaled by 2048
    top = (rows[:, y0] >> 4) * b0[:, None] >> 16
    bottom = (rows[:, y1] >> 4) * b1[:, None] >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def _as_uint8_tensor(im: ImageLike, i: int, device: Any, torch: Any, bgr: bool = False) -> Any:
    if bgr and type(im).__module__.startswith("PIL."):
        raise NetdefError(f"letterbox: image {i} is a PIL image, whose channels are RGB: pass bgr=False "
                          f"(bgr=True is for OpenCV's BGR arrays)")
    if not isinstance(im, torch.Tensor):
        im = np.ascontiguousarray(im)
        im = torch.from_numpy(im if im.flags.writeable else im.copy())
    t = im
    if t.ndim != 3 or t.shape[2] != 3 or t.dtype != torch.uint8:
        raise NetdefError(f"letterbox: image {i} must be HxWx3 uint8, got {tuple(t.shape)} {t.dtype}")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise NetdefError(f"letterbox: image {i} is empty ({tuple(t.shape)})")
    return t.to(device, non_blocking=True)


def pad_batch(batch: Any, lo: int, value: float = 0.0) -> Any:
    """`batch` (B, ...) padded with `value` to `lo` items along the batch axis when it has fewer: an engine
    profile's minimum batch (the padding items' results are ignored)."""
    if batch.shape[0] >= lo:
        return batch
    return _torch().cat((batch, batch.new_full((lo - batch.shape[0], *batch.shape[1:]), value)))


def pad_to(batch: Any, min_hw: Sequence[int], stride: int, value: float) -> Any:
    """`batch` (B, C, H, W) with `value` added at the bottom and right up to at least `min_hw`, rounded up to a
    multiple of `stride` (a rectangular letterbox smaller than an engine's smallest size; the content and its
    top-left offsets stay, so boxes map back unchanged)."""
    h, w = batch.shape[2:]
    th, tw = padded_size((h, w), min_hw, stride)
    if (th, tw) == (h, w):
        return batch
    return _torch().nn.functional.pad(batch, (0, tw - w, 0, th - h), value=value)


def padded_size(hw: Sequence[int], min_hw: Sequence[int], stride: int) -> tuple[int, int]:
    """`pad_to`'s (height, width) for a batch of height and width `hw`."""
    th, tw = (max(int(s), -(-int(m) // stride) * stride) for s, m in zip(hw, min_hw))
    return th, tw


def scale_boxes(boxes: Any, ratio_pad: RatioPad, original_shape: Sequence[int]) -> Any:
    """Map (N, 4) x1y1x2y2 boxes from the letterboxed image to the original (h, w[, c]) image, clipped.

    Works on torch tensors (any device) and numpy arrays; returns a new array/tensor.
    """
    return _unletterbox(boxes, slice(0, 4, 2), slice(1, 4, 2), ratio_pad, original_shape, "boxes x1, y1, x2, y2")


def scale_keypoints(keypoints: Any, ratio_pad: RatioPad, original_shape: Sequence[int]) -> Any:
    """Map (..., K, 2 or 3) keypoints (x, y[, visibility]) from the letterboxed image to the original image like
    `scale_boxes` (x, y clipped to the image, visibility unchanged); returns a new array/tensor."""
    return _unletterbox(keypoints, slice(0, 1), slice(1, 2), ratio_pad, original_shape, "keypoints x, y[, v]")


def _unletterbox(t: Any, xs: slice, ys: slice, ratio_pad: RatioPad, original_shape: Sequence[int], what: str) -> Any:
    """Columns `xs` and `ys` of the last axis: minus the padding, divided by the ratio, clipped to [0, w] / [0, h]
    (in place on a copy, through views: a few microseconds for a camera frame's boxes on the host); `t` has the
    columns both slices end at (`what` they are, for the error)."""
    try:
        ratio, pad_w, pad_h = float(ratio_pad[0]), float(ratio_pad[1][0]), float(ratio_pad[1][1])
    except (TypeError, IndexError, ValueError):
        raise NetdefError(f"ratio_pad {ratio_pad!r}: expected one image's (ratio, (pad_w, pad_h)), an entry of the "
                          f"list letterbox returns") from None
    h, w = int(original_shape[0]), int(original_shape[1])
    tensor = hasattr(t, "clone")
    out = (t.detach().clone() if t.is_floating_point() else t.float()) if tensor else np.array(t, np.float32)
    if out.ndim < 1 or out.shape[-1] < max(xs.stop, ys.stop):
        raise NetdefError(f"expected {what} along the last axis, got shape {tuple(out.shape)}")
    host32 = not tensor or (out.device.type == "cpu" and out.dtype == _torch().float32)
    values = out.numpy() if tensor and host32 else out  # float32 on the host through numpy: faster, same numbers
    for cols, pad, limit in ((xs, pad_w, w), (ys, pad_h, h)):
        v = values[..., cols]
        if host32:
            v -= pad
            v /= ratio
            np.clip(v, 0, limit, out=v)
        else:
            v.sub_(pad).div_(ratio).clamp_(0, limit)
    return out


def scale_masks(masks: Any, ratio_pad: RatioPad, original_shape: Sequence[int], chunk_pixels: int = 1 << 26) -> Any:
    """(N, H, W) binary masks on the letterboxed image -> (N, h, w) bool masks on the original (h, w[, c]) image,
    as Ultralytics' predictor draws them (`ops.scale_masks(...) > 0.5`): the image's part of the letterbox (the
    padding cropped) resized bilinearly to (h, w), thresholded at 0.5. At most `chunk_pixels` float pixels at once."""
    torch = _torch()
    import torch.nn.functional as F

    ratio, (pad_w, pad_h) = ratio_pad
    h, w = int(original_shape[0]), int(original_shape[1])
    top, left = int(round(pad_h - 0.1)), int(round(pad_w - 0.1))
    bottom, right = top + max(int(round(h * ratio)), 1), left + max(int(round(w * ratio)), 1)
    out = torch.empty((masks.shape[0], h, w), dtype=torch.bool, device=masks.device)
    step = max(1, chunk_pixels // (h * w))
    for i in range(0, masks.shape[0], step):
        part = masks[i:i + step, top:bottom, left:right].float()
        if part.shape[1:] != (h, w):
            part = F.interpolate(part[None], (h, w), mode="bilinear")[0]
        torch.gt(part, 0.5, out=out[i:i + step])
    return out


# ---------------------------------------------------------------- classification

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB (YOLOv5's classifiers)
CLASSIFY_TRANSFORMS = ("ultralytics", "yolov5")


def classify_batch(images: Sequence[ImageLike], size: int | Sequence[int], transforms: str, *, bgr: bool = True,
                   device: Any = None) -> Any:
    """A classifier's input batch (B, 3, h, w) float32 RGB, as the reference predictor makes it (`transforms`):

    - "ultralytics" (8.4 `classify_transforms` + ClassificationPredictor): torchvision's Resize (square input:
      the shorter side to h, else to (h, w) exactly) with PIL's bilinear filter (antialiased, horizontal pass then
      vertical, each rounded to uint8 like PIL), CenterCrop to (h, w), /255 (its mean 0, std 1);
    - "yolov5" (7.0 `classify_transforms`): the centred square of the shorter side, cv2.resize(INTER_LINEAR) to
      (h, w) (`resize_linear`), /255, ImageNet mean and std.

    images and `bgr`, `device`: as `letterbox`."""
    torch = _torch()
    if transforms not in CLASSIFY_TRANSFORMS:
        raise NetdefError(f"unknown classification transforms '{transforms}': use {' or '.join(CLASSIFY_TRANSFORMS)}")
    if len(images) == 0:
        raise NetdefError("classify_batch: no images")
    h, w = _hw(size)
    if device is None:
        first = images[0]
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    out = torch.empty((len(images), 3, h, w), dtype=torch.float32, device=device)
    for i, im in enumerate(images):
        x = _as_uint8_tensor(im, i, device, torch).permute(2, 0, 1)
        x = x.flip(0) if bgr else x
        if transforms == "yolov5":
            m = min(x.shape[1:])
            top, left = (x.shape[1] - m) // 2, (x.shape[2] - m) // 2
            out[i] = resize_linear(x[:, top:top + m, left:left + m], h, w).float() / 255.0
        else:
            nh, nw = _shorter_side_to(x.shape[1], x.shape[2], h) if h == w else (h, w)
            y = resize_pil_bilinear(x, nh, nw)
            top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
            out[i] = y[:, top:top + h, left:left + w] / 255.0
    if transforms == "yolov5":
        mean, std = (torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                     for v in (IMAGENET_MEAN, IMAGENET_STD))
        out.sub_(mean).div_(std)
    return out


def _shorter_side_to(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(size) output (h, w): the shorter side `size`, the longer int(size * long / short)."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def resize_pil_bilinear(x: Any, nh: int, nw: int) -> Any:
    """Resize a (C, H, W) uint8 tensor exactly like Pillow's `Image.resize(BILINEAR)` (torchvision's Resize on PIL
    images): per axis PIL's antialiased bilinear weights in 22-bit fixed point (`_pil_weights`), each pass rounded to
    uint8 values; the vertical pass first where the height shrinks and the width grows, else the horizontal one.
    Sums are exact integers in float64. Returns float32 (C, nh, nw) of uint8 values. Equal to Pillow 13 for
    aspect-keeping resizes (torchvision's Resize(int), the classifiers' square inputs); a stretching one where
    both sides shrink may differ by one grey level here and there (Pillow picks its pass order by a rule of its
    own there)."""
    torch = _torch()
    y = x.to(torch.float64)
    passes = [("h", nw), ("v", nh)] if not (nh < x.shape[1] and nw > x.shape[2]) else [("v", nh), ("h", nw)]
    for axis, n in passes:
        size = y.shape[2] if axis == "h" else y.shape[1]
        if size == n:
            continue
        k = _device_pil_weights(n, size, y.device)
        y = y @ k.T if axis == "h" else k @ y
        y = torch.floor((y + 2.0 ** 21) / 2.0 ** 22).clamp_(0, 255)  # PIL's clip8 of its fixed-point sum
    return y.to(torch.float32)


def _pil_weights(n_out: int, n_in: int) -> np.ndarray:
    """Pillow's bilinear resampling weights along one axis (its precompute_coeffs + normalize_coeffs_8bpc) as an
    (n_out, n_in) matrix of integers, scaled by 2**22: the support widens with the reduction (antialiasing)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    center = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    lo = np.maximum(np.trunc(center - filterscale + 0.5), 0)  # C's (int) truncates toward zero
    hi = np.minimum(np.trunc(center + filterscale + 0.5), n_in)
    j = np.arange(n_in, dtype=np.float64)[None, :]
    w = np.clip(1.0 - np.abs((j - center[:, None] + 0.5) / filterscale), 0.0, None)
    w = np.where((j >= lo[:, None]) & (j < hi[:, None]), w, 0.0)
    total = w.sum(1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    return np.trunc(w * 2.0 ** 22 + 0.5)  # weights are >= 0: (int)(0.5 + k * 2**22)


@functools.lru_cache(maxsize=64)
def _device_pil_weights(n_out: int, n_in: int, device: Any) -> Any:
    """`_pil_weights` as a float64 tensor on `device`, kept like `_device_taps`."""
    return _torch().from_numpy(_pil_weights(n_out, n_in)).to(device)
