"""`netdef detect` for segmentation and pose engines: mask assembly, keypoint mapping, COCO RLE, layouts, drawing.

CPU: the post-processing functions on synthetic tensors against Ultralytics 8.4's own (`ops.process_mask`,
`ops.scale_masks`, `ops.scale_coords`, `nms.non_max_suppression`, the segment validator's COCO RLE), the Detector
over fake plain and plugin engines, detections.json and the annotated images; the heads' "model" record (task, nc,
kpt_shape, nm), its check in the engine header, and `engine_detector` taking the task from it.
GPU (`-m gpu`): random-weights yolov8n-seg and yolov8n-pose engines at 320x320 through `detect()` vs Ultralytics'
predictor post-processing on the same letterboxed input. Needs `pip install --no-deps ultralytics==8.4.190`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from netdef.errors import NetdefError, OptionError
from netdef.testing import ultralytics_reference as ref
from netdef.tools.detect import (Detector, OutputLayout, _arch_kpt_shape, draw_detections, nms_with_extras,
                                 non_max_suppression, read_image, write_results)
from netdef.tools.masks import host_bits, process_masks, rle_decode, rle_encode
from netdef.tools.preprocess import letterbox, scale_boxes, scale_keypoints, scale_masks
from netdef.tools.verify import tf32_off

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
needs_ultralytics = pytest.mark.skipif(not ref.ultralytics_available(),
                                       reason="needs the reference: pip install --no-deps ultralytics==8.4.190")

H, W, NC, NM, N = 160, 192, 3, 8, 400  # fake engine input, classes, mask coefficients, candidates
KPT = (17, 3)
IMAGES = [(100, 300), (250, 120), (160, 192), (81, 97)]  # letterboxed with padding below/beside, none, odd


def ultra(module: str):
    """An Ultralytics module (stand-ins for the modules it imports but does not need)."""
    from netdef.testing.yolov5_reference import import_with_stand_ins

    ref.import_tasks()
    return import_with_stand_ins(module)


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in IMAGES]


def fake_prediction(batch: int, extra: int, seed: int = 0) -> "torch.Tensor":
    """(B, 4 + NC + extra, N) like an anchor-free head: boxes inside the input, spread scores, extra channels."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, 2, N, generator=g) * torch.tensor([W - 60.0, H - 60.0])[None, :, None] + 30
    wh = torch.rand(batch, 2, N, generator=g) * 70 + 10
    scores = torch.rand(batch, NC, N, generator=g) ** 3
    rest = torch.randn(batch, extra, N, generator=g)
    if extra == KPT[0] * KPT[1]:  # keypoints: x, y in input pixels (some outside), visibility in 0..1
        rest = rest.view(batch, *KPT, N)
        rest[:, :, 0] = rest[:, :, 0] * 60 + W / 2
        rest[:, :, 1] = rest[:, :, 1] * 60 + H / 2
        rest[:, :, 2] = rest[:, :, 2].sigmoid()
        rest = rest.view(batch, extra, N)
    return torch.cat((xy, wh, scores, rest), 1)


def fake_protos(batch: int, seed: int = 1) -> "torch.Tensor":
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, NM, H // 4, W // 4, generator=g)


def ratio_pads(ims):
    return letterbox(ims, (H, W), bgr=False)[1]


def ultralytics_ratio_pad(rp):
    r, (left, top) = rp
    return (r, r), (left, top)


# ---------------------------------------------------------------- masks and keypoints vs Ultralytics' functions

@needs_ultralytics
def test_masks_equal_ultralytics_process_mask_and_scale_masks():
    ops = ultra("ultralytics.utils.ops")
    g = torch.Generator().manual_seed(3)
    protos = torch.randn(NM, H // 4, W // 4, generator=g)
    coefs = torch.randn(12, NM, generator=g)
    xy = torch.rand(12, 2, generator=g) * torch.tensor([W, H])
    boxes = torch.cat((xy, xy + torch.rand(12, 2, generator=g) * 80), 1)  # some beyond the input's edge
    ours = process_masks(protos, coefs, boxes, (H, W))
    theirs = ops.process_mask(protos, coefs.clone(), boxes.clone(), (H, W), upsample=True)
    assert ours.dtype == torch.uint8 and ours.shape == (12, H, W) and torch.equal(ours, theirs)
    assert 0 < int(ours.sum()) < ours.numel()  # neither empty nor full: the comparison means something
    assert process_masks(protos, coefs[:0], boxes[:0], (H, W)).shape == (0, H, W)
    for (h, w), rp in zip(IMAGES, ratio_pads(images())):
        full = scale_masks(ours, rp, (h, w, 3), chunk_pixels=3 * h * w)  # in chunks of 3 masks
        expect = ops.scale_masks(ours[None].float(), (h, w), ratio_pad=ultralytics_ratio_pad(rp))[0] > 0.5
        assert full.dtype == torch.bool and full.shape == (12, h, w) and torch.equal(full, expect)
        # the padding Ultralytics computes itself (its predictor's plotting): the same
        assert torch.equal(full, ops.scale_masks(ours[None].float(), (h, w))[0] > 0.5)
    with pytest.raises(NetdefError, match=r"mask coefficients \(12, 5\) do not fit 8 prototypes"):
        process_masks(protos, coefs[:, :5], boxes, (H, W))


@needs_ultralytics
def test_keypoints_map_like_ultralytics_scale_coords():
    ops = ultra("ultralytics.utils.ops")
    g = torch.Generator().manual_seed(4)
    kpts = torch.rand(5, *KPT, generator=g) * torch.tensor([W + 40.0, H + 40.0, 1.0]) - torch.tensor([20.0, 20, 0])
    for (h, w), rp in zip(IMAGES, ratio_pads(images())):
        ours = scale_keypoints(kpts, rp, (h, w, 3))
        theirs = ops.scale_coords((H, W), kpts.clone(), (h, w), ratio_pad=ultralytics_ratio_pad(rp))
        assert torch.allclose(ours, theirs, atol=1e-4) and torch.equal(ours[..., 2], kpts[..., 2])
        assert float(ours[..., 0].max()) <= w and float(ours[..., 1].min()) >= 0  # clipped to the image
        # boxes are mapped the same way: a box's corners are two keypoints
        box = scale_boxes(kpts[0, :2, :2].reshape(1, 4), rp, (h, w))
        assert torch.allclose(box.view(2, 2), ours[0, :2, :2])
    assert isinstance(scale_keypoints(kpts.numpy(), ratio_pads(images())[0], (100, 300)), np.ndarray)


@needs_ultralytics
@pytest.mark.parametrize("extra", [NM, KPT[0] * KPT[1]])
def test_nms_keeps_the_extra_channels_of_the_kept_rows(extra):
    """Mask coefficients / keypoints follow their boxes through NMS, as in Ultralytics' NMS with nc given."""
    nms = ultra("ultralytics.utils.nms")
    pred = fake_prediction(2, extra)
    ours = nms_with_extras(pred, extra, 0.3, 0.45, 100, objectness=False)
    theirs = nms.non_max_suppression(pred, 0.3, 0.45, nc=NC, max_det=100)
    for (b, s, c, e), t in zip(ours, theirs):
        assert len(b) == len(t) > 5
        assert torch.allclose(b, t[:, :4]) and torch.allclose(s, t[:, 4]) and torch.equal(c, t[:, 5].int())
        assert e.shape == (len(t), extra) and torch.equal(e, t[:, 6:])
    # plain detection output: the same boxes as before, without extras
    assert all(len(k) == 3 for k in non_max_suppression(pred[:, :4 + NC], 0.3, 0.45, 100, objectness=False))


# ---------------------------------------------------------------- COCO RLE

@needs_ultralytics
def test_rle_equals_ultralytics_coco_json_and_round_trips():
    """rle_encode writes the strings Ultralytics' segment validator writes into its COCO predictions.json, and
    rle_decode reads them back: random masks, an empty one, a full one, one starting with a 1, blobs."""
    val = ultra("ultralytics.models.yolo.segment.val")
    g = torch.Generator().manual_seed(0)
    m = torch.rand(6, 37, 53, generator=g) > 0.6
    m[1], m[2] = False, True
    m[3, 0, 0] = True
    m[4] = torch.nn.functional.interpolate(torch.rand(1, 1, 5, 7, generator=g), (37, 53))[0, 0] > 0.5
    m[5] = False
    m[5, 10:30, 3:50] = True  # long runs: multi-character counts, negative deltas
    v = val.SegmentationValidator.__new__(val.SegmentationValidator)
    v.jdict, v.class_map = [], list(range(10))
    v.pred_to_json({"bboxes": torch.zeros(6, 4), "conf": torch.ones(6), "cls": torch.zeros(6), "masks": m.byte()},
                   {"im_file": "1.jpg"})
    ours = rle_encode(m)
    assert ours == [d["segmentation"] for d in v.jdict]
    for rle, mask in zip(ours, m):
        assert rle["size"] == [37, 53] and np.array_equal(rle_decode(rle), mask.numpy())
    big = torch.zeros(1, 1080, 1920, dtype=torch.bool)
    big[0, 100:900, 200:1700] = True
    [rle] = rle_encode(big.numpy())  # numpy works too
    assert np.array_equal(rle_decode(rle), big[0].numpy())
    assert rle_encode(m[:0]) == []
    flat = m.reshape(6, -1)  # the GPU's way to the host: packed 8 to a byte, unpacked by NumPy
    assert np.array_equal(host_bits(flat, pack=True), flat.numpy().astype(np.uint8))
    assert np.array_equal(host_bits(flat[:, :17], pack=True), flat[:, :17].numpy().astype(np.uint8))
    assert rle_decode({"size": [4, 4], "counts": "04<"})[:, 0].all()  # runs 0, 4, 12: the first column
    for short in ("04", "0", ""):  # runs that stop short of the image (pycocotools would read on)
        with pytest.raises(NetdefError, match="runs do not cover its 4x4 pixels exactly"):
            rle_decode({"size": [4, 4], "counts": short})
    with pytest.raises(NetdefError, match="not a COCO compressed RLE mask .*ValueError"):
        rle_decode({"size": [4, 4], "counts": "0`<"})  # runs past the image
    with pytest.raises(NetdefError, match="not a COCO compressed RLE mask .*KeyError"):
        rle_decode({"size": [4, 4]})


# ---------------------------------------------------------------- layouts

def test_output_layouts_of_segmentation_and_pose_engines():
    seg = OutputLayout.of([("output", (-1, 4 + 80 + 32, 8400)), ("proto", (-1, 32, 160, 160))])
    assert (seg.kind, seg.task, seg.extra, seg.names) == ("anchor_free", "segment", 32,
                                                         {"pred": "output", "protos": "proto"})
    v5 = OutputLayout.of([("output", (-1, 25200, 5 + 80 + 32)), ("proto", (-1, 32, 160, 160))])
    assert (v5.kind, v5.task, v5.extra) == ("raw", "segment", 32)
    pose = OutputLayout.of([("output", (-1, 56, 8400))], kpt_shape=(17, 3))
    assert (pose.kind, pose.task, pose.extra, pose.kpt_shape) == ("anchor_free", "pose", 51, (17, 3))
    assert OutputLayout.of([("output", (-1, 56, 8400))]).task == "detect"  # without kpt_shape: 52 classes
    plugin = [("num_dets", (-1, 1)), ("boxes", (-1, 100, 4)), ("scores", (-1, 100)), ("classes", (-1, 100))]
    p = OutputLayout.of(plugin + [("m/mask_coefs", (-1, 100, 32)), ("m/protos", (-1, 32, 80, 80))])
    assert (p.kind, p.task, p.names["mask_coefs"]) == ("plugin", "segment", "m/mask_coefs")
    p = OutputLayout.of(plugin + [("keypoints", (-1, 100, 17, 3))])
    assert (p.kind, p.task, p.kpt_shape) == ("plugin", "pose", (17, 3))
    assert OutputLayout.of(plugin + [("keypoints", (-1, 100, 17, 3))], kpt_shape=(17, 3)).task == "pose"
    with pytest.raises(NetdefError, match=r"kpt_shape \[5, 2\] given, but the engine's keypoints are \[17, 3\]"):
        OutputLayout.of(plugin + [("keypoints", (-1, 100, 17, 3))], kpt_shape=(5, 2))
    assert OutputLayout.of(plugin).task == "detect"
    with pytest.raises(NetdefError, match="too few for 4 box values, a class and 32 mask coefficients"):
        OutputLayout.of([("output", (-1, 36, 8400)), ("proto", (-1, 32, 160, 160))])
    with pytest.raises(NetdefError, match=r"too few .* kpt_shape \[17, 3\]"):
        OutputLayout.of([("output", (-1, 55, 8400))], kpt_shape=(17, 3))
    with pytest.raises(NetdefError, match="a pose engine needs the anchor-free"):
        OutputLayout.of([("output", (-1, 25200, 85))], kpt_shape=(17, 3))
    with pytest.raises(NetdefError, match="mask_coefs output without protos"):
        OutputLayout.of(plugin + [("mask_coefs", (-1, 100, 32))])
    with pytest.raises(NetdefError, match=r"mask_coefs \[-1, 100, 16\] and protos \[-1, 32, 80, 80\] do not fit"):
        OutputLayout.of(plugin + [("mask_coefs", (-1, 100, 16)), ("protos", (-1, 32, 80, 80))])
    with pytest.raises(NetdefError, match=r"keypoints \[-1, 100, 17, 4\]: expected \(B, 100, nkpt, 2 or 3\)"):
        OutputLayout.of(plugin + [("keypoints", (-1, 100, 17, 4))])
    with pytest.raises(NetdefError, match="expected either the NMS plugin"):
        OutputLayout.of([("output", (-1, 116, 8400)), ("a", (-1, 32, 160, 160)), ("b", (-1, 32, 80, 80))])


def test_plain_pose_kpt_shape_from_the_recorded_architecture(tmp_path, monkeypatch):
    """From the YAML the header records (its path relative to the build's folder, or its name), if unchanged."""
    from netdef.spec import load_spec, resolve_arch

    import yaml

    family = resolve_arch("yolov8n-pose")[0].resolve()
    meta = {"arch": {"name": "yolov8n-pose", "path": str(family), "sha256": load_spec("yolov8n-pose").sha256}}
    assert _arch_kpt_shape(meta, "e") == (17, 3)
    monkeypatch.chdir(tmp_path)  # the recorded path is relative and not here: found by its name
    assert _arch_kpt_shape(dict(meta, arch=dict(meta["arch"], path="architectures/yolov8-pose.yaml")), "e") == (17, 3)
    with pytest.raises(NetdefError, match=r"the architecture it was built from \(yolov8n-pose, .*\) is not here "
                                          r"unchanged to give its kpt_shape: give it \(--kpt-shape 17,3"):
        _arch_kpt_shape(dict(meta, arch=dict(meta["arch"], sha256="0" * 64)), "e")  # changed since the build
    with pytest.raises(NetdefError, match=r"\(\?, no path recorded\) is not here"):
        _arch_kpt_shape({}, "e")
    odd = tmp_path / "odd-pose.yaml"
    data = yaml.safe_load(family.read_text())
    del data["scales"]  # a plain file, its own architecture
    odd.write_text(yaml.safe_dump(dict(data, name="odd-pose", kpt_shape=[17, 4])))
    with pytest.raises(NetdefError, match=r"odd-pose\.yaml has kpt_shape \[17, 4\], expected \[keypoints, 2 or 3\]"):
        _arch_kpt_shape({"arch": {"name": "odd-pose", "path": str(odd), "sha256": load_spec(odd).sha256}}, "e")


# ---------------------------------------------------------------- the Detector over fake engines

def seg_engine(batch_max: int):
    pred, protos = fake_prediction(batch_max, NM), fake_protos(batch_max)
    return (lambda b: {"output": pred[:b.shape[0]], "proto": protos[:b.shape[0]]}), pred, protos


def ultralytics_segment(pred, protos, ims, conf, iou):
    """Ultralytics' predictor post-processing on the same letterboxed input: NMS, process_mask (upsample), empty
    masks dropped, boxes scaled, masks scaled as its plotting does (scale_masks > 0.5)."""
    ops, nms = ultra("ultralytics.utils.ops"), ultra("ultralytics.utils.nms")
    out = []
    for det, proto, im, rp in zip(nms.non_max_suppression(pred, conf, iou, nc=NC, max_det=300), protos, ims,
                                  ratio_pads(ims)):
        masks = ops.process_mask(proto, det[:, 6:], det[:, :4], (H, W), upsample=True)
        keep = masks.amax((-2, -1)) > 0
        det, masks = det[keep], masks[keep]
        boxes = ops.scale_boxes((H, W), det[:, :4].clone(), im.shape, ratio_pad=ultralytics_ratio_pad(rp))
        full = ops.scale_masks(masks[None].float(), im.shape[:2], ratio_pad=ultralytics_ratio_pad(rp))[0] > 0.5
        out.append((boxes, det[:, 4], det[:, 5].int(), full))
    return out


@needs_ultralytics
def test_segmentation_detector_equals_ultralytics_predictor():
    ims = images()
    infer, pred, protos = seg_engine(len(ims))
    layout = OutputLayout.of([("output", tuple(pred.shape)), ("proto", tuple(protos.shape))])
    det = Detector(infer, (H, W), layout, conf=0.3, iou=0.45, batch_range=(1, len(ims)))
    got = det(ims)
    theirs = ultralytics_segment(pred, protos, ims, 0.3, 0.45)
    total = 0
    for g, (boxes, scores, classes, masks), im in zip(got, theirs, ims):
        assert len(g["boxes"]) == len(boxes) == len(g["masks"]) > 0
        assert np.allclose(g["boxes"], boxes.numpy(), atol=0.01) and g["classes"] == classes.tolist()
        assert np.allclose(g["scores"], scores.numpy(), atol=1e-5)
        for rle, m in zip(g["masks"], masks):
            assert rle["size"] == list(im.shape[:2]) and np.array_equal(rle_decode(rle), m.numpy())
        total += len(boxes)
    assert total > 20
    # tensors too, masks on the original image
    [d] = det.detect_tensors(ims[:1])
    assert d.masks.dtype == torch.bool and tuple(d.masks.shape) == (len(got[0]["boxes"]), *IMAGES[0])
    boxes, scores, classes = d  # unpacks like the detection triple
    assert torch.equal(classes, theirs[0][2])


@needs_ultralytics
def test_yolov5_segmentation_output_keeps_its_coefficients():
    """(B, N, 5 + nc + nm): objectness times class scores, the last nm channels are the coefficients."""
    nms = ultra("ultralytics.utils.nms")
    ims = images()[:2]
    anchor_free = fake_prediction(2, NM)
    v5 = torch.cat((anchor_free[:, :4], torch.ones(2, 1, N), anchor_free[:, 4:]), 1).transpose(1, 2).contiguous()
    protos = fake_protos(2)
    det = Detector(lambda b: {"output": v5, "proto": protos}, (H, W),
                   OutputLayout.of([("output", tuple(v5.shape)), ("proto", tuple(protos.shape))]), conf=0.3,
                   batch_range=(2, 2))
    for d, t in zip(det.postprocess({"output": v5, "proto": protos}),
                    nms.non_max_suppression(anchor_free, 0.3, 0.45, nc=NC)):
        assert torch.allclose(d.boxes, t[:, :4]) and torch.equal(d.coefs, t[:, 6:])
    assert all("masks" in r for r in det(ims))


@needs_ultralytics
def test_pose_detector_equals_ultralytics_predictor():
    ops, nms = ultra("ultralytics.utils.ops"), ultra("ultralytics.utils.nms")
    ims = images()
    pred = fake_prediction(len(ims), KPT[0] * KPT[1])
    served = []

    def infer(batch):  # batches of 3 and 1: each gets its images' rows
        start = sum(served)
        served.append(batch.shape[0])
        return {"output": pred[start:start + batch.shape[0]]}

    det = Detector(infer, (H, W), OutputLayout.of([("output", tuple(pred.shape))], kpt_shape=KPT), conf=0.3,
                   batch_range=(1, 3))
    got = det(ims)
    for g, t, im, rp in zip(got, nms.non_max_suppression(pred, 0.3, 0.45, nc=NC), ims, ratio_pads(ims)):
        kpts = ops.scale_coords((H, W), t[:, 6:].view(len(t), *KPT).clone(), im.shape,
                                ratio_pad=ultralytics_ratio_pad(rp))
        assert len(g["keypoints"]) == len(t) > 0 and "masks" not in g
        assert np.allclose(g["keypoints"], kpts.numpy(), atol=0.01)
        assert all(len(p) == 3 for kp in g["keypoints"] for p in kp)
    assert served == [3, 1]


@needs_ultralytics
def test_plugin_outputs_give_the_plain_heads_masks_and_keypoints():
    """An engine with the plugin head (num_dets/boxes/scores/classes + mask_coefs/protos, or + keypoints, rows
    beyond num_dets zero) gives what the plain head gives for the same kept candidates."""
    ims, k = images(), 50

    def plugin_outputs(pred, extra):
        b = pred.shape[0]
        out = {"num_dets": torch.zeros(b, 1, dtype=torch.int32), "boxes": torch.zeros(b, k, 4),
               "scores": torch.zeros(b, k), "classes": torch.zeros(b, k, dtype=torch.int32),
               "extra": torch.zeros(b, k, extra)}
        for i, (bx, s, c, e) in enumerate(nms_with_extras(pred, extra, 0.3, 0.45, k, objectness=False)):
            n = len(bx)
            out["num_dets"][i, 0] = n
            out["boxes"][i, :n], out["scores"][i, :n], out["classes"][i, :n], out["extra"][i, :n] = bx, s, c, e
        return out

    pred, protos = fake_prediction(len(ims), NM), fake_protos(len(ims))
    outs = plugin_outputs(pred, NM)
    outs.update(mask_coefs=outs.pop("extra"), protos=protos)
    layout = OutputLayout.of([(n, tuple(t.shape)) for n, t in outs.items()])
    plugin = Detector(lambda b: outs, (H, W), layout, conf=0.3, max_det=k, batch_range=(len(ims), len(ims)))
    plain = Detector(seg_engine(len(ims))[0], (H, W),
                     OutputLayout.of([("output", tuple(pred.shape)), ("proto", tuple(protos.shape))]), conf=0.3,
                     max_det=k, batch_range=(len(ims), len(ims)))
    a, b = plugin(ims), plain(ims)
    assert sum(len(r["masks"]) for r in a) > 20 and [r["masks"] for r in a] == [r["masks"] for r in b]
    assert [r["boxes"] for r in a] == [r["boxes"] for r in b]

    pred = fake_prediction(len(ims), KPT[0] * KPT[1])
    outs = plugin_outputs(pred, KPT[0] * KPT[1])
    outs["keypoints"] = outs.pop("extra").view(len(ims), k, *KPT)
    plugin = Detector(lambda b: outs, (H, W), OutputLayout.of([(n, tuple(t.shape)) for n, t in outs.items()]),
                      conf=0.3, max_det=k, batch_range=(len(ims), len(ims)))
    plain = Detector(lambda b: {"output": pred}, (H, W), OutputLayout.of([("output", tuple(pred.shape))],
                                                                         kpt_shape=KPT),
                     conf=0.3, max_det=k, batch_range=(len(ims), len(ims)))
    a, b = plugin(ims), plain(ims)
    assert sum(len(r["keypoints"]) for r in a) > 20 and [r["keypoints"] for r in a] == [r["keypoints"] for r in b]


# ---------------------------------------------------------------- output

def test_write_results_draws_masks_and_keypoints(tmp_path):
    img = np.full((60, 80, 3), 200, np.uint8)
    mask = np.zeros((1, 60, 80), bool)
    mask[0, 30:50, 5:25] = True
    kpts = [[0.0, 0.0, 0.0] for _ in range(17)]  # hidden (visibility < 0.5) but for:
    kpts[0], kpts[13], kpts[15], kpts[3] = [10.0, 5.0, 0.9], [40.0, 10.0, 0.9], [70.0, 10.0, 0.8], [60.0, 55.0, 0.1]
    res = [{"image": "p/a.png", "height": 60, "width": 80, "boxes": [[5.0, 30.0, 25.0, 50.0]], "scores": [0.9],
            "classes": [0], "names": ["person"], "masks": rle_encode(mask), "keypoints": [kpts]}]
    [path] = write_results(res, [img], tmp_path / "out")
    drawn = read_image(path)
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert np.array_equal(rle_decode(saved[0]["masks"][0]), mask[0]) and saved[0]["keypoints"] == [kpts]
    assert np.abs(drawn[40, 15].astype(int) - 200).max() > 40  # inside the mask: tinted
    assert np.abs(drawn[40, 60].astype(int) - 200).max() == 0  # outside everything: untouched
    assert np.abs(drawn[5, 10].astype(int) - 200).max() > 40  # keypoint 0
    assert np.abs(drawn[10, 55].astype(int) - 200).max() > 40  # the limb from the left knee (13) to the ankle (15)
    assert np.abs(drawn[55, 60].astype(int) - 200).max() == 0  # keypoint 3: visibility 0.1, not drawn
    # a mask of another size than its image is an error naming the image
    res[0]["masks"] = rle_encode(mask[:, :30])
    with pytest.raises(NetdefError, match=r"p/a\.png: a mask of 30x80 on a 60x80 image"):
        draw_detections(img, res[0])


def test_cli_kpt_shape(tmp_path, monkeypatch):
    import netdef.tools.detect as d
    from netdef.cli.detect import register

    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    seen = {}

    def fake(engine, conf, iou, max_det, names, device=None, **kw):
        seen.update(kw)
        return Detector(lambda b: {"output": torch.zeros(b.shape[0], 56, 100)}, (32, 32),
                        OutputLayout.of([("output", (-1, 56, 100))], kpt_shape=kw.get("kpt_shape")))

    monkeypatch.setattr(d, "engine_detector", fake)
    parser = argparse.ArgumentParser(prog="netdef")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["detect", "m.engine", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                              "--kpt-shape", "17,3"])
    assert args.func(args) == 0 and seen == {"kpt_shape": (17, 3), "input_hw": None, "rect": False, "names_from": None,
                                             "letterbox_kernel": False}
    assert json.loads((tmp_path / "o" / "detections.json").read_text())[0]["keypoints"] == []
    for bad in ("17", "17,4", "0,3", "a,b"):
        args = parser.parse_args(["detect", "m.engine", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                                  "--kpt-shape", bad])
        with pytest.raises(OptionError, match="--kpt-shape"):
            args.func(args)


# ---------------------------------------------------------------- on the GPU

def build(name: str, folder: Path, hw=(320, 320), **params):
    """(the PyTorch model's `infer`, an fp32 engine (TF32 off) of it) for the tamed random-weights `name`
    (`tamed_reference`)."""
    from netdef.build import BuildOptions, build_engine
    from netdef.wts import write_wts

    _, sd, infer, _ = tamed_reference(name)
    folder.mkdir(parents=True, exist_ok=True)
    write_wts(folder / f"{name}.wts", sd)
    res = build_engine(name, folder / f"{name}.wts", folder / f"{name}.engine",
                       BuildOptions(precision="fp32", batch=(1, 2, 4), opt_level=0, tf32=False, input_hw=hw,
                                    params=params), log=lambda m: None)
    return infer, res.path


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def candidates(got: dict, boxes, classes) -> list[list[int]]:
    """For each reference box, the detections of the same class with box IoU >= 0.99 (random weights: neighbouring
    anchors may give nearly the same box with other masks or keypoints, so each one is tried)."""
    import torchvision

    if not len(got["boxes"]) or not len(boxes):
        return [[] for _ in range(len(boxes))]
    iou = torchvision.ops.box_iou(boxes.cpu().float(), torch.tensor(got["boxes"]))
    return [[j for j in range(len(got["boxes"])) if got["classes"][j] == c and float(iou[i, j]) >= 0.99]
            for i, c in enumerate(classes.tolist())]


def reference_outputs(infer, batch) -> dict:
    """The PyTorch model's outputs as the engine's ({output[, proto]}), in fp32 without TF32."""
    with tf32_off():  # infer runs the model under torch.no_grad() itself
        return infer(batch)


def yolov5_nms(pred, conf: float, iou: float, nc: int) -> list:
    """YOLOv5 v7.0's own NMS (utils.general) for its (B, N, 5 + nc + nm) output: rows x1y1x2y2, score, class, the
    mask coefficients times the objectness (a positive factor: the masks' signs, so the masks, are the same)."""
    from netdef.testing import yolov5_reference as yv5

    yv5.import_yolov5()
    general = yv5.import_with_stand_ins("yolov5.utils.general")
    return general.non_max_suppression(pred, conf, iou, max_det=300, nm=pred.shape[2] - 5 - nc)


def compare_end_to_end(got: list, outs: dict, ims, rps, conf: float, hw=(320, 320)) -> None:
    """YOLO26's rows (and prototypes) through Ultralytics' predictor post-processing (rows above `conf`, masks by
    process_mask with empty ones dropped, keypoints by scale_coords) against `got`: the same detections in the
    same order, boxes to 0.01 px, the very same masks, keypoints as the JSON rounds them."""
    ops, nms = ultra("ultralytics.utils.ops"), ultra("ultralytics.utils.nms")
    protos = outs.get("proto")
    total = 0
    for i, (g, t, im, rp) in enumerate(zip(got, nms.non_max_suppression(outs["output"], conf, max_det=300,
                                                                          end2end=True), ims, rps)):
        if protos is not None:
            masks = ops.process_mask(protos[i], t[:, 6:], t[:, :4], hw, upsample=True)
            keep = masks.amax((-2, -1)) > 0
            t, masks = t[keep], masks[keep]
            full = (ops.scale_masks(masks[None].float(), im.shape[:2])[0] > 0.5).cpu().numpy()
            assert all(np.array_equal(rle_decode(r), m) for r, m in zip(g["masks"], full))
        else:
            kpts = ops.scale_coords(hw, t[:, 6:].view(len(t), 17, 3).clone(), im.shape,
                                    ratio_pad=ultralytics_ratio_pad(rp)).cpu().numpy()
            err = np.abs(np.asarray(g["keypoints"]).reshape(kpts.shape) - kpts)
            assert err[..., :2].max(initial=0) <= 0.0051 and err[..., 2].max(initial=0) <= 0.00006
        boxes = ops.scale_boxes(hw, t[:, :4].clone(), im.shape, ratio_pad=ultralytics_ratio_pad(rp)).cpu().numpy()
        assert len(g["boxes"]) == len(t) and g["classes"] == t[:, 5].int().tolist()
        np.testing.assert_allclose(np.asarray(g["boxes"]).reshape(boxes.shape), boxes, atol=0.0051)
        np.testing.assert_allclose(g["scores"], t[:, 4].cpu().numpy(), atol=1e-5)
        total += len(t)
    assert total >= 20, total


def compare_segment(got: list, pred, protos, ims, rps, conf: float, iou: float, nc: int, hw=(320, 320),
                    yolov5: bool = False):
    """Ultralytics' segmentation predictor post-processing of (pred, protos) for the letterboxed `ims` (`yolov5`:
    YOLOv5's NMS first) against `got` (detections.json entries): per reference detection the best mask IoU among
    `candidates` (0: none), and the largest difference in detections per image."""
    ops, nms = ultra("ultralytics.utils.ops"), ultra("ultralytics.utils.nms")
    kept = yolov5_nms(pred, conf, iou, nc) if yolov5 else nms.non_max_suppression(pred, conf, iou, nc=nc, max_det=300)
    best, count_diff = [], 0
    for g, t, proto, im, rp in zip(got, kept, protos, ims, rps):
        masks = ops.process_mask(proto, t[:, 6:], t[:, :4], hw, upsample=True)
        keep = masks.amax((-2, -1)) > 0
        t, masks = t[keep], masks[keep]
        boxes = ops.scale_boxes(hw, t[:, :4].clone(), im.shape, ratio_pad=ultralytics_ratio_pad(rp))
        full = (ops.scale_masks(masks[None].float(), im.shape[:2])[0] > 0.5).cpu().numpy()
        for i, cands in enumerate(candidates(g, boxes, t[:, 5].int())):
            best.append(max((mask_iou(rle_decode(g["masks"][j]), full[i]) for j in cands), default=0.0))
        count_diff = max(count_diff, abs(len(g["boxes"]) - len(t)))
    return np.array(best), count_diff


def compare_pose(got: list, pred, ims, rps, conf: float, iou: float, nc: int, hw=(320, 320)):
    """Ultralytics' pose predictor post-processing (scale_coords) of `pred` against `got`: per reference detection
    the smallest largest x/y keypoint error among `candidates` (inf: none) and that one's visibility error, and the
    largest difference in detections per image."""
    ops, nms = ultra("ultralytics.utils.ops"), ultra("ultralytics.utils.nms")
    best, vis, count_diff = [], [], 0
    for g, t, im, rp in zip(got, nms.non_max_suppression(pred, conf, iou, nc=nc, max_det=300), ims, rps):
        kpts = ops.scale_coords(hw, t[:, 6:].view(len(t), 17, 3).clone(), im.shape,
                                ratio_pad=ultralytics_ratio_pad(rp)).cpu().numpy()
        boxes = ops.scale_boxes(hw, t[:, :4].clone(), im.shape, ratio_pad=ultralytics_ratio_pad(rp))
        for i, cands in enumerate(candidates(g, boxes, t[:, 5].int())):
            errs = [np.abs(np.asarray(g["keypoints"][j]) - kpts[i]) for j in cands]
            k = min(range(len(errs)), key=lambda n: errs[n][:, :2].max(), default=None)
            best.append(np.inf if k is None else float(errs[k][:, :2].max()))
            vis.append(np.inf if k is None else float(errs[k][:, 2].max()))
        count_diff = max(count_diff, abs(len(g["boxes"]) - len(t)))
    return np.array(best), np.array(vis), count_diff


def tamed_reference(name: str):
    """(model, state_dict, infer, output names and shapes at 320x320): Ultralytics' tamed random-weights model
    (the untamed one saturates its scores at 1.0, and NMS then breaks the ties either way), or YOLOv5's for
    yolov5*-seg; `infer(batch)` as the engine's outputs {output[, proto]}."""
    if name.startswith("yolov5"):
        from netdef.testing import yolov5_reference as yv5

        if not yv5.yolov5_available():
            pytest.skip("needs pip install --no-deps yolov5==7.0.14")
        from test_yolov5_tasks import reference
        model, sd = reference(name, tame=True)
        outputs = [("output", (-1, 6300, 5 + 80 + 32)), ("proto", (-1, 32, 80, 80))]
    elif name.startswith("yolo26"):  # the end-to-end head's top-300 rows
        model, _ = ref.reference_model(name, tame=True)
        for branch in model.model[-1].one2one_cv2:  # box distances of a few cells: random ones invert boxes,
            branch[-1].bias.data.add_(3.0)          # whose masks are empty (Ultralytics and netdef drop them)
        sd = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        outputs = [("output", (-1, 300, 38)), ("proto", (-1, 32, 80, 80))] if name.endswith("-seg") else \
            [("output", (-1, 300, 57))]
    else:
        model, sd = ref.reference_model(name, tame=True)
        outputs = [("output", (-1, 116, 2100)), ("proto", (-1, 32, 80, 80))] if name.endswith("-seg") else \
            [("output", (-1, 56, 2100))]

    def infer(batch):
        model.to(batch.device)
        with torch.no_grad():
            out = model(batch)
        out = out[:2] if name.startswith("yolov5") else out[0]
        return {"output": out[0], "proto": out[1]} if name.endswith("-seg") else {"output": out}

    return model, sd, infer, outputs


@needs_ultralytics
@pytest.mark.parametrize("name", ["yolov8n-seg", "yolov8n-pose", "yolov5n-seg", "yolo26n-seg", "yolo26n-pose"])
def test_detector_over_the_pytorch_model_equals_ultralytics_predictor(name):
    """The Detector driving the random-weights PyTorch model (as its engine, on the CPU) gives what Ultralytics'
    predictor post-processing gives on the same letterboxed input (yolov5n-seg: after YOLOv5's own NMS; YOLO26:
    its end-to-end rows, no NMS): the GPU tests' comparison, here with real head outputs."""
    from helpers import photos

    _, _, infer, outputs = tamed_reference(name)
    seg, e2e = name.endswith("-seg"), name.startswith("yolo26")
    ims, conf, iou = photos(), (0.1 if e2e else 0.5), 0.45
    det = Detector(infer, (320, 320), OutputLayout.of(outputs, end_to_end=e2e, kpt_shape=None if seg else (17, 3)),
                   conf, iou, batch_range=(1, 4))
    assert det.layout.kind == ("raw" if name.startswith("yolov5") else "end_to_end" if e2e else "anchor_free")
    got = det(ims)
    batch, rps = letterbox(ims, (320, 320), bgr=False)
    outs = infer(batch)
    if e2e:  # no NMS: the same rows in the same order (random weights: boxes of any shape, so no IoU matching)
        return compare_end_to_end(got, outs, ims, rps, conf)
    if seg:
        best, diff = compare_segment(got, outs["output"], outs["proto"], ims, rps, conf, iou, 80,
                                     yolov5=name.startswith("yolov5"))
        found = best > 0
        assert (best[found] == 1.0).all()  # the same detection: the very same mask
    else:
        best, vis, diff = compare_pose(got, outs["output"], ims, rps, conf, iou, 1)
        found = np.isfinite(best)
        assert (best[found] <= 0.0051).all() and (vis[found] <= 0.00006).all()  # JSON: x, y to 0.01 px, v to 1e-4
    # NMS: torchvision's batched_nms here, torchvision's nms on boxes offset by class x 7680 there (YOLOv5,
    # Ultralytics): float32 rounding of the offset boxes decides a few borderline overlaps the other way
    assert len(best) > 50 and found.mean() >= 0.98 and diff <= max(1, len(best) // 100)


def check_against_ultralytics(name: str, source: str, quality, diff: int, tol: float, good) -> None:
    """The GPU tests' verdict. On the engine's own outputs (the post-processing alone) 98% of the reference
    detections are found within `tol` (NMS rounding aside: torchvision's nms on boxes offset by class x 7680 there,
    batched_nms here; 8 of yolov5n-seg's 605 on the CPU), the counts per image within 1% of all. On the PyTorch
    model's outputs 90%: a random-weights head scores neighbouring anchors within 1e-5 of each other, so the
    engine's fp32 rounding lets NMS keep a neighbour now and then (on the CPU, 1e-5 relative noise on the
    outputs loses 4% of the pose detections this way); test_yolov8.py checks the engine's outputs themselves."""
    ok = good(quality, tol)
    print(f"RESULT detect {name} 320x320 fp32 vs Ultralytics' predictor on the {source}'s outputs: "
          f"{int(ok.sum())}/{len(ok)} detections found within {tol}, detections per image differ by <= {diff}")
    assert len(ok) > 0 and ok.mean() >= (0.98 if source == "engine" else 0.9)
    if source == "engine":
        assert diff <= max(1, len(ok) // 100)


@pytest.mark.gpu
@needs_ultralytics
@pytest.mark.parametrize("name", ["yolo26n-seg", "yolo26n-pose"])
def test_end_to_end_engine_detections_equal_ultralytics_predictor(name, tmp_path):
    """yolo26n-seg / -pose engines (random weights, tamed, fp32) at 320x320 through `detect()`: on the engine's own
    rows, exactly what Ultralytics' predictor post-processing gives (the same rows, boxes, masks, keypoints);
    the rows themselves are checked against PyTorch by test_yolov8's end-to-end test."""
    from helpers import photos

    from netdef.tools.detect import detect, engine_detector

    infer, engine = build(name, tmp_path)
    ims, conf = photos(), 0.1
    got = detect(engine, ims, conf=conf)
    det = engine_detector(engine, conf=conf)
    assert (det.layout.kind, det.layout.task) == ("end_to_end", "segment" if name.endswith("-seg") else "pose")
    batch, rps = letterbox(ims, (320, 320), bgr=False, device=det.device)
    compare_end_to_end(got, det.infer(batch), ims, rps, conf)
    print(f"RESULT detect {name} 320x320 fp32: detections, boxes, {'masks' if name.endswith('-seg') else 'keypoints'} "
          f"equal Ultralytics' predictor post-processing of the engine's rows")


@pytest.mark.gpu
@needs_ultralytics
@pytest.mark.parametrize("name", ["yolov8n-seg", "yolov5n-seg"])
def test_segmentation_engine_masks_equal_ultralytics_predictor(name, tmp_path):
    """yolov8n-seg / yolov5n-seg (random weights, tamed) at 320x320 through `detect()`: the same detections and
    masks as Ultralytics' predictor post-processing (yolov5n-seg: after YOLOv5's own NMS) on the same letterboxed
    input, fed the engine's own raw outputs (mask IoU >= 0.999) and the PyTorch model's (mask IoU >= 0.99)."""
    from helpers import photos

    from netdef.tools.detect import detect, engine_detector

    infer, engine = build(name, tmp_path)
    v5 = name.startswith("yolov5")
    ims, conf, iou = photos(), 0.5, 0.45
    got = detect(engine, ims, conf=conf, iou=iou)
    det = engine_detector(engine, conf=conf, iou=iou)
    assert (det.layout.kind, det.layout.task, det.layout.extra) == ("raw" if v5 else "anchor_free", "segment", 32)
    batch, rps = letterbox(ims, (320, 320), bgr=False, device=det.device)
    for source, outs, tol in (("engine", det.infer(batch), 0.999), ("model", reference_outputs(infer, batch), 0.99)):
        pred, protos = outs["output"], outs["proto"]
        best, diff = compare_segment(got, pred, protos, ims, rps, conf, iou, 80, yolov5=v5)
        check_against_ultralytics(name, source, best, diff, tol, lambda q, t: q >= t)


@pytest.mark.gpu
@needs_ultralytics
def test_pose_engine_keypoints_equal_ultralytics_predictor(tmp_path):
    """yolov8n-pose (random weights, tamed) at 320x320 through `detect()` (kpt_shape from the recorded YAML):
    keypoints as Ultralytics' predictor post-processing (scale_coords) gives them on the same letterboxed input,
    fed the engine's own raw outputs (within 0.02 px) and the PyTorch model's (within 1 px)."""
    from helpers import photos

    from netdef.tools.detect import detect, engine_detector

    infer, engine = build("yolov8n-pose", tmp_path)
    ims, conf, iou = photos(), 0.5, 0.45
    got = detect(engine, ims, conf=conf, iou=iou)
    det = engine_detector(engine, conf=conf, iou=iou)
    assert (det.layout.task, det.layout.kpt_shape) == ("pose", (17, 3))
    batch, rps = letterbox(ims, (320, 320), bgr=False, device=det.device)
    for source, pred, tol in (("engine", det.infer(batch)["output"], 0.02),
                              ("model", reference_outputs(infer, batch)["output"], 1.0)):
        best, vis, diff = compare_pose(got, pred, ims, rps, conf, iou, 1)
        check_against_ultralytics("yolov8n-pose", source, best, diff, tol, lambda q, t: q <= t)
        assert (vis[np.isfinite(best) & (best <= tol)] <= 1e-3).all()  # visibility of the keypoints found


@pytest.mark.gpu
@needs_ultralytics
@pytest.mark.parametrize("name", ["yolov8n-seg", "yolov8n-pose", "yolov5n-seg"])
def test_plugin_head_engine_equals_plain_head_engine(name, tmp_path):
    """The same weights built with --set head=plugin: `detect()` gives the plain head's detections, masks (IoU >=
    0.99) and keypoints (within 1 px) for 90% of them. Skips while the anchor-free plugin head is not there yet."""
    from helpers import photos

    from netdef.tools.detect import detect, engine_detector

    try:
        _, plugin = build(name, tmp_path / "plugin", head="plugin", conf_thres=0.5, iou_thres=0.45)
    except NetdefError as e:
        if "head=plugin is not available" in str(e):
            pytest.skip(f"no anchor-free plugin head yet: {e}")
        raise
    _, plain = build(name, tmp_path)
    layout = engine_detector(plugin).layout
    assert (layout.kind, layout.task) == ("plugin", "segment" if name.endswith("-seg") else "pose")
    ims = photos()
    a, b = detect(plugin, ims), detect(plain, ims, conf=0.5, iou=0.45)
    found = []
    for ga, gb in zip(a, b):
        for i, cands in enumerate(candidates(ga, torch.tensor(gb["boxes"]), torch.tensor(gb["classes"]))):
            if "masks" in gb:
                found.append(any(mask_iou(rle_decode(ga["masks"][j]), rle_decode(gb["masks"][i])) >= 0.99
                                 for j in cands))
            else:
                found.append(any(np.abs(np.asarray(ga["keypoints"][j])[:, :2]
                                        - np.asarray(gb["keypoints"][i])[:, :2]).max() <= 1 for j in cands))
    print(f"RESULT detect {name} plugin head vs plain head: {sum(found)}/{len(found)} detections found")
    assert len(found) > 0 and np.mean(found) >= 0.9  # NMS near-ties of random weights: check_against_ultralytics


@pytest.mark.gpu
@needs_ultralytics
@pytest.mark.parametrize("name, head", [("yolov8n-seg", "plugin"), ("yolov8n-pose", "plugin"), ("yolov8n-seg", None)])
def test_graphed_pipeline_equals_the_plain_one(name, head, tmp_path):
    """engine_detector on Engine(path, cuda_graph=True): upload, letterbox, engine and the plugin's outputs to the host
    as one CUDA graph per list of image shapes give what the same engine gives without graphs (boxes, masks,
    keypoints); the same shapes replay the graph, others capture one; three photos on a 1:2:4 profile."""
    from helpers import photos

    from netdef.runtime import Engine
    from netdef.tools.detect import engine_detector

    params = {"head": "plugin", "conf_thres": 0.5, "iou_thres": 0.45} if head else {}
    _, path = build(name, tmp_path, **params)
    kw = {} if head else {"conf": 0.5, "iou": 0.45}
    ims = photos(bgr=True)[:3]
    plain, graphed = engine_detector(path, **kw), engine_detector(Engine(path, cuda_graph=True), **kw)
    want = plain(ims, bgr=True)
    for _ in range(3):
        assert graphed(ims, bgr=True) == want
    assert graphed.graphs.captures == 1 and sum(len(r["boxes"]) for r in want) > 0
    assert graphed(ims[::-1], bgr=True) == plain(ims[::-1], bgr=True) and graphed.graphs.captures == 2
    assert graphed(ims[:1]) == plain(ims[:1])  # RGB, batch 1
    # netdef's fused letterbox kernel, with and without graphs: the same pixels, so the same detections
    kernel = engine_detector(path, letterbox_kernel=True, **kw)
    kernel_graphed = engine_detector(Engine(path, cuda_graph=True), letterbox_kernel=True, **kw)
    assert kernel(ims, bgr=True) == want and kernel_graphed(ims, bgr=True) == want
    assert kernel_graphed(ims[:1]) == plain(ims[:1])


# ---------------------------------------------------------------- the task from the engine header's "model" record

def loaded_engine(outputs, meta):
    """A `netdef.runtime.Engine` as loaded (not run: no GPU needed) with these outputs and header fields."""
    from types import SimpleNamespace

    from netdef.runtime import Engine

    eng = Engine.__new__(Engine)
    eng.path, eng.device, eng.hw_ranges, eng.cuda_graph = Path("m.engine"), 0, None, False  # a static input size
    eng.meta = dict(meta, options={"batch": [1, 1, 4]})
    eng.inputs = [SimpleNamespace(name="images", shape=(-1, 3, 320, 320), dtype="float32")]
    eng.outputs = [SimpleNamespace(name=n, shape=s) for n, s in outputs]
    return eng


def test_engine_detector_takes_the_task_from_the_record():
    """The record decides: a plain pose engine's kpt_shape (no YAML needed), YOLO26's end-to-end rows, a classifier;
    outputs that do not fit the record and options that do not fit the task are refused."""
    from netdef.tools.classify import Classifier
    from netdef.tools.detect import engine_detector

    pose = {"task": "pose", "nc": 1, "head": "decode", "kpt_shape": [5, 2]}
    det = engine_detector(loaded_engine([("output", (-1, 15, 2100))], {"arch": {"name": "mine"}, "model": pose}))
    assert (det.layout.task, det.layout.kpt_shape, det.layout.extra) == ("pose", (5, 2), 10)
    with pytest.raises(NetdefError, match=r"kpt_shape \[17, 3\] given, but the engine's header records \[5, 2\]"):
        engine_detector(loaded_engine([("output", (-1, 15, 2100))], {"model": pose}), kpt_shape=(17, 3))
    e2e = engine_detector(loaded_engine([("output", (-1, 300, 6))],
                                        {"model": {"task": "end2end", "nc": 80, "head": "decode"}}))
    assert e2e.layout.kind == "end_to_end"  # by its shape alone a one-class YOLOv5 prediction
    seg = {"task": "segment", "nc": 80, "head": "decode", "nm": 32}
    with pytest.raises(NetdefError, match=r"records a segment model, but its outputs are a detect engine's: output "
                                          r"\[-1, 116, 2100\]"):
        engine_detector(loaded_engine([("output", (-1, 116, 2100))], {"model": seg}))
    detect_model = {"task": "detect", "nc": 80, "head": "decode"}
    with pytest.raises(NetdefError, match=r"kpt_shape \[17, 3\] given, but it is a detect engine"):
        engine_detector(loaded_engine([("output", (-1, 84, 2100))], {"model": detect_model}), kpt_shape=(17, 3))
    cls = {"task": "classify", "nc": 10, "head": "probs"}
    clf = engine_detector(loaded_engine([("output", (-1, 10))], {"arch": {"name": "yolo11n-cls"}, "model": cls}))
    assert isinstance(clf, Classifier) and (clf.transforms, clf.logits, clf.input_hw) == ("ultralytics", False,
                                                                                          (320, 320))
    with pytest.raises(NetdefError, match="is a classification engine: conf, kpt_shape apply to detection engines"):
        engine_detector(loaded_engine([("output", (-1, 10))], {"model": cls}), conf=0.5, kpt_shape=(17, 3))
    with pytest.raises(NetdefError, match="is a classification engine: --letterbox-kernel applies to detection"):
        engine_detector(loaded_engine([("output", (-1, 10))], {"model": cls}), letterbox_kernel=True)
    old = engine_detector(loaded_engine([("output", (-1, 10))], {"arch": {"name": "yolov5s-cls"}}))  # no record
    assert isinstance(old, Classifier) and (old.transforms, old.logits) == ("yolov5", True)


def test_engine_header_model_field_is_checked():
    """The optional "model" field: absent is fine (older engines); present, each part is checked."""
    from netdef import engine_file

    meta = {"plan_bytes": 1, "plan_sha256": "0" * 64, "tensorrt": {"version": "10", "flavor": "tensorrt"},
            "gpu": {"compute_capability": "9.0"}, "precision": "fp32", "options": {"batch": [1, 1, 1]},
            "arch": {"name": "a"}, "inputs": [], "outputs": [], "weights": {"path": "w", "sha256": "s"},
            "plugins": [], "layers": 1, "created": "now", "build_seconds": 1.0}
    assert engine_file.meta_problem(meta) is None
    good = [{"task": "detect", "nc": 80, "head": "plugin"}, {"task": "pose", "nc": 1, "head": "decode",
                                                               "kpt_shape": [17, 3]},
            {"task": "segment", "nc": 80, "head": "decode", "nm": 32}, {"task": "classify", "nc": 5, "head": "logits"},
            {"task": "end2end", "nc": 80, "head": "decode"},
            {"task": "detect", "nc": 80, "head": "decode", "stride": 64}]
    for model in good:
        assert engine_file.meta_problem(dict(meta, model=model)) is None, model
    bad = [{"task": "track", "nc": 80, "head": "decode"}, {"task": "detect", "nc": 0, "head": "decode"},
           {"task": "detect", "nc": 80}, {"task": "pose", "nc": 1, "head": "decode"},
           {"task": "pose", "nc": 1, "head": "decode", "kpt_shape": [17, 4]},
           {"task": "detect", "nc": 80, "head": "decode", "kpt_shape": [17, 3]},
           {"task": "segment", "nc": 80, "head": "decode"}, {"task": "segment", "nc": 80, "head": "decode", "nm": 0},
           {"task": "detect", "nc": 80, "head": "decode", "nm": 32}, {"task": "detect", "nc": True, "head": "decode"},
           {"task": "detect", "nc": 80, "head": "decode", "stride": 0}, "detect"]
    for model in bad:
        assert "'model' is" in engine_file.meta_problem(dict(meta, model=model)), model


@pytest.mark.parametrize("name, params, record", [
    ("yolov8n-seg", {}, {"task": "segment", "nc": 80, "head": "decode", "nm": 32, "stride": 32}),
    ("yolov8n-pose", {}, {"task": "pose", "nc": 1, "head": "decode", "kpt_shape": [17, 3], "stride": 32}),
    ("yolo26n", {}, {"task": "end2end", "nc": 80, "head": "decode", "stride": 32}),
    ("yolo26n", {"head": "one2many"}, {"task": "detect", "nc": 80, "head": "one2many", "stride": 32}),
    ("yolov8n", {"nc": 3}, {"task": "detect", "nc": 3, "head": "decode", "stride": 32}),
])
@needs_ultralytics
def test_heads_record_their_task(name, params, record):
    from netdef.build import BuildOptions, define_network

    _, sd = ref.reference_model(name, nc=params.get("nc"))
    net = define_network(name, sd, BuildOptions(params=params, input_hw=(320, 320)), log=lambda m: None)
    assert net.model == record


@pytest.mark.parametrize("name, record", [("yolov5n-seg", {"task": "segment", "nc": 80, "head": "decode", "nm": 32, "stride": 32}),
                                          ("yolov5n-cls", {"task": "classify", "nc": 1000, "head": "logits"})])
def test_yolov5_heads_record_their_task(name, record):
    from netdef.build import BuildOptions, define_network
    from netdef.testing import yolov5_reference as yv5

    if not yv5.yolov5_available():
        pytest.skip("needs pip install --no-deps yolov5==7.0.14")
    from test_yolov5_tasks import reference

    net = define_network(name, reference(name)[1], BuildOptions(), log=lambda m: None)
    assert net.model == record


def test_yolov5_detect_records_its_task():
    """YOLOv5's anchor-based Detect."""
    from netdef.build import BuildOptions, define_network
    from netdef.testing import yolov5_reference as yv5

    if not yv5.yolov5_available():
        pytest.skip("needs pip install --no-deps yolov5==7.0.14")
    _, sd = yv5.reference_model("yolov5n")
    net = define_network("yolov5n", sd, BuildOptions(input_hw=(320, 320)), log=lambda m: None)
    assert net.model == {"task": "detect", "nc": 80, "head": "decode", "stride": 32}
