"""`netdef serve`: an engine served through Triton Inference Server (PyTriton)."""
from __future__ import annotations

import argparse
from typing import Any

from .. import defaults
from ..deploy.serve_detect import DetectSettings
from ..errors import OptionError
from .device import (add_device_option, add_devices_option, add_shared_device_option, device_index,
                     parse_devices)
from .options import number, parse_numbers

HELP = "serve an engine through Triton Inference Server (PyTriton's): HTTP, gRPC, dynamic batching, metrics"
DESCRIPTION = ("Serves ENGINE as a Triton model through the Triton Inference Server PyTriton bundles (pip install "
               "nvidia-pytriton): HTTP and gRPC "
               "inference, Triton's dynamic batcher (preferring the profiles' OPT batches), health "
               "(/v2/health/ready) and Prometheus metrics (/metrics), --instances model instances per selected GPU "
               "(default 1), each running the engine inside Triton's Python stub. "
               "YOLO detection, segmentation and pose engines are also served as NAME_detect: encoded images in "
               "(BYTES input 'image'), detections out (num_dets, boxes, scores, classes padded to --max-det, and "
               "netdef detect's JSON record per image). Ctrl-C stops the server.")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef serve` to the command line."""
    s = subparsers.add_parser("serve", help=HELP, description=DESCRIPTION)
    s.add_argument("engine", help="netdef engine (or a raw plan)")
    add_serve_options(s)
    s.set_defaults(func=cmd_serve)
    return s


def add_serve_options(s: argparse.ArgumentParser) -> None:
    """Add `netdef serve`'s options (all but ENGINE) to `s`: the command's parser, and scripts/bench_serve.py's,
    which reads the model name and batching among the options it passes on to the command."""
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
    s.add_argument("--preferred-batch", metavar="SIZES", type=preferred_batch, default="opt",
                   help="batch sizes the dynamic batcher prefers: comma-separated, 'opt' (the profiles' OPT "
                        "batches, as netdef triton writes them; default) or 'none' (the largest batch it can form)")
    s.add_argument("--instances", type=number("--instances", minimum=1), default=1, metavar="K",
                   help="model instances on each device (default 1): each a Python stub process with its own "
                        "engine; more run executions side by side")
    s.add_argument("--cuda-graphs", action="store_true",
                   help="each instance of the raw model replays a CUDA graph per batch size (captured when the "
                        "size first comes, one kept per size: GPU memory for inputs and outputs of every size; "
                        "Engine(cuda_graph=True)) instead of enqueueing the engine's kernels one by one")
    where = s.add_mutually_exclusive_group()
    add_devices_option(where, "--instances model instances on each")
    add_device_option(where)
    add_shared_device_option(s, "two model instances on one GPU")
    s.add_argument("--name", help="model name (default: the architecture's name)")
    s.add_argument("--open-endpoints", metavar="LIST", type=lambda v: tuple(e.strip() for e in v.split(",")),
                   default=(), help="Triton endpoints to serve without PyTriton's access token, such as statistics "
                                    "(per-model queue and compute times; PyTriton restricts shared-memory, "
                                    "model-repository, statistics, trace and logging)")
    d = s.add_argument_group("images -> detections (YOLO detection, segmentation and pose engines)")
    d.add_argument("--detect", action=argparse.BooleanOptionalAction, default=None,
                   help="also serve NAME_detect: encoded images in, detections out, with netdef detect's GPU pre- "
                        "and post-processing (default: for engines whose outputs netdef detect recognises)")
    d.add_argument("--conf", type=number("--conf", float, minimum=0.0, maximum=1.0),
                   help=f"score threshold (default {defaults.CONF_THRES}; plugin engines: built in, may be raised); "
                        "a request parameter conf overrides it")
    d.add_argument("--iou", type=number("--iou", float, minimum=0.0, maximum=1.0),
                   help=f"NMS IoU threshold (default {defaults.IOU_THRES_ANCHOR_FREE} for YOLOv8/YOLO11, "
                        f"{defaults.IOU_THRES} for YOLOv5; plugin engines: built in); a request parameter iou "
                        "overrides it")
    d.add_argument("--max-det", type=number("--max-det", minimum=1), metavar="K",
                   help=f"boxes per image at most, the rows the outputs are padded to (default {defaults.MAX_DET}); "
                        "a request parameter max_det may lower it")
    d.add_argument("--names", help="class names file: one per line, or a data.yaml's names: (the JSON's names; "
                                   "default: the names the engine records)")


def preferred_batch(text: str) -> tuple[int, ...] | None:
    """--preferred-batch: 'opt' -> None (the profiles' OPT batches), 'none' -> (), '8,16' -> (8, 16)."""
    if text == "opt":
        return None
    if text == "none":
        return ()
    return tuple(parse_numbers(text, "--preferred-batch", int, what="batch sizes such as 16,32, opt or none"))


def devices(a: argparse.Namespace) -> tuple[int, ...]:
    """The devices of --devices or --device, each a visible device (a device listed twice only with
    --allow-shared-device); () for the current device."""
    if a.allow_shared_device and a.devices is None:
        raise OptionError("--allow-shared-device goes with --devices")
    if a.device is not None:
        return (device_index(a),)
    if a.devices is None:
        return ()
    return parse_devices(a.devices, "--devices", allow_repeat=a.allow_shared_device)


def detect_settings(a: argparse.Namespace) -> DetectSettings | None:
    """The DetectSettings of --conf, --iou, --max-det; None where none is given."""
    if a.conf is None and a.iou is None and a.max_det is None:
        return None
    return DetectSettings(a.conf, a.iou, a.max_det)


def cmd_serve(a: argparse.Namespace) -> int:
    from ..deploy.serve import serve
    from ..class_names import load_names

    names = load_names(a.names) if a.names else None
    serve(a.engine, port=a.port, grpc_port=a.grpc_port, metrics_port=a.metrics_port, max_batch=a.max_batch,
          max_queue_delay_us=a.max_queue_delay_us, preferred_batch=a.preferred_batch, devices=devices(a),
          instances=a.instances, cuda_graphs=a.cuda_graphs, name=a.name, detect=a.detect,
          detect_settings=detect_settings(a), names=names, names_from=a.names, open_endpoints=a.open_endpoints)
    print("stopped")
    return 0
