"""`netdef serve`: an engine served through Triton Inference Server (PyTriton)."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import OptionError
from .device import HELP as DEVICE_HELP
from .options import number, parse_numbers

HELP = "serve an engine through Triton Inference Server (PyTriton): HTTP, gRPC, dynamic batching, metrics"
DESCRIPTION = ("Serves ENGINE as a Triton model through PyTriton (pip install nvidia-pytriton): HTTP and gRPC "
               "inference, Triton's dynamic batcher (preferring the profiles' OPT batches), health "
               "(/v2/health/ready) and Prometheus metrics (/metrics), one model instance per selected GPU. "
               "Detector engines with the plugin head are served as raw tensors. Ctrl-C stops the server.")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef serve` to the command line."""
    s = subparsers.add_parser("serve", help=HELP, description=DESCRIPTION)
    s.add_argument("engine", help="netdef engine (or a raw plan)")
    s.add_argument("--port", type=number("--port", minimum=1, maximum=65535), default=8000,
                   help="HTTP port (default 8000)")
    s.add_argument("--grpc-port", type=number("--grpc-port", minimum=1, maximum=65535), default=8001,
                   help="gRPC port (default 8001)")
    s.add_argument("--metrics-port", type=number("--metrics-port", minimum=1, maximum=65535), default=8002,
                   help="Prometheus metrics port (default 8002)")
    s.add_argument("--max-batch", type=number("--max-batch", minimum=1), metavar="B",
                   help="largest batch the dynamic batcher forms (default: the engine's largest)")
    s.add_argument("--max-queue-delay-us", type=number("--max-queue-delay-us", minimum=0), metavar="US",
                   help="longest time the dynamic batcher holds a request to form a batch (default 0)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--devices", help="CUDA devices such as 0,1: one model instance on each")
    where.add_argument("--device", type=number("--device", minimum=0), metavar="N", help=DEVICE_HELP)
    s.add_argument("--name", help="model name (default: the architecture's name)")
    s.set_defaults(func=cmd_serve)
    return s


def devices(a: argparse.Namespace) -> tuple[int, ...]:
    """The devices of --devices or --device, distinct and >= 0; () for the current device."""
    if a.device is not None:
        return (a.device,)
    if a.devices is None:
        return ()
    found = tuple(parse_numbers(a.devices, "--devices", int, what="device indices such as 0,1"))
    if min(found) < 0 or len(set(found)) != len(found):
        raise OptionError(f"--devices {a.devices}: expected distinct device indices >= 0")
    return found


def cmd_serve(a: argparse.Namespace) -> int:
    from ..deploy.serve import serve

    serve(a.engine, port=a.port, grpc_port=a.grpc_port, metrics_port=a.metrics_port, max_batch=a.max_batch,
          max_queue_delay_us=a.max_queue_delay_us, devices=devices(a), name=a.name)
    print("stopped")
    return 0
