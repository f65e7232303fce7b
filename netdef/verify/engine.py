"""The GPU side of `netdef verify`: an engine whose compared tensors are marked as outputs, run once.

Marking an intermediate tensor as an output keeps TensorRT from fusing across it (a convolution and the
activation after it, for instance), so the engine verified this way computes each marked tensor on its own:
close to, but not the same engine as, what `netdef build` makes.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..compiler import compile_network
from ..network import Network
from ..options import BuildOptions


def engine_values(net: Network, opts: BuildOptions, feeds: dict[str, np.ndarray], names: Iterable[str],
                  log: Callable[[str], None], *, arch: Mapping[str, Any], weights: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
    """Build `net` with the tensors `names` marked as outputs too, run it on `feeds`; {tensor name: array}.
    `arch` and `weights` ({name/path, sha256}) go into the temporary engine's header."""
    from ..runtime import Engine

    raw = net.definition.raw
    tensors = {}
    for i in range(raw.num_layers):
        layer = raw.get_layer(i)
        for k in range(layer.num_outputs):
            t = layer.get_output(k)
            tensors[t.name] = t
    wanted = [n for n in names if n in tensors]
    marked = 0
    for name in wanted:
        t = tensors[name]
        if not t.is_network_output:
            raw.mark_output(t)
            marked += 1
    log(f"[netdef] verify: {marked} intermediate tensors marked as engine outputs (this keeps TensorRT from fusing "
        f"layers across them, so the engine differs from the one `netdef build` makes)")
    with tempfile.TemporaryDirectory(prefix="netdef-verify-") as tmp:
        path = Path(tmp) / "verify.engine"
        compile_network(net, opts, path, arch=arch, weights=weights, log=log)
        engine = Engine(path)
        outs: dict[str, Any] = engine.infer(feeds, as_numpy=True)
    return outs
