"""The decode/NMS plugin on the anchor-free YOLOv8/YOLO11 heads (`--set head=plugin`, layout 1) and YOLOv5-seg.

CPU: the plugin's fields are checked; a prediction of the wrong shape is named; TensorRT-RTX (no plugin layers)
says so; with the plugin layer stood in for by ordinary layers of the same output shapes (TensorRT-RTX cannot add
plugin layers), the Detect, Segment and Pose networks give exactly the outputs of the head=plugin contract, named
after the head, with every weight key used; the compiled library, loaded by a host program with a stand-in
libnvinfer, creates, serializes and deserializes both layouts (format 1 of older engines included).
GPU (`-m gpu`): the plugin alone equals Ultralytics' non_max_suppression on the same prediction (fp32 and fp16
inputs); yolov8n, yolo11n-seg and yolov8n-pose head=plugin engines equal Ultralytics' model + NMS; yolov5n-seg
head=plugin equals YOLOv5's model + NMS. Prints RESULT lines.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from netdef import trt_api
from netdef.build import BuildOptions
from netdef.define import define_network
from netdef.errors import NetdefError, TensorRTUnavailable
from netdef.plugins import compile as pc
from netdef.plugins import yolo as plugin
from netdef.plugins.compile import PluginLibrary
from netdef.testing import ultralytics_reference as ref

from test_plugins import trt86_headers

needs_ultralytics = pytest.mark.skipif(not ref.ultralytics_available(),
                                       reason="needs the reference: pip install --no-deps ultralytics==8.4.190")
HW = (320, 320)
N = 2100  # candidates at 320x320: 40*40 + 20*20 + 10*10
# name: (head row, extra channels, output -> shape with B = -1, K = max_det = 100)
HEADS = {
    "yolov8n": (22, 0, {}),
    "yolo11n-seg": (23, 32, {"mask_coefs": (-1, 100, 32), "protos": (-1, 32, 80, 80)}),
    "yolov8n-pose": (22, 51, {"keypoints": (-1, 100, 17, 3)}),
}
DETECTIONS = {"num_dets": ((-1, 1), "INT32"), "boxes": ((-1, 100, 4), "FLOAT"), "scores": ((-1, 100), "FLOAT"),
              "classes": ((-1, 100), "INT32")}


# ---------------------------------------------------------------- CPU

def test_decoded_fields_are_checked():
    f = plugin.decoded_fields(80, 32, 0.25, 0.45, 300, 30000)
    assert f["layout"].tolist() == [plugin.LAYOUT_DECODED] and f["extra"].tolist() == [32] and f["nc"].tolist() == [80]
    assert f["conf_thres"].dtype == np.float32 and f["max_det"].dtype == np.int32
    assert not {"na", "nl", "strides", "anchors"} & set(f)  # layout 1 has no anchors
    with pytest.raises(NetdefError, match=r"bad nc=0; extra=-1 \(>= 0\); topk=40000 \(1\.\.32768\)"):
        plugin.decoded_fields(0, -1, 0.25, 0.45, 300, 40000)
    with pytest.raises(NetdefError, match=r"conf_thres=1\.0 .*max_det=0"):
        plugin.decoded_fields(80, 0, 1.0, 0.45, 0, 300)
    anchors = np.ones((3, 3, 2), np.float32)
    v5 = plugin.plugin_fields(anchors, [8, 16, 32], 80, 0.25, 0.45, 300, 30000, extra=32)
    assert v5["layout"].tolist() == [plugin.LAYOUT_ANCHORS] and v5["extra"].tolist() == [32]
    with pytest.raises(NetdefError, match=r"2 strides for 3 levels; extra=-2 "):
        plugin.plugin_fields(anchors, [8, 16], 80, 0.25, 0.45, 300, 30000, extra=-2)


def test_prediction_of_the_wrong_shape_is_named():
    from netdef.network import Network

    net = Network({})
    pred = net.definition.add_input("pred", net.trt.float32, (-1, 84, N))
    with pytest.raises(NetdefError, match=r"model\.22: the prediction has shape \(-1, 84, 2100\); the plugin needs "
                                          r"\(B, 116, N\) = \(B, 4\+nc\+extra, N\) with nc=80, extra=32"):
        plugin.add_anchor_free_nms(net, pred, 80, "model.22", extra=32)
    maps = [net.definition.add_input("p3", net.trt.float32, (-1, 255, 40, 40))]
    with pytest.raises(NetdefError, match=r"feature map 0 has shape \(-1, 255, 40, 40\); the plugin needs "
                                          r"\(B, 351, H, W\)"):
        plugin.add_yolo_decode_nms(net, maps, np.ones((1, 3, 2)), [8], 80, "model.24", extra=32)


@needs_ultralytics
def test_tensorrt_rtx_says_no_plugins_for_anchor_free_heads():
    if trt_api.info().plugins:
        pytest.skip("this TensorRT has plugin layers")
    _, sd = ref.reference_model("yolov8n")
    with pytest.raises(TensorRTUnavailable, match=r"yolov8\.yaml:\d+: row 22 \(Detect\): .*no plugin layers.*"
                                                  r"without that setting the head is plain layers \(head=decode\)"):
        define_network("yolov8n", sd, BuildOptions(params={"head": "plugin"}), log=lambda m: None)


def stand_in_plugin(monkeypatch) -> list[tuple]:
    """Replace the plugin layer by ordinary layers with its outputs' shapes and types (a max over the input, plus
    zeros of the output shape), so networks with head=plugin can be defined where TensorRT has no plugin layers.
    Returns the list of (layer name, input shapes, fields) each call appends to."""
    calls: list[tuple] = []

    def add(net, inputs, fields, name):
        calls.append((name, [tuple(t.shape) for t in inputs], {k: v.tolist() for k, v in fields.items()}))
        x = inputs[0]
        k, extra = int(fields["max_det"][0]), int(fields["extra"][0])
        top = net.reduce(x, f"{name}/stand_in", "max", dims=list(range(1, len(x.shape))), keepdim=True)
        top = net.shuffle(top, f"{name}/stand_in/reshape", reshape=(0, 1, 1))  # (B, 1, 1)
        flat = net.shuffle(top, f"{name}/stand_in/flat", reshape=(0, 1))  # (B, 1)

        def zeros(shape, like, n):
            return net.add(like, net.constant(np.zeros(shape, np.float32), f"{name}/stand_in/{n}"),
                           f"{name}/stand_in/{n}/add")

        outs = [net.cast(flat, np.int32, f"{name}/stand_in/num"), zeros((1, k, 4), top, "boxes"),
                zeros((1, k), flat, "scores"), net.cast(zeros((1, k), flat, "classes"), np.int32,
                                                        f"{name}/stand_in/classes/cast")]
        if extra:
            outs.append(zeros((1, k, extra), top, "extras"))
        lib = PluginLibrary(plugin.PLUGIN, Path("/stand-in/yolo_decode_nms.so"), "0" * 64, "8.6.0", "9.0")
        return outs, lib

    monkeypatch.setattr(plugin, "add_plugin_layer", add)
    return calls


def outputs_of(net) -> dict[str, tuple[tuple, str]]:
    d = net.definition
    return {t.name: (tuple(t.shape), t.dtype.name) for t in (d.get_output(i) for i in range(d.num_outputs))}


@needs_ultralytics
@pytest.mark.parametrize("name", list(HEADS))
def test_plugin_heads_give_the_contract_outputs(name, monkeypatch):
    """head=plugin: the plugin layer `model.<head>/decode_nms` on the decoded (B, 4 + nc + extra, N) prediction with
    the --set thresholds; outputs num_dets, boxes, scores, classes (+ mask_coefs and protos, + keypoints
    (B, K, 17, 3)); every weight key used; the plugin recorded with layout 1 and its extra channels."""
    calls = stand_in_plugin(monkeypatch)
    _, sd = ref.reference_model(name)
    row, extra, more = HEADS[name]
    params = {"head": "plugin", "conf_thres": 0.3, "iou_thres": 0.6, "max_det": 100}
    net = define_network(name, sd, BuildOptions(input_hw=HW, params=params), log=lambda m: None)
    assert net.key_report() == ({}, [])
    expected = {k: v for k, v in DETECTIONS.items()} | {k: (s, "FLOAT") for k, s in more.items()}
    assert outputs_of(net) == expected
    assert list(outputs_of(net)) == list(expected)  # the contract's order
    [(layer, inputs, fields)] = calls
    assert layer == f"model.{row}/decode_nms" and inputs == [(-1, 4 + (1 if "pose" in name else 80) + extra, N)]
    assert fields["layout"] == [1] and fields["extra"] == [extra] and fields["max_det"] == [100]
    assert fields["conf_thres"] == pytest.approx([0.3]) and fields["iou_thres"] == pytest.approx([0.6])
    [record] = net.plugins[0]["layers"]
    assert record["layer"] == layer and record["layout"] == 1 and record["extra"] == extra
    assert record["conf_thres"] == 0.3 and record["iou_thres"] == 0.6  # the shortest decimal, as given
    if "pose" in name:  # the keypoints' reshape is named after the head
        names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
        assert f"model.{row}/keypoints" in names


@needs_ultralytics
@pytest.mark.parametrize("name", list(HEADS))
def test_plugin_heads_build_with_a_dynamic_input_size(name, monkeypatch):
    """H, W chosen at run time: the prediction's positions N are -1 and the plugin (which reads N at enqueue and
    whose outputs do not depend on it) still ends the head, with the same outputs as the static build's."""
    calls = stand_in_plugin(monkeypatch)
    _, sd = ref.reference_model(name)
    opts = BuildOptions(input_range=((320, 320), (320, 320), (640, 640)), params={"head": "plugin", "max_det": 100})
    net = define_network(name, sd, opts, log=lambda m: None)
    [(_, inputs, fields)] = calls
    assert inputs[0][2] == -1 and fields["layout"] == [1]
    names = list(outputs_of(net))
    assert names[:4] == list(DETECTIONS) and all(outputs_of(net)[n][0][1:] == DETECTIONS[n][0][1:]
                                                 for n in DETECTIONS)


def test_yolov5_segment_plugin_head_gives_the_contract_outputs(monkeypatch):
    """YOLOv5-seg (anchor-based Segment) with head=plugin: the raw maps `model.24.m.i` (na x (5 + nc + 32)) into
    the plugin (layout 0, extra 32), outputs as the anchor-free Segment's."""
    from netdef.testing import yolov5_reference as yv5

    if not yv5.yolov5_available():
        pytest.skip("needs pip install --no-deps yolov5==7.0.14")
    from test_yolov5_tasks import reference

    calls = stand_in_plugin(monkeypatch)
    _, sd = reference("yolov5n-seg")
    net = define_network("yolov5n-seg", sd, BuildOptions(input_hw=HW, params={"head": "plugin", "max_det": 100}),
                         log=lambda m: None)
    assert net.key_report() == ({}, [])
    assert outputs_of(net) == DETECTIONS | {"mask_coefs": ((-1, 100, 32), "FLOAT"),
                                            "protos": ((-1, 32, 80, 80), "FLOAT")}
    [(layer, inputs, fields)] = calls
    assert layer == "model.24/decode_nms" and inputs == [(-1, 3 * 117, 40, 40), (-1, 351, 20, 20), (-1, 351, 10, 10)]
    assert fields["layout"] == [0] and fields["extra"] == [32] and fields["strides"] == [8, 16, 32]


STUB_LIBNVINFER = r"""// A stand-in libnvinfer.so.8: a plugin registry that keeps the one creator registered with it.
#include <NvInfer.h>
using namespace nvinfer1;
namespace {
class Registry : public IPluginRegistry {
public:
    IPluginCreator* creator = nullptr;
    bool registerCreator(IPluginCreator& c, AsciiChar const* const) noexcept override { creator = &c; return true; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override {
        *n = creator ? 1 : 0;
        return &creator;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept
        override { return creator; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return true; }
};
Registry gRegistry;
} // namespace
extern "C" TENSORRTAPI IPluginRegistry* getPluginRegistry() noexcept { return &gRegistry; }
extern "C" TENSORRTAPI IPluginCreator* stub_creator() { return gRegistry.creator; }
"""

HOST_DRIVER = r"""// Creates, serializes and deserializes the plugin through its creator, on the host (no GPU, no TensorRT).
#include <NvInfer.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;
extern "C" IPluginCreator* stub_creator();

namespace {
IPluginCreator* gCreator = nullptr;
char const* (*gLastError)() = nullptr;

struct Field {
    char const* name;
    std::vector<int32_t> i;
    std::vector<float> f;
};

std::vector<char> bytes(IPluginV2* p) {
    std::vector<char> b(p->getSerializationSize());
    p->serialize(b.data());
    return b;
}

IPluginV2* create(std::vector<Field> const& fields) {
    std::vector<PluginField> pf;
    for (Field const& f : fields) {
        if (f.f.empty()) pf.emplace_back(f.name, f.i.data(), PluginFieldType::kINT32, int32_t(f.i.size()));
        else pf.emplace_back(f.name, f.f.data(), PluginFieldType::kFLOAT32, int32_t(f.f.size()));
    }
    PluginFieldCollection fc{int32_t(pf.size()), pf.data()};
    return gCreator->createPlugin("model.22/decode_nms", &fc);
}

// "<case> outputs N version V bytes B roundtrip 0|1", or "<case> ERROR <last error>".
void report(char const* what, IPluginV2* p, std::vector<char> const* expect = nullptr) {
    if (p == nullptr) {
        std::printf("%s ERROR %s\n", what, gLastError());
        return;
    }
    std::vector<char> const b = bytes(p);
    int32_t version = 0;
    std::memcpy(&version, b.data(), sizeof(version));
    IPluginV2* q = gCreator->deserializePlugin("again", b.data(), b.size());
    bool const same = q != nullptr && bytes(q) == b && q->getNbOutputs() == p->getNbOutputs()
        && (expect == nullptr || *expect == b);
    std::printf("%s outputs %d version %d bytes %zu roundtrip %d\n", what, p->getNbOutputs(), version, b.size(),
        int(same));
    if (q) q->destroy();
    p->destroy();
}

// "<case> formats ..." : which types the plugin takes at each of its 1 input + 5 outputs (F float, H half, I int32).
void formats(char const* what, IPluginV2DynamicExt* p) {
    std::printf("%s formats", what);
    for (int pos = 0; pos < 6; ++pos) {
        std::string ok;
        for (auto [type, c] : {std::pair{DataType::kFLOAT, 'F'}, {DataType::kHALF, 'H'}, {DataType::kINT32, 'I'}}) {
            PluginTensorDesc d[6]{};
            for (auto& x : d) x.format = TensorFormat::kLINEAR, x.type = DataType::kFLOAT;
            d[pos].type = type;
            if (pos > 0) d[0].type = DataType::kFLOAT;
            if (p->supportsFormatCombination(pos, d, 1, 5)) ok += c;
        }
        std::printf(" %s", ok.empty() ? "-" : ok.c_str());
    }
    std::printf("\n");
}

template <typename T>
void put(std::vector<char>& b, T v) {
    char const* c = reinterpret_cast<char const*>(&v);
    b.insert(b.end(), c, c + sizeof(T));
}
} // namespace

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) {
        std::printf("DLOPEN %s\n", dlerror());
        return 1;
    }
    gLastError = reinterpret_cast<char const* (*)()>(dlsym(lib, "netdef_plugin_last_error"));
    gCreator = stub_creator();
    if (gCreator == nullptr || gLastError == nullptr) return 3;
    std::printf("creator %s version %s\n", gCreator->getPluginName(), gCreator->getPluginVersion());

    std::vector<float> anchors(18, 10.f);
    std::vector<Field> const nms = {{"conf_thres", {}, {0.25f}}, {"iou_thres", {}, {0.45f}}, {"max_det", {300}, {}},
        {"topk", {30000}, {}}};
    auto with = [&nms](std::vector<Field> f) {
        f.insert(f.end(), nms.begin(), nms.end());
        return f;
    };
    std::vector<Field> const v5 = with({{"nc", {80}, {}}, {"na", {3}, {}}, {"nl", {3}, {}},
        {"strides", {8, 16, 32}, {}}, {"anchors", {}, anchors}});
    IPluginV2* extra = create(with({{"layout", {1}, {}}, {"nc", {80}, {}}, {"extra", {32}, {}}}));
    formats("anchor_free_extra", static_cast<IPluginV2DynamicExt*>(extra));
    report("anchor_free_extra", extra);
    report("anchor_free", create(with({{"layout", {1}, {}}, {"nc", {80}, {}}})));
    report("yolov5", create(v5));
    std::vector<Field> seg = v5;
    seg.push_back({"layout", {0}, {}});
    seg.push_back({"extra", {32}, {}});
    report("yolov5_seg", create(seg));
    report("missing_nc", create(with({{"layout", {1}, {}}, {"extra", {32}, {}}})));
    report("decoded_with_anchors", create(with({{"layout", {1}, {}}, {"nc", {80}, {}}, {"nl", {3}, {}}})));
    report("layout_2", create(with({{"layout", {2}, {}}, {"nc", {80}, {}}})));
    report("negative_extra", create(with({{"layout", {1}, {}}, {"nc", {80}, {}}, {"extra", {-1}, {}}})));
    std::vector<Field> noAnchors(v5.begin(), v5.end());
    noAnchors.erase(noAnchors.begin() + 4);
    report("yolov5_missing_anchors", create(noAnchors));

    // the serialized data of an engine built before layouts existed (format 1)
    std::vector<char> old;
    put<int32_t>(old, 1);
    for (int32_t v : {80, 3, 3, 8, 16, 32}) put(old, v);
    for (float a : anchors) put(old, a);
    put(old, 0.25f);
    put(old, 0.45f);
    put<int32_t>(old, 300);
    put<int32_t>(old, 30000);
    report("format_1_engine", gCreator->deserializePlugin("old", old.data(), old.size()), &old);
    std::vector<char> cut(old.begin(), old.end() - 4);
    report("truncated", gCreator->deserializePlugin("cut", cut.data(), cut.size()));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None or trt86_headers() is None,
                    reason="needs nvcc and the TensorRT 8.6 C++ headers (NvInfer.h): set TENSORRT_INCLUDE_DIR to their "
                           "folder")
def test_plugin_creator_on_the_host(tmp_path, monkeypatch):
    """The compiled plugin library, loaded by a host program with a stand-in libnvinfer (a registry that keeps the
    creator; no GPU, no TensorRT): layouts 0 and 1 with and without extra channels create, serialize and
    deserialize to the same bytes (layout 0 without extra in format 1, as before layouts existed, and an engine's
    format-1 data loads unchanged); bad fields are one message each; truncated data is refused; the formats taken
    (float or half input, int32/float outputs, the extras output float)."""
    monkeypatch.setenv("NETDEF_CACHE", str(tmp_path / "cache"))
    nvcc, inc = shutil.which("nvcc"), str(trt86_headers())
    (tmp_path / "stub.cpp").write_text(STUB_LIBNVINFER)
    (tmp_path / "driver.cpp").write_text(HOST_DRIVER)
    common = [nvcc, "-std=c++17", "-Xcompiler", "-Wno-deprecated-declarations", f"-I{inc}"]
    stub = tmp_path / "libnvinfer.so.8"
    subprocess.run([*common, "-shared", "-Xcompiler", "-fPIC", "-Xlinker", "-soname=libnvinfer.so.8", "-o", str(stub),
                    str(tmp_path / "stub.cpp")], check=True)
    subprocess.run([*common, str(tmp_path / "driver.cpp"), f"-L{tmp_path}", "-l:libnvinfer.so.8",
                    f"-Xlinker=-rpath={tmp_path}", "-ldl", "-o", str(tmp_path / "driver")], check=True)
    tc = pc.Toolchain(nvcc, pc._nvcc_version(nvcc), inc, "8.6.0", str(stub), "8.6.0", "8.6")
    lib = pc.compile_plugin(plugin.PLUGIN, toolchain=tc, log=lambda m: None)
    res = subprocess.run([str(tmp_path / "driver"), str(lib.path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    got = res.stdout.splitlines()
    print("RESULT plugin creator on the host:", " | ".join(got))
    assert got == [
        f"creator {plugin.CREATOR} version {plugin.VERSION}",
        "anchor_free_extra formats FH I F F I F",
        "anchor_free_extra outputs 5 version 2 bytes 40 roundtrip 1",
        "anchor_free outputs 4 version 2 bytes 40 roundtrip 1",
        "yolov5 outputs 4 version 1 bytes 116 roundtrip 1",
        "yolov5_seg outputs 5 version 2 bytes 124 roundtrip 1",
        "missing_nc ERROR model.22/decode_nms: missing field 'nc'",
        "decoded_with_anchors ERROR model.22/decode_nms: layout 1 (decoded) takes no nl, na, strides or anchors",
        "layout_2 ERROR model.22/decode_nms: layout must be 0 (anchors) or 1 (decoded)",
        "negative_extra ERROR model.22/decode_nms: extra must be >= 0",
        "yolov5_missing_anchors ERROR model.22/decode_nms: missing field 'anchors'",
        "format_1_engine outputs 4 version 1 bytes 116 roundtrip 1",
        "truncated ERROR cut: damaged or incompatible serialized plugin data (rebuild the engine)",
    ]


# ---------------------------------------------------------------- GPU

def ultralytics_nms(pred, conf: float, iou: float, max_det: int, nc: int, topk: int = 30000) -> list:
    """Ultralytics' own non_max_suppression (torchvision's NMS) on a (B, 4 + nc + E, N) torch prediction."""
    import torchvision

    assert torchvision.ops.nms  # Ultralytics uses torchvision's NMS once torchvision is imported

    ref.import_tasks()
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(pred.float(), conf, iou, max_det=max_det, nc=nc, max_nms=topk)


def check_equal(outs: dict, expected: list, extra_key: str | None, tol: float = 0.0) -> int:
    """The plugin's outputs against Ultralytics' per-image (n, 6 + E) detections: the same count, the same classes,
    boxes, scores and extras within `tol` relative (0: exactly), padding rows zero. tol 0: rows in the same order;
    else each expected row is paired with the same-class row of the nearest box (scores that differ by less than
    the engine's rounding may come in the other order). Returns the detections compared."""
    total = 0
    for b, det in enumerate(expected):
        det = det.cpu().numpy()
        n = int(outs["num_dets"][b, 0])
        assert n == len(det), f"image {b}: {n} detections, Ultralytics {len(det)}"
        if tol and n:
            dist = np.abs(outs["boxes"][b, :n, None] - det[None, :, :4]).max(-1)
            dist[outs["classes"][b, :n, None] != det[None, :, 5].astype(np.int32)] = np.inf
            order = dist.argmin(0)
            assert len(set(order.tolist())) == n, f"image {b}: detections pair up with the same engine row"
            outs = {k: v.copy() for k, v in outs.items()}
            for key in ("boxes", "scores", "classes") + ((extra_key,) if extra_key else ()):
                outs[key][b, :n] = outs[key][b, order]
        scale = max(float(np.abs(det[:, :4]).max()), 1.0) if n else 1.0
        assert np.abs(outs["boxes"][b, :n] - det[:, :4]).max(initial=0) <= tol * scale, f"image {b}: boxes"
        assert np.abs(outs["scores"][b, :n] - det[:, 4]).max(initial=0) <= tol, f"image {b}: scores"
        assert (outs["classes"][b, :n] == det[:, 5].astype(np.int32)).all(), f"image {b}: classes"
        assert not outs["boxes"][b, n:].any() and not outs["scores"][b, n:].any() and not outs["classes"][b, n:].any()
        if extra_key:
            got = outs[extra_key][b].reshape(outs[extra_key].shape[1], -1)
            want = det[:, 6:]
            escale = max(float(np.abs(want).max()), 1.0) if n else 1.0
            assert np.abs(got[:n] - want).max(initial=0) <= tol * escale, f"image {b}: {extra_key}"
            assert not got[n:].any(), f"image {b}: {extra_key} padding"
        total += n
    return total


def synthetic_prediction(batch: int, n: int, nc: int, extra: int, seed: int = 0) -> np.ndarray:
    """(B, 4 + nc + extra, n) float16-exact: boxes x, y, w, h crowded on a 320x320 image (many overlaps), class
    probabilities whose per-candidate maxima are distinct (no ties for the sort to break), extra channels."""
    rng = np.random.default_rng(seed)
    pred = np.empty((batch, 4 + nc + extra, n), np.float32)
    pred[:, 0:2] = rng.uniform(100, 220, (batch, 2, n))
    pred[:, 2:4] = rng.uniform(30, 120, (batch, 2, n))
    fp16 = np.arange(np.float16(0.05).view(np.uint16), np.float16(0.999).view(np.uint16), dtype=np.uint16)
    fp16 = fp16.view(np.float16).astype(np.float32)
    for b in range(batch):
        best = rng.choice(fp16, n, replace=False)  # distinct
        scores = best[None, :] * rng.uniform(0.0, 0.9, (nc, n)).astype(np.float32)
        scores[rng.integers(0, nc, n), np.arange(n)] = best
        pred[b, 4:4 + nc] = scores
    pred[:, 4 + nc:] = rng.normal(0, 3, (batch, extra, n))
    return pred.astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def plugin_alone(tmp_path_factory):
    """(precision, n) -> (engine path, prediction): the plugin alone, input `pred` (B, 4 + nc + extra, n) (n: ALONE's
    unless given)."""
    from test_plugins import build_test_engine  # the plugin-only engines of the YOLOv5 plugin tests

    out = tmp_path_factory.mktemp("anchor_free_plugin")
    built = {}

    def get(precision: str, n: int = ALONE["shape"][1]):
        if (precision, n) not in built:
            batch, _, nc, extra = ALONE["shape"]
            pred = synthetic_prediction(batch, n, nc, extra)
            conf, iou, max_det, topk = ALONE["nms"]

            def define(net):
                dtype = net.trt.float16 if precision == "fp16" else net.trt.float32
                x = net.definition.add_input("pred", dtype, (-1, *pred.shape[1:]))
                outs = plugin.add_anchor_free_nms(net, x, nc, "model.22", extra, conf, iou, max_det, topk)
                if precision == "fp16" and not net.strongly_typed:  # 8.6: ask for fp16 plugin inputs
                    for i in range(net.definition.num_layers):
                        if net.definition.get_layer(i).name == "model.22/decode_nms":
                            net.definition.get_layer(i).precision = dtype
                return outs

            path = out / f"alone_{precision}_{n}.engine"
            build_test_engine(path, {}, define, precision, batch)
            built[precision, n] = (path, pred.astype(np.float16) if precision == "fp16" else pred)
        return built[precision, n]

    return get


# B, n, nc, extra; conf, iou, max_det, topk (topk below the candidates and max_det below the kept: both caps act)
ALONE = {"shape": (3, 1500, 5, 7), "nms": (0.3, 0.5, 40, 500)}


@needs_ultralytics
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_anchor_free_plugin_alone_equals_ultralytics_nms(plugin_alone, precision):
    """Layout 1 with 7 extra channels, fp32 and fp16 inputs: exactly Ultralytics' non_max_suppression of the same
    prediction (count, order, boxes, scores, classes, the kept rows' extra channels), max_nms and max_det acting."""
    import torch
    from test_plugins import plugin_input_formats

    from netdef.runtime import Engine

    path, pred = plugin_alone(precision)
    conf, iou, max_det, topk = ALONE["nms"]
    nc = ALONE["shape"][2]
    eng = Engine(path)
    outs = eng.infer({"pred": torch.from_numpy(pred).cuda()}, as_numpy=True)
    formats = [f for f in plugin_input_formats(eng) if "N/A" not in f]
    if precision == "fp16" and formats:
        assert all("FP16" in f or "Half" in f for f in formats), formats
    assert outs["extras"].shape == (pred.shape[0], max_det, ALONE["shape"][3]) and outs["extras"].dtype == np.float32
    x = torch.from_numpy(pred.astype(np.float32)).cuda()
    expected = ultralytics_nms(x, conf, iou, max_det, nc, topk)
    candidates = int((x[:, 4:4 + nc].amax(1) > conf).sum())
    uncapped = sum(len(d) for d in ultralytics_nms(x, conf, iou, 10**6, nc, topk))
    n = check_equal(outs, expected, "extras")
    print(f"RESULT plugin alone {precision}: {candidates} candidates (max_nms {topk} per image), NMS keeps "
          f"{uncapped}, {n} detections (max_det {max_det}) equal Ultralytics' non_max_suppression exactly, extras "
          f"included; plugin input formats {sorted(set(formats))}")
    assert candidates > topk * len(pred) > uncapped > max_det * len(pred) == n  # max_nms, NMS and max_det acted


@needs_ultralytics
@pytest.mark.gpu
@pytest.mark.parametrize("n", [1, 2, 64, 65])
def test_anchor_free_plugin_alone_with_few_candidates(plugin_alone, n):
    """The sort keys hold the score above the candidate index's bits (as many as n needs): one candidate, two, a
    power of two and one more give Ultralytics' non_max_suppression exactly too (fp32)."""
    import torch

    from netdef.runtime import Engine

    path, pred = plugin_alone("fp32", n)
    conf, iou, max_det, topk = ALONE["nms"]
    outs = Engine(path).infer({"pred": torch.from_numpy(pred).cuda()}, as_numpy=True)
    x = torch.from_numpy(pred).cuda()
    kept = check_equal(outs, ultralytics_nms(x, conf, iou, max_det, ALONE["shape"][2], topk), "extras")
    print(f"RESULT plugin alone fp32 n={n}: {kept} detections equal Ultralytics' non_max_suppression exactly")
    assert kept > 0 or n == 1


def pick_conf(scores: np.ndarray, per_image: int) -> float:
    """A threshold with at least `per_image` candidates in every image of `scores` (B, N) (random-weight models
    score images very differently): half-way between two neighbouring best-class scores of the image with the
    fewest high scores."""
    s = -np.sort(-scores.astype(np.float64), axis=1)
    return float(((s[:, per_image - 1] + s[:, per_image]) / 2).min())


@pytest.mark.gpu
@needs_ultralytics
@pytest.mark.parametrize("name", list(HEADS))
def test_plugin_head_engine_matches_ultralytics(name, tmp_path):
    """fp32 head=plugin engines of random-weight yolov8n, yolo11n-seg, yolov8n-pose at 320x320, batch 2, the
    threshold picked for at least 60 candidates per image (iou 0.45: NMS removes many): (1) the plugin's input (made an
    extra engine output) is Ultralytics' model(x) output within 1e-3; (2) the detections equal Ultralytics'
    non_max_suppression of that very input exactly (extras included); (3) they equal Ultralytics' model + NMS:
    same counts and classes, boxes and extras within 1e-3 relative; protos within 1e-3."""
    import torch

    from netdef.compiler import compile_engine
    from netdef.runtime import Engine
    from netdef.tools.verify import max_rel_error, tf32_off

    row, extra, more = HEADS[name]
    model, sd = ref.reference_model(name)
    nc = model.model[-1].nc
    x = np.random.default_rng(0).random((2, 3, *HW), dtype=np.float32)
    with tf32_off(), torch.no_grad():
        y = model.cuda().eval()(torch.from_numpy(x).cuda())[0]
    pred, protos = (y[0], y[1]) if isinstance(y, (tuple, list)) else (y, None)
    conf, iou, max_det = pick_conf(pred[:, 4:4 + nc].amax(1).cpu().numpy(), 60), 0.45, 100
    expected = ultralytics_nms(pred, conf, iou, max_det, nc)

    opts = BuildOptions(batch=(1, 2, 2), input_hw=HW, opt_level=0, tf32=False,
                        params={"head": "plugin", "conf_thres": conf, "iou_thres": iou, "max_det": max_det})
    net = define_network(name, sd, opts, log=lambda m: None)
    layers = [net.definition.get_layer(i) for i in range(net.definition.num_layers)]
    [nms] = [lay for lay in layers if lay.name == f"model.{row}/decode_nms"]
    net.output(nms.get_input(0), "pred")  # the plugin's own input, for (1) and (2)
    path = tmp_path / f"{name}.engine"
    t0 = time.perf_counter()
    compile_engine(net.builder, net.definition, opts, path, strongly_typed=net.strongly_typed, arch={"name": name},
                   weights={"path": "in-memory weights", "sha256": ""}, plugins=net.plugins, log=lambda m: None)
    build_s = time.perf_counter() - t0
    model.cpu()
    torch.cuda.empty_cache()
    outs = Engine(path).infer(x, as_numpy=True)
    assert set(outs) == set(DETECTIONS) | set(more) | {"pred"}
    for key, shape in more.items():
        assert outs[key].shape == (2, *shape[1:]) and outs[key].dtype == np.float32, key

    extra_key = next((k for k in ("mask_coefs", "keypoints") if k in outs), None)
    ref_pred = pred.cpu().numpy()
    pred_err = max_rel_error(outs["pred"], ref_pred)
    assert pred_err <= 1e-3, f"the plugin's input differs from Ultralytics' output: {pred_err:.2e}"
    own = ultralytics_nms(torch.from_numpy(outs["pred"]).cuda(), conf, iou, max_det, nc)
    exact = check_equal(outs, own, extra_key)
    matched = check_equal(outs, expected, extra_key, tol=1e-3)
    candidates = int((pred[:, 4:4 + nc].amax(1) > conf).sum())
    proto_err = max_rel_error(outs["protos"], protos.cpu().numpy()) if protos is not None else 0.0
    print(f"RESULT {name} head=plugin fp32 320x320 b2 conf {conf:.5f} iou {iou}: {candidates} candidates -> "
          f"{matched} detections; input max-rel-err {pred_err:.2e}; equal to Ultralytics' NMS of the plugin input "
          f"exactly ({exact}) and of model(x) within 1e-3; protos max-rel-err {proto_err:.2e}; build {build_s:.1f} s")
    assert proto_err <= 1e-3
    assert 0 < matched < candidates  # detections, and NMS removed some


@pytest.mark.gpu
def test_yolov5_segment_plugin_engine_matches_yolov5(tmp_path):
    """yolov5n-seg head=plugin (layout 0 with 32 extra channels), fp32 320x320 batch 2, against YOLOv5's model and
    non_max_suppression (nm=32): same counts and classes, boxes, scores and mask coefficients (YOLOv5's NMS
    returns them multiplied by the objectness, and so does the plugin) within 1e-3; protos within 1e-3."""
    import torch

    from netdef.build import build_engine
    from netdef.runtime import Engine
    from netdef.testing import yolov5_reference as yv5
    from netdef.tools.verify import max_rel_error, tf32_off
    from netdef.wts import write_wts

    if not yv5.yolov5_available():
        pytest.skip("needs pip install --no-deps yolov5==7.0.14")
    from test_yolov5_tasks import reference

    model, sd = reference("yolov5n-seg")
    x = np.random.default_rng(0).random((2, 3, *HW), dtype=np.float32)
    with tf32_off(), torch.no_grad():
        pred, protos = model.cuda().eval()(torch.from_numpy(x).cuda())[:2]
    nc, nm = pred.shape[2] - 5 - 32, 32
    conf, iou, max_det = pick_conf((pred[..., 4:5] * pred[..., 5:5 + nc]).amax(-1).cpu().numpy(), 60), 0.45, 100
    general = yv5.import_with_stand_ins("yolov5.utils.general")
    expected = general.non_max_suppression(pred.clone(), conf, iou, max_det=max_det, nm=nm)  # (n, 6 + 32) each
    write_wts(tmp_path / "yolov5n-seg.wts", sd)
    opts = BuildOptions(batch=(1, 2, 2), input_hw=HW, opt_level=0, tf32=False,
                        params={"head": "plugin", "conf_thres": conf, "iou_thres": iou, "max_det": max_det})
    res = build_engine("yolov5n-seg", tmp_path / "yolov5n-seg.wts", tmp_path / "yolov5n-seg.engine", opts,
                       log=lambda m: None)
    model.cpu()
    torch.cuda.empty_cache()
    outs = Engine(res.path).infer(x, as_numpy=True)
    assert [o["name"] for o in res.meta["outputs"]] == [*DETECTIONS, "mask_coefs", "protos"]
    n = check_equal(outs, expected, "mask_coefs", tol=1e-3)
    proto_err = max_rel_error(outs["protos"], protos.cpu().numpy())
    candidates = int(((pred[..., 4:5] * pred[..., 5:5 + nc]).amax(-1) > conf).sum())
    print(f"RESULT yolov5n-seg head=plugin fp32 320x320 b2 conf {conf:.5f} iou {iou}: {candidates} candidates -> {n} "
          f"detections equal to YOLOv5's NMS within 1e-3 (mask coefficients too); protos max-rel-err "
          f"{proto_err:.2e}; build {res.meta['build_seconds']} s")
    assert proto_err <= 1e-3 and 0 < n < candidates
