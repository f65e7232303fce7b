"""`netdef detect` for classification engines (yolov8-cls, yolo11-cls, yolov5-cls): pre-processing, top-5, records.

CPU: `classify_batch` against the reference transforms on the same images (Ultralytics 8.4's `classify_transforms`
as its ClassificationPredictor uses it, YOLOv5 7.0's `classify_transforms`), Pillow's bilinear resize, the top-5
logic, the Classifier driving the random-weights PyTorch models against Ultralytics' predictor and YOLOv5's predict
steps, the heads' "model" record in the network and the engine header (a TensorRT-RTX build), `netdef info`.
GPU (`-m gpu`): random-weights yolov8n-cls and yolov5n-cls engines through `detect()` against the same references.
"""
from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest

from netdef.errors import NetdefError
from netdef.testing import ultralytics_reference as ref
from netdef.testing import yolov5_reference as yv5
from netdef.tools.classify import Classifier, draw_top1, engine_classifier, top_classes
from netdef.tools.preprocess import classify_batch, resize_pil_bilinear

torch = pytest.importorskip("torch")
needs_ultralytics = pytest.mark.skipif(not ref.ultralytics_available(),
                                       reason="needs the reference: pip install --no-deps ultralytics==8.4.190")
needs_yolov5 = pytest.mark.skipif(not yv5.yolov5_available(), reason="needs pip install --no-deps yolov5==7.0.14")
SIZES = [(480, 640), (300, 200), (224, 224), (100, 150), (517, 333), (7, 5), (1, 300)]  # wide, tall, exact, tiny


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def ultra(module: str):
    from netdef.testing.yolov5_reference import import_with_stand_ins

    ref.import_tasks()
    return import_with_stand_ins(module)


def yolov5_module(module: str):
    yv5.import_yolov5()
    return yv5.import_with_stand_ins(module)


# ---------------------------------------------------------------- pre-processing vs the references

@needs_ultralytics
@pytest.mark.parametrize("size", [224, 160])
def test_ultralytics_transforms_exactly(size):
    """Square inputs: Resize(size) (PIL bilinear) + CenterCrop + /255 as Ultralytics' classify_transforms, to the bit,
    from RGB and from BGR images (its predictor resizes the BGR array, then flips the channels)."""
    from PIL import Image

    from helpers import photos

    ims = images() + photos()
    reference = ultra("ultralytics.data.augment").classify_transforms(size)
    ours = classify_batch(ims, size, "ultralytics", bgr=False)
    assert ours.shape == (len(ims), 3, size, size) and ours.dtype == torch.float32
    for im, o in zip(ims, ours):
        assert torch.equal(o, reference(Image.fromarray(im)))
    bgr = classify_batch([np.ascontiguousarray(im[..., ::-1]) for im in ims], size, "ultralytics", bgr=True)
    assert torch.equal(bgr, ours)


@needs_ultralytics
def test_ultralytics_transforms_of_a_non_square_input():
    """A non-square engine input: Resize((h, w)) stretches, CenterCrop is a no-op; within one grey level of
    Pillow (its pass order where both sides shrink: resize_pil_bilinear), almost all pixels equal."""
    from PIL import Image

    reference = ultra("ultralytics.data.augment").classify_transforms((192, 256))
    ims = images()
    ours = classify_batch(ims, (192, 256), "ultralytics", bgr=False)
    diff = torch.stack([(o - reference(Image.fromarray(im))).abs() for im, o in zip(ims, ours)])
    assert diff.max() <= 1.0001 / 255 and (diff == 0).float().mean() >= 0.95


@needs_yolov5
@pytest.mark.parametrize("size", [224, 96])
def test_yolov5_transforms_exactly(size):
    """YOLOv5's centred square crop, cv2.resize INTER_LINEAR, BGR->RGB, /255, ImageNet mean/std, to float rounding."""
    from helpers import photos

    reference = yolov5_module("yolov5.utils.augmentations").classify_transforms(size)
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images() + photos()]
    ours = classify_batch(bgr, size, "yolov5", bgr=True)
    for im, o in zip(bgr, ours):
        r = reference(im)
        assert o.shape == r.shape == (3, size, size)
        assert torch.allclose(o, r, rtol=0, atol=1e-6)


@pytest.mark.parametrize("hw, out", [((300, 200), (192, 256)), ((200, 300), (256, 192)), ((600, 200), (500, 50)),
                                     ((50, 60), (200, 300)), ((1080, 1920), (224, 398)), ((7, 5), (224, 224)),
                                     ((400, 100), (100, 400)), ((224, 224), (224, 224))])
def test_resize_pil_bilinear_equals_pillow(hw, out):
    from PIL import Image

    im = np.random.default_rng(sum(hw)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(im).resize(out[::-1], Image.BILINEAR))
    got = resize_pil_bilinear(torch.from_numpy(im).permute(2, 0, 1), *out).permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected)


def test_classify_batch_errors():
    with pytest.raises(NetdefError, match="unknown classification transforms 'imagenet': use ultralytics or yolov5"):
        classify_batch(images()[:1], 224, "imagenet")
    with pytest.raises(NetdefError, match="no images"):
        classify_batch([], 224, "yolov5")
    with pytest.raises(NetdefError, match=r"image 0 must be HxWx3 uint8, got \(4, 4\)"):
        classify_batch([np.zeros((4, 4), np.uint8)], 224, "ultralytics")


# ---------------------------------------------------------------- top-5

def test_top_classes_of_probabilities_and_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=g) * 3
    probs, classes = top_classes(logits, logits=True)
    expected = torch.softmax(logits.double(), 1).numpy()
    for p, c, e in zip(probs.numpy(), classes.numpy(), expected):
        assert list(c) == list(np.argsort(-e)[:5]) and np.allclose(p, e[c], atol=1e-6)
        assert (np.diff(p) <= 0).all()
    p2, c2 = top_classes(torch.softmax(logits, 1))  # probabilities as they are: the same
    assert torch.equal(c2, classes) and torch.allclose(p2, probs)
    p3, c3 = top_classes(torch.tensor([[0.1, 0.7, 0.2]]))  # fewer classes than 5
    assert c3.tolist() == [[1, 2, 0]] and p3.shape == (1, 3)
    with pytest.raises(NetdefError, match=r"must be \(B, classes\), got \(2, 3, 4\)"):
        top_classes(torch.zeros(2, 3, 4))


def test_classifier_records_batches_and_draws(tmp_path):
    """The Classifier over a fake engine: top-5 per image in order, batches split at the engine's maximum and padded
    to its minimum, names; write_results draws the top-1 and refuses nothing new."""
    from netdef.tools.detect import write_results

    seen = []
    scores = torch.eye(7)[[3, 6, 0, 1]] * 5 + torch.arange(7) * 0.1  # image i's best class: 3, 6, 0 (1: padding)

    def infer(batch):
        seen.append(batch.shape[0])
        return {"output": scores[2 * len(seen) - 2:][:batch.shape[0]]}

    ims = images()[:3]
    clf = Classifier(infer, (32, 32), "output", "ultralytics", logits=True, batch_range=(2, 2),
                     names=[f"c{i}" for i in range(7)])
    got = clf(ims, ["a.jpg", "b.png", "c.png"])
    assert seen == [2, 2]  # 2 + 1 (padded to 2)
    assert [g["classes"][0] for g in got] == [3, 6, 0] and all(len(g["classes"]) == 5 for g in got)
    assert got[0]["names"][0] == "c3" and got[0]["scores"] == sorted(got[0]["scores"], reverse=True)
    assert abs(got[0]["scores"][0] - float(torch.softmax(scores[0], 0)[3])) < 1e-5
    assert (got[1]["height"], got[1]["width"], got[1]["image"]) == (300, 200, "b.png")
    written = write_results(got, ims, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [s["classes"] for s in saved] == [g["classes"] for g in got] and "boxes" not in saved[0]
    drawn = np.asarray(draw_top1(ims[0], got[0]))
    assert len(written) == 3 and not np.array_equal(drawn, ims[0])  # the label is there
    assert np.array_equal(drawn[-50:, -50:], ims[0][-50:, -50:])  # and only in the corner


def fake_engine(outputs, meta, batch=(1, 1, 4)):
    def infer(feeds, as_numpy=False):
        raise AssertionError("not run")

    io = SimpleNamespace
    return SimpleNamespace(path="m.engine", meta=dict(meta, options={"batch": list(batch)}), batch_range=batch,
                           inputs=[io(name="images", shape=(-1, 3, 224, 224))],
                           outputs=[io(name=n, shape=s) for n, s in outputs], device=0, infer=infer)


def test_engine_classifier_reads_the_record_and_the_family():
    v8 = engine_classifier(fake_engine([("output", (-1, 1000))], {"arch": {"name": "yolov8n-cls"}}),
                           {"task": "classify", "nc": 1000, "head": "probs"})
    assert (v8.transforms, v8.logits, v8.input_hw, v8.batch_range, v8.output) == \
        ("ultralytics", False, (224, 224), (1, 4), "output")
    v5 = engine_classifier(fake_engine([("output", (-1, 10))], {"arch": {"name": "yolov5s-cls"}}),
                           {"task": "classify", "nc": 10, "head": "logits"})
    assert (v5.transforms, v5.logits) == ("yolov5", True)
    old = engine_classifier(fake_engine([("output", (-1, 10))], {"arch": {"name": "yolov5s-cls"}}), None)
    assert (old.transforms, old.logits) == ("yolov5", True)  # no record: YOLOv5's Classify gives logits
    with pytest.raises(NetdefError, match=r"records 1000 classes, its output output is \[-1, 10\]"):
        engine_classifier(fake_engine([("output", (-1, 10))], {"arch": {"name": "yolo11n-cls"}}),
                          {"task": "classify", "nc": 1000, "head": "probs"})
    with pytest.raises(NetdefError, match=r"classification engine \(yolo11n-cls\) but has outputs output \[-1, 5, "
                                          r"6\]: expected one \(B, classes\) output"):
        engine_classifier(fake_engine([("output", (-1, 5, 6))], {"arch": {"name": "yolo11n-cls"}}), None)


# ---------------------------------------------------------------- against the reference predictors

def ultralytics_top5(model, ims_bgr, device="cpu"):
    """Ultralytics 8.4's ClassificationPredictor on the model itself: per image (top-5 classes, probabilities)."""
    predict = ultra("ultralytics.models.yolo.classify.predict")
    p = predict.ClassificationPredictor(overrides={"imgsz": 224, "device": device, "verbose": False, "save": False})
    return [(r.probs.top5, [float(v) for v in r.probs.top5conf]) for r in p(source=list(ims_bgr), model=model)]


def yolov5_top5(model, ims_bgr, device="cpu"):
    """YOLOv5 7.0's classify/predict.py steps: classify_transforms(224) on the BGR image, model, softmax, argsort."""
    transform = yolov5_module("yolov5.utils.augmentations").classify_transforms(224)
    model = model.to(device)
    out = []
    with torch.no_grad():
        for im in ims_bgr:
            prob = torch.softmax(model(transform(im)[None].to(device)), 1)[0]
            top = prob.argsort(0, descending=True)[:5].tolist()
            out.append((top, [float(prob[j]) for j in top]))
    return out


def assert_same_top5(got, theirs, tol):
    """The same top-5 probabilities within `tol`, the same classes except where two are within `tol` (a near-tie of
    random weights may swap them)."""
    assert len(got) == len(theirs)
    for g, (classes, probs) in zip(got, theirs):
        assert np.allclose(g["scores"], probs, atol=tol), (g["scores"], probs)
        for rank, (a, b) in enumerate(zip(g["classes"], classes)):
            if a != b:  # swapped with a neighbour of (nearly) the same probability
                assert min(abs(probs[rank] - probs[r]) for r in (rank - 1, rank + 1) if 0 <= r < len(probs)) <= 2 * tol


def reference(name: str):
    if name.startswith("yolov5"):
        if not yv5.yolov5_available():
            pytest.skip("needs pip install --no-deps yolov5==7.0.14")
        from test_yolov5_tasks import reference as yolov5_reference

        return yolov5_reference(name)
    if not ref.ultralytics_available():
        pytest.skip("needs pip install --no-deps ultralytics==8.4.190")
    return ref.reference_model(name)


@pytest.mark.parametrize("name", ["yolov8n-cls", "yolov5n-cls"])
def test_classifier_over_the_pytorch_model_equals_the_predictor(name):
    """The Classifier driving the random-weights PyTorch model (as its engine, on the CPU): the reference predictor's
    top-5 on the same photos."""
    from helpers import photos

    model, _ = reference(name)
    v5 = name.startswith("yolov5")

    def infer(batch):
        with torch.no_grad():
            out = model(batch)
        return {"output": out[0] if isinstance(out, (list, tuple)) else out}

    clf = Classifier(infer, (224, 224), "output", "yolov5" if v5 else "ultralytics", logits=v5, batch_range=(1, 2))
    ims = photos(bgr=True)
    got = clf(ims, bgr=True)
    theirs = (yolov5_top5 if v5 else ultralytics_top5)(model, ims)
    assert_same_top5(got, theirs, 1e-5)


# ---------------------------------------------------------------- the "model" record

@needs_ultralytics
def test_classify_engine_header_records_the_task(tmp_path, capsys):
    """A yolov8n-cls engine (TensorRT-RTX here): its header's "model", shown by `netdef info` in one line."""
    from netdef.build import BuildOptions, build_engine
    from netdef.cli.info import register
    from netdef.wts import write_wts

    _, sd = ref.reference_model("yolov8n-cls")
    write_wts(tmp_path / "c.wts", sd)
    res = build_engine("yolov8n-cls", tmp_path / "c.wts", tmp_path / "c.engine",
                       BuildOptions(batch=(1, 1, 2), opt_level=0, input_hw=(64, 64)), log=lambda m: None)
    assert res.meta["model"] == {"task": "classify", "nc": 1000, "head": "probs"}
    parser = argparse.ArgumentParser(prog="netdef")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["info", str(res.path)])
    assert args.func(args) == 0
    assert [ln for ln in capsys.readouterr().out.splitlines() if "model" in ln] == \
        ["  model  classify, 1000 classes, head probs"]


def test_info_names_an_end_to_end_heads_top_k():
    """YOLO26's end-to-end head keeps the default head=decode: info says what it computes."""
    from netdef.cli.info import model_lines

    assert model_lines({"model": {"task": "end2end", "nc": 4, "head": "decode"}}) == \
        ["  model  end2end, 4 classes, head decode (top-k, no NMS)"]
    assert model_lines({"model": {"task": "detect", "nc": 1, "head": "decode"}}) == \
        ["  model  detect, 1 class, head decode"]


# ---------------------------------------------------------------- on the GPU

@pytest.mark.gpu
@pytest.mark.parametrize("name", ["yolov8n-cls", "yolov5n-cls"])
def test_classify_engine_top5_equals_the_predictor(name, tmp_path):
    """A random-weights yolov8n-cls / yolov5n-cls fp32 engine (TF32 off) through `detect()`: the reference predictor's
    top-5 classes and probabilities on the same photos (Ultralytics' ClassificationPredictor on the PyTorch model;
    YOLOv5's classify/predict.py steps), probabilities within 1e-4."""
    from helpers import photos

    from netdef.build import BuildOptions, build_engine
    from netdef.tools.detect import detect, engine_detector
    from netdef.wts import write_wts

    model, sd = reference(name)
    write_wts(tmp_path / f"{name}.wts", sd)
    res = build_engine(name, tmp_path / f"{name}.wts", tmp_path / f"{name}.engine",
                       BuildOptions(precision="fp32", batch=(1, 2, 4), opt_level=0, tf32=False), log=lambda m: None)
    assert res.meta["model"]["task"] == "classify"
    clf = engine_detector(res.path)
    assert isinstance(clf, Classifier) and clf.transforms == ("yolov5" if name.startswith("yolov5") else "ultralytics")
    with pytest.raises(NetdefError, match="is a classification engine: conf, iou apply to detection engines only"):
        engine_detector(res.path, conf=0.5, iou=0.5)
    ims = photos()  # RGB, as detect() reads files
    got = detect(res.path, ims)
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in ims]
        theirs = (yolov5_top5 if name.startswith("yolov5") else ultralytics_top5)(model, bgr, device="cuda:0")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    print(f"RESULT detect {name} top-5 vs the reference predictor: " +
          "; ".join(f"{g['classes']} {g['scores']} / {c} {[round(p, 5) for p in q]}" for g, (c, q) in zip(got, theirs)))
    assert_same_top5(got, theirs, 1e-4)


def test_cli_detect_with_a_classification_engine(tmp_path, monkeypatch, capsys):
    """`netdef detect` on a classifier: detections.json with the top-5 of each image, the annotated images, the
    summary line."""
    from PIL import Image

    import netdef.tools.detect as d
    from netdef.cli.detect import register

    for i, im in enumerate(images()[:2]):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    scores = torch.softmax(torch.arange(12.0), 0)[None]

    def fake(engine, conf, iou, max_det, names, device=None, **kw):
        return Classifier(lambda b: {"output": scores.expand(b.shape[0], -1)}, (32, 32), "output", names=names or [])

    monkeypatch.setattr(d, "engine_detector", fake)
    parser = argparse.ArgumentParser(prog="netdef")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["detect", "m.engine", str(tmp_path / "0.png"), str(tmp_path / "1.png"),
                              "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert "2 image(s), top-5 classes each ->" in capsys.readouterr().out
    saved = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert [s["classes"] for s in saved] == [[11, 10, 9, 8, 7]] * 2 and {s["annotated"] for s in saved} == {"0.png",
                                                                                                          "1.png"}
