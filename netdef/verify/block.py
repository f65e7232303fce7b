"""The CPU mode of `netdef.testing.check_block`: a block's network definition evaluated in float64 with torch
(`netdef.verify.evaluate`) instead of an engine, so block tests run without a GPU or a TensorRT runtime."""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..tools.verify import max_rel_error
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

    from ..testing.check_block import TOLERANCE, block_case

    shapes, xs, net = block_case(block_or_fn, torch_module, input_shape, precision, args, kwargs, weights, seed)
    out = evaluate(describe_layers(net.definition), {f"x{i}": x for i, x in enumerate(xs)})["y"]
    module = copy.deepcopy(torch_module)  # the caller's module stays as it is (device, dtype, mode)
    if hasattr(module, "double"):
        module = module.double().eval()
    with torch.no_grad():
        ref = module(*(torch.from_numpy(x).double() for x in xs))
    err = max_rel_error(out.numpy(), ref.detach().cpu().double().numpy())
    limit = TOLERANCE[precision] if tolerance is None else tolerance
    if not err <= limit:  # raised, not asserted: `python -O` must not pass a broken block
        raise AssertionError(f"{precision} (CPU): max relative error {err:.3g} > {limit:g} "
                             f"(output {tuple(out.shape)})")
    return err
