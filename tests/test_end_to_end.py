"""scripts/compare_end_to_end.py on the CPU: its arguments and early failures (missing packages, no GPU), the
Ultralytics-format engine file (read back with Ultralytics' own reader), the detection load set through the head
biases (YOLOv5 and YOLOv8/YOLO11), the ONNX names Ultralytics' TensorRT backend binds, and, with one PyTorch YOLOv5n
standing in for the engine, the cv2 (Ultralytics) pipeline and netdef's Detector giving the same boxes. The
comparison itself runs on a GPU only (docs/benchmarks.md, *Reproduce*)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("skimage")
from netdef.errors import NetdefError  # noqa: E402
from netdef.testing import ultralytics_reference as uref  # noqa: E402
from netdef.testing import yolov5_reference as ref  # noqa: E402
from netdef.tools.detect import Detector, OutputLayout  # noqa: E402
from netdef.tools.preprocess import letterbox  # noqa: E402

from helpers import load_script  # noqa: E402

needs_ultralytics = pytest.mark.skipif(not uref.ultralytics_available(),
                                       reason="needs pip install --no-deps ultralytics==8.4.190")


@pytest.fixture(scope="module")
def e2e():
    return load_script("compare_end_to_end")


# ---------------------------------------------------------------- arguments and early failures

def test_arguments(e2e):
    a = e2e.parse_args([])
    assert (a.model, a.batches_l, a.profile_t) == ("yolov5s", [1, 8, 32], (1, 32, 32))
    assert a.pipelines == ("netdef", "onnx+cv2", "onnx+gpu-pre")
    a = e2e.parse_args(["--model", "yolo11n", "--batches", "1,8", "--cuda-graph"])
    assert (a.batches_l, a.profile_t, a.cuda_graph) == ([1, 8], (1, 8, 8), True)
    assert a.pipelines == ("netdef", "ultralytics", "onnx+gpu-pre")
    opts = a.build_options  # both engines', validated by BuildOptions before any work
    assert (opts.precision, opts.batch, opts.opt_level, opts.params) == ("fp16", (1, 8, 8), 0, {})
    assert e2e.parse_args(["--model", "yolov8s", "--profile", "1:4:16", "--batches", "1,16"]).profile_t == (1, 4, 16)
    assert e2e.routes.parse_args(["--model", "yolov8s"]).batches_l == [1, 8, 32]  # compare_routes knows them too


def test_netdef_only_builds_netdef_s_engine_alone(e2e, tmp_path, monkeypatch):
    """--netdef-only: one pipeline (netdef's), and its engine is the only one built (no ONNX export or build)."""
    from types import SimpleNamespace

    a = e2e.parse_args(["--model", "yolo11n", "--batches", "1", "--netdef-only", "--workdir", str(tmp_path)])
    assert a.pipelines == ("netdef",)
    wts = tmp_path / "yolo11n_random.wts"
    wts.write_text("0\n")
    monkeypatch.setattr(e2e, "detection_wts", lambda a, photos, say: (None, wts))
    built = []
    monkeypatch.setattr(e2e, "build_engine", lambda model, w, out, opts, force, log:
                        built.append((model, w, out)) or SimpleNamespace(meta={"build_seconds": 1.0}))
    monkeypatch.setattr(e2e.routes, "export_onnx", lambda *args, **kwargs: pytest.fail("exported an ONNX model"))
    engines = e2e.build_engines(a, [], lambda msg: None)
    assert list(engines) == ["netdef"] and built == [("yolo11n", wts, engines["netdef"])]


@pytest.mark.parametrize("argv, message", [
    (["--profile", "2:8:8", "--batches", "1,8"], "does not cover batch size(s) [1]"),
    (["--profile", "8:4:8", "--batches", "8"], "--profile 8:4:8 / --opt-level 0: batch profile 8:4:8 must satisfy"),
    (["--profile", "0:1:8", "--batches", "1,8"], "--profile 0:1:8 / --opt-level 0: batch profile 0:1:8 must satisfy"),
    (["--conf", "1.5"], "--conf 1.5"),
    (["--iou", "0"], "--iou 0"),
    (["--candidates", "0"], "--candidates 0"),
    (["--opt-level", "6"], "--opt-level 6"),
    (["--shared-timing-cache"], "--shared-timing-cache needs --timing-cache DIR"),
])
def test_bad_arguments_are_named(e2e, argv, message):
    with pytest.raises(NetdefError) as info:
        e2e.parse_args(["--model", "yolo11n", *argv])
    assert message in str(info.value)


def test_timing_caches_per_route_or_shared(e2e, tmp_path):
    """compare_end_to_end.py and compare_routes.py name the caches alike: one per route, or with
    --shared-timing-cache one file both routes' builds read and extend."""
    tc, tag = str(tmp_path / "tc"), "fp16_b1-8-8_o3"
    own = e2e.timing_cache_files(e2e.parse_args(["--model", "yolo11n", "--timing-cache", tc]), tag)
    assert own == {r: str(tmp_path / "tc" / f"{r}_yolo11n_{tag}.cache") for r in ("netdef", "onnx")}
    one = e2e.timing_cache_files(e2e.parse_args(["--model", "yolo11n", "--timing-cache", tc, "--shared-timing-cache"]),
                                 tag)
    assert set(one.values()) == {str(tmp_path / "tc" / f"shared_yolo11n_{tag}.cache")}
    assert e2e.timing_cache_files(e2e.parse_args(["--model", "yolo11n"]), tag) == {"netdef": None, "onnx": None}
    for shared in (False, True):
        run = e2e.routes.Run(e2e.routes.parse_args(["--model", "efficientnet_b0", "--workdir", str(tmp_path / "w"),
                                                    "--opt-level", "3"] + ["--shared-timing-cache"] * shared))
        files = {r: run._cache_file(r, "fp16")[0].name for r in ("netdef", "onnx")}
        assert files == ({r: "shared_efficientnet_b0_fp16_b1-64-64_o3.cache" for r in files} if shared else
                         {r: f"{r}_efficientnet_b0_fp16_b1-64-64_o3.cache" for r in files})


def test_unknown_model_is_refused(e2e, capsys):
    with pytest.raises(SystemExit):
        e2e.parse_args(["--model", "yolo26n"])  # end-to-end head, no NMS to compare
    assert "invalid choice: 'yolo26n'" in capsys.readouterr().err


@pytest.mark.parametrize("model, hidden, message", [
    ("yolo11n", "ultralytics", "ultralytics (pip install ultralytics==8.4.190)"),
    ("yolov8s", "cv2", "cv2 (pip install opencv-python)"),
    ("yolov5s", "cv2", "cv2 (pip install opencv-python)"),
])
def test_missing_packages_are_named_before_any_work(e2e, monkeypatch, model, hidden, message):
    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed: find_spec gives None, import fails
    with pytest.raises(NetdefError) as info:
        e2e.main(["--model", model])
    assert message in str(info.value) and f"the {model} end-to-end comparison needs" in str(info.value)


@needs_ultralytics
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_it_says_so(e2e):
    with pytest.raises(NetdefError, match="needs a CUDA GPU and full TensorRT"):
        e2e.main(["--model", "yolo11n", "--batches", "1,8"])


# ---------------------------------------------------------------- Ultralytics' engine format and predictor

@needs_ultralytics
def test_ultralytics_engine_file_reads_back_with_ultralytics(e2e, tmp_path):
    """Written as Ultralytics' exporter writes it, read with Ultralytics' own header reader and metadata handling
    (BaseBackend.engine_header, read_metadata, apply_metadata: what its TensorRT backend does before TensorRT)."""
    e2e.import_yolo()  # also: the predictor's modules import (settings file kept out of the home folder)
    from ultralytics.nn.autobackend import AutoBackend, check_class_names
    from ultralytics.nn.backends.base import BaseBackend

    model, _ = uref.reference_model("yolo11n")
    meta = e2e.ultralytics_metadata(model, "yolo11n", 8, "fp16")
    plan = bytes(range(256)) * 37 + b'{"not": "json"}'  # a stand-in plan: any bytes after the header
    path = tmp_path / "ultralytics_yolo11n.engine"
    e2e.write_ultralytics_engine(path, plan, meta)

    offset, header = BaseBackend.engine_header(path)
    assert header == json.loads(json.dumps(meta)) == BaseBackend.read_metadata(path)
    assert offset == path.stat().st_size - len(plan) and path.read_bytes()[offset:] == plan
    assert AutoBackend._model_type(path) == "engine"

    class Probe(BaseBackend):
        """TensorRTBackend.load_model up to TensorRT: header, metadata, plan."""

        def load_model(self, weight):
            offset, metadata = self.engine_header(weight)
            self.apply_metadata(metadata)
            self.plan = Path(weight).read_bytes()[offset:]

        def forward(self, im):
            raise AssertionError("not run")

    probe = Probe(path, device=torch.device("cpu"))
    assert probe.plan == plan
    assert (probe.task, probe.batch, probe.stride, list(probe.imgsz)) == ("detect", 8, 32, [640, 640])
    assert probe.metadata["dynamic"] is True and probe.end2end is False  # AutoBackend: neither pads nor splits
    assert check_class_names(probe.names) == {int(k): v for k, v in model.names.items()}
    assert len(probe.names) == model.model[-1].nc == 80


@needs_ultralytics
def test_ultralytics_and_netdef_pipelines_agree(e2e, tmp_path, monkeypatch):
    """The script's Ultralytics pipeline runs Ultralytics' own predictor (LetterBox, AutoBackend reading the
    metadata written, NMS, Results) over the Ultralytics-format engine file; with its TensorRT backend swapped for
    one that reads the file's header as TensorRTBackend does and then runs the PyTorch YOLO11n on the CPU, it gets
    one unpadded 640x640 batch and gives the boxes netdef's Detector gives with the same model."""
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.backends.base import BaseBackend

    e2e.import_yolo()
    model, _ = uref.reference_model("yolo11n")
    photos = e2e.photos_bgr()
    a = e2e.parse_args(["--model", "yolo11n", "--batches", "1,8", "--conf", "0.25", "--iou", "0.45"])
    e2e.set_detection_load(model, photos, a.conf, 30)
    seen = []

    def infer(x):
        seen.append(tuple(x.shape))
        with torch.no_grad():
            return model(x)[0]

    class TorchBackend(BaseBackend):
        def load_model(self, weight):
            self.apply_metadata(self.engine_header(weight)[1])

        def forward(self, im):
            return infer(im)

    monkeypatch.setitem(AutoBackend._BACKEND_MAP, "engine", TorchBackend)
    path = tmp_path / "ultralytics_yolo11n.engine"
    e2e.write_ultralytics_engine(path, b"plan", e2e.ultralytics_metadata(model, "yolo11n", 8, "fp32"))
    run, yolo = e2e.ultralytics_pipeline(path, a)
    theirs = run(photos)
    assert seen == [(4, 3, 640, 640)]  # one batch of 4 (not padded to the metadata's 8), 640x640 (rect=False)
    assert isinstance(yolo.predictor.model.backend, TorchBackend)  # where main() looks for Ultralytics' CUDA graph
    stages = e2e.ultralytics_stages(yolo, photos, a)  # the predictor's own stages, for --breakdown
    assert tuple(stages["letterbox"](photos).shape) == (4, 3, 640, 640)
    assert [len(d) for d in stages["postprocess"](photos)] == e2e.count(theirs)
    assert tuple(stages["engine"](photos).shape) == (4, 84, 8400)
    ours = Detector(lambda x: {"output0": infer(x)}, (640, 640), OutputLayout("anchor_free", {"pred": "output0"}),
                    a.conf, a.iou, a.max_det, (1, 8), torch.device("cpu"))
    mine = e2e.detector_pipeline(ours)(photos)
    counts = e2e.count(theirs)
    assert sum(counts) >= 4, f"too few boxes to compare: {counts}"
    assert abs(sum(counts) - sum(e2e.count(mine))) <= max(2, sum(counts) // 50), (counts, e2e.count(mine))
    for (bt, st, ct), (bm, sm, cm), im in zip(theirs, mine, photos):
        assert bt.device.type == bm.device.type == "cpu"
        if len(bt) and len(bm):  # the best box is the same (letterboxes and box scaling differ slightly)
            assert np.abs(bt[0].numpy() - bm[0].numpy()).max() < 2.0
            assert abs(float(st[0]) - float(sm[0])) < 1e-2 and int(ct[0]) == int(cm[0])
            assert (bt[:, [0, 2]] <= im.shape[1]).all() and (bt[:, [1, 3]] <= im.shape[0]).all()


def test_ultralytics_engine_writer_refuses_what_ultralytics_would_not_load(e2e, tmp_path):
    with pytest.raises(NetdefError, match=r"model\.onnx: Ultralytics recognises TensorRT engines by the suffix"):
        e2e.write_ultralytics_engine(tmp_path / "model.onnx", b"plan", {})
    with pytest.raises(NetdefError, match="no plan to write"):
        e2e.write_ultralytics_engine(tmp_path / "model.engine", b"", {})
    assert not list(tmp_path.iterdir())


def test_onnx_route_uses_ultralytics_names(e2e, tmp_path):
    """Ultralytics' TensorRT backend binds the input by the name "images": the ONNX route exports with its names
    (and a dynamic batch)."""
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "conv.onnx"
    e2e.routes.export_onnx(torch.nn.Conv2d(3, 4, 1), (3, 8, 8), path, False, "legacy", lambda m: None,
                           names=e2e.ONNX_NAMES)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["output0"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# ---------------------------------------------------------------- the detection load

def make_model(name: str):
    if name.startswith("yolov5"):
        if not ref.yolov5_available():
            pytest.skip("needs the reference: pip install --no-deps yolov5==7.0.14")
        return ref.reference_model(name)[0].eval()
    if not uref.ultralytics_available():
        pytest.skip("needs pip install --no-deps ultralytics==8.4.190")
    return uref.reference_model(name)[0]


def candidates(model, photos, conf: float) -> float:
    """Boxes per photo that the NMS's confidence filter keeps, from the model's own output."""
    x, _ = letterbox(photos, (640, 640), bgr=True)
    with torch.no_grad():
        y = model(x)[0]
    if y.shape[1] < y.shape[2]:  # anchor-free (B, 4 + nc, N): best class score
        keep = y[:, 4:].amax(1) > conf
    else:  # YOLOv5 (B, N, 5 + nc): objectness and objectness x best class score
        obj = y[..., 4]
        keep = (obj > conf) & (obj * y[..., 5:].amax(-1) > conf)
    return float(keep.sum()) / len(photos)


@pytest.mark.parametrize("name", ["yolo11n", "yolov5n"])
def test_detection_load_is_set_through_the_head_biases(e2e, name):
    model = make_model(name)
    detect = model.model[-1]
    free = hasattr(detect, "cv3")
    convs = [b[-1] for b in detect.cv3] if free else list(detect.m)
    before = [(c.weight.detach().clone(), c.bias.detach().clone()) for c in convs]
    photos = e2e.photos_bgr()
    conf, per_image = 0.25, 30
    assert candidates(model, photos, conf) > 4 * per_image  # random weights: far too many before
    scale, offset = e2e.set_detection_load(model, photos, conf, per_image)
    assert scale == 0.1 if not free else 0 < scale < 0.1  # YOLOv8/YOLO11: random class logits spread wider
    for c, (w, b) in zip(convs, before):
        torch.testing.assert_close(c.weight, w * scale)
        shift = torch.zeros_like(b)
        if free:
            shift += offset
        else:
            shift.view(detect.na, detect.no)[:, 4] = offset  # objectness only
        torch.testing.assert_close(c.bias, b + shift)
    got = candidates(model, photos, conf)
    assert abs(got - per_image) <= 0.5, f"{got} boxes per photo above conf {conf}, asked for {per_image}"


def test_bias_offset_search(e2e):
    assert e2e.bisect_offset(lambda o: 100.0 if o >= 3.25 else 0.0, 50) == pytest.approx(3.25, abs=1e-9)
    with pytest.raises(NetdefError, match="lower --candidates or --conf"):
        e2e.bisect_offset(lambda o: 10.0, 50)
    with pytest.raises(NetdefError, match=r"offset of -50 still leaves 60 boxes .* raise --candidates or --conf"):
        e2e.bisect_offset(lambda o: 60.0, 50)


# ---------------------------------------------------------------- the whole comparison on a GPU

@pytest.mark.gpu
@needs_ultralytics
def test_yolov8n_comparison_runs_and_the_pipelines_agree(e2e, tmp_path):
    """The script end to end for yolov8n in fp32 (level 0, batches 1 and 2, short timing): Ultralytics' predictor
    loads the Ultralytics-format engine and finds the detections netdef's plugin engine and the ONNX engine with
    netdef's NMS find; every pipeline is timed at both batch sizes. About 1-2 minutes (two builds)."""
    out = tmp_path / "e2e.json"
    assert e2e.main(["--model", "yolov8n", "--precision", "fp32", "--batches", "1,2", "--candidates", "50",
                     "--warmup", "2", "--measure", "10", "--breakdown", "--workdir", str(tmp_path),
                     "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    det = doc["detections"]
    print(f"RESULT yolov8n fp32 detections per photo {det}; Ultralytics' CUDA graph {doc['ultralytics']['cuda_graph']}")
    assert set(det) == {"netdef", "ultralytics", "onnx+gpu-pre"} and sum(det["ultralytics"]) > 0
    for name in ("netdef", "onnx+gpu-pre"):  # fp32, the same network: at most a box or two at the threshold
        assert all(abs(x - y) <= 2 for x, y in zip(det[name], det["ultralytics"])), det
    timed = {(r["pipeline"], r.get("stage"), r["batch"]) for r in doc["results"]}
    assert {(p, None, b) for p in det for b in (1, 2)} <= timed
    assert {("ultralytics", s, b) for s in ("letterbox", "engine", "postprocess") for b in (1, 2)} <= timed


# ---------------------------------------------------------------- the YOLOv5 pipelines agree

@pytest.mark.skipif(not ref.yolov5_available(), reason="needs the reference: pip install --no-deps yolov5==7.0.14")
def test_cv2_and_netdef_pipelines_agree(e2e, yolov5_models):
    model, _ = yolov5_models("yolov5n")  # shared with tests/test_yolov5.py
    model.eval()

    def infer(x):
        with torch.no_grad():
            return model(x)[0]

    photos = e2e.photos_bgr()
    conf, iou = 0.02, 0.45  # random weights: a low threshold so that there are boxes to compare
    ours = Detector(lambda x: {"output": infer(x)}, (640, 640), OutputLayout("raw", {"pred": "output"}), conf, iou,
                    100, (1, 4), torch.device("cpu"))
    a = e2e.cv2_pipeline(infer, (640, 640), torch.device("cpu"), conf, iou, 100)(photos)
    b = e2e.detector_pipeline(ours)(photos)
    counts = e2e.count(a)
    assert sum(counts) > 0, "no boxes: the comparison would prove nothing"
    assert abs(sum(counts) - sum(e2e.count(b))) <= max(2, sum(counts) // 50)
    for (ba, sa, _), (bb, sb, _), im in zip(a, b, photos):
        assert ba.device.type == bb.device.type == "cpu"
        if len(ba) and len(bb):  # the best box is the same (letterboxes differ by at most 1/255)
            assert np.abs(ba[0].numpy() - bb[0].numpy()).max() < 2.0
            assert abs(float(sa[0]) - float(sb[0])) < 1e-2
            assert (ba[:, [0, 2]] <= im.shape[1]).all() and (ba[:, [1, 3]] <= im.shape[0]).all()


@pytest.mark.parametrize("shape", ["640x640", "320x320:480x480:480x480", "800x800:800x800:1280x1280"])
def test_bench_rect_needs_a_range_that_holds_640(e2e, shape, tmp_path):
    """scripts/bench_rect.py (it imports this script's helpers) refuses, before building anything, an input shape
    that is static or whose range leaves out the square 640x640 it compares with."""
    rect = load_script("bench_rect")
    with pytest.raises(NetdefError, match=rf"--input-shape {shape}: give a MIN:OPT:MAX range that holds 640x640"):
        rect.main(["--input-shape", shape, "--workdir", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()


def test_bench_rect_says_what_it_needs_without_a_gpu(e2e, tmp_path):
    """Without a GPU and full TensorRT (CI), bench_rect stops with that reason before it makes anything."""
    from netdef import trt_api

    if torch.cuda.is_available() and trt_api.can_run_engines():
        pytest.skip("a GPU with full TensorRT is here")
    rect = load_script("bench_rect")
    with pytest.raises(NetdefError, match="this benchmark needs a CUDA GPU and full TensorRT"):
        rect.main(["--workdir", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("script", ["compare_routes", "compare_end_to_end", "bench_rect"])
def test_the_comparisons_replace_results_files_only(e2e, script, tmp_path):
    """--json (or the default WORKDIR/NAME.json) is checked before any work: an earlier run's results are replaced,
    a file of the user's (a script, a config) is not."""
    start = {"compare_routes": e2e.routes.parse_args, "compare_end_to_end": e2e.parse_args,
             "bench_rect": load_script("bench_rect").main}[script]
    mine = tmp_path / "setup.py"
    mine.write_text("print('mine')\n")
    with pytest.raises(NetdefError, match=r"--json .*setup\.py exists and is not a netdef results file"):
        start(["--json", str(mine), "--workdir", str(tmp_path / "work")])
    assert mine.read_text() == "print('mine')\n" and not (tmp_path / "work").exists()
    earlier = tmp_path / "work" / "old.json"
    earlier.parent.mkdir()
    earlier.write_text(json.dumps({"environment": {}, "results": []}))
    if script != "bench_rect":  # its checks pass; bench_rect goes on to need a GPU
        assert start(["--json", str(earlier)]).json_path == earlier


def test_the_comparisons_keep_the_users_weights_in_their_workdir(e2e, tmp_path, monkeypatch):
    """--workdir weights/ (where the README keeps trained weights): the random-weight model's .wts goes beside
    weights/yolov5s.wts, not over it."""
    class Model(torch.nn.Linear):
        def cuda(self):  # the detection load is set on the GPU: a stand-in here
            return self

    monkeypatch.setattr(e2e.routes, "load_model", lambda name: None)
    monkeypatch.setattr(e2e.routes, "first_output", lambda model: type("Wrapped", (), {"m": Model(2, 2)})())
    monkeypatch.setattr(e2e, "set_detection_load", lambda *a: (1.0, 0.0))
    trained = tmp_path / "weights" / "yolov5s.wts"
    trained.parent.mkdir()
    trained.write_text("1\nmodel.0.weight 1 3f800000\n")
    a = e2e.parse_args(["--workdir", str(trained.parent)])
    _, wts = e2e.detection_wts(a, [], lambda m: None)
    assert trained.read_text() == "1\nmodel.0.weight 1 3f800000\n"
    assert wts == e2e.routes.weights_file(trained.parent, "yolov5s") and wts.is_file()
