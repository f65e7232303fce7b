"""A detector's whole pipeline as one CUDA graph per batch of image shapes (`engine_detector` on an Engine loaded
with `cuda_graph=True`).

What a graph holds, in order: the copies of the images from pinned host memory to the GPU, the letterbox (resize,
BGR->RGB, /255, grey padding, written straight into the engine's bound input), the engine, and the copies of the
small fixed-size outputs (the NMS plugin's detections, YOLO26's top-k rows) to pinned host memory. A call copies
the images into the pinned buffers, launches the graph once and waits for it: dozens of kernel launches and
several synchronisations become one launch and one wait. Raw predictions (NMS in torch) stay on the GPU and
their NMS runs after the graph, as without graphs (its output sizes vary).

A graph is made on the first batch of a given list of image shapes (a camera's frames: always the same one) and
kept, the least recently used out past `keep` (each holds its own buffers, the resize tables it reads and the
engine's bound memory); a refit of the engine drops them all. Calls from several threads take turns (`lock`:
held by the Detector until it has read the outputs).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NetdefError
from .preprocess import RatioPad, letterbox, letterbox_size, padded_size

GREY = 114 / 255.0
KEEP = 8  # graphs kept (one per list of image shapes)


@dataclass
class _Captured:
    step: Any  # netdef.runtime.Step
    host_in: list[Any]  # pinned (H, W, 3) uint8 per image
    host_out: dict[str, Any]  # pinned copies of the outputs copied to the host
    input_hw: tuple[int, int]  # the engine input's height and width
    ratio_pads: list[RatioPad]


class DetectGraphs:
    """Per list of image shapes, the pipeline's CUDA graph on `engine` (a netdef.runtime.Engine): letterbox to
    `input_hw` (`rect`: to the smallest `stride` multiple holding the batch, at least `min_hw`), batches padded with
    grey images to `min_batch`; `to_host`: the outputs copied to pinned host memory inside the graph. `device`: the
    engine's torch device (host buffers are pinned for a CUDA device)."""

    def __init__(self, engine: Any, device: Any, input_hw: tuple[int, int], *, stride: int = 32, rect: bool = False,
                 min_hw: tuple[int, int] = (1, 1), min_batch: int = 1, to_host: Sequence[str] = (), keep: int = KEEP):
        self.engine, self.device, self.input_hw, self.stride, self.rect = engine, device, input_hw, stride, rect
        self.min_hw, self.min_batch, self.to_host, self.keep = min_hw, min_batch, tuple(to_host), keep
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self._refits = engine._refits
        self.captures = 0
        self.lock = threading.Lock()

    def __call__(self, images: Sequence[np.ndarray], bgr: bool,
                 kernel: bool = False) -> tuple[dict[str, Any], tuple[int, int], list[RatioPad]]:
        """Run the pipeline on HxWx3 uint8 `images` (at most the engine's largest batch) and wait for it (`kernel`:
        the letterbox as netdef's CUDA kernel, `preprocess.letterbox`'s `kernel`; a graph of its own): (outputs:
        the `to_host` ones as host tensors, the others on the GPU; the engine input's height and width; per image
        its (ratio, (left, top))). The outputs are the graph's own buffers: the next call on these shapes
        overwrites them (hold `lock` until they are read)."""
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                got = f"{tuple(im.shape)} {im.dtype}" if hasattr(im, "shape") else type(im).__name__
                raise NetdefError(f"image {i} must be an HxWx3 uint8 numpy array for CUDA graphs, got {got}")
            if min(im.shape[:2]) < 1:
                raise NetdefError(f"image {i} is empty ({tuple(im.shape)})")
        key = (bool(bgr), bool(kernel), tuple(im.shape for im in images))
        if self.engine._refits != self._refits:  # a refit ended the steps the graphs run
            self._graphs.clear()
            self._refits = self.engine._refits
        cap = self._graphs.get(key)
        if cap is None:
            while len(self._graphs) >= self.keep:
                self._graphs.popitem(last=False)
            cap = self._graphs[key] = self._capture(images, bool(bgr), bool(kernel))
        else:
            self._graphs.move_to_end(key)
        for host, im in zip(cap.host_in, images):
            np.copyto(host.numpy(), im)
        cap.step()
        cap.step.synchronize()
        outs = {k: cap.host_out.get(k, v) for k, v in cap.step.outputs.items()}
        return outs, cap.input_hw, cap.ratio_pads

    def _capture(self, images: Sequence[np.ndarray], bgr: bool, kernel: bool) -> _Captured:
        import torch

        eng = self.engine
        n = len(images)
        hw = letterbox_size([im.shape for im in images], self.input_hw, self.stride, self.rect)
        input_hw = padded_size(hw, self.min_hw, self.stride) if self.rect else hw
        t = eng.inputs[0]
        shape = eng.input_shape(t, max(n, self.min_batch), input_hw)
        device = self.device

        def host(like: Any) -> Any:
            return like.pin_memory() if device.type == "cuda" else like

        with eng.on_device():
            batch = eng.backend.empty(shape, t.dtype)
            eng.check_feeds({t.name: batch})
            host_in = [host(torch.empty(im.shape, dtype=torch.uint8)) for im in images]
            dev_in = [torch.empty(im.shape, dtype=torch.uint8, device=device) for im in images]
            view = batch[:n, :, :hw[0], :hw[1]]
            ratio_pads: list[RatioPad] = []
            host_out: dict[str, Any] = {}
            tables: list[Any] = []  # the resize tables the graph reads (a cache could free them)

            def before() -> None:
                for d, h in zip(dev_in, host_in):
                    d.copy_(h, non_blocking=True)
                if view.shape != batch.shape:
                    batch.fill_(GREY)  # rect's padding and the grey images up to the smallest batch
                ratio_pads[:] = letterbox(dev_in, self.input_hw, self.stride, self.rect, bgr=bgr, out=view,
                                          keep=tables, kernel=kernel)[1]

            def after(outs: dict[str, Any]) -> None:
                for k in self.to_host:
                    if k not in host_out:  # allocated in the run before the capture
                        host_out[k] = host(torch.empty_like(outs[k], device="cpu"))
                    host_out[k].copy_(outs[k], non_blocking=True)

            step = eng.capture({t.name: batch}, before=before, after=after)
        step.keep(dev_in, tables)
        self.captures += 1
        return _Captured(step, host_in, host_out, input_hw, ratio_pads)
