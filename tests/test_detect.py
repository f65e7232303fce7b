"""`netdef detect`: image discovery, YOLOv5 NMS in torch, box mapping, outputs, CLI; the whole path on the GPU."""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from netdef.cli.detect import cmd_detect, register
from netdef.class_names import load_names
from netdef.tools.detect import (Detector, OutputLayout, _plugin_thresholds, annotated_names, check_outputs,
                                 collect_images, decode_predictions, non_max_suppression, read_image, write_results)
from netdef.errors import NetdefError, OptionError

from helpers import PHOTOS, photos

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")


def photo_files(folder: Path) -> list[Path]:
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(PHOTOS):
        p = folder / f"{name}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(getattr(data, name)()).save(p)
        paths.append(p)
    return paths


# ---------------------------------------------------------------- inputs

def test_collect_images_files_and_folders(tmp_path):
    from PIL import Image

    (tmp_path / "d").mkdir()
    for n in ("b.jpg", "a.PNG", "c.bmp"):
        Image.new("RGB", (4, 3)).save(tmp_path / "d" / n)
    (tmp_path / "d" / "notes.txt").write_text("x")
    Image.new("RGB", (5, 6)).save(tmp_path / "one.png")
    got = collect_images([tmp_path / "one.png", tmp_path / "d"])
    assert [p.name for p in got] == ["one.png", "a.PNG", "b.jpg", "c.bmp"]
    assert read_image(got[0]).shape == (6, 5, 3) and read_image(got[0]).dtype == np.uint8
    with pytest.raises(NetdefError, match="no such image or folder"):
        collect_images([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NetdefError, match="holds no images"):
        collect_images([tmp_path / "empty"])
    with pytest.raises(NetdefError, match="cannot read image"):
        read_image(tmp_path / "d" / "notes.txt")


def test_an_image_pillow_refuses_as_too_large_is_one_error(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit, a "bomb"
    with pytest.raises(NetdefError, match=r"cannot read image .*big\.png: .* \(Pillow refuses images this large"):
        read_image(tmp_path / "big.png")


def test_load_names(tmp_path):
    (tmp_path / "n.txt").write_text("person\nbicycle \ncar\n\n\n")  # blank lines at the end: ignored
    assert load_names(tmp_path / "n.txt") == ["person", "bicycle", "car"]
    (tmp_path / "gap.txt").write_text("person\n\n\nbicycle\ncar\n")  # one blank would shift the labels after it
    with pytest.raises(NetdefError, match=r"gap\.txt: line 2 is blank, before the name on line 4"):
        load_names(tmp_path / "gap.txt")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(NetdefError, match="no class names"):
        load_names(tmp_path / "e.txt")
    # an Ultralytics data.yaml gave the names 'names:', '0: person', '1: car' (class 0 labelled 'names:'): its
    # names: are read, as are a list's and netdef's own names file's; an engine given by mistake was a
    # UnicodeDecodeError traceback
    for name, text in (("data.yaml", "path: coco\nnames:\n  1: car\n  0: person\n"), ("n.json", '["person", "car"]'),
                       ("list.yaml", "- person\n- car\n"), ("data2.yaml", "names: [person, ' car']\n"),
                       ("w.wts.names.json", '{"format": 1, "names": ["person", "car"], "weights_sha256": "ab"}'),
                       ("keys.json", '{"names": {"0": "person", "1": "car"}}'),
                       ("model_names.json", '{"0": "person", "1": "car"}')):  # json.dump(model.names, f)
        (tmp_path / name).write_text(text)
        assert load_names(tmp_path / name) == ["person", "car"], name
    for name, text, needle in (("gap.yaml", "names:\n  0: person\n  2: car\n", "has the keys 0, 2, not the class "
                                                                                 "indices 0..1"),
                               ("coco.yaml", "path: coco\ntrain: images\n", "a mapping without a names: list, "
                                                                             "nor the class indices"),
                               ("nums.json", "[1, 2]", "YAML or JSON, a list whose items are not all names"),
                               ("empty.yaml", "names: []\n", "a mapping whose names: are not all names")):
        (tmp_path / name).write_text(text)
        with pytest.raises(NetdefError, match=rf"class names .*{name}: .*{needle}"):
            load_names(tmp_path / name)
    # a YAML or JSON document that does not parse is an error at its line: read as lines ('names:', '- cat') they
    # were recorded as the labels
    for name, text, line in (("tab.yaml", "names:\n  - cat\n\t- dog\n", 3), ("comma.json", '["cat",\n "dog"\n "b"]', 3),
                             ("data.txt", "# classes\nnames: [cat, dog\n", 3)):
        (tmp_path / name).write_text(text)
        with pytest.raises(NetdefError, match=rf"class names .*{name}:{line}: not valid YAML or JSON \(.*\): fix it, "
                                              "or give a text file of the names, one per line"):
            load_names(tmp_path / name)
    (tmp_path / "plain.txt").write_text("cat\ndog: a\n[bird\n")  # names that are no YAML: lines
    assert load_names(tmp_path / "plain.txt") == ["cat", "dog: a", "[bird"]
    for text, names in (("[background]\ncat\ndog\n", ["[background]", "cat", "dog"]),  # lines, not a broken list
                        ("person: adult\nfoo: bar: baz\n", ["person: adult", "foo: bar: baz"]),
                        ('[\n\t"cat",\n\t"dog"\n]\n', ["cat", "dog"]),  # JSON PyYAML refuses (tabs)
                        ('{"names": ["cat", "dog"], "about": "' + "x" * 1100 + '"}', ["cat", "dog"])):
        (tmp_path / "n.txt").write_text(text)
        assert load_names(tmp_path / "n.txt") == names, text
    (tmp_path / "odd.json").write_text("traffic light\njack-o'-lantern\n[unlabelled]\n")  # text, whatever its name
    assert load_names(tmp_path / "odd.json") == ["traffic light", "jack-o'-lantern", "[unlabelled]"]
    (tmp_path / "e.engine").write_bytes(b"NETDEF-ENGINE\n\xca\x05" + bytes(6))
    with pytest.raises(NetdefError, match=r"e\.engine: not UTF-8 text \(it looks like a netdef engine\); --names"):
        load_names(tmp_path / "e.engine")
    # a .wts is UTF-8 text too: its lines (the tensor count, 'conv1.weight 144 bb238d56 ...') were recorded as names
    (tmp_path / "w.wts").write_text("2\nconv1.weight 2 3f800000 3f800000\nconv1.bias 1 00000000\n")
    with pytest.raises(NetdefError, match=r"w\.wts: it looks like a \.wts weights file, not one name per line; --names"):
        load_names(tmp_path / "w.wts")


def test_class_names_given_then_recorded_then_indices():
    """Detection labels with --names where given, else the names the engine header records (netdef build took them
    from the checkpoint), else class indices; given names must be one per class of the recorded model."""
    from netdef.class_names import engine_names

    model = {"task": "detect", "nc": 3, "head": "decode"}
    meta = {"model": model, "names": ["cat", "dog", "fox"]}
    assert engine_names(None, meta, "y.engine") == ["cat", "dog", "fox"]
    assert engine_names(["a", "b", "c"], meta, "y.engine", "n.txt") == ["a", "b", "c"]
    assert engine_names(None, {"model": model}, "old.engine") == []  # an engine built without names
    assert engine_names(["a"], {}, "older.engine") == ["a"]  # no model record: no class count to check
    with pytest.raises(NetdefError, match=r"^n\.txt: 2 class names, but y\.engine holds a model of 3 classes: give "
                                          r"one name per class$"):
        engine_names(["a", "b"], meta, "y.engine", "n.txt")
    with pytest.raises(NetdefError, match=r"^the names given: 1 class name, but y\.engine"):
        engine_names(["a"], {"model": model}, "y.engine")


# ---------------------------------------------------------------- post-processing

def brute_force_nms(pred: np.ndarray, conf: float, iou: float, max_det: int):
    """YOLOv5 non_max_suppression written out: filter, best class, sort, greedy per class."""
    out = []
    for x in pred:
        cands = []
        for row in x:
            obj = row[4]
            if not obj > conf:
                continue
            scores = row[5:] * obj
            c = int(np.argmax(scores))
            if scores[c] > conf:
                cx, cy, w, h = row[:4]
                cands.append((float(scores[c]), c, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
        cands.sort(key=lambda t: -t[0])
        kept = []
        for s, c, b in cands:
            if all(k[1] != c or _iou(k[2], b) <= iou for k in kept):
                kept.append((s, c, b))
            if len(kept) == max_det:
                break
        out.append(kept)
    return out


def _iou(a, b):
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(list(a) == list(b))  # boxes clipped flat: equal or not


def test_non_max_suppression_matches_brute_force():
    rng = np.random.default_rng(0)
    pred = np.zeros((2, 400, 5 + 3), np.float32)
    pred[..., :2] = rng.uniform(20, 100, (2, 400, 2))
    pred[..., 2:4] = rng.uniform(10, 40, (2, 400, 2))
    pred[..., 4:] = rng.uniform(0, 1, (2, 400, 4))
    for conf, iou, max_det in ((0.25, 0.45, 300), (0.5, 0.3, 7)):
        got = non_max_suppression(torch.from_numpy(pred), conf, iou, max_det)
        ref = brute_force_nms(pred.astype(np.float64), conf, iou, max_det)
        for (boxes, scores, classes), r in zip(got, ref):
            assert len(boxes) == len(r) > 0
            assert np.allclose(scores.numpy(), [k[0] for k in r], atol=1e-6)
            assert classes.tolist() == [k[1] for k in r]
            assert np.allclose(boxes.numpy(), [k[2] for k in r], atol=1e-4)
        assert len(got[0][0]) <= max_det


def test_anchor_free_nms_is_yolov5s_without_objectness():
    """YOLOv8/YOLO11 predictions (B, 4+nc, N), class scores only, give what YOLOv5's NMS gives on the same boxes
    and scores with an objectness of 1 (the brute-force reference)."""
    rng = np.random.default_rng(1)
    v5 = np.zeros((2, 400, 5 + 3), np.float32)
    v5[..., :2] = rng.uniform(20, 100, (2, 400, 2))
    v5[..., 2:4] = rng.uniform(10, 40, (2, 400, 2))
    v5[..., 4] = 1.0
    v5[..., 5:] = rng.uniform(0, 1, (2, 400, 3))
    anchor_free = np.ascontiguousarray(np.delete(v5, 4, axis=2).transpose(0, 2, 1))  # (2, 7, 400)
    got = non_max_suppression(torch.from_numpy(anchor_free), 0.3, 0.45, 50, objectness=False)
    for (boxes, scores, classes), r in zip(got, brute_force_nms(v5.astype(np.float64), 0.3, 0.45, 50)):
        assert len(boxes) == len(r) > 0
        assert np.allclose(scores.numpy(), [k[0] for k in r], atol=1e-6)
        assert classes.tolist() == [k[1] for k in r]
        assert np.allclose(boxes.numpy(), [k[2] for k in r], atol=1e-4)


def test_decode_predictions_formula():
    rng = np.random.default_rng(1)
    anchors = np.array([[[10, 13], [16, 30]], [[30, 61], [62, 45]]], np.float32)
    nc = 2
    feats = [torch.from_numpy(rng.normal(0, 2, (1, 2 * (5 + nc), h, w)).astype(np.float32)) for h, w in ((4, 6), (2, 3))]
    pred = decode_predictions(feats, anchors, [8, 16])
    assert tuple(pred.shape) == (1, 2 * 24 + 2 * 6, 5 + nc)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    # level 1, anchor 1, cell (y=1, x=2): index 48 + (1*2 + 1)*3 + 2
    t = feats[1].numpy()[0].reshape(2, 5 + nc, 2, 3)[1, :, 1, 2].astype(np.float64)
    row = pred[0, 48 + (1 * 2 + 1) * 3 + 2].numpy()
    expect = [(sig(t[0]) * 2 - 0.5 + 2) * 16, (sig(t[1]) * 2 - 0.5 + 1) * 16,
              (sig(t[2]) * 2) ** 2 * 62, (sig(t[3]) * 2) ** 2 * 45, *sig(t[4:])]
    assert np.allclose(row, expect, rtol=1e-5)


def test_output_layout():
    plugin = OutputLayout.of([("num_dets", (-1, 1)), ("boxes", (-1, 100, 4)), ("scores", (-1, 100)),
                              ("classes", (-1, 100))])
    assert plugin.kind == "plugin" and plugin.names["boxes"] == "boxes"
    raw = OutputLayout.of([("output", (-1, 25200, 85))])
    assert raw.kind == "raw" and raw.names == {"pred": "output"}
    anchor_free = OutputLayout.of([("output", (-1, 84, 8400))])
    assert anchor_free.kind == "anchor_free" and anchor_free.names == {"pred": "output"}
    assert OutputLayout.of([("output", (-1, 300, 6))], end_to_end=True).kind == "end_to_end"
    with pytest.raises(NetdefError, match="expected one end-to-end output"):
        OutputLayout.of([("output", (-1, 84, 8400))], end_to_end=True)


def test_end_to_end_rows_with_mask_coefficients_or_keypoints():
    """YOLO26-seg rows (B, K, 6 + nm) with the prototypes, YOLO26-pose rows (B, K, 6 + nkpt * ndim): the kept rows'
    coefficients go to mask assembly with their image's prototypes, the keypoints are shaped (n, nkpt, ndim)."""
    seg = OutputLayout.of([("output", (-1, 300, 38)), ("proto", (-1, 32, 80, 80))], end_to_end=True)
    assert (seg.kind, seg.task, seg.extra, seg.names) == ("end_to_end", "segment", 32,
                                                          {"protos": "proto", "pred": "output"})
    pose = OutputLayout.of([("output", (-1, 300, 57))], end_to_end=True, kpt_shape=(17, 3))
    assert (pose.task, pose.kpt_shape, pose.extra) == ("pose", (17, 3), 51)
    with pytest.raises(NetdefError, match=r"expected one end-to-end output \(B, K, 57\), got output \[-1, 300, 6\]"):
        OutputLayout.of([("output", (-1, 300, 6))], end_to_end=True, kpt_shape=(17, 3))
    rows = torch.zeros((2, 3, 6 + 4))
    rows[0, 0, :6] = torch.tensor([0, 0, 10, 10, 0.9, 2])
    rows[0, 0, 6:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rows[1, 1, :6] = torch.tensor([5, 5, 9, 9, 0.5, 1])
    protos = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    lay = OutputLayout.of([("output", (-1, 3, 10)), ("proto", (-1, 4, 8, 8))], end_to_end=True)
    per_image = Detector(None, (32, 32), lay, conf=0.25).postprocess({"output": rows, "proto": protos})
    assert [len(d.scores) for d in per_image] == [1, 1]
    assert per_image[0].coefs.tolist() == [[1.0, 2.0, 3.0, 4.0]] and per_image[1].protos is not None
    assert torch.equal(per_image[1].protos, protos[1])
    lay = OutputLayout.of([("output", (-1, 3, 10))], end_to_end=True, kpt_shape=(2, 2))
    kept = Detector(None, (32, 32), lay, conf=0.25).postprocess({"output": rows})
    assert kept[0].keypoints.tolist() == [[[1.0, 2.0], [3.0, 4.0]]] and kept[1].keypoints.shape == (1, 2, 2)


def test_end_to_end_rows_are_filtered_not_suppressed():
    """YOLO26's top-k rows (x1, y1, x2, y2, score, class) keep those above the threshold, overlapping or not."""
    rows = torch.tensor([[[0, 0, 10, 10, 0.9, 2], [0, 0, 10, 10, 0.8, 2], [5, 5, 9, 9, 0.1, 0]]], dtype=torch.float32)
    det = Detector(lambda b: {"output": rows}, (32, 32), OutputLayout("end_to_end", {"pred": "output"}), conf=0.25)
    (boxes, scores, classes), = det.postprocess({"output": rows})
    assert scores.tolist() == pytest.approx([0.9, 0.8]) and classes.tolist() == [2, 2] and boxes.shape == (2, 4)
    with pytest.raises(NetdefError, match=r"outputs prob \[-1, 1000\]: expected either the NMS plugin"):
        OutputLayout.of([("prob", (-1, 1000))])


def test_plugin_thresholds_can_only_be_tightened():
    meta = {"plugins": [{"name": "yolo_decode_nms", "layers": [{"conf_thres": 0.25, "iou_thres": 0.45}]}]}
    assert _plugin_thresholds(meta, "e", None, None) == (0.25, 0.45)
    assert _plugin_thresholds(meta, "e", 0.5, 0.45) == (0.5, 0.45)
    with pytest.raises(NetdefError, match="cannot lower it: rebuild with --set conf_thres=0.1"):
        _plugin_thresholds(meta, "e", 0.1, None)
    with pytest.raises(NetdefError, match="rebuild with --set iou_thres=0.6"):
        _plugin_thresholds(meta, "e", None, 0.6)


def centre_box_model(input_hw, nc=3, cls=1):
    """A fake raw engine: one confident box covering the middle half of the (letterboxed) content."""
    def infer(batch):
        b = batch.shape[0]
        pred = torch.zeros(b, 10, 5 + nc)
        for i in range(b):
            content = (batch[i].sub(114 / 255).abs().sum(0) > 1e-6).nonzero()  # non-grey pixels
            if not len(content):  # a padding image
                continue
            (y0, x0), (y1, x1) = content.min(0).values.tolist(), content.max(0).values.tolist()
            pred[i, 3, :4] = torch.tensor([(x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2, (x1 + 1 - x0) / 2, (y1 + 1 - y0) / 2])
            pred[i, 3, 4], pred[i, 3, 5 + cls] = 0.9, 0.8
        return {"output": pred}
    return infer


def test_detector_maps_boxes_back_to_the_original_images():
    images = photos()
    det = Detector(centre_box_model((320, 256)), (320, 256), OutputLayout("raw", {"pred": "output"}),
                   batch_range=(4, 2 + 1), names=["a", "b", "c"])  # batches of 3, padded up to 4
    res = det(images, labels=[f"img{i}" for i in range(len(images))])
    assert [r["image"] for r in res] == [f"img{i}" for i in range(len(images))]
    for r, im in zip(res, images):
        h, w = im.shape[:2]
        assert (r["height"], r["width"]) == (h, w) and r["classes"] == [1] and r["names"] == ["b"]
        assert r["scores"] == [pytest.approx(0.72)]
        # the middle half of the image, within the letterbox's resolution (1/ratio pixels)
        tol = 2.5 * max(h / 320, w / 256)
        assert np.allclose(r["boxes"][0], [w / 4, h / 4, 3 * w / 4, 3 * h / 4], atol=tol), (r["boxes"], (h, w))


def test_detector_with_plugin_outputs_filters_and_truncates():
    def infer(batch):
        b = batch.shape[0]
        boxes = torch.zeros(b, 5, 4)
        boxes[:, :3] = torch.tensor([[0, 0, 64, 64], [10, 10, 20, 20], [30, 30, 60, 50]], dtype=torch.float32)
        scores = torch.zeros(b, 5)
        scores[:, :3] = torch.tensor([0.9, 0.6, 0.3])
        return {"m/num_dets": torch.full((b, 1), 3, dtype=torch.int32), "m/boxes": boxes, "m/scores": scores,
                "m/classes": torch.tensor([[2, 0, 1, 0, 0]] * b, dtype=torch.int32)}

    layout = OutputLayout.of([(f"m/{n}", (-1, 5)) for n in ("num_dets", "boxes", "scores", "classes")])
    img = np.zeros((64, 128, 3), np.uint8)  # letterboxed into 64x64: ratio 0.5, 16 px of padding on top
    det = Detector(infer, (64, 64), layout, conf=0.5, max_det=5)
    [r] = det([img])
    assert r["scores"] == pytest.approx([0.9, 0.6]) and r["classes"] == [2, 0]
    assert r["boxes"][0] == [0.0, 0.0, 128.0, 64.0] and r["boxes"][1] == [20.0, 0.0, 40.0, 8.0]
    det.max_det = 1
    assert len(det([img])[0]["boxes"]) == 1


class EagerEngine:
    """What DetectGraphs uses of a netdef.runtime.Engine, on the CPU: `capture` gives a step that runs before(), the
    fake engine and after(outputs) eagerly, the outputs written into buffers made on the first run (a graph's)."""

    def __init__(self, infer, hw):
        from types import SimpleNamespace

        from netdef.runtime import TensorInfo

        self.inputs = [TensorInfo("images", (-1, 3, *hw), "float32")]
        self.backend = SimpleNamespace(empty=lambda shape, dtype: torch.empty(shape, dtype=getattr(torch, dtype)))
        self.infer, self.device, self.captures, self.shapes, self._refits = infer, None, 0, [], 0

    def input_shape(self, t, batch, hw):
        assert tuple(hw) == t.shape[2:]
        return (batch, *t.shape[1:])

    def on_device(self):
        import contextlib

        return contextlib.nullcontext()

    def check_feeds(self, feeds):
        self.shapes.append(tuple(feeds["images"].shape))

    def capture(self, inputs, before, after):
        self.captures += 1
        x, outs = inputs["images"], {}

        def step():
            before()
            for k, v in self.infer(x.clone()).items():
                if k in outs:
                    outs[k].copy_(v)
                else:
                    outs[k] = v.clone()
            after(outs)

        step.outputs, step.kept, step.synchronize = outs, [], lambda: None
        step.keep = lambda *buffers: step.kept.extend(buffers)
        step()  # the run before the capture
        return step


def as_plugin(infer, k=5):
    """A raw fake engine turned into one with the NMS plugin's fixed-size outputs."""
    def plugin(batch):
        b = batch.shape[0]
        out = {"num_dets": torch.zeros(b, 1, dtype=torch.int32), "boxes": torch.zeros(b, k, 4),
               "scores": torch.zeros(b, k), "classes": torch.zeros(b, k, dtype=torch.int32)}
        for i, (bx, sc, c) in enumerate(non_max_suppression(infer(batch)["output"], 0.25, 0.45, k)):
            n = len(bx)
            out["num_dets"][i, 0], out["boxes"][i, :n], out["scores"][i, :n], out["classes"][i, :n] = n, bx, sc, c
        return out
    return plugin


@pytest.mark.parametrize("kind", ["raw", "plugin"])
def test_the_graphed_pipeline_gives_what_the_eager_one_gives(kind):
    """engine_detector on an Engine with cuda_graph=True: letterbox into the engine's bound input, the engine and
    the plugin's outputs copied to the host, captured once per list of image shapes (here run eagerly on the
    CPU by a stand-in engine), give the detections of the plain pipeline; a batch below the smallest is padded."""
    from netdef.tools.detect_graphs import DetectGraphs

    hw, images = (320, 256), photos()
    infer = centre_box_model(hw) if kind == "raw" else as_plugin(centre_box_model(hw))
    layout = OutputLayout("raw", {"pred": "output"}) if kind == "raw" else OutputLayout.of(
        [(n, (-1, 5)) for n in ("num_dets", "boxes", "scores", "classes")])
    eager = Detector(infer, hw, layout, batch_range=(2, 3))
    eng = EagerEngine(infer, hw)
    to_host = ["num_dets", "boxes", "scores", "classes"] if kind == "plugin" else []
    graphs = DetectGraphs(eng, torch.device("cpu"), hw, min_batch=2, to_host=to_host, keep=2)
    graphed = Detector(infer, hw, layout, batch_range=(2, 3), graphs=graphs)
    want = eager(images, bgr=True)
    assert len(images) == 4 and sum(len(r["boxes"]) for r in want) == 4
    assert graphed(images, bgr=True) == want and eng.captures == 2  # chunks of 3 and 1 (padded to 2)
    assert [s[0] for s in eng.shapes] == [3, 2]
    assert graphed(images, bgr=True) == want and eng.captures == 2  # the same shapes: replayed
    assert graphed(images[::-1], bgr=True) == eager(images[::-1], bgr=True) and eng.captures == 4
    assert graphed(images, bgr=False) == eager(images) and eng.captures == 6  # bgr is part of the key
    assert len(graphs._graphs) == 2  # the least recently used out
    for cap in graphs._graphs.values():  # a graph keeps the resize tables it reads (their cache may drop them)
        tables = cap.step.kept[-1]
        assert tables and all(len(t) == 4 and all(isinstance(v, torch.Tensor) for v in t) for t in tables)
    eng._refits = 1  # a refit ends the steps: every graph is made again
    assert graphed(images, bgr=False) == eager(images) and eng.captures == 8 and len(graphs._graphs) == 2
    with pytest.raises(NetdefError, match=r"image 0 must be an HxWx3 uint8 numpy array for CUDA graphs, got "
                                          r"\(8, 8\) uint8"):
        graphed([np.zeros((8, 8), np.uint8)])


def test_rect_letterboxes_each_batch_to_its_smallest_stride_multiple():
    """--rect: a batch is padded only to the smallest multiple of the stride that holds it at the target size, as
    Ultralytics' LetterBox(auto=True) pads one image; boxes still map back to the original images."""
    shapes = []

    def infer(batch):
        shapes.append(tuple(batch.shape[2:]))
        return centre_box_model(tuple(batch.shape[2:]))(batch)

    images = photos()
    det = Detector(infer, (640, 640), OutputLayout("raw", {"pred": "output"}), batch_range=(1, 1), rect=True)
    res = det(images)
    try:  # through the reference module: it puts back what importing Ultralytics patches (PIL, cv2)
        from netdef.testing import ultralytics_reference as ref
        from netdef.testing.yolov5_reference import import_with_stand_ins

        ref.import_tasks()
        LetterBox = import_with_stand_ins("ultralytics.data.augment").LetterBox
    except ImportError:
        LetterBox = None
    for im, hw, r in zip(images, shapes, res):
        h, w = im.shape[:2]
        scale = min(640 / h, 640 / w)
        nh, nw = round(h * scale), round(w * scale)
        assert hw == (nh + (640 - nh) % 32, nw + (640 - nw) % 32) and max(hw) == 640
        if LetterBox is not None:
            assert hw == LetterBox((640, 640), auto=True, stride=32)(image=im).shape[:2]
        assert np.allclose(r["boxes"][0], [w / 4, h / 4, 3 * w / 4, 3 * h / 4], atol=2.5 / scale)
    assert any(hw != (640, 640) for hw in shapes)  # the photos are not square: fewer pixels
    Detector(infer, (640, 640), OutputLayout("raw", {"pred": "output"}), batch_range=(1, 4), rect=True,
             stride=64)(images)
    assert all(h % 64 == 0 and w % 64 == 0 for h, w in shapes[len(images):])  # one batch, the largest image's


def test_plain_pose_kpt_shape_from_a_scaled_name_beside_the_recorded_path(tmp_path, monkeypatch):
    """A family YAML outside the architecture folders, built by a scaled name (yolov8n-pose): it hashes equal only
    loaded by that name beside the recorded path (`refit.spec_of`), which the kpt_shape then comes from."""
    from netdef.refit import spec_of
    from netdef.spec import load_spec, resolve_arch
    from netdef.tools.detect import _arch_kpt_shape

    monkeypatch.chdir(tmp_path)  # no ./architectures
    family = tmp_path / "mine" / "yolov8-pose.yaml"
    family.parent.mkdir()
    family.write_text(resolve_arch("yolov8n-pose")[0].read_text() + "\n# my copy\n")  # not netdef's own text
    sha = load_spec(family.parent / "yolov8n-pose.yaml").sha256
    assert sha != load_spec("yolov8n-pose").sha256  # the name alone finds netdef's own, the path no scale
    meta = {"arch": {"name": "yolov8n-pose", "path": str(family), "sha256": sha}}
    assert spec_of(meta).sha256 == sha and spec_of(meta).scale == "n"
    assert _arch_kpt_shape(meta, "e") == (17, 3)
    with pytest.raises(NetdefError, match=r"\(yolov8n-pose, .*yolov8-pose\.yaml\) is not here unchanged"):
        _arch_kpt_shape({"arch": dict(meta["arch"], path=str(tmp_path / "elsewhere" / "yolov8-pose.yaml"))}, "e")


def test_target_size_of_static_and_dynamic_engines():
    from types import SimpleNamespace

    from netdef.runtime import Engine
    from netdef.tools.detect import _target_size

    def eng(shape, ranges=None):  # an Engine as loaded (its dynamic_hw from hw_ranges), not run
        e = Engine.__new__(Engine)
        e.inputs, e.hw_ranges, e.path = [SimpleNamespace(shape=shape)], ranges, Path("e.engine")
        return e

    static = eng((-1, 3, 640, 480))
    assert _target_size(static, None, None, False) == ((640, 480), 32)
    with pytest.raises(OptionError, match=r"--rect needs an engine built with a dynamic input size .*640x480 only"):
        _target_size(static, {"stride": 32}, None, True)
    with pytest.raises(OptionError, match=r"--input-shape 320x320: e\.engine takes 640x480 only"):
        _target_size(static, None, (320, 320), False)
    dyn = eng((-1, 3, -1, -1), [((320, 320), (640, 640), (1280, 1280))])
    assert _target_size(dyn, {"stride": 64}, None, True) == ((640, 640), 64)
    assert _target_size(dyn, {"stride": 64}, (960, 960), False) == ((960, 960), 64)
    with pytest.raises(OptionError, match=r"^--input-shape 650x650: e\.engine takes heights and widths that are "
                                          r"multiples of its model's stride 64$"):
        _target_size(dyn, {"stride": 64}, (650, 650), False)
    with pytest.raises(NetdefError, match="--rect needs the model's stride, which its header does not record"):
        _target_size(dyn, {"task": "detect"}, None, True)


def test_detect_input_shape_is_checked_before_any_work(tmp_path, capsys):
    from helpers import run_cli

    r = run_cli("detect", str(tmp_path / "e.engine"), str(tmp_path), "--out", str(tmp_path / "o"),
                "--input-shape", "8x8x8")
    assert r.returncode == 1 and "--input-shape '8x8x8': expected H,W" in r.stderr


def test_output_layout_of_engines_with_a_dynamic_input_size():
    """Where H, W are chosen at run time the positions' axis is -1: YOLOv5's (B, -1, 5 + nc) is raw, YOLOv8's
    (B, 4 + nc, -1) anchor-free, with the prototypes (B, nm, -1, -1) a segmentation engine."""
    raw = OutputLayout.of([("output", (-1, -1, 85))])
    assert (raw.kind, raw.task) == ("raw", "detect")
    free = OutputLayout.of([("output0", (-1, 84, -1))])
    assert (free.kind, free.task) == ("anchor_free", "detect")
    seg = OutputLayout.of([("output0", (-1, 116, -1)), ("proto", (-1, 32, -1, -1))])
    assert (seg.kind, seg.task, seg.extra) == ("anchor_free", "segment", 32)
    pose = OutputLayout.of([("output0", (-1, 56, -1))], kpt_shape=(17, 3))
    assert (pose.kind, pose.task, pose.extra) == ("anchor_free", "pose", 51)
    with pytest.raises(NetdefError, match="expected either the NMS plugin's"):
        OutputLayout.of([("output0", (-1, 3, -1))])


def test_rect_pads_up_to_the_engines_smallest_size():
    """A wide photo's rectangle (640x224 at 640) below the engine's smallest 320x320: grey added at the bottom to
    a stride multiple >= 320, the content and its offsets unchanged, so the box maps back as before."""
    from netdef.tools.preprocess import pad_to

    x = torch.rand(2, 3, 224, 640)
    y = pad_to(x, (320, 320), 32, 114 / 255)
    assert tuple(y.shape) == (2, 3, 320, 640) and torch.equal(y[:, :, :224], x)
    assert torch.all(y[:, :, 224:] == 114 / 255) and pad_to(x, (200, 600), 32, 0.5) is x
    assert tuple(pad_to(x, (330, 300), 64, 0.0).shape) == (2, 3, 384, 640)
    shapes = []

    def infer(batch):
        shapes.append(tuple(batch.shape[2:]))
        return centre_box_model(tuple(batch.shape[2:]))(batch)

    wide = np.random.default_rng(0).integers(0, 255, (200, 600, 3), dtype=np.uint8)
    det = Detector(infer, (640, 640), OutputLayout("raw", {"pred": "output"}), rect=True, min_hw=(320, 320))
    [r] = det([wide])
    assert shapes == [(320, 640)]
    assert np.allclose(r["boxes"][0], [150, 50, 450, 150], atol=2.5)


def test_a_classification_engine_with_a_dynamic_size_takes_the_target_size():
    from types import SimpleNamespace

    from netdef.tools.classify import engine_classifier

    eng = SimpleNamespace(meta={"arch": {"name": "yolov8n-cls"}}, path=Path("c.engine"), device=0,
                          inputs=[SimpleNamespace(name="images", shape=(-1, 3, -1, -1))],
                          outputs=[SimpleNamespace(name="probs", shape=(-1, 1000))], batch_range=(1, 4, 8))
    clf = engine_classifier(eng, {"task": "classify", "nc": 1000, "head": "probs"}, None, (224, 224))
    assert clf.input_hw == (224, 224) and clf.output == "probs" and not clf.logits


def test_write_results_and_drawing(tmp_path):
    imgs = [np.full((40, 60, 3), 200, np.uint8), np.full((30, 30, 3), 50, np.uint8)]
    results = [{"image": "x/a.jpg", "height": 40, "width": 60, "boxes": [[5.0, 5.0, 30.0, 20.0]], "scores": [0.9],
                "classes": [0], "names": ["person"]},
               {"image": "y/a.jpg", "height": 30, "width": 30, "boxes": [], "scores": [], "classes": [], "names": []}]
    written = write_results(results, imgs, tmp_path / "out")
    assert [p.name for p in written] == ["a.jpg", "a_2.jpg"]
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert saved[0]["annotated"] == "a.jpg" and saved[0]["names"] == ["person"] and saved[1]["boxes"] == []
    drawn = read_image(written[0])
    assert drawn.shape == (40, 60, 3)
    assert np.abs(drawn[5, 15].astype(int) - 200).max() > 30  # the box outline is drawn
    assert np.abs(read_image(written[1]).astype(int) - 50).max() <= 3  # nothing drawn (JPEG noise only)


def test_cli_register_and_run(tmp_path, monkeypatch):
    import netdef.tools.detect as d

    paths = photo_files(tmp_path / "imgs")
    (tmp_path / "names.txt").write_text("zero\none\ntwo\n")
    seen = {}

    order = []

    def fake_engine_detector(engine, conf, iou, max_det, names, device=None, **kw):
        seen.update(engine=engine, conf=conf, iou=iou, max_det=max_det, device=device, **kw)
        order.append("engine")
        det = Detector(centre_box_model((320, 320)), (320, 320), OutputLayout("raw", {"pred": "output"}),
                       conf=conf or 0.25, names=names)
        return lambda arrays, labels: order.append(len(arrays)) or det(arrays, labels)

    import netdef.cli.detect as cli_detect

    monkeypatch.setattr(d, "engine_detector", fake_engine_detector)
    monkeypatch.setattr(cli_detect, "IMAGES_AT_ONCE", 3)  # the photos decoded and detected three at a time
    parser = argparse.ArgumentParser(prog="netdef")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["detect", "m.engine", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"),
                              "--names", str(tmp_path / "names.txt"), "--conf", "0.3"])
    assert args.func(args) == 0
    assert seen == {"engine": "m.engine", "conf": 0.3, "iou": None, "max_det": None, "device": None,
                    "kpt_shape": None, "input_hw": None, "rect": False, "names_from": str(tmp_path / "names.txt"),
                    "letterbox_kernel": False}
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert sorted(Path(r["image"]).name for r in saved) == sorted(p.name for p in paths)
    assert all(r["names"] == ["one"] for r in saved)
    assert all((tmp_path / "out" / r["annotated"]).is_file() for r in saved)
    assert order == ["engine", 3, len(paths) - 3]


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="netdef")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["detect", *argv])


def no_engine(monkeypatch) -> None:
    """Loading an engine or reading an image fails the test: the check under test must come first."""
    import netdef.tools.detect as d

    def fail(*args, **kwargs):
        raise AssertionError("the engine was loaded or an image read before the overwrite check")

    monkeypatch.setattr(d, "engine_detector", fail)
    monkeypatch.setattr(d, "read_image", fail)


def test_detect_refuses_an_out_folder_that_would_overwrite_its_images(tmp_path, monkeypatch, capsys):
    """`netdef detect photos/ --out photos/` would replace each photo with its annotated copy: refused with one
    error naming the photo, before the engine (the GPU) is needed and before any image is read; nothing changes."""
    from netdef.cli import main

    paths = photo_files(tmp_path / "photos")
    before = {p: p.read_bytes() for p in paths}
    no_engine(monkeypatch)
    for out in (tmp_path / "photos", tmp_path / "photos" / ".." / "photos"):
        with pytest.raises(OptionError, match=r"--out .*astronaut\.jpg is also an input of this command"):
            cmd_detect(cli_args("m.engine", str(tmp_path / "photos"), "--out", str(out)))
    # one photo named as a file, the others elsewhere: only that one collides
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.jpg").write_bytes(paths[0].read_bytes())
    with pytest.raises(OptionError, match=r"coffee\.png is also an input"):
        cmd_detect(cli_args("m.engine", str(paths[1]), str(tmp_path / "other"), "--out", str(tmp_path / "photos")))
    # the same folder under another name (a symbolic link)
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    with pytest.raises(OptionError, match="is also an input"):
        cmd_detect(cli_args("m.engine", str(tmp_path / "photos"), "--out", str(tmp_path / "link")))
    # through the command line: one line on stderr, exit 1
    capsys.readouterr()
    assert main(["detect", "m.engine", str(tmp_path / "photos"), "--out", str(tmp_path / "photos")]) == 1
    err = capsys.readouterr().err.splitlines()
    print(err)
    assert len(err) == 1 and err[0].startswith("netdef detect: error: --out ") and "astronaut.jpg" in err[0]
    assert {p: p.read_bytes() for p in paths} == before
    assert not (tmp_path / "photos" / "detections.json").exists()


def test_detect_refuses_to_overwrite_its_other_inputs(tmp_path, monkeypatch):
    """detections.json is written too: a --names file (or the engine) of that name is an input as well."""
    photo_files(tmp_path / "photos")
    (tmp_path / "out").mkdir()
    names = tmp_path / "out" / "detections.json"
    names.write_text("zero\none\n")
    no_engine(monkeypatch)
    with pytest.raises(OptionError, match=r"detections\.json is also an input"):
        cmd_detect(cli_args("m.engine", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
                            "--names", str(names)))
    assert names.read_text() == "zero\none\n"


def test_detect_never_replaces_a_file_of_the_users_in_out(tmp_path, monkeypatch):
    """--out may hold the user's own files: one named as an annotated image will be (their own bus.jpg) is refused
    before any work, saying how to go on; the images an earlier `netdef detect` wrote there (marked in the file, or,
    from an older netdef, listed in its detections.json) are replaced."""
    from PIL import Image

    from netdef.tools.detect import ANNOTATED_BY

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    Image.new("RGB", (16, 12), (200, 0, 0)).save(photos / "bus.jpg")
    Image.new("RGB", (16, 12), (0, 200, 0)).save(photos / "cat.png")
    Image.new("RGB", (5, 5)).save(out / "bus.jpg")  # the user's own photo, not one of the inputs
    mine = (out / "bus.jpg").read_bytes()
    labels = [str(photos / "bus.jpg"), str(photos / "cat.png")]
    refused = (rf"^--out {re.escape(str(out / 'bus.jpg'))} exists and no earlier `netdef detect` wrote it: the annotated "
               rf"image of {re.escape(labels[0])} would replace it; move that file away or give another --out folder$")
    with pytest.raises(OptionError, match=refused):
        check_outputs(labels, out)
    no_engine(monkeypatch)
    with pytest.raises(OptionError, match=refused):
        cmd_detect(cli_args("m.engine", str(photos), "--out", str(out)))
    res = [{"image": label, "height": 12, "width": 16, "boxes": [[1.0, 1.0, 9.0, 9.0]], "scores": [0.9],
            "classes": [0], "names": ["bus"]} for label in labels]
    arrays = [np.full((12, 16, 3), 90, np.uint8)] * 2
    with pytest.raises(OptionError, match=refused):
        write_results(res, arrays, out)
    assert (out / "bus.jpg").read_bytes() == mine and not (out / "detections.json").exists()

    (out / "bus.jpg").unlink()
    assert [p.name for p in write_results(res, arrays, out)] == ["bus.jpg", "cat.png"]
    with Image.open(out / "bus.jpg") as a, Image.open(out / "cat.png") as b:
        assert a.info["comment"] == ANNOTATED_BY.encode() and b.info["Software"] == ANNOTATED_BY
    (out / "detections.json").unlink()
    check_outputs(labels, out)  # its own images, marked: replaced by a later run
    write_results(res, arrays, out)
    Image.new("RGB", (5, 5)).save(out / "cat.png")  # unmarked, as an older netdef wrote it, and listed
    check_outputs(labels, out)
    (out / "detections.json").write_text("[]")  # listed no more: another file of that name
    with pytest.raises(OptionError, match=r"cat\.png exists and no earlier `netdef detect` wrote it"):
        check_outputs(labels, out)


def test_annotated_names_and_write_results_never_replace_an_input(tmp_path):
    assert annotated_names(["x/a.jpg", "y/a.jpg", "detections.png", "z/b.bmp", "3"]) == \
        ["a.jpg", "a_2.jpg", "detections.png", "b.png", "3.png"]
    assert annotated_names(["a/detections.json"]) == ["detections.png"]
    # names that differ in case only are one file on macOS and Windows: the second would replace the first
    assert annotated_names(["x/Dog.jpg", "y/dog.jpg", "z/DOG.png"]) == ["Dog.jpg", "dog_2.jpg", "DOG.png"]
    # a renamed output (a_2.jpg) that is an input is caught as well
    (tmp_path / "a.jpg").write_bytes(b"first")
    (tmp_path / "a_2.jpg").write_bytes(b"second")
    with pytest.raises(OptionError, match=r"a_2\.jpg is also an input"):
        check_outputs(["elsewhere/a.jpg", str(tmp_path / "a_2.jpg")], tmp_path)
    # a hard link of an input is that input
    (tmp_path / "src").mkdir()
    os.link(tmp_path / "a.jpg", tmp_path / "src" / "c.jpg")
    with pytest.raises(OptionError, match="is also an input"):
        check_outputs([str(tmp_path / "c.jpg")], tmp_path / "src", inputs=[tmp_path / "a.jpg"])
    check_outputs([str(tmp_path / "a.jpg")], tmp_path / "out")  # elsewhere: fine
    # the library function refuses too, before writing anything
    img = np.full((8, 8, 3), 90, np.uint8)
    res = [{"image": str(tmp_path / "a.jpg"), "height": 8, "width": 8, "boxes": [], "scores": [], "classes": [],
            "names": []}]
    with pytest.raises(OptionError, match="is also an input"):
        write_results(res, [img], tmp_path)
    assert (tmp_path / "a.jpg").read_bytes() == b"first" and not (tmp_path / "detections.json").exists()
    assert [p.name for p in write_results(res, [img], tmp_path / "out")] == ["a.jpg"]


# ---------------------------------------------------------------- the whole path on the GPU

NC = 4
STRIDES = (8, 16, 32)
ANCHORS = np.array([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                    [[116, 90], [156, 198], [373, 326]]], np.float32)


def tiny_detector_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {}
    for i in range(3):
        c2 = 3 * (5 + NC)
        w[f"m.{i}.weight"] = rng.normal(0, 3, (c2, 3, 1, 1)).astype(np.float32).ravel()
        b = rng.normal(0, 1, (3, 5 + NC)).astype(np.float32)
        b[:, 4] += 1.0
        w[f"m.{i}.bias"] = b.ravel()
    return w


def tiny_torch_model(weights):
    """The same network in torch: per level avg-pool(stride) + 1x1 conv -> raw maps -> YOLOv5 decode."""
    import torch.nn.functional as F

    def infer(batch):
        feats = []
        for i, s in enumerate(STRIDES):
            w = torch.from_numpy(weights[f"m.{i}.weight"].reshape(-1, 3, 1, 1)).to(batch.device)
            b = torch.from_numpy(weights[f"m.{i}.bias"]).to(batch.device)
            feats.append(F.conv2d(F.avg_pool2d(batch, s), w, b))
        return {"output": decode_predictions(feats, ANCHORS, STRIDES)}
    return infer


@pytest.mark.gpu
def test_detect_engine_with_plugin_equals_torch_pipeline(tmp_path):
    from test_plugins import build_test_engine

    from netdef.cli.detect import cmd_detect
    from netdef.tools.detect import detect, engine_detector
    from netdef.plugins.yolo import add_yolo_decode_nms

    h, w, conf, iou = 256, 320, 0.3, 0.45
    weights = tiny_detector_weights()

    def define(net):
        x = net.input("images", (-1, 3, h, w))
        raw = [net.conv(net.pool(x, "avg", s, s, 0, name=f"pool{s}"), f"m.{i}", 3 * (5 + NC), 1, bias=True)
               for i, s in enumerate(STRIDES)]
        return add_yolo_decode_nms(net, raw, ANCHORS, list(STRIDES), NC, "model.24", conf, iou, 300)

    engine_path = tmp_path / "tiny.engine"
    build_test_engine(engine_path, weights, define, "fp32", 3, tf32=False)  # exact fp32 convolutions
    paths = photo_files(tmp_path / "imgs")
    t0 = time.perf_counter()
    got = detect(engine_path, [tmp_path / "imgs"], max_det=300)
    t_engine = time.perf_counter() - t0
    arrays = [read_image(p) for p in sorted(paths)]
    ref_det = Detector(tiny_torch_model(weights), (h, w), OutputLayout("raw", {"pred": "output"}), conf=conf,
                       iou=iou, max_det=300, batch_range=(1, 3), device=torch.device("cuda"))
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref = ref_det(arrays, [str(p) for p in sorted(paths)])
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert [r["image"] for r in got] == [r["image"] for r in ref]
    total = matched = 0
    for g, r in zip(got, ref):
        assert len(g["boxes"]) == len(r["boxes"]), (g["image"], len(g["boxes"]), len(r["boxes"]))
        total += len(r["boxes"])
        for box, c, s in zip(r["boxes"], r["classes"], r["scores"]):
            ok = [k for k, (b2, c2) in enumerate(zip(g["boxes"], g["classes"]))
                  if c2 == c and _iou(box, b2) >= 0.99 and abs(g["scores"][k] - s) < 1e-3]
            matched += bool(ok)
    print(f"RESULT detect: {len(got)} photos, plugin engine {sum(len(g['boxes']) for g in got)} boxes, torch "
          f"pipeline {total} boxes, matched {matched}/{total}; detect() incl. image reading {t_engine * 1e3:.0f} ms")
    assert total > 0 and matched >= 0.99 * total
    # the command line gives the same, and the engine's built-in thresholds are enforced
    parser = argparse.ArgumentParser(prog="netdef")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["detect", str(engine_path), *map(str, paths), "--out", str(tmp_path / "out")])
    assert cmd_detect(args) == 0
    saved = {r["image"]: r for r in json.loads((tmp_path / "out" / "detections.json").read_text())}
    for g in got:
        assert saved[g["image"]]["boxes"] == g["boxes"] and (tmp_path / "out" / saved[g["image"]]["annotated"]).is_file()
    # on --device 0 explicitly: the same detections
    args = parser.parse_args(["detect", str(engine_path), *map(str, paths), "--out", str(tmp_path / "out0"),
                              "--device", "0"])
    assert cmd_detect(args) == 0
    assert json.loads((tmp_path / "out0" / "detections.json").read_text()) == \
        json.loads((tmp_path / "out" / "detections.json").read_text())
    with pytest.raises(NetdefError, match="cannot lower it"):
        engine_detector(engine_path, conf=0.1)


def test_names_in_messages_stay_one_name_on_one_line():
    """`shown` (export's log, refit's and info's names line) quotes a name with a line break, a tab, another
    control character or a comma, as Python writes it; plain names, spaces and non-ASCII letters as they are."""
    from netdef.class_names import shown

    assert shown(["cat", "traffic light", "é", "dog\nbone", "a\tb", "x,y", "z\x00"], 10) == \
        "cat, traffic light, é, 'dog\\nbone', 'a\\tb', 'x,y', 'z\\x00'"
    assert shown(list("abcdef")) == "a, b, c, d, e, ..."


def test_max_det_beyond_what_an_engine_keeps_is_refused():
    """A plugin engine built to keep 300 boxes (its max_det) gave at most 300 for --max-det 1000 without a word (as
    tensorrtx's kMaxNumOutputBbox 1000 users expect 1000); more than it keeps is refused with the rebuild, fewer
    taken, and without --max-det the engine's own count is the default (YOLO26's top-k head likewise)."""
    from netdef.tools.detect import OutputLayout, _max_det

    plugin = OutputLayout.of([("num_dets", (-1, 1)), ("boxes", (-1, 300, 4)), ("scores", (-1, 300)),
                              ("classes", (-1, 300))])
    shapes = {"num_dets": (-1, 1), "boxes": (-1, 300, 4), "scores": (-1, 300), "classes": (-1, 300)}
    assert plugin.kind == "plugin"
    with pytest.raises(NetdefError, match=r"e\.engine keeps at most 300 boxes per image \(built in: its max_det\); "
                                          r"for --max-det 1000 rebuild with --set max_det=1000"):
        _max_det(plugin, shapes, "e.engine", 1000)
    assert _max_det(plugin, shapes, "e.engine", 50) == 50 and _max_det(plugin, shapes, "e.engine", None) == 300
    end2end = OutputLayout.of([("output", (-1, 100, 6))], end_to_end=True)
    assert _max_det(end2end, {"output": (-1, 100, 6)}, "y26.engine", None) == 100
    with pytest.raises(NetdefError, match=r"keeps at most 100 boxes"):
        _max_det(end2end, {"output": (-1, 100, 6)}, "y26.engine", 300)
    raw = OutputLayout.of([("output", (-1, 25200, 85))])
    assert _max_det(raw, {"output": (-1, 25200, 85)}, "v5.engine", None) == 300  # NMS here: the default
    assert _max_det(raw, {"output": (-1, 25200, 85)}, "v5.engine", 1000) == 1000
