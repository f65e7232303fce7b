"""The CPU mode of `netdef.testing.check_block`: a block's network definition evaluated in float64 with torch
(`netdef.verify.evaluate`) instead of an engine, so block tests run without a GPU or a TensorRT runtime."""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..trt_api import describe_layers
from .evaluate import evaluate


def check_block_cpu(block_or_fn: str | Callable[..., Any], torch_module: Callable[..., Any],
                    input_shape: Sequence[int] | Sequence[Sequence[int]], *, precision: str = "fp32",
                    args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    weights: Mapping[str, np.ndarray] | None = None, tolerance: float | None = None,
                    seed: int = 0) -> float:
    """`check_block` with the same arguments, on the CPU: the block's definition (`define_block`) evaluated in
    float64, compared with a float64 copy of `torch_module` on the same random normal input. Returns the max
    relative error; raises AssertionError above `tolerance` (check_block's defaults)."""
    import torch

    from ..testing.check_block import block_case, compared, module_output
    from ..tools.verify import check_tolerance

    check_tolerance(tolerance, "check_block: tolerance")  # before any work (check_block checks it first too)

    shapes, xs, net = block_case(block_or_fn, torch_module, input_shape, precision, args, kwargs, weights, seed)
    out = evaluate(describe_layers(net.definition), {f"x{i}": x for i, x in enumerate(xs)})["y"]
    module = copy.deepcopy(torch_module)  # the caller's module stays as it is (device, dtype, mode)
    if hasattr(module, "double"):
        module = module.double().eval()
    with torch.no_grad():
        ref = module(*(torch.from_numpy(x).double() for x in xs))
    return compared(out.numpy(), module_output(ref).detach().cpu().double().numpy(), precision, tolerance, " (CPU)")
