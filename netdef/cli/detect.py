"""`netdef detect`: objects in images with a YOLO engine (netdef.tools.detect)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import defaults
from ..class_names import load_names
from ..errors import OptionError
from ..tools import detect
from ..tools.images import check_image, read_image
from .device import add_device_option, device_index
from .options import number, parse_hw, parse_numbers

IMAGES_AT_ONCE = 64  # images decoded, detected and drawn at a time


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef detect` to the command line."""
    p = subparsers.add_parser("detect", help="detect objects in images with a YOLO engine (GPU pre/post-processing); "
                                             "segmentation and pose engines: masks and keypoints too; "
                                             "classification engines: the top-5 classes",
                              description="The task comes from the engine's header (the head's record; older "
                                          "engines: from the architecture and the outputs). Letterbox the images on "
                                          "the GPU, run ENGINE, apply NMS (the engine's plugin or YOLOv5's in "
                                          "torch), assemble masks (segmentation) or map keypoints (pose); "
                                          "classification: resize and crop as the model's own predictor, top-5 "
                                          "classes. Writes detections.json (masks as COCO compressed RLE) and "
                                          "annotated images named after the inputs (never over an input, nor over "
                                          "a file in --out that no earlier `netdef detect` wrote: such an --out is "
                                          "refused).")
    p.set_defaults(func=cmd_detect)
    p.add_argument("engine")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--conf", type=number("--conf", float, minimum=0.0, maximum=1.0),
                   help=f"score threshold (default {defaults.CONF_THRES}; plugin engines: built in)")
    p.add_argument("--iou", type=number("--iou", float, minimum=0.0, maximum=1.0),
                   help=f"NMS IoU threshold (default {defaults.IOU_THRES_ANCHOR_FREE} for YOLOv8/YOLO11 as "
                        f"Ultralytics' predictor, {defaults.IOU_THRES} for YOLOv5 as its detect.py; plugin engines: "
                        "built in)")
    p.add_argument("--max-det", type=number("--max-det", minimum=1),
                   help=f"boxes per image at most (detection engines; default {defaults.MAX_DET}, for engines with "
                        "NMS or top-k built in the count they were built to keep, the most they give)")
    p.add_argument("--names", help="class names file: one per line, or a data.yaml's names: (default: the names "
                                   "the engine records, from the checkpoint or `netdef build --names`; none: class "
                                   "indices)")
    p.add_argument("--kpt-shape", metavar="N,D", help="a plain pose engine's keypoints and dims per keypoint "
                                                     "(default: the kpt_shape its header records, that of the "
                                                     "weights; older engines: that of the YAML it was built from)")
    p.add_argument("--input-shape", metavar="HxW", help="an engine built with a dynamic input size: the size to "
                                                       "letterbox to (default: its first profile's OPT)")
    p.add_argument("--rect", action="store_true",
                   help="an engine built with a dynamic input size: letterbox each batch only to the smallest "
                        "multiple of the model's stride that holds it at that size (Ultralytics' rectangular "
                        "inference: fewer pixels for non-square images)")
    p.add_argument("--letterbox-kernel", action="store_true",
                   help="letterbox with netdef's fused CUDA kernel, one launch per image (written to give the "
                        "same pixels as the default torch letterbox; compiled with nvcc on first use, no TensorRT "
                        "headers needed)")
    add_device_option(p)
    return p


def cmd_detect(a: argparse.Namespace) -> int:
    # The command's files first: without a GPU, loading the engine would report that before a missing image.
    names = load_names(a.names) if a.names else None
    kpt_shape = parse_numbers(a.kpt_shape, "--kpt-shape", int, 2, "N,D such as 17,3") if a.kpt_shape else None
    hw = parse_hw(a.input_shape)
    if kpt_shape is not None and (kpt_shape[0] < 1 or kpt_shape[1] not in (2, 3)):
        raise OptionError(f"--kpt-shape {a.kpt_shape}: expected keypoints >= 1 and 2 or 3 dims per keypoint")
    files = detect.collect_images(a.images)
    if Path(a.out).exists() and not Path(a.out).is_dir():
        raise OptionError(f"--out {a.out} is a file: give a folder for detections.json and the annotated images")
    detect.check_outputs([str(f) for f in files], a.out, inputs=[a.engine, a.names])  # no output replaces an input
    device = device_index(a)
    for f in files:  # every image readable (from its header) before the engine loads
        check_image(f)
    det = detect.engine_detector(a.engine, a.conf, a.iou, a.max_det, names, device=device,
                                 kpt_shape=tuple(kpt_shape) if kpt_shape else None, input_hw=hw, rect=a.rect,
                                 names_from=a.names, letterbox_kernel=a.letterbox_kernel)
    labels = [str(f) for f in files]
    annotated = detect.annotated_names(labels)
    results: list[dict] = []
    for i in range(0, len(files), IMAGES_AT_ONCE):  # decoded a chunk at a time: memory does not grow with the folder
        arrays = [read_image(f) for f in files[i:i + IMAGES_AT_ONCE]]
        chunk = det(arrays, labels[i:i + IMAGES_AT_ONCE])
        detect.write_annotated(chunk, arrays, a.out, annotated[i:i + IMAGES_AT_ONCE], check_masks=False)
        results += chunk
    detect.write_detections_json(results, a.out)
    found = (f"{sum(len(r['boxes']) for r in results)} detection(s)" if all("boxes" in r for r in results)
             else "top-5 classes each")
    print(f"{len(results)} image(s), {found} -> {Path(a.out) / 'detections.json'}")
    return 0
