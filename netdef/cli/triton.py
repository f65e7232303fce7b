"""`netdef triton`: a Triton Inference Server model repository for an engine."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .device import parse_device_indices
from .options import number


HELP = "write a Triton model repository (config.pbtxt, the plan, plugin libraries) for an engine"
DESCRIPTION = ("Writes REPO/NAME/config.pbtxt (platform tensorrt_plan, max_batch_size, inputs and outputs, dynamic "
               "batching preferring the profiles' OPT batches, instance groups using every profile) and "
               "REPO/NAME/VERSION/model.plan with its sidecar model.plan.json. A plugin engine's libraries are "
               "copied into REPO/NAME with the tritonserver option that loads them (plugins.txt). A REPO/NAME that "
               "holds a model of another backend (an ONNX, PyTorch, Python... model) is refused: give another --name.")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef triton` to the command line."""
    t = subparsers.add_parser("triton", help=HELP, description=DESCRIPTION)
    t.add_argument("engine", help="netdef engine (or a raw plan with its sidecar)")
    t.add_argument("--repo", required=True, help="model repository folder (created when missing)")
    t.add_argument("--name", help="model name (default: the architecture's name)")
    t.add_argument("--version", type=number("--version", minimum=1), default=1,
                   help="model version (default 1); Triton serves a model's latest version alone by default")
    t.add_argument("--instances", type=number("--instances", minimum=1), default=1,
                   help="instances per GPU (default 1)")
    t.add_argument("--gpus", metavar="LIST", help="GPU indices such as 0,1 of the server running Triton, or all "
                                                   "(default: every GPU)")
    t.add_argument("--max-queue-delay-us", type=number("--max-queue-delay-us", minimum=0), metavar="US",
                   help="longest time the dynamic batcher holds a request to form a batch (default 0)")
    t.add_argument("--cuda-graphs", action="store_true", help="let the TensorRT backend run CUDA graphs")
    kept = t.add_mutually_exclusive_group()
    kept.add_argument("--keep-config", dest="existing_config", action="store_const", const="keep",
                      help="an existing config.pbtxt (or plugins.txt) that differs from this engine's is kept as it "
                           "is (default: refused; another backend's model is refused either way)")
    kept.add_argument("--replace-config", dest="existing_config", action="store_const", const="replace",
                      help="... is replaced by this engine's")
    t.set_defaults(func=cmd_triton)
    return t


def cmd_triton(a: argparse.Namespace) -> int:
    from ..deploy.triton import TritonOptions, write_repository

    gpus = _gpus(a.gpus)
    opts = TritonOptions(name=a.name, version=a.version, instances=a.instances, gpus=gpus,
                         max_queue_delay_us=a.max_queue_delay_us, cuda_graphs=a.cuda_graphs,
                         existing_config=a.existing_config or "refuse")
    res = write_repository(a.engine, a.repo, opts)
    print(f"wrote {res.plan} (kept {res.config} as it was)" if res.config_kept else
          f"wrote {res.config} and {res.plan}")
    for lib in res.libraries:
        print(f"  plugin library {lib}")
    if res.server_options:
        print("start tritonserver with")
        print(f"  {res.server_options[0]}")
        print(f"or {res.server_options[1]} tritonserver ...")
    for note in res.notes:  # warnings: stderr, so stdout stays what was written
        print(f"note: {note}", file=sys.stderr)
    return 0


def _gpus(text: str | None) -> tuple[int, ...]:
    """--gpus as `--devices` is parsed, but not checked against this machine's GPUs (Triton may run elsewhere);
    () (every GPU) without it or for 'all'."""
    if text is None or text.strip().lower() == "all":
        return ()
    return parse_device_indices(text, "--gpus", repeat_hint="--instances N runs N instances on each GPU")
