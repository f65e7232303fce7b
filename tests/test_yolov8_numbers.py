"""YOLOv8/YOLO11/YOLO26 numbers on the CPU: netdef's network definition evaluated in float64 (`netdef verify
--cpu`) against Ultralytics' own model, layer by layer, at a small input (detection, segmentation, pose,
classification).

Needs `pip install --no-deps ultralytics==8.4.190` (the reference); without it these tests skip.
"""
from __future__ import annotations

import pytest

from netdef.options import BuildOptions
from netdef.testing import ultralytics_reference as ref
from netdef.verify import verify
from netdef.wts import write_wts

pytestmark = pytest.mark.skipif(not ref.ultralytics_available(),
                                reason="needs the reference: pip install --no-deps ultralytics==8.4.190")


@pytest.mark.parametrize("name, hw", [("yolov8n", (128, 160)), ("yolo11n", (128, 160)), ("yolov8n-pose", (96, 128)),
                                      ("yolov8n-cls", None), ("yolo11n-cls", None),
                                      # YOLO26's end-to-end heads, top-k rows included (tamed: no tied scores)
                                      ("yolo26n", (128, 160)), ("yolo26n-seg", (128, 160)),
                                      ("yolo26n-pose", (96, 128))])
def test_matches_ultralytics_layer_by_layer(name, hw, tmp_path):
    model, sd = ref.reference_model(name, tame=True)
    params = {}
    if name.startswith("yolo26"):  # k below the anchors (252 to 420 here): the top-k picks some
        model.model[-1].max_det = params["max_det"] = 100
    write_wts(tmp_path / "w.wts", sd)
    report = verify(name, tmp_path / "w.wts", model, cpu=True, opts=BuildOptions(input_hw=hw, params=params),
                    log=lambda m: None)
    print(report.summary())
    assert report.ok, report.summary()
    compared = [r for r in report.rows if r.status == "pass"]
    assert len(compared) > 20 and any(r.module == "(model output)" for r in compared)


def test_classification_uses_pytorch_batchnorm_eps():
    """Ultralytics' classification models keep BatchNorm's eps 1e-5 (detection models get 1e-3): the -cls
    family files say so with `set: {bn_eps: ...}`, and --set replaces it."""
    from netdef.spec import load_spec

    assert load_spec("yolo11n-cls").resolve_params({})["bn_eps"] == 1e-5
    assert load_spec("yolo11n").resolve_params({})["bn_eps"] == 1e-3
    assert load_spec("yolo11n-cls").resolve_params({"bn_eps": "1e-3"})["bn_eps"] == 1e-3


@pytest.mark.gpu
def test_detect_on_a_yolov8_engine_equals_ultralytics_nms(tmp_path):
    """`netdef detect`'s pipeline on a YOLOv8s engine (fp32): for the same letterboxed photos, its NMS on the
    engine's output keeps the boxes Ultralytics' own non_max_suppression keeps on the model's output."""
    import torch
    from helpers import photos

    from netdef.build import build_engine
    from netdef.tools.detect import engine_detector
    from netdef.tools.preprocess import letterbox

    from netdef.testing.yolov5_reference import import_with_stand_ins

    ref.import_tasks()  # the environment the reference needs
    nms = import_with_stand_ins("ultralytics.utils.nms")
    model, sd = ref.reference_model("yolov8s")  # untamed: its scores spread, so NMS has few near-ties
    write_wts(tmp_path / "w.wts", sd)
    res = build_engine("yolov8s", tmp_path / "w.wts", tmp_path / "y8s.engine",
                       BuildOptions(batch=(1, 4, 4), opt_level=0, tf32=False), log=lambda m: None)
    det = engine_detector(res.path, conf=0.25, iou=0.45)
    assert det.layout.kind == "anchor_free"
    batch, _ = letterbox(photos(), (640, 640), device=det.device)
    ours = det.postprocess(det.infer(batch))
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        theirs = nms.non_max_suppression(model.cuda().eval()(batch)[0], 0.25, 0.45, max_det=300)
    torch.backends.cudnn.allow_tf32 = prev
    kept = matched = 0
    for (boxes, scores, classes), t in zip(ours, theirs):
        assert abs(len(boxes) - len(t)) <= max(1, len(t) // 100)
        for b, s, c in zip(boxes, scores, classes):
            same = t[t[:, 5].int() == int(c)]
            err = (same[:, :4] - b).abs().max(1).values if len(same) else None
            k = int(err.argmin()) if err is not None else 0
            matched += err is not None and float(err[k]) < 0.05 and abs(float(same[k, 4]) - float(s)) < 1e-3
        kept += len(boxes)
    print(f"RESULT netdef detect yolov8s fp32: {kept} boxes on {len(ours)} photos, {matched} equal to a box of "
          f"Ultralytics' NMS (same class, within 0.05 px, score within 1e-3)")
    assert kept > 0 and matched >= 0.99 * kept  # a near-tie in scores may let NMS keep a neighbour instead


@pytest.mark.parametrize("head", [None, "one2many"])
def test_verify_runs_the_head_the_network_builds(head, tmp_path):
    """A YOLO26 model as its checkpoints load (end2end off, max_det 300): verify switches it to the branch the
    network builds (the top-k rows, with --set max_det, or the one-to-many output), so the outputs compare."""
    model, sd = ref.reference_model("yolo26n", tame=True)
    model.end2end = head is not None  # the other branch than the network builds
    write_wts(tmp_path / "w.wts", sd)
    params = {"head": head} if head else {"max_det": 100}
    said: list[str] = []
    report = verify("yolo26n", tmp_path / "w.wts", model, cpu=True,
                    opts=BuildOptions(input_hw=(128, 160), params=params), log=said.append)
    assert report.ok, report.summary()
    assert [r for r in report.rows if r.module == "(model output)"][0].status == "pass"
    assert f"[netdef] verify: the model's end2end set to {head is None}, the head the network builds" in said


@pytest.mark.parametrize("name, hw, modules", [
    ("yolov8n-p2", (128, 160), ["model.18.cv2.bn", "model.28.cv2.3.2"]),          # the P2 level's C2f, a 4th head level
    ("yolov8n-p6", (128, 192), ["model.14.cv1.bn", "model.29.cv2.bn"]),   # C2 (YOLOv8-P6's head), P6 level
    ("yolov8n-ghost", (128, 160), ["model.1", "model.2.m.0", "model.2.m.0.conv.2"])])  # GhostConv, C3Ghost
def test_ultralytics_yolov8_variants_match_layer_by_layer(name, hw, modules, tmp_path):
    """Ultralytics' YOLOv8 variants with their own family files (yolov8-p2.yaml, yolov8-p6.yaml,
    yolov8-ghost.yaml): every key used, and layer by layer equal to Ultralytics' model, those blocks included."""
    model, sd = ref.reference_model(name, tame=True)
    write_wts(tmp_path / "w.wts", sd)
    report = verify(name, tmp_path / "w.wts", model, cpu=True, opts=BuildOptions(input_hw=hw), log=lambda m: None)
    assert report.ok, report.summary()
    compared = {r.module for r in report.rows if r.status == "pass"}
    assert "(model output)" in compared and set(modules) <= compared, sorted(compared)


def test_ghost_bottleneck_with_stride_2_matches_ultralytics(tmp_path):
    """GhostBottleneck at stride 2 (a depth-wise Conv in both branches), as a YAML row of its own may use it."""
    import torch
    import yaml

    from netdef.spec import resolve_arch
    from netdef.testing.yolov5_reference import randomize_reference

    tasks = ref.import_tasks()
    path, _ = resolve_arch("yolov8n-ghost")
    cfg = yaml.safe_load(path.read_text("utf-8"))
    assert cfg["backbone"][3] == [-1, 1, "GhostConv", [256, 3, 2]]
    cfg["backbone"][3] = [-1, 1, "GhostBottleneck", [256, 3, 2]]
    cfg["name"] = "yolov8-ghostb"
    (tmp_path / "yolov8-ghostb.yaml").write_text(yaml.safe_dump(cfg), "utf-8")
    ucfg = {k: v for k, v in cfg.items() if k in ("nc", "scales", "backbone", "head")}
    ucfg["scale"] = "n"
    torch.manual_seed(0)
    model = tasks.DetectionModel(ucfg, verbose=False)
    sd = randomize_reference(model, 0, True, [b[-1] for n in ("cv2", "cv3") for b in getattr(model.model[-1], n)])
    assert "model.3.shortcut.1.conv.weight" in sd and "model.3.conv.1.conv.weight" in sd
    write_wts(tmp_path / "w.wts", sd)
    report = verify(str(tmp_path / "yolov8n-ghostb.yaml"), tmp_path / "w.wts", model, cpu=True,
                    opts=BuildOptions(input_hw=(128, 160)), log=lambda m: None)
    assert report.ok, report.summary()
    assert {"model.3", "model.3.shortcut.1.bn"} <= {r.module for r in report.rows if r.status == "pass"}



def test_yolov9_and_yolov10_blocks_match_ultralytics_layer_by_layer(tmp_path):
    """ADown and SPPELAN (YOLOv9) and SCDown (YOLOv10) in YOLO11n's rows, as a researcher's YAML puts them: that
    Ultralytics YAML as it is (no netdef keys: input 'images' at 640 and output 'output' by default) verifies
    against Ultralytics' model built from it; a segmentation YAML's outputs are 'output' and 'proto'."""
    import yaml

    from netdef.spec import load_spec

    rows = {3: [-1, 1, "ADown", [256]], 5: [-1, 1, "SCDown", [512, 3, 2]], 9: [-1, 1, "SPPELAN", [1024, 256]],
            20: [-1, 1, "SCDown", [512, 3, 2]]}
    cfg = {"nc": 5, "scales": {"n": [0.5, 0.25, 1024]}}
    for part in ("backbone", "head"):
        cfg[part] = [rows.get(i, row) for i, row in enumerate(yaml.safe_load(ref.cfg_text("yolo11"))[part],
                                                               0 if part == "backbone" else 11)]
    (tmp_path / "my-yolo11n-v9.yaml").write_text(yaml.safe_dump(cfg))
    model, sd = ref.model_from_cfg(dict(cfg, scale="n"), tame=True)
    write_wts(tmp_path / "w.wts", sd)
    report = verify(tmp_path / "my-yolo11n-v9.yaml", tmp_path / "w.wts", model, cpu=True,
                    opts=BuildOptions(input_hw=(128, 160)), log=lambda m: None)
    assert report.ok, report.summary()
    compared = {r.module for r in report.rows if r.status == "pass"}
    assert {"model.3", "model.9.cv2", "model.9.cv5.bn", "model.5.cv2.bn", "model.20.cv2.bn"} <= compared
    (tmp_path / "my-yolov8n-seg.yaml").write_text(ref.cfg_text("yolov8-seg"))
    seg = load_spec(tmp_path / "my-yolov8n-seg.yaml")
    assert (seg.input_name, seg.input_shape, seg.output_names) == ("images", (3, 640, 640), ["output", "proto"])


def test_an_ultralytics_yaml_activation_is_the_conv_activation(tmp_path):
    """Ultralytics' top-level `activation: nn.LeakyReLU(0.1)` (every Conv's, heads included) builds as the build
    parameter default_act (once an unknown top-level key); an activation netdef lacks is named with the line."""
    import yaml

    from netdef.errors import SpecError
    from netdef.spec import load_spec

    cfg = dict(yaml.safe_load(ref.cfg_text("yolov8-pose")), scale="n", activation="nn.LeakyReLU(0.1)",
               input={"name": "images", "shape": [3, 640, 640]}, output="output")
    mine = {k: v for k, v in cfg.items() if k != "scale"}  # the file's name gives the scale
    (tmp_path / "my-yolov8n-pose.yaml").write_text(yaml.safe_dump(mine))
    model, sd = ref.model_from_cfg(cfg, "PoseModel", nc=2, tame=True)
    write_wts(tmp_path / "w.wts", sd)
    report = verify(tmp_path / "my-yolov8n-pose.yaml", tmp_path / "w.wts", model, cpu=True,
                    opts=BuildOptions(input_hw=(96, 128)), log=lambda m: None)
    assert report.ok and any(r.layer.endswith("/leaky") for r in report.rows), report.summary()
    (tmp_path / "my-yolov8n-pose.yaml").write_text(yaml.safe_dump(dict(mine, activation="nn.Mish()")))
    with pytest.raises(SpecError, match=r"my-yolov8n-pose.yaml:1: 'activation': expected one of nn.ReLU\(\), .* "
                                        r"got 'nn.Mish\(\)'"):
        load_spec(tmp_path / "my-yolov8n-pose.yaml")
