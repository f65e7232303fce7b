"""YOLOv8, YOLO11 and YOLO26 architectures against Ultralytics' own model definitions (random weights, random
BatchNorm).

CPU: every scale of architectures/yolov8.yaml and yolo11.yaml, and the -cls, -pose, -seg and yolo26 models tested,
define a network that consumes exactly the reference state_dict (strict key accounting; YOLO26's unbuilt branch
skipped by name) with Ultralytics' eval output shapes; the small ones build and serialize (fp32, fp16); counts that
disagree with the weights are named.
GPU (`-m gpu`): engines vs the reference's `model(x)[0]`; prints RESULT lines.

Needs `pip install --no-deps ultralytics==8.4.190` (the reference); without it these tests skip.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from netdef.build import BuildOptions, build_engine, define_network
from netdef.errors import NetdefError
from netdef.testing import ultralytics_reference as ref
from netdef.wts import write_wts

pytestmark = pytest.mark.skipif(not ref.ultralytics_available(),
                                reason="needs the reference: pip install --no-deps ultralytics==8.4.190")

NAMES = [f"{family}{s}" for family in ("yolov8", "yolo11") for s in "nsmlx"]
CLS = ["yolov8n-cls", "yolov8m-cls", "yolo11n-cls", "yolo11m-cls"]
GPU_BOUND = {"fp32": 1e-3, "fp16": 1e-2}


@pytest.fixture(scope="module")
def models():
    cache: dict[tuple, tuple] = {}

    def get(name: str, tame: bool = False, keep: bool = True):
        if (name, tame) in cache:
            return cache[name, tame]
        made = ref.reference_model(name, tame=tame)
        if keep:
            cache[name, tame] = made
        return made

    return get


@pytest.fixture(scope="module")
def wts(models, tmp_path_factory):
    cache: dict[tuple, Path] = {}

    def get(name: str, tame: bool = False) -> Path:
        if (name, tame) not in cache:
            path = tmp_path_factory.mktemp("wts") / f"{name}{'_tame' if tame else ''}.wts"
            write_wts(path, models(name, tame)[1])
            cache[name, tame] = path
        return cache[name, tame]

    return get


def define(name: str, sd: dict, **opts):
    return define_network(name, sd, BuildOptions(**opts), log=lambda msg: None)


@pytest.mark.parametrize("name", NAMES)
def test_network_consumes_reference_state_dict(name, models):
    """Every key of Ultralytics' state_dict is used (strict), and the output is (B, 4 + nc, 8400) at 640x640."""
    model, sd = models(name, keep=name.endswith("n"))
    net = define(name, sd)
    assert net.key_report() == ({}, [])
    out = net.definition.get_output(0)
    assert out.name == "output" and tuple(out.shape) == (-1, 84, 8400)
    # layer names are weight prefixes: the first convolution is named after its key, the head after its row
    names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
    assert "model.0.conv" in names and any(n.startswith(f"model.{len(model.model) - 1}.dfl") for n in names)


@pytest.mark.parametrize("name", CLS)
def test_classifier_consumes_reference_state_dict(name, models):
    """Classification models: every key used, output (B, nc) probabilities at 224x224."""
    _, sd = models(name)
    net = define(name, sd)
    assert net.key_report() == ({}, [])
    assert tuple(net.definition.get_output(0).shape) == (-1, 1000)


@pytest.mark.parametrize("name", ["yolov8n-pose", "yolo11s-pose"])
def test_pose_consumes_reference_state_dict(name, models):
    """Pose models: every key used, output (B, 4 + nc + 17*3, N)."""
    model, sd = models(name)
    net = define(name, sd)
    assert net.key_report() == ({}, [])
    assert tuple(net.definition.get_output(0).shape) == (-1, 4 + model.model[-1].nc + 51, 8400)


@pytest.mark.parametrize("name", ["yolov8n-seg", "yolo11s-seg"])
def test_segment_consumes_reference_state_dict(name, models):
    """Segmentation models: every key used (Proto's ConvTranspose2d included), two outputs as Ultralytics' eval
    (output, proto): (B, 4 + nc + 32, N) and (B, 32, H/4, W/4); the deconvolution is named after its key."""
    model, sd = models(name)
    net = define(name, sd)
    assert net.key_report() == ({}, [])
    outs = [net.definition.get_output(i) for i in range(net.definition.num_outputs)]
    assert [(t.name, tuple(t.shape)) for t in outs] == [("output", (-1, 4 + model.model[-1].nc + 32, 8400)),
                                                        ("proto", (-1, 32, 160, 160))]
    head = len(model.model) - 1
    layers = {net.definition.get_layer(i).name: net.definition.get_layer(i) for i in range(net.definition.num_layers)}
    assert layers[f"model.{head}.proto.upsample"].type == net.trt.LayerType.DECONVOLUTION
    assert model.model[-1].proto.cv1.conv.out_channels == int(sd[f"model.{head}.proto.cv1.conv.weight"].shape[0])


def test_segment_mask_count_disagreeing_with_weights_is_named(models, tmp_path):
    _, sd = models("yolov8n-seg")
    text = (Path(__file__).resolve().parents[1] / "netdef" / "architectures" / "yolov8-seg.yaml").read_text("utf-8")
    (tmp_path / "yolov8-seg16.yaml").write_text(text.replace("Segment, [nc, 32, 256]", "Segment, [nc, 16, 256]"),
                                                "utf-8")
    with pytest.raises(NetdefError, match=r"nm=16 mask coefficients, but the weights' 'model\.22\.cv4\.0\.2\.bias' "
                                          r"has 32"):
        define(str(tmp_path / "yolov8n-seg16.yaml"), sd)


@pytest.mark.parametrize("name", ["yolo26n", "yolo26m"])
def test_yolo26_consumes_reference_state_dict(name, models):
    """YOLO26: the default end-to-end head builds the one-to-one branches and skips exactly the one-to-many keys
    (named, with a reason); head=one2many the other way round. Outputs (B, 300, 6) and (B, 4 + nc, N)."""
    model, sd = models(name, keep=name.endswith("n"))
    head = len(model.model) - 1
    one2many = {k for k in sd if k.startswith((f"model.{head}.cv2.", f"model.{head}.cv3."))}
    one2one = {k for k in sd if k.startswith(f"model.{head}.one2one_")}
    assert one2many and one2one
    for params, skipped, shape in (({}, one2many, (-1, 300, 6)), ({"head": "one2many"}, one2one, (-1, 84, 8400))):
        net = define(name, sd, params=params)
        assert net.key_report() == ({}, []) and set(net.skipped) == skipped
        assert tuple(net.definition.get_output(0).shape) == shape
        names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
        built = f"model.{head}.{'cv2' if params else 'one2one_cv2'}.0.2"
        assert built in names and not any(n.startswith(f"model.{head}.dfl") for n in names)  # reg_max 1: no DFL
    # SPPF [c2, k, n, shortcut]: cv1 without activation, the input added back
    assert "model.9/add" in names and not any(n.startswith("model.9.cv1.conv/") for n in names)
    assert isinstance(model.model[9].cv1.act, __import__("torch").nn.Identity) and model.model[9].add


def test_classic_sppf_keeps_its_activation(models):
    """A [c2, k] SPPF row (YOLOv5/v8/11) builds as before: SiLU after cv1, no shortcut."""
    _, sd = models("yolov8n")
    net = define("yolov8n", sd)
    names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
    assert "model.9.cv1.conv/silu" in names and "model.9/add" not in names


def test_yolo26_max_det_and_heads_are_checked(models):
    _, sd = models("yolo26n")
    assert tuple(define("yolo26n", sd, params={"max_det": 100}).definition.get_output(0).shape) == (-1, 100, 6)
    with pytest.raises(NetdefError, match=r"model\.23: max_det must be an integer from 1 to 3840"):
        define("yolo26n", sd, params={"max_det": 5000})
    with pytest.raises(NetdefError, match=r"model\.23: head=plugin is not available"):
        define("yolo26n", sd, params={"head": "plugin"})
    without = {k: v for k, v in sd.items() if ".one2one_" not in k}
    with pytest.raises(NetdefError, match=r"needs the weights' one-to-one branch 'model\.23\.one2one_cv2\.\*'"):
        define("yolo26n", without)
    _, sd8 = models("yolov8n")
    with pytest.raises(NetdefError, match=r"model\.22: head=one2many selects the one-to-many branch of an end-to-end"):
        define("yolov8n", sd8, params={"head": "one2many"})


def test_pose_keypoint_shape_comes_from_the_weights_or_set(models):
    """A pose model trained with another kpt_shape needs no copied YAML: the weights' keypoint outputs give the
    shape where only one fits (15: 5 x 3, 8: 4 x 2); where two do (18: 6 x 3 or 9 x 2) --set kpt_shape picks it,
    and a --set the weights disagree with is refused naming the key."""
    _, sd = models("yolov8n-pose")

    def keypoints(n: int, d: int) -> dict:  # a model trained with kpt_shape [n, d]
        return ref.reference_model("yolov8n-pose", kpt_shape=(n, d))[1]

    def recorded(weights: dict, **params) -> list:
        return define("yolov8n-pose", weights, params=params).model["kpt_shape"]

    six_by_three = keypoints(6, 3)
    assert recorded(sd) == [17, 3] and recorded(keypoints(5, 3)) == [5, 3] and recorded(keypoints(4, 2)) == [4, 2]
    assert recorded(six_by_three, kpt_shape="6,3") == [6, 3] and recorded(keypoints(9, 2), kpt_shape="9x2") == [9, 2]
    assert recorded(six_by_three, kpt_shape=[6, 3]) == recorded(six_by_three, kpt_shape="[6, 3]") == [6, 3]
    with pytest.raises(NetdefError, match=r"'model\.22\.cv4\.0\.2\.bias' has 18 keypoint outputs \(6,3 or 9,2\).*"
                                          r"--set kpt_shape=KEYPOINTS,DIMS"):
        define("yolov8n-pose", six_by_three)
    with pytest.raises(NetdefError, match=r"--set kpt_shape=5,3 needs 15 keypoint outputs, the weights' "
                                          r"'model\.22\.cv4\.0\.2\.bias' has 51"):
        define("yolov8n-pose", sd, params={"kpt_shape": "5,3"})
    with pytest.raises(NetdefError, match=r"--set kpt_shape='5,4': expected keypoints,dims such as 5,3"):
        define("yolov8n-pose", sd, params={"kpt_shape": "5,4"})


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolo11n-cls", "yolov8n-pose", "yolo11n-seg", "yolo26n",
                                  "yolo26n-seg", "yolo26n-pose"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_small_models_build(name, precision, wts, tmp_path):
    res = build_engine(name, wts(name), tmp_path / f"{name}.engine",
                       BuildOptions(precision=precision, batch=(1, 2, 4), opt_level=0), log=lambda m: None)
    assert res.built and [o["name"] for o in res.meta["outputs"]] == (["output", "proto"] if name.endswith("-seg")
                                                                      else ["output"])


def test_class_count_from_the_weights():
    """nc=3 weights with the nc: 80 YAML: the weights' count (no copied YAML); `--set nc` must agree with them, and
    its error suggests no custom depth and width (the weights fit the scale)."""
    _, sd = ref.reference_model("yolov8n", nc=3)
    assert tuple(define("yolov8n", sd).definition.get_output(0).shape) == (-1, 7, 8400)
    assert tuple(define("yolov8n", sd, params={"nc": 3}).definition.get_output(0).shape) == (-1, 7, 8400)
    with pytest.raises(NetdefError, match=r"model\.22: --set nc=80, but the weights were trained with nc=3") as e:
        define("yolov8n", sd, params={"nc": 80})
    assert "custom depth and width" not in str(e.value)  # the weights fit yolov8n: only the --set value is wrong


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["yolov8s", "yolo11s", "yolov8s-cls", "yolo11s-cls", "yolov8s-pose", "yolo11s-pose",
                                  "yolov8n-p2", "yolov8n-p6", "yolov8n-ghost"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_ultralytics(name, precision, models, wts, tmp_path):
    """Raw (B, 4 + nc, N) output vs Ultralytics' fp32 model(x)[0] (TF32 off); fp16 on the tamed model."""
    import torch

    from netdef.runtime import Engine
    from netdef.tools.verify import cosine, max_rel_error, torch_reference

    tame = precision == "fp16"
    model, _ = models(name, tame=tame)
    opts = BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False)
    res = build_engine(name, wts(name, tame), tmp_path / f"{name}.engine", opts)
    size = 224 if name.endswith("-cls") else 640
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    reference = torch_reference(model, x)
    model.cpu()
    torch.cuda.empty_cache()
    out = Engine(res.path).infer(x, as_numpy=True)["output"]
    assert out.shape == reference.shape
    err = max_rel_error(out, reference)
    boxes = 0 if name.endswith("-cls") else 4
    box_err = max_rel_error(out[:, :boxes], reference[:, :boxes]) if boxes else 0.0
    nc = reference.shape[1] if not boxes else model.model[-1].nc  # pose: keypoints (pixels) follow the scores
    score_err = float(np.abs(out[:, boxes:boxes + nc] - reference[:, boxes:boxes + nc]).max())
    print(f"RESULT {name} {size}x{size} {precision}{' tamed model' if tame else ''} (tf32 off) max-rel-err {err:.2e} "
          f"boxes {box_err:.2e} scores max-abs-err {score_err:.2e} cosine {cosine(out, reference):.8f} "
          f"build {res.meta['build_seconds']} s")
    assert err <= GPU_BOUND[precision]
    assert score_err <= 10 * GPU_BOUND[precision]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["yolov8s-seg", "yolo11s-seg"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_segment_engine_matches_ultralytics(name, precision, models, wts, tmp_path):
    """Both outputs vs Ultralytics' fp32 model(x)[0] = (output, proto) (TF32 off); fp16 on the tamed model."""
    import torch

    from netdef.runtime import Engine
    from netdef.tools.verify import cosine, max_rel_error

    tame = precision == "fp16"
    model, _ = models(name, tame=tame)
    res = build_engine(name, wts(name, tame), tmp_path / f"{name}.engine",
                       BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False))
    x = np.random.default_rng(0).random((2, 3, 640, 640), dtype=np.float32)
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            output, proto = (t.float().cpu().numpy() for t in model.cuda().eval()(torch.from_numpy(x).cuda())[0])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    model.cpu()
    torch.cuda.empty_cache()
    got = Engine(res.path).infer(x, as_numpy=True)
    for key, reference in (("output", output), ("proto", proto)):
        out = got[key]
        assert out.shape == reference.shape
        err = max_rel_error(out, reference)
        print(f"RESULT {name} 640x640 {precision}{' tamed model' if tame else ''} (tf32 off) {key} max-rel-err "
              f"{err:.2e} cosine {cosine(out, reference):.8f} build {res.meta['build_seconds']} s")
        assert err <= GPU_BOUND[precision]


def check_topk(out: np.ndarray, candidates: np.ndarray, reference: np.ndarray, tol: float,
               nc: int | None = None) -> int:
    """Whether `out` (B, k, 6 + E) is a top-k of Ultralytics' `candidates` (B, N, 4 + nc + E: x1, y1, x2, y2, class
    scores, E mask coefficients or keypoints; its postprocess input) up to `tol` (relative to the boxes' range for
    boxes, and to the extras' for extras; absolute for scores): the sorted scores equal the reference's
    `reference` (B, k, 6 + E) (order statistics move no more than their inputs), and each row is a distinct
    (anchor, class) of the candidates with that box, score and extras. Ties may pick other rows than the reference
    does; this is what a correct top-k guarantees anyway. Returns the rows checked."""
    nc = candidates.shape[2] - 4 if nc is None else nc
    box_tol = tol * float(np.abs(candidates[..., :4]).max())
    extras = candidates[..., 4 + nc:]  # tolerances per column: keypoint x, y in pixels, visibility in [0, 1]
    extra_tol = tol * np.abs(extras).reshape(-1, extras.shape[-1]).max(axis=0) if extras.size else 0.0
    for b in range(len(out)):
        err = float(np.abs(np.sort(out[b, :, 4]) - np.sort(reference[b, :, 4])).max())
        assert err <= tol, f"image {b}: the sorted top-k scores differ by {err:.2e}"
        picked = set()
        for row in out[b]:
            c = int(row[5])
            assert row[5] == c and 0 <= c < nc, f"image {b}: class {row[5]}"
            near = np.abs(candidates[b, :, :4] - row[:4]).max(axis=1)
            ok = (near <= box_tol) & (np.abs(candidates[b, :, 4 + c] - row[4]) <= tol)
            assert ok.any(), f"image {b}: {row[:6].tolist()} is no (anchor, class) of the reference's candidates"
            anchor = int(np.argmin(np.where(ok, near, np.inf)))
            assert (anchor, c) not in picked, f"image {b}: anchor {anchor} class {c} picked twice"
            picked.add((anchor, c))
            err = np.abs(extras[b, anchor] - row[6:]) if extras.size else np.zeros(0)
            assert (err <= extra_tol).all(), f"image {b}: anchor {anchor}'s extra values differ by {err.max():.2e}"
    return out.shape[0] * out.shape[1]


@pytest.mark.gpu
@pytest.mark.parametrize("name, extra", [("yolo26s", 0), ("yolo26s-seg", 32), ("yolo26s-pose", 51)])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_yolo26_end_to_end_engine_matches_ultralytics(name, extra, precision, models, wts, tmp_path):
    """yolo26s (-seg, -pose) top-k rows vs Ultralytics' model(x)[0] with model.end2end = True (TF32 off; fp16 on
    the tamed model), compared as check_topk does (random weights give many nearly equal scores, whose order
    rounding decides), mask coefficients or keypoints included; the prototypes directly."""
    import torch

    from netdef.runtime import Engine
    from netdef.tools.verify import max_rel_error, tf32_off

    tame = precision == "fp16"
    model, _ = models(name, tame=tame)
    model.end2end = True
    head, captured = model.model[-1], []
    res = build_engine(name, wts(name, tame), tmp_path / f"{name}.engine",
                       BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False))
    x = np.random.default_rng(0).random((2, 3, 640, 640), dtype=np.float32)
    postprocess = head.postprocess
    head.postprocess = lambda preds: postprocess(captured.append(preds) or preds)  # keep its input: the candidates
    try:
        with tf32_off(), torch.no_grad():
            y = model.cuda().eval()(torch.from_numpy(x).cuda())[0]
        rows, proto = (y if isinstance(y, (tuple, list)) else (y, None))
        reference = rows.float().cpu().numpy()
        proto = None if proto is None else proto.float().cpu().numpy()
    finally:
        del head.postprocess
        model.cpu()
    got = Engine(res.path).infer(x, as_numpy=True)
    out = got["output"]
    assert out.shape == reference.shape == (2, 300, 6 + extra)
    nc = head.nc
    checked = check_topk(out, captured[0].float().cpu().numpy(), reference, GPU_BOUND[precision], nc)
    proto_err = "" if proto is None else f" proto max-rel-err {max_rel_error(got['proto'], proto):.2e}"
    print(f"RESULT {name} 640x640 {precision}{' tamed model' if tame else ''} (tf32 off) end-to-end top-300: "
          f"{checked} rows are distinct reference candidates (their {extra} extra values too), sorted scores within "
          f"{GPU_BOUND[precision]:.0e}{proto_err} build {res.meta['build_seconds']} s")
    if proto is not None:
        assert max_rel_error(got["proto"], proto) <= GPU_BOUND[precision]


@pytest.mark.parametrize("name", ["yolo26n", "yolo26n-pose"])
def test_check_topk_accepts_the_reference_and_refuses_a_wrong_pick(name, models):
    """The GPU test's checker on CPU: the reference's own output in another order passes; a duplicated row, a
    wrong class, a moved box or (pose) a moved keypoint fails."""
    import torch

    model, _ = models(name)
    head, captured = model.model[-1], []
    postprocess = head.postprocess
    head.postprocess = lambda preds: postprocess(captured.append(preds) or preds)
    try:
        with torch.no_grad():
            reference = model(torch.from_numpy(np.random.default_rng(0).random((1, 3, 640, 640),
                                                                                dtype=np.float32)))[0].numpy()
    finally:
        del head.postprocess
    candidates, nc = captured[0].numpy(), model.model[-1].nc
    assert check_topk(reference[:, ::-1], candidates, reference, 1e-4, nc) == 300
    for change in ("duplicate", "class", "box") + (("keypoint",) if name.endswith("-pose") else ()):
        bad = reference.copy()
        if change == "duplicate":
            bad[0, 1] = bad[0, 0]
        elif change == "class":
            bad[0, 0, 5] = (bad[0, 0, 5] + 1) % nc
        elif change == "box":
            bad[0, 0, :2] += 5.0
        else:
            bad[0, 0, 6:8] += 5.0
        with pytest.raises(AssertionError):
            check_topk(bad, candidates, reference, 1e-4, nc)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_yolo26_one2many_engine_matches_ultralytics(precision, models, wts, tmp_path):
    """--set head=one2many: raw (B, 4 + nc, N) vs Ultralytics' model(x)[0] with model.end2end = False."""
    from netdef.runtime import Engine
    from netdef.tools.verify import max_rel_error, torch_reference

    tame = precision == "fp16"
    model, _ = models("yolo26s", tame=tame)
    model.end2end = False
    try:
        reference = torch_reference(model, x := np.random.default_rng(0).random((2, 3, 640, 640), dtype=np.float32))
    finally:
        model.end2end = True
        model.cpu()
    res = build_engine("yolo26s", wts("yolo26s", tame), tmp_path / "yolo26s.engine",
                       BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False,
                                    params={"head": "one2many"}))
    out = Engine(res.path).infer(x, as_numpy=True)["output"]
    assert out.shape == reference.shape == (2, 84, 8400)
    err = max_rel_error(out, reference)
    print(f"RESULT yolo26s 640x640 {precision}{' tamed model' if tame else ''} (tf32 off) head=one2many "
          f"max-rel-err {err:.2e} build {res.meta['build_seconds']} s")
    assert err <= GPU_BOUND[precision]


@pytest.mark.parametrize("name, model, outputs", [
    ("yolo26n-seg", {"task": "end2end", "nm": 32}, [("output", [-1, 300, 38]), ("proto", [-1, 32, 80, 80])]),
    ("yolo26n-pose", {"task": "end2end", "kpt_shape": [17, 3]}, [("output", [-1, 300, 57])])])
def test_yolo26_seg_and_pose_engines_record_what_detect_reads(name, model, outputs, wts, tmp_path):
    """YOLO26-seg and -pose engines: the header's model carries nm or kpt_shape next to task end2end, the training-
    only keys (semseg, cv4_sigma, flow_model, the one-to-many branches) are accounted for, and `netdef detect`'s
    setup accepts the engine from its header (the GPU runs it)."""
    from netdef.runtime import Engine
    from netdef.tools.detect import engine_detector

    res = build_engine(name, wts(name), tmp_path / f"{name}.engine",
                       BuildOptions(batch=(1, 2, 2), opt_level=0, input_hw=(320, 320)), log=lambda m: None)
    assert {k: res.meta["model"][k] for k in model} == model
    assert [(o["name"], o["shape"]) for o in res.meta["outputs"]] == outputs
    engine_detector(Engine.described(res.path))


def test_a_workspace_too_small_for_the_build_is_named(wts, tmp_path):
    """TensorRT's "OutOfMemory" under a small --workspace read as the machine's memory: the command's error names
    the option (netdef's logger sees TensorRT's errors in its commands)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run([sys.executable, "-m", "netdef.cli", "build", "yolo11n", "-w", str(wts("yolo11n")), "-o",
                           str(out / "w.engine"), "--input-shape", "320x320", "--opt-level", "0", "--workspace", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "could not build yolo11n (its messages above say why): it asked for more " \
        "memory than --workspace 1 MiB allows; raise --workspace or leave it out" in done.stderr, done.stderr
    assert list(out.iterdir()) == []


def test_export_names_the_architecture_an_ultralytics_model_records(tmp_path):
    """`netdef export` of an Ultralytics model says which architecture to build (its YAML's file name and scale),
    or that netdef has none for it (an oriented-box model, or one of a family netdef does not name at all)."""
    from netdef.export import export_wts

    model, _ = ref.reference_model("yolo11n-seg")
    cls, _ = ref.reference_model("yolo26n-cls")
    logs: list[str] = []
    for yaml_file, said in (("yolo11-seg.yaml", "build it with `netdef build yolo11n-seg -w "),
                            ("yolo11n-seg.yaml", "build it with `netdef build yolo11n-seg -w "),
                            ("yolo26n-cls.yaml", "build it with `netdef build yolo11n-cls -w "),
                            ("yolo11n-seg5.yaml", "build it with `netdef build yolo11n-seg -w "),  # a renamed copy
                            ("yolo11n-obb.yaml", "netdef has no architecture 'yolo11n-obb'"),
                            ("yolov5n.yaml",
                             "netdef has no architecture 'yolov5n' (Ultralytics' anchor-free YOLOv5u)"),
                            ("yolov5nu.yaml",  # the name Ultralytics records for yolov5n.yaml
                             "netdef has no architecture 'yolov5nu' (Ultralytics' anchor-free YOLOv5u)"),
                            ("yolov9t.yaml", "netdef has no architecture 'yolov9t'"),
                            ("yolov8n-seg-p6.yaml", "netdef has no architecture 'yolov8n-seg-p6'"),
                            ("rtdetr-l.yaml", "netdef has no architecture 'rtdetr-l'")):
        made = cls if "-cls" in yaml_file else model  # the rows of a classifier (export compares them)
        made.yaml["yaml_file"] = yaml_file
        export_wts(made, tmp_path / "m.wts", log=logs.append)
        assert said in logs[-1], logs


def test_export_names_the_architecture_a_renamed_copy_of_an_ultralytics_yaml_builds(tmp_path):
    """A model made from a renamed copy of Ultralytics' YAML (my-yolo11n.yaml, yolo11n-helmet.yaml: nc edited) is
    named after netdef's architecture of the same rows and scale; a copy whose rows, scale or stated task differ
    is still one netdef has no architecture for."""
    from netdef.export import export_wts

    model, _ = ref.reference_model("yolo11n", nc=3)
    logs: list[str] = []
    for yaml_file, said in (("data/my-yolo11n.yaml", "build it with `netdef build yolo11n -w "),
                            ("yolo11n-helmet.yaml", "build it with `netdef build yolo11n -w "),
                            ("yolo11n-helmet-v2.yaml", "build it with `netdef build yolo11n -w "),
                            ("yolo11n-pose-helmet.yaml", "netdef has no architecture 'yolo11n-pose-helmet'"),
                            ("my-yolov8n.yaml", "netdef has no architecture 'my-yolov8n'")):  # yolo11's rows
        model.yaml["yaml_file"] = yaml_file
        export_wts(model, tmp_path / "m.wts", log=logs.append)
        assert said in logs[-1], logs
    model.yaml.update(yaml_file="my-yolo11n.yaml", scales={**model.yaml["scales"], "n": [0.33, 0.25, 1024]})
    export_wts(model, tmp_path / "m.wts", log=logs.append)
    assert "netdef has no architecture 'my-yolo11n'" in logs[-1], logs


def test_export_says_what_the_weights_of_an_ultralytics_model_do_not_tell(tmp_path):
    """The build command `netdef export` prints for an Ultralytics model carries a keypoint shape its weights leave
    open (18 outputs: 6 x 3 or 9 x 2) and the input size it was trained at where not the family's, and says where
    netdef's architecture of that name would not build the model: another number of input channels (a copy of the
    family file with that input does), an activation it lacks; another activation it builds is --set default_act."""
    from netdef.export import export_wts

    logs: list[str] = []
    for kpt, said in (((6, 3), "--set kpt_shape=6,3`"), ((5, 3), "-w " + str(tmp_path / "m.wts") + " -o m.engine`")):
        model, _ = ref.reference_model("yolo11n-pose", kpt_shape=kpt)
        model.yaml["yaml_file"] = "yolo11n-pose.yaml"  # as a model made from Ultralytics' file records it
        export_wts(model, tmp_path / "m.wts", log=logs.append)
        assert logs[-1].endswith(said), logs[-1]
    model, _ = ref.reference_model("yolov8n")
    model.yaml.update(yaml_file="yolov8n.yaml", channels=1)
    export_wts(model, tmp_path / "m.wts", log=logs.append)
    assert "its input has 1 channel(s), netdef's yolov8n (yolov8.yaml) 3: copy yolov8.yaml to yolov8n-1ch.yaml with " \
           "`input: {name: images, shape: [1, 640, 640]}`" in logs[-1]
    model.yaml["channels"] = 3
    for args, said in (({"imgsz": 320}, " --input-shape 320x320`"), ({"imgsz": [480, 640]}, " --input-shape 480x640`"),
                       ({"imgsz": 500}, " --input-shape 512x512`"),  # rounded up to the stride, as check_imgsz
                       ({"imgsz": 640}, "m.wts -o m.engine`")):  # trained at; Ultralytics' own export takes that size
        model.args = args
        export_wts(model, tmp_path / "m.wts", log=logs.append)
        assert logs[-1].endswith(said), logs[-1]
    # an activation other than SiLU is the build parameter default_act (it said netdef had no architecture for it)
    for act, said in (("nn.ReLU()", "m.wts -o m.engine --set default_act=relu`"),
                      ("nn.LeakyReLU(0.1)", " --set default_act=leaky:0.1`"),
                      ("nn.Mish()", "its YAML sets `activation: nn.Mish()`, an activation netdef's Conv does not build "
                                    "(relu, leaky:SLOPE, ...: `netdef blocks`): netdef has no architecture for it")):
        model.yaml["activation"] = act
        export_wts(model, tmp_path / "m.wts", log=logs.append)
        assert logs[-1].endswith(said), logs[-1]


def test_nms_iou_defaults_follow_the_family(wts, tmp_path):
    """`netdef detect` and the plugin head default to Ultralytics' predictor IoU (0.7) for YOLOv8/YOLO11 and to
    YOLOv5 detect.py's (0.45) for YOLOv5; a given threshold wins."""
    from netdef import defaults
    from netdef.blocks.yolo import nms_params
    from netdef.runtime import Engine
    from netdef.tools.detect import engine_detector

    res = build_engine("yolov8n", wts("yolov8n"), tmp_path / "v8.engine",
                       BuildOptions(batch=(1, 1, 1), opt_level=0, input_hw=(320, 320)), log=lambda m: None)
    assert engine_detector(Engine.described(res.path)).iou == defaults.IOU_THRES_ANCHOR_FREE == 0.7
    assert engine_detector(Engine.described(res.path), iou=0.5).iou == 0.5

    class Params:
        def __init__(self, iou):
            self.values = {"conf_thres": 0.25, "iou_thres": iou, "max_det": 100}

        def param(self, k):
            return self.values[k]
    assert nms_params(Params(None), anchor_free=True)["iou_thres"] == 0.7
    assert nms_params(Params(None))["iou_thres"] == defaults.IOU_THRES == 0.45
    assert nms_params(Params(0.6), anchor_free=True)["iou_thres"] == 0.6


def test_weights_of_another_scale_name_it(models):
    """yolo11s weights built as yolo11n: the size error says which scale of the family they fit; YOLOv8 weights
    built as YOLO11 (or yolo11n ones as yolov8s), which family member of another family, not a custom scale."""
    _, sd = models("yolo11s")
    with pytest.raises(NetdefError, match=r"'model\.0\.conv\.weight' has 864 values(?s:.*)These weights fit yolo11s: "
                                          r"build that architecture"):
        define("yolo11n", sd)
    for arch, weights, fit in [("yolo11n", "yolov8n", "yolov8n"), ("yolov8s", "yolo11n", "yolo11n")]:
        with pytest.raises(NetdefError, match=rf"These weights fit {fit}: build that architecture$") as e:
            define(arch, models(weights)[1])
        assert "custom depth and width" not in str(e.value)


def test_weights_without_a_yolo_first_row_try_no_family_member(models, monkeypatch):
    """A ResNet's weights, or a YOLO's under a wrapper's prefix ('model.model.0.'), fit no YOLO: trying each of the
    ~95 members took 8 to 13 s before the key error; none is tried."""
    from netdef import define as define_module

    tried = []
    monkeypatch.setattr(define_module, "_fits", lambda spec, *a: tried.append(spec.name))
    sd = models("yolov8n")[1]
    for weights in ({"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)}, {f"model.{k}": v for k, v in sd.items()}):
        with pytest.raises(NetdefError):
            define("yolo11n", weights)
    assert tried == []
    with pytest.raises(NetdefError):
        define("yolo11n", sd)
    assert "yolov8n" in tried


def test_a_missing_dfl_key_is_built_from_its_fixed_values_and_said(models, tmp_path):
    """Some exporters drop DFL's 1x1 conv (Ultralytics sets it to arange(reg_max) and never trains it): the build
    used to refuse it with a custom-scale hint (`c gd gw`). Now the network gets those values, the log and
    `netdef show` say so, and the engine's network still computes what Ultralytics' model does (verify --cpu)."""
    from netdef.tools.show import show
    from netdef.verify import verify

    model, sd = models("yolov8n")
    key = "model.22.dfl.conv.weight"
    assert np.array_equal(np.asarray(sd[key]).reshape(-1), np.arange(16))
    lacking = {k: v for k, v in sd.items() if k != key}
    said: list[str] = []
    net = define_network("yolov8n", lacking, BuildOptions(), log=said.append)
    assert net.key_report() == ({}, []) and list(net.supplied) == [key] and key not in net.used
    assert [m for m in said if key in m] == [
        f"[netdef] note: {key} is not in in-memory weights; built with DFL's fixed bin values 0..15: Ultralytics sets "
        "this 1x1 conv to arange(reg_max) and never trains it; some exporters leave it out"]
    assert not define("yolov8n", sd).supplied  # present: read from the file as before
    wts = tmp_path / "no_dfl.wts"
    write_wts(wts, lacking)
    text = show("yolov8n", wts).format()
    assert f"{key} [1, 16, 1, 1]  SUPPLIED (not in the weights)" in text
    assert f"supplied: 1 fixed key(s) not in {wts}, built from known values:\n  {key}   (DFL's fixed bin" in text
    assert f"keys: every key the architecture asks for but the 1 supplied above is in {wts}" in text
    report = verify("yolov8n", str(wts), model, cpu=True, opts=BuildOptions(input_hw=(64, 96)), log=lambda m: None)
    assert report.ok, report.summary()


@pytest.mark.parametrize("arch, kind", [("yolo11n", "DetectionModel"), ("yolov8n-seg", "SegmentationModel"),
                                        ("yolo11n-pose", "PoseModel")])
def test_dfl_bins_come_from_the_weights(arch, kind):
    """A model trained from a YAML with Ultralytics' `reg_max: 8` key: netdef's family file builds it with the
    weights' DFL bins (box outputs / 4), as it takes their class count. It was refused with 'set `reg_max:` in the
    YAML', a top-level key netdef's YAML refuses where no row names it. The network computes what Ultralytics'
    model does (verify --cpu)."""
    import yaml

    from netdef.verify import verify

    family, scale, task = ref.NAME.match(arch).groups()
    cfg = yaml.safe_load(ref.cfg_text(f"{family}{task or ''}"))
    cfg.update(scale=scale, reg_max=8, nc=3)
    model, sd = ref.model_from_cfg(cfg, kind)
    assert model.model[-1].reg_max == 8
    net = define_network(arch, sd, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert net.key_report() == ({}, [])
    report = verify(arch, sd, model, cpu=True, opts=BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert report.ok, report.summary()


@pytest.mark.parametrize("name", ["yolo26n", "yolo26n-seg", "yolo26n-pose"])
def test_ultralytics_own_yolo26_yaml_builds_as_it_is(name, models, tmp_path):
    """Ultralytics' yolo26*.yaml give the head its reg_max and end2end through top-level keys (parse_model passes them
    to Detect, Segment26, Pose26): a copy of it (the YAML of a model trained from it, as export's hint says to copy)
    was refused with "'end2end': unknown top-level key". Its head row now takes them, and the network it defines
    reads the model's weights as netdef's own yolo26 file does and computes what the model does (verify --cpu)."""
    from netdef.spec import load_spec
    from netdef.verify import verify

    family, scale, task = ref.NAME.match(name).groups()
    mine = tmp_path / f"mine-{name}.yaml"
    mine.write_text(ref.cfg_text(f"{family}{task or ''}"))
    head = load_spec(mine).rows[-1]
    assert (head.kwargs["reg_max"], head.kwargs["end2end"]) == (1, True)
    model, sd = models(name)
    opts = BuildOptions(input_hw=(64, 64))
    net = define_network(mine, sd, opts, log=lambda m: None)
    ours = define_network(name, sd, opts, log=lambda m: None)
    assert net.key_report() == ({}, []) and set(net.skipped) == set(ours.skipped)
    report = verify(mine, sd, model, cpu=True, opts=BuildOptions(input_hw=(64, 64), params={"head": "one2many"}),
                    log=lambda m: None)
    assert report.ok, report.summary()


def test_weights_of_another_task_name_it(models):
    """YOLO26 weights of one task built as another: the error names the modules that differ and the family member
    the weights fit; an oriented-box model's (yolo26n-obb) extra branch is named as one netdef has no head for."""
    _, seg = models("yolo26n-seg")
    with pytest.raises(NetdefError, match=r"(?s)These weights fit yolo26n-seg: build that architecture"):
        define("yolo26n-pose", seg)
    with pytest.raises(NetdefError, match=r"(?s)The missing keys are whole modules the file does not have: "
                                          r"model\.23\.one2one_cv4 \(36 keys: the extra branch of a YOLO26 "
                                          r"segmentation, pose or oriented-box head: a -seg or -pose model \(-obb "
                                          r"oriented boxes have no netdef architecture\)\), model\.23\.proto \(.*"
                                          r"These weights fit yolo26n: build"):
        define("yolo26n-seg", models("yolo26n")[1])
    det = models("yolo26n")[1]  # and the angle branches of an oriented-box head (yolo26n-obb): cv4, one2one_cv4
    angles = {k.replace("cv2.", "cv4.", 1): v for k, v in det.items() if re.match(r"model\.23\.(one2one_)?cv2", k)}
    obb = {**det, **angles}
    with pytest.raises(NetdefError, match=r"The unused keys are whole modules this architecture does not have: "
                                          r"model\.23\.one2one_cv4 \(\d+ keys: the extra branch of a YOLO26 "
                                          r"segmentation, pose or oriented-box head: a -seg or -pose model \(-obb "):
        define("yolo26n", obb)


def test_class_names_travel_from_the_checkpoint_to_detect(tmp_path, capsys):
    """An Ultralytics checkpoint with its own class names: `netdef export` writes them beside the .wts (the .wts stays
    a tensorrtx file) and says so, `netdef build` records them in the engine header, `netdef detect` labels with
    them unless --names gives others; a names count other than the model's class count is an error naming both
    files; names an earlier export left for other weights are not recorded; a file of the user's is kept."""
    import json

    import torch

    from netdef.cli import main
    from netdef.export import export_wts
    from netdef.fileio import file_sha256
    from netdef.runtime import Engine
    from netdef.tools.detect import engine_detector
    from netdef.wts import read_wts

    model, sd = ref.reference_model("yolov8n", nc=3)
    model.names = {0: "cat", 1: "dog", 2: "fox"}
    torch.save({"model": model, "ema": None}, tmp_path / "ck.pt")
    wts, eng = tmp_path / "y.wts", tmp_path / "y.engine"
    assert main(["export", str(tmp_path / "ck.pt"), "-o", str(wts)]) == 0
    assert f"wrote its 3 class names (cat, dog, fox) to {wts}.names.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "y.wts.names.json").read_text()) == {
        "format": 1, "weights": "y.wts", "weights_sha256": file_sha256(wts), "names": ["cat", "dog", "fox"]}
    assert set(read_wts(wts)) == set(sd)  # the .wts itself is the same tensorrtx file

    build = ["build", "yolov8n", "-w", str(wts), "--input-shape", "64x64", "--opt-level", "0"]
    assert main([*build, "-o", str(eng)]) == 0
    assert Engine.described(eng).meta["names"] == ["cat", "dog", "fox"]
    detector = engine_detector(Engine.described(eng))
    assert detector.names == ["cat", "dog", "fox"] and detector.class_name(2) == "fox"
    assert engine_detector(Engine.described(eng), names=["a", "b", "c"]).names == ["a", "b", "c"]

    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "three.txt").write_text("x\ny\nz\n")
    capsys.readouterr()
    assert main([*build, "-o", str(tmp_path / "n.engine"), "--names", str(tmp_path / "two.txt")]) == 1
    assert f"{tmp_path / 'two.txt'}: 2 class names, but {wts} holds a model of 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "n.engine").exists()
    assert main([*build, "-o", str(tmp_path / "n.engine"), "--names", str(tmp_path / "three.txt")]) == 0
    assert Engine.described(tmp_path / "n.engine").meta["names"] == ["x", "y", "z"]  # --names overrides

    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    capsys.readouterr()
    assert main(["detect", str(eng), str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out"),
                 "--names", str(tmp_path / "two.txt")]) == 1  # refused before any GPU work
    assert f"{tmp_path / 'two.txt'}: 2 class names, but {eng} holds a model of 3 classes" in capsys.readouterr().err

    names_file = tmp_path / "y.wts.names.json"
    written = names_file.read_text()
    export_wts(ref.reference_model("yolov8n", nc=3, seed=1)[1], wts)  # other weights, no names: theirs go
    assert not names_file.exists()
    names_file.write_text(written)  # as if the .wts had been replaced by other means: the names are not theirs
    logs: list[str] = []
    res = build_engine("yolov8n", wts, eng, BuildOptions(input_hw=(64, 64), opt_level=0), log=logs.append)
    assert res.built and "names" not in res.meta
    assert any("y.wts.names.json holds the class names of other weights (an earlier export to y.wts)" in m
               for m in logs), logs
    import shutil

    shutil.copyfile(wts, tmp_path / "other.wts")
    (tmp_path / "other.wts.names.json").write_text(written)  # copied beside other weights: the origin it records
    build_engine("yolov8n", tmp_path / "other.wts", tmp_path / "o.engine", BuildOptions(input_hw=(64, 64),
                 opt_level=0), log=logs.append)
    assert any("other.wts.names.json holds the class names of other weights (an earlier export to y.wts)" in m
               for m in logs), logs

    mine = tmp_path / "u.wts.names.json"
    mine.write_text("cat\ndog\nfox\n")
    assert main(["export", str(tmp_path / "ck.pt"), "-o", str(tmp_path / "u.wts")]) == 1
    assert "the class names file" in capsys.readouterr().err
    assert mine.read_text() == "cat\ndog\nfox\n" and not (tmp_path / "u.wts").exists()


def test_export_says_why_netdef_has_no_architecture_for_an_ultralytics_variant(tmp_path):
    """An Ultralytics variant netdef has no file for: a head netdef knowingly does not build (OBB) is named with its
    row and the reason; rows that are all netdef blocks (yolov8-seg-p6) get the YAML to copy and the commands; blocks
    netdef lacks (YOLOv9's) are named with their rows."""
    import os

    import torch
    import yaml

    from netdef.export import export_wts
    from netdef.fileio import shown_path

    tasks = ref.import_tasks()
    root = os.path.join(os.path.dirname(tasks.__file__), "..", "cfg", "models", "v8")
    shipped = shown_path(os.path.normpath(os.path.join(root, "yolov8-seg-p6.yaml")))  # where the YAML to copy is
    logs: list[str] = []
    for file, cls, said in (
            ("yolov8-obb.yaml", "OBBModel", "netdef has no architecture 'yolov8n-obb': its row 22 is OBB, which "
                                            "netdef does not build (Ultralytics' oriented-box head"),
            ("yolov8-seg-p6.yaml", "SegmentationModel",
             "netdef has no architecture 'yolov8n-seg-p6'; its rows are all netdef blocks: copy Ultralytics' YAML "
             f"of it ({shipped}) to yolov8n-seg-p6.yaml (the scale letter in the name picks the scale; input 'images' "
             "at 640x640 "
             "unless its `input:` says otherwise), check it with `netdef verify yolov8n-seg-p6.yaml -w "),
            ("../v9/yolov9t.yaml", "DetectionModel",  # YOLOv9's blocks: each named with its rows
             "netdef has no architecture 'yolov9t'; its rows use blocks netdef does not have: ELAN1 (row 2), "
             "AConv (rows 3, 5, 7, 16, 19), RepNCSPELAN4 (rows 4, 6, 8, 12, 15, 18, 21): write each "
             "as a @netdef.registry.block function")):
        with open(os.path.join(root, file), encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
        cfg.update(scale="n", yaml_file=file.replace("yolov8", "yolov8n"))
        model = getattr(tasks, cls)(cfg, verbose=False)
        export_wts(model, tmp_path / "m.wts", log=logs.append)
        assert said in logs[-1], logs
        if cls == "SegmentationModel":  # from a checkpoint file: its path in the verify command, not CHECKPOINT
            torch.save({"model": model}, tmp_path / "seg.pt")
            seg = model
    export_wts(str(tmp_path / "seg.pt"), tmp_path / "m.wts", log=logs.append)
    assert f"--model {tmp_path / 'seg.pt'} --cpu`" in logs[-1], logs
    # trained at 960: the size in both commands (a copied YAML builds 640 otherwise, and verify passes at 640)
    seg.args = {"imgsz": 960}
    torch.save({"model": seg}, tmp_path / "seg960.pt")
    export_wts(str(tmp_path / "seg960.pt"), tmp_path / "m.wts", log=logs.append)
    assert "unless its `input:` says otherwise; trained at 960x960), check it with" in logs[-1], logs
    assert "--cpu --input-shape 960x960` and build it with `netdef build yolov8n-seg-p6.yaml -w " in logs[-1]
    assert logs[-1].endswith("-o m.engine --input-shape 960x960`")
    # YOLOv9's blocks written as one's own (loaded: --blocks, NETDEF_BLOCKS): the YAML to copy and the commands,
    # with --blocks naming their file
    from netdef.registry import BLOCKS, block

    added = [n for n in ("ELAN1", "AConv", "RepNCSPELAN4", "SPPELAN") if n not in BLOCKS]
    for name in added:
        block(name)(lambda net, x, prefix, *args: x)
    try:
        cfg = yaml.safe_load(open(os.path.join(root, "../v9/yolov9t.yaml"), encoding="utf-8"))
        cfg.update(scale="t", yaml_file="yolov9t.yaml")
        export_wts(tasks.DetectionModel(cfg, verbose=False), tmp_path / "m.wts", log=logs.append)
    finally:
        for name in added:
            BLOCKS.pop(name, None)
    here = os.path.relpath(__file__) if not os.path.relpath(__file__).startswith("..") else __file__
    v9 = shown_path(os.path.normpath(os.path.join(root, "../v9/yolov9t.yaml")))
    assert f"; its rows are all netdef blocks and your own: copy Ultralytics' YAML of it ({v9}) to yolov9t.yaml" \
        in logs[-1]
    assert logs[-1].endswith(f"-o m.engine --blocks {here}`"), logs[-1]


def test_a_yaml_row_of_a_block_netdef_knowingly_lacks_says_why(tmp_path):
    """Ultralytics' OBB and RT-DETR rows: the error names the block, the row and file line, and why netdef has no
    such block, instead of listing every known block."""
    from netdef.spec import load_spec

    text = (Path(__file__).resolve().parents[1] / "netdef" / "architectures" / "yolov8.yaml").read_text("utf-8")
    for block, why in (("OBB", "Ultralytics' oriented-box head"), ("RTDETRDecoder", r"RT-DETR \(yolov8-rtdetr")):
        (tmp_path / "yolov8-x.yaml").write_text(text.replace("Detect, [nc]]", f"{block}, [nc, 1]]"), "utf-8")
        with pytest.raises(NetdefError, match=rf"yolov8-x\.yaml:43: row 22: block '{block}' is not built by netdef: "
                                              rf"{why}") as e:
            load_spec(str(tmp_path / "yolov8n-x.yaml"))
        assert "known blocks" not in str(e.value)


def test_export_of_a_fused_ultralytics_model_says_so_instead_of_a_build_command(tmp_path):
    """A checkpoint saved after fuse() (BatchNorm folded into conv biases) got `build it with ...`, and the build
    then failed on the missing BatchNorm keys: export says it at once."""
    from netdef.export import export_wts

    model, _ = ref.reference_model("yolov8n")
    model.yaml["yaml_file"] = "yolov8n.yaml"
    logs: list[str] = []
    export_wts(model.fuse(verbose=False), tmp_path / "m.wts", log=logs.append)
    assert "an Ultralytics yolov8n model: its BatchNorm was fused into the convolutions (Ultralytics' fuse(), a " \
           "fused export: model.0.conv.bias), and netdef's yolov8n reads BatchNorm: export the checkpoint as " \
           "trained, before fusing" in logs[-1], logs


def test_cbam_and_its_attentions_match_ultralytics_modules():
    """Ultralytics ships CBAM, ChannelAttention and SpatialAttention (conv.py) for one's own YAML rows, unscaled
    channels as written: netdef builds them under those names and keys (the CPU evaluation equals the modules);
    a row whose channels are not its input's says what to write; SpatialAttention takes kernel 3 or 7 only."""
    import torch
    from ultralytics.nn.modules.conv import CBAM, ChannelAttention, SpatialAttention

    from netdef.errors import SpecError
    from netdef.testing.check_block import check_block

    torch.manual_seed(0)
    for name, module, args in (("CBAM", CBAM(16, 3), (16, 3)), ("CBAM", CBAM(16), ()),
                               ("ChannelAttention", ChannelAttention(16), (16,)),
                               ("SpatialAttention", SpatialAttention(7), ())):
        assert check_block(name, module.eval(), (2, 16, 12, 10), args=args, cpu=True) < 1e-12, name
    with pytest.raises(SpecError, match=r"m: the row gives 64 channels, its input has 16 \(Ultralytics builds this "
                                        r"block with the number as written, not scaled by width_multiple\): write 16"):
        check_block("CBAM", CBAM(16).eval(), (2, 16, 12, 10), args=(64,), cpu=True)
    with pytest.raises(SpecError, match=r"SpatialAttention kernel_size 5: 3 or 7"):
        check_block("SpatialAttention", SpatialAttention(7).eval(), (2, 16, 12, 10), args=(5,), cpu=True)
