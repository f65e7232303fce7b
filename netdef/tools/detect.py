"""`netdef detect`: object detection with a YOLO engine, pre- and post-processing on the GPU.

Images are read with Pillow, letterboxed on the GPU (`netdef.preprocess`), run through the engine, and
post-processed: engines built with the decode+NMS plugin already give (num_dets, boxes, scores, classes);
engines with the plain (B, N, 5+nc) output get YOLOv5's filtering + torchvision's batched_nms in torch, and
the anchor-free YOLOv8/YOLO11 output (B, 4+nc, N) the same without objectness (as Ultralytics' NMS).
Boxes are mapped back to the original images; `detections.json` and annotated images are written (never
over an input: `check_outputs`).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NetdefError
from ..fileio import atomic_write, check_output
from .preprocess import letterbox, scale_boxes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PLUGIN_OUTPUTS = ("num_dets", "boxes", "scores", "classes")
DETECTIONS_JSON = "detections.json"
DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET = 0.25, 0.45, 300
MAX_WH = 7680  # YOLOv5's class offset for batched NMS (larger than any box coordinate)


# ---------------------------------------------------------------- inputs

def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders (folders: their image files, sorted, not recursive)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise NetdefError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise NetdefError(f"no such image or folder: {p}")
    if not found:
        raise NetdefError("no images given")
    return found


def read_image(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (Pillow; EXIF orientation applied like cv2.imread)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise NetdefError(f"cannot read image {path}: {e}") from None


def load_names(path: str | Path) -> list[str]:
    """Class names, one per line (blank lines ignored)."""
    try:
        names = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise NetdefError(f"cannot read class names {path}: {e}") from None
    if not names:
        raise NetdefError(f"{path} holds no class names (one per line)")
    return names


# ---------------------------------------------------------------- YOLOv5 post-processing in torch

def decode_predictions(feats: Sequence[Any], anchors_px: Any, strides: Sequence[int]) -> Any:
    """YOLOv5 Detect inference decode in torch: raw (B, na*(5+nc), H, W) maps -> (B, N, 5+nc) xywh pixels."""
    import torch

    anchors = torch.as_tensor(np.asarray(anchors_px, np.float32))
    out = []
    for i, x in enumerate(feats):
        x = x.float()
        b, _, h, w = x.shape
        na = anchors.shape[1]
        y = x.view(b, na, -1, h, w).permute(0, 1, 3, 4, 2).sigmoid()
        yv, xv = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                                torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, h, w, 2) - 0.5
        anchor_grid = anchors[i].to(x.device).view(1, na, 1, 1, 2)
        xy, wh, conf = y.split((2, 2, y.shape[-1] - 4), 4)
        xy = (xy * 2 + grid) * float(strides[i])
        wh = (wh * 2) ** 2 * anchor_grid
        out.append(torch.cat((xy, wh, conf), 4).view(b, -1, y.shape[-1]))
    return torch.cat(out, 1)


def non_max_suppression(pred: Any, conf_thres: float = DEFAULT_CONF, iou_thres: float = DEFAULT_IOU,
                        max_det: int = DEFAULT_MAX_DET, max_nms: int = 30000,
                        objectness: bool = True) -> list[tuple[Any, Any, Any]]:
    """YOLOv5's non_max_suppression (single best class per box) on (B, N, 5+nc) predictions; `objectness=False`:
    the anchor-free heads' (YOLOv8/YOLO11) predictions (B, 4+nc, N), class scores without objectness.

    Keeps boxes with obj > conf_thres and obj*cls > conf_thres (anchor-free: cls > conf_thres), the `max_nms`
    best per image, class-aware torchvision NMS, then the best `max_det`. Returns per image (boxes (n, 4)
    x1y1x2y2, scores (n,), classes (n,)).
    """
    import torch

    try:
        from torchvision.ops import batched_nms
    except ImportError:
        raise NetdefError("engines without the NMS plugin need torchvision for NMS: pip install torchvision") from None
    results = []
    for x in (pred if objectness else pred.transpose(1, 2)).float():
        if objectness:
            x = x[x[:, 4] > conf_thres]
            cls_conf = x[:, 5:] * x[:, 4:5]
        else:
            cls_conf = x[:, 4:]
        conf, j = cls_conf.max(1)
        keep = conf > conf_thres
        x, conf, j = x[keep], conf[keep], j[keep]
        order = conf.argsort(descending=True)[:max_nms]
        x, conf, j = x[order], conf[order], j[order]
        boxes = torch.cat((x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2), 1)
        i = batched_nms(boxes, conf, j, iou_thres)[:max_det]
        results.append((boxes[i], conf[i], j[i].int()))
    return results


# ---------------------------------------------------------------- the detector

@dataclass
class OutputLayout:
    """Which engine outputs hold the detections: the plugin's four, one raw YOLOv5 prediction (B, N, 5+nc), or
    one anchor-free YOLOv8/YOLO11 prediction (B, 4+nc, N) (channels first: fewer rows than positions)."""

    kind: str  # "plugin", "raw", "anchor_free" or "end_to_end"
    names: dict[str, str]  # plugin: role -> output name; others: {"pred": name}

    @staticmethod
    def of(outputs: Sequence[tuple[str, tuple[int, ...]]], where: str = "the engine",
           end_to_end: bool = False) -> "OutputLayout":
        """The layout of `outputs` (name, shape). `end_to_end`: the engine ends in YOLO26's top-k head, whose
        (B, K, 6) = x1, y1, x2, y2, score, class detections need no NMS (by shape alone it would pass for a
        one-class YOLOv5 prediction)."""
        if end_to_end:
            hits = [n for n, s in outputs if len(s) == 3 and s[-1] == 6]
            if len(hits) != 1:
                raise NetdefError(f"{where}: expected one end-to-end output (B, K, 6), got "
                                  f"{', '.join(f'{n} {list(s)}' for n, s in outputs)}")
            return OutputLayout("end_to_end", {"pred": hits[0]})
        by_role = {}
        for role in PLUGIN_OUTPUTS:
            hits = [n for n, _ in outputs if n == role or n.endswith("/" + role)]
            if len(hits) == 1:
                by_role[role] = hits[0]
        if len(by_role) == len(PLUGIN_OUTPUTS):
            return OutputLayout("plugin", by_role)
        raw = [(n, s) for n, s in outputs if len(s) == 3 and min(s[1:]) >= 5]
        if len(raw) == 1:
            name, shape = raw[0]
            return OutputLayout("anchor_free" if shape[1] < shape[2] else "raw", {"pred": name})
        shapes = ", ".join(f"{n} {list(s)}" for n, s in outputs)
        raise NetdefError(f"{where} has outputs {shapes}: expected either the NMS plugin's num_dets/boxes/scores/"
                          "classes or one YOLO prediction tensor: YOLOv5's (B, N, 5+nc) or YOLOv8/YOLO11's "
                          "(B, 4+nc, N)")


@dataclass
class Detector:
    """Letterbox -> `infer` -> post-process -> boxes on the original images. `infer(batch) -> {name: tensor}`."""

    infer: Callable[[Any], dict[str, Any]]
    input_hw: tuple[int, int]
    layout: OutputLayout
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET
    batch_range: tuple[int, int] = (1, 1)  # (min, max) batch the engine takes
    device: Any = "cpu"
    names: list[str] = field(default_factory=list)

    def __call__(self, images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                 bgr: bool = False) -> list[dict[str, Any]]:
        """Detections for HxWx3 uint8 images (RGB unless `bgr`), one dict per image."""
        results = []
        for k, ((boxes, scores, classes), im) in enumerate(zip(self.detect_tensors(images, bgr), images)):
            label = labels[k] if labels is not None else str(k)
            results.append(self._record(label, im.shape, boxes, scores, classes))
        return results

    def detect_tensors(self, images: Sequence[np.ndarray], bgr: bool = False) -> list[tuple[Any, Any, Any]]:
        """Per image (boxes (n, 4) x1y1x2y2 in original pixels, scores (n,), classes (n,)): on the device
        for raw predictions, on the host for plugin engines."""
        import torch

        lo, hi = self.batch_range
        results: list[tuple[Any, Any, Any]] = []
        for start in range(0, len(images), hi):
            chunk = list(images[start:start + hi])
            batch, ratio_pads = letterbox(chunk, self.input_hw, bgr=bgr, device=self.device)
            if batch.shape[0] < lo:  # the profile's minimum: pad with grey images, ignore their results
                fill = batch.new_full((lo - batch.shape[0], *batch.shape[1:]), 114 / 255.0)
                batch = torch.cat((batch, fill))
            per_image = self.postprocess(self.infer(batch))[:len(chunk)]
            for (boxes, scores, classes), rp, im in zip(per_image, ratio_pads, chunk):
                results.append((scale_boxes(boxes, rp, im.shape), scores, classes))
        return results

    def postprocess(self, outs: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
        """Per image (boxes, scores, classes): NMS on the device for raw predictions; the plugin's fixed-size
        outputs are copied to the host once and sliced there (no synchronisation per image)."""
        if self.layout.kind in ("raw", "anchor_free"):
            return non_max_suppression(outs[self.layout.names["pred"]], self.conf, self.iou, self.max_det,
                                       objectness=self.layout.kind == "raw")
        if self.layout.kind == "end_to_end":  # sorted top-k rows: keep those above the score threshold
            rows = outs[self.layout.names["pred"]].float()
            return [(r[keep, :4], r[keep, 4], r[keep, 5].int())
                    for r in rows for keep in [(r[:, 4] > self.conf).nonzero().flatten()[:self.max_det]]]
        n = self.layout.names
        num, boxes, scores, classes = (outs[n[r]].cpu() for r in PLUGIN_OUTPUTS)
        per_image = []
        for b, k in enumerate(num.reshape(num.shape[0], -1)[:, 0].int().tolist()):
            s = scores[b, :k].float()
            keep = (s > self.conf).nonzero().flatten()[:self.max_det]
            per_image.append((boxes[b, :k][keep].float(), s[keep], classes[b, :k][keep].int()))
        return per_image

    def _record(self, label: str, shape: tuple[int, ...], boxes: Any, scores: Any, classes: Any) -> dict[str, Any]:
        cls = [int(c) for c in classes.cpu().tolist()]
        return {"image": label, "height": int(shape[0]), "width": int(shape[1]),
                "boxes": [[round(float(v), 2) for v in b] for b in boxes.cpu().tolist()],
                "scores": [round(float(s), 5) for s in scores.cpu().tolist()],
                "classes": cls, "names": [self.class_name(c) for c in cls]}

    def class_name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else str(c)


def engine_detector(engine: Any, conf: float | None = None, iou: float | None = None,
                    max_det: int = DEFAULT_MAX_DET, names: list[str] | None = None, *,
                    device: int | None = None) -> Detector:
    """A Detector over a netdef engine (a path, loaded on CUDA device `device`, default the current one; or a
    `netdef.runtime.Engine`), on the engine's GPU.

    Plugin engines have their NMS thresholds built in: `conf` may only raise the score threshold and `iou`
    must equal the built one (rebuild with --set conf_thres=/iou_thres= otherwise); None keeps them.
    """
    import torch

    from ..runtime import Engine

    eng = engine if isinstance(engine, Engine) else Engine(engine, device=device)
    if len(eng.inputs) != 1:
        raise NetdefError(f"{eng.path} has {len(eng.inputs)} inputs; detection needs one image input")
    shape = eng.inputs[0].shape
    if len(shape) != 4 or shape[1] != 3 or shape[2] < 1 or shape[3] < 1:
        raise NetdefError(f"{eng.path}: input {eng.inputs[0].name} {list(shape)} is not a static (B, 3, H, W) image")
    arch = str(eng.meta.get("arch", {}).get("name", ""))
    if arch.endswith(("-pose", "-seg", "-cls")):
        raise NetdefError(f"{eng.path} is a {arch} engine: netdef detect handles detection engines (boxes); run "
                          f"pose, segmentation and classification engines with `netdef run` or netdef.runtime.Engine")
    head = eng.meta.get("options", {}).get("params", {}).get("head", "decode")
    layout = OutputLayout.of([(o.name, o.shape) for o in eng.outputs], str(eng.path),
                             end_to_end=arch.startswith("yolo26") and head != "one2many")
    if layout.kind == "plugin":
        conf, iou = _plugin_thresholds(eng.meta, str(eng.path), conf, iou)
    lo, _, hi = eng.batch_range
    name = eng.inputs[0].name

    def infer(batch: Any) -> dict[str, Any]:
        return eng.infer({name: batch}, as_numpy=False)

    return Detector(infer, (int(shape[2]), int(shape[3])), layout,
                    DEFAULT_CONF if conf is None else conf, DEFAULT_IOU if iou is None else iou, max_det,
                    (lo, hi), torch.device("cuda", eng.device), names or [])


def _plugin_thresholds(meta: dict[str, Any], where: str, conf: float | None,
                       iou: float | None) -> tuple[float, float]:
    layers = [lay for p in meta.get("plugins", []) for lay in p.get("layers", []) if "conf_thres" in lay]
    built_conf = layers[0]["conf_thres"] if layers else None
    built_iou = layers[0]["iou_thres"] if layers else None
    if conf is not None and (built_conf is None or conf < built_conf):
        raise NetdefError(f"{where} filters scores at conf {built_conf if built_conf is not None else '(unknown)'} "
                          f"inside its NMS plugin; --conf {conf} cannot lower it: rebuild with --set conf_thres={conf}")
    if iou is not None and (built_iou is None or abs(iou - built_iou) > 1e-6):
        raise NetdefError(f"{where} runs NMS at IoU {built_iou if built_iou is not None else '(unknown)'} inside "
                          f"its plugin; for --iou {iou} rebuild with --set iou_thres={iou}")
    return (conf if conf is not None else built_conf or 0.0), (built_iou if built_iou is not None else DEFAULT_IOU)


def detect(engine: Any, images: Sequence[str | Path | np.ndarray], conf: float | None = None,
           iou: float | None = None, max_det: int = DEFAULT_MAX_DET,
           names: list[str] | None = None, *, device: int | None = None) -> list[dict[str, Any]]:
    """Detect objects: `images` are files, folders or HxWx3 uint8 RGB arrays; one dict per image:
    {"image", "height", "width", "boxes" [[x1,y1,x2,y2]...] (original pixels), "scores", "classes", "names"}.
    conf/iou default to 0.25/0.45 (plugin engines: their built-in values); `device` as in `engine_detector`."""
    arrays, labels = _load_all(images)  # the images first: without a GPU the engine would report that instead
    return engine_detector(engine, conf, iou, max_det, names, device=device)(arrays, labels)


def _load_all(images: Sequence[str | Path | np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    arrays: list[np.ndarray] = []
    labels: list[str] = []
    for i, im in enumerate(images):
        if isinstance(im, np.ndarray):
            arrays.append(im)
            labels.append(str(i))
            continue
        for f in collect_images([im]):
            arrays.append(read_image(f))
            labels.append(str(f))
    return arrays, labels


# ---------------------------------------------------------------- output

def draw_detections(image: np.ndarray, det: dict[str, Any]) -> Any:
    """A PIL image with the detections' boxes and labels drawn on the RGB `image`."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for box, score, cls, name in zip(det["boxes"], det["scores"], det["classes"], det["names"]):
        color = _PALETTE[cls % len(_PALETTE)]
        draw.rectangle(box, outline=color, width=max(2, round(sum(im.size) / 600)))
        label = f"{name} {score:.2f}"
        x0, y0 = box[0], max(0.0, box[1] - 12)
        draw.rectangle(draw.textbbox((x0, y0), label), fill=color)
        draw.text((x0, y0), label, fill=(255, 255, 255))
    return im


_PALETTE = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
            (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
            (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
            (255, 149, 200), (255, 55, 199)]


def annotated_names(labels: Sequence[str]) -> list[str]:
    """The annotated image's file name for each image label (a path, or an index for arrays): the image's own
    name (.jpg/.jpeg/.png kept, other formats as .png), made unique with _2, _3, ..."""
    names, used = [], {DETECTIONS_JSON}
    for label in labels:
        src = Path(label)
        stem, suffix = src.stem, src.suffix.lower() if src.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
        name, n = f"{stem}{suffix}", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}{suffix}"
        used.add(name)
        names.append(name)
    return names


def check_outputs(labels: Sequence[str], out_dir: str | Path, inputs: Sequence[Any] = ()) -> None:
    """Before any work: none of the files `write_results` writes into `out_dir` for these image labels may be
    one of the command's inputs (the images themselves and `inputs`, e.g. the engine); an OptionError names it."""
    sources: dict[Any, Path] = {}  # each input by its resolved path and its file identity: one lookup per output
    for src in (Path(p) for p in [*labels, *inputs] if p is not None):
        for key in _file_keys(src):
            sources.setdefault(key, src)
    for name in [*annotated_names(labels), DETECTIONS_JSON]:
        path = Path(out_dir) / name
        same = [sources[k] for k in _file_keys(path) if k in sources]
        check_output(path, inputs=same[:1], what="--out")  # its error for an input, its checks for all


def _file_keys(path: Path) -> list[Any]:
    """The resolved path, and (device, inode) for an existing file (the same file under another name)."""
    try:
        st = path.stat()
        return [path.resolve(), (st.st_dev, st.st_ino)]
    except OSError:
        return [path.resolve()]


def write_results(results: list[dict[str, Any]], arrays: list[np.ndarray], out_dir: str | Path) -> list[Path]:
    """detections.json and one annotated image per input (`annotated_names`) in `out_dir`; returns the images.
    Refuses (before writing anything) where an annotated image would replace its own or another input image."""
    out = Path(out_dir)
    labels = [det["image"] for det in results]
    check_outputs(labels, out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for det, im, name in zip(results, arrays, annotated_names(labels)):
        det["annotated"] = name
        atomic_write(out / name, _encode(draw_detections(im, det), Path(name).suffix))
        written.append(out / name)
    atomic_write(out / DETECTIONS_JSON, json.dumps(results, indent=1).encode())
    return written


def _encode(im: Any, suffix: str) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="JPEG" if suffix in (".jpg", ".jpeg") else "PNG", quality=90)
    return buf.getvalue()
