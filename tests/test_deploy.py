"""Deployment outside netdef: raw plans with sidecars (`netdef export-plan`, `netdef info`, `Engine(plan)`) and
Triton model repositories (`netdef triton`).

CPU: engines built by the installed builder (TensorRT-RTX in CI): ResNet-50 with one and with three
optimization profiles and a plain YOLOv5s. TensorRT-RTX cannot build plugin layers, so the YOLOv5s plugin-head
engine is written with `write_engine` from the real YOLOv5s plan and a header that lists the plugin's outputs and
a plugin library (a dummy file): what the repository gets from it is the header's, not the plan's. Every
`config.pbtxt` is parsed with Triton's own protobuf schema (`tritonclient`'s `model_config_pb2`) and its fields are
compared with the engine's metadata. GPU (`-m gpu`): a raw plan runs like its engine.
"""
from __future__ import annotations

import hashlib
import os
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import load_script, run_cli
from netdef import engine_file, trt_api
from netdef.build import BuildOptions, build_engine
from netdef.deploy.plan import (export_plan, load_hints, metadata_from_engine, read_any_meta, read_raw_plan,
                                sidecar_path)
from netdef.deploy.triton import Repository, TritonOptions, model_config, write_repository
from netdef.errors import EngineFileError, NetdefError, OptionError, TensorRTError, TensorRTUnavailable
from netdef.runtime import Engine



def schema() -> tuple[Any, Any, Any]:
    """(text_format, json_format, model_config_pb2): Triton's model-config schema; the tests that parse
    `config.pbtxt` skip without it (the raw-plan tests do not need it)."""
    reason = "needs Triton's schema: pip install 'tritonclient[grpc]'"
    return (pytest.importorskip("google.protobuf.text_format", reason=reason),
            pytest.importorskip("google.protobuf.json_format", reason=reason),
            pytest.importorskip("tritonclient.grpc.model_config_pb2", reason=reason))

THREE_PROFILES = ((1, 1, 4), (5, 32, 64), (65, 256, 256))
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32"}


def _yolov5_available() -> bool:
    from netdef.testing import yolov5_reference as ref

    return ref.yolov5_available()


@pytest.fixture(scope="module")
def engines(torchvision_wts, tmp_path_factory):
    """name -> engine path: r50 (1:8:32), r50_3p (three profiles), y5s (1:8:32), y5s_plugin (see the docstring)."""
    out = tmp_path_factory.mktemp("deploy_engines")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name in built:
            return built[name]
        if name.startswith("y5s") and not _yolov5_available():
            pytest.skip("needs the YOLOv5 reference: pip install --no-deps yolov5==7.0.14")
        path = out / f"{name}.engine"
        if name == "r50":
            build_engine("resnet50", torchvision_wts("resnet50")[1], path, BuildOptions(batch=(1, 8, 32), opt_level=0),
                         log=lambda m: None)
        elif name == "r50_3p":
            build_engine("resnet50", torchvision_wts("resnet50")[1], path,
                         BuildOptions(profiles=THREE_PROFILES, opt_level=0), log=lambda m: None)
        elif name == "y5s":
            from netdef.testing import yolov5_reference as ref
            from netdef.wts import write_wts

            write_wts(out / "yolov5s.wts", ref.reference_model("yolov5s")[1])
            build_engine("yolov5s", out / "yolov5s.wts", path, BuildOptions(batch=(1, 8, 32), opt_level=0),
                         log=lambda m: None)
        else:  # y5s_plugin: the plain plan with a plugin-head header (TensorRT-RTX cannot build plugin layers)
            write_engine_with_plugin_header(get("y5s"), path, out / "libyolo_decode_nms-test.so")
        built[name] = path
        return path

    return get


def write_engine_with_plugin_header(plain: Path, path: Path, library: Path) -> None:
    """An engine file holding `plain`'s real plan under the header of a YOLOv5s plugin-head engine, whose plugin
    library is a dummy file: what deployment reads from a plugin engine is its header."""
    from netdef.plugins.yolo import CREATOR, VERSION

    library.write_bytes(b"\x7fELF not a real plugin library")
    meta, plan = engine_file.read_plan(plain)
    meta["outputs"] = [{"name": "num_dets", "shape": [-1, 1], "dtype": "int32"},
                       {"name": "boxes", "shape": [-1, 100, 4], "dtype": "float32"},
                       {"name": "scores", "shape": [-1, 100], "dtype": "float32"},
                       {"name": "classes", "shape": [-1, 100], "dtype": "int32"}]
    meta["options"]["params"] = {"head": "plugin", "max_det": 100}
    layer = {"layer": "model.24/decode_nms", "conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100, "topk": 30000,
             "nc": 80}
    meta["plugins"] = [{"name": "yolo_decode_nms", "library": str(library), "creator": CREATOR, "version": VERSION,
                        "sha256": hashlib.sha256(library.read_bytes()).hexdigest(),
                        "tensorrt": meta["tensorrt"]["version"], "arch": "sm_86", "layers": [layer]}]
    engine_file.write_engine(path, plan, meta)


def parse_config(path: Path):
    """config.pbtxt parsed by Triton's own schema (protobuf text format into inference.ModelConfig)."""
    text_format, _, pb2 = schema()
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def check_config_matches(config, meta: dict, opts: TritonOptions) -> None:
    """Every field of a parsed ModelConfig against the engine's metadata and the options asked for."""
    profiles = engine_file.profiles(meta)
    pb2 = schema()[2]
    dtype = pb2.DataType.Name
    assert config.platform == "tensorrt_plan"
    assert config.name == (opts.name or meta["arch"]["name"])
    assert config.max_batch_size == max(p[2] for p in profiles)
    for got, want in [(config.input, meta["inputs"]), (config.output, meta["outputs"])]:
        assert [t.name for t in got] == [io["name"] for io in want]
        assert [dtype(t.data_type) for t in got] == [TRITON_TYPES[io["dtype"]] for io in want]
        assert [list(t.dims) for t in got] == [io["shape"][1:] for io in want]  # no batch axis
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == sorted({p[1] for p in profiles if p[1] > 1})
    assert config.dynamic_batching.max_queue_delay_microseconds == (opts.max_queue_delay_us or 0)
    [group] = config.instance_group
    assert pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_GPU"
    assert group.count == opts.instances and list(group.gpus) == list(opts.gpus)
    assert list(group.profile) == ([str(i) for i in range(len(profiles))] if len(profiles) > 1 else [])
    assert config.optimization.cuda.graphs == opts.cuda_graphs


# ---------------------------------------------------------------- raw plans and sidecars

@pytest.mark.parametrize("name", ["r50", "r50_3p", "y5s", "y5s_plugin"])
def test_raw_plan_is_the_engines_plan_and_the_sidecar_its_header(engines, name, tmp_path):
    engine = engines(name)
    side = export_plan(engine, tmp_path / "model.plan")
    meta, plan = engine_file.read_plan(engine)
    assert (tmp_path / "model.plan").read_bytes() == plan  # byte-identical
    assert json.loads(sidecar_path(tmp_path / "model.plan").read_text()) == side
    for key in ("tensorrt", "gpu", "precision", "options", "inputs", "outputs", "plugins", "plan_bytes", "plan_sha256"):
        assert side[key] == meta[key], key
    assert side["sidecar"]["plan"] == "model.plan" and side["sidecar"]["exported_from"] == str(engine)
    assert side["sidecar"]["load"]["requires"].startswith(f"{meta['tensorrt']['flavor']} {meta['tensorrt']['version']}")
    got, raw = read_raw_plan(tmp_path / "model.plan")
    assert raw == plan and got["inputs"] == meta["inputs"] and got["plugins"] == meta["plugins"]


def test_export_plan_and_info_on_the_command_line(engines, tmp_path):
    engine, plan = engines("r50_3p"), tmp_path / "r50.plan"
    r = run_cli("export-plan", str(engine), "-o", str(plan))
    assert r.returncode == 0, r.stderr
    assert f"wrote {plan}" in r.stdout and plan.with_name("r50.plan.json").is_file()
    r = run_cli("info", str(plan))
    assert r.returncode == 0, r.stderr
    assert "metadata from its sidecar" in r.stdout and "batch profiles 1:1:4,5:32:64,65:256:256" in r.stdout
    r = run_cli("info", "--json", str(plan))
    assert r.returncode == 0 and json.loads(r.stdout)["profiles"] == [list(p) for p in THREE_PROFILES], r.stderr
    bare = tmp_path / "bare.plan"  # no sidecar: what TensorRT can tell, or why nothing
    shutil.copy(plan, bare)
    r = run_cli("info", "--json", str(bare))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "raw_plan" and info["sidecar"] is None and info["plan_bytes"] == plan.stat().st_size
    if trt_api.can_deserialize():
        assert engine_file.profiles(info["metadata"]) == [tuple(p) for p in THREE_PROFILES]
        assert info["profiles"] == [list(p) for p in THREE_PROFILES]
    else:
        assert info["metadata"] is None and info["profiles"] is None and "needs a CUDA GPU" in info["not_shown"]
        assert "optimization profiles" in info["not_shown"]


def test_export_plan_never_writes_over_its_engine(engines, tmp_path):
    engine = tmp_path / "r50.engine"
    shutil.copy(engines("r50"), engine)
    before = engine.read_bytes()
    with pytest.raises(OptionError, match="also an input"):
        export_plan(engine, engine)
    r = run_cli("export-plan", str(engine), "-o", str(engine))
    assert r.returncode == 1 and "also an input" in r.stderr
    assert engine.read_bytes() == before
    plan = tmp_path / "model.plan"  # a raw plan's sidecar is an input of its re-export too
    export_plan(engine, plan)
    for output in (plan, sidecar_path(plan)):
        with pytest.raises(OptionError, match="also an input"):
            export_plan(plan, output)


def test_export_plan_never_writes_over_another_netdef_engine(engines, tmp_path):
    """`-o y.engine` meant as `-o y.plan`: a netdef engine there (another model's, maybe its only copy) was replaced
    by a raw plan without a word; now refused, while an earlier raw plan export is still replaced."""
    other = tmp_path / "other.engine"
    shutil.copy(engines("r50"), other)
    before = other.read_bytes()
    with pytest.raises(OptionError, match=r"other\.engine exists and is not a raw TensorRT plan \(it looks like a "
                                          r"netdef engine\): netdef writes over a raw TensorRT plan only"):
        export_plan(engines("r50"), other)
    assert other.read_bytes() == before and not sidecar_path(other).exists()
    export_plan(engines("r50"), tmp_path / "r50.plan")
    export_plan(engines("r50"), tmp_path / "r50.plan")  # its own earlier export


def test_a_plan_is_told_by_its_first_bytes(engines, tmp_path):
    """A raw plan under any name is read as a plan (`info`), and a file that is no plan, under a plan's name or
    given to `Engine`, is refused before TensorRT sees it, saying what the file is instead."""
    from netdef.deploy.plan import is_raw_plan
    from netdef.wts import write_wts

    plan = tmp_path / "model.plan"
    export_plan(engines("r50"), plan)
    odd = tmp_path / "model.bin"  # a plan without a plan's name or a sidecar
    shutil.copy(plan, odd)
    assert is_raw_plan(odd) and not is_raw_plan(engines("r50"))
    r = run_cli("info", "--json", str(odd))
    assert r.returncode == 0 and json.loads(r.stdout)["plan_bytes"] == odd.stat().st_size, r.stderr
    wts = tmp_path / "weights.engine"  # a .wts renamed (write_wts refuses an engine's name)
    write_wts(tmp_path / "weights.wts", {"w": np.ones(3, np.float32)})
    (tmp_path / "weights.wts").rename(wts)
    meta_json = b'{"task": "detect", "imgsz": [640, 640]}'
    ultralytics = tmp_path / "yolo11n.engine"  # Ultralytics' layout: metadata length, JSON, then the plan
    ultralytics.write_bytes(len(meta_json).to_bytes(4, "little") + meta_json + plan.read_bytes())
    checkpoint = tmp_path / "best.trt"
    checkpoint.write_bytes(b"PK\x03\x04" + bytes(60))
    for path, says in ((wts, "it is a .wts file: build an engine from it"),
                       (ultralytics, "it is an Ultralytics engine (JSON metadata before the plan)"),
                       (checkpoint, "it looks like a zip file (a PyTorch checkpoint?): export its weights")):
        with pytest.raises(EngineFileError, match=re.escape(f"neither a netdef engine nor a TensorRT plan ({says}")):
            Engine(path)
        r = run_cli("info", str(path))
        assert r.returncode == 1 and says in r.stderr and "'ftrt' (TensorRT)" in r.stderr, r.stderr


def test_a_damaged_engine_is_no_plan(engines, tmp_path):
    """A netdef engine whose first bytes are damaged, or garbage under a plan's name, is refused (no raw plan
    with no metadata, exit 0)."""
    data = bytearray(engines("r50").read_bytes())
    data[0] ^= 0x16  # 'N' -> 'X'
    damaged = tmp_path / "damaged.engine"
    damaged.write_bytes(bytes(data))
    garbage = tmp_path / "garbage.plan"
    garbage.write_bytes(bytes(range(256)) * 20)
    for path, says in ((damaged, "its header is a netdef engine's but its first bytes are damaged"),
                       (garbage, r"its first bytes b'\x00\x01")):
        r = run_cli("info", str(path))
        assert r.returncode == 1 and "neither a netdef engine nor a TensorRT plan" in r.stderr and says in r.stderr, \
            r.stderr
        with pytest.raises(EngineFileError, match="neither a netdef engine nor a TensorRT plan"):
            Engine(path)


def test_a_failed_write_leaves_no_new_folders(engines, tmp_path, monkeypatch):
    """A repository write that fails leaves no empty version folder (Triton would take it for the latest
    version) and keeps the folders that were there."""
    (tmp_path / "models").mkdir()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left on device"):
        write_repository(engines("r50"), tmp_path / "models", TritonOptions(version=2))
    assert [p.name for p in tmp_path.rglob("*")] == ["models"]


def test_a_sidecar_of_another_plan_is_refused(engines, tmp_path):
    plan = tmp_path / "model.plan"
    export_plan(engines("r50"), plan)
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 1
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="describes another plan"):
        read_raw_plan(plan)
    with pytest.raises(EngineFileError, match="describes another plan"):
        Engine(plan)  # checked before anything needs a GPU
    sidecar_path(plan).write_text("{}")
    with pytest.raises(EngineFileError, match="not a usable netdef sidecar .*no 'plan_bytes'"):
        read_raw_plan(plan)


def test_engine_loads_the_plugin_library_before_deserializing(engines, tmp_path, monkeypatch):
    """Engine(raw plan): the sidecar's plugin libraries are loaded first, then the plan is deserialized (stopped
    there: running needs a GPU)."""
    import netdef.plugins
    import netdef.runtime

    plan = tmp_path / "y5s.plan"
    side = export_plan(engines("y5s_plugin"), plan)
    calls = []

    class Stop(Exception):
        pass

    def deserialize(data):
        calls.append(("deserialize", len(data)))
        raise Stop

    monkeypatch.setattr(trt_api, "can_run_engines", lambda: True)
    monkeypatch.setattr(netdef.runtime, "_make_backend", lambda name: None)
    monkeypatch.setattr(netdef.plugins, "load_plugin_libraries",
                        lambda entries, path: calls.append(("load", [e["library"] for e in entries], str(path))))
    monkeypatch.setattr(trt_api, "deserialize", deserialize)
    with pytest.raises(Stop):
        Engine(plan)
    assert calls == [("load", [side["plugins"][0]["library"]], str(plan)), ("deserialize", side["plan_bytes"])]


def test_engine_without_a_gpu_says_so_for_raw_plans(engines, tmp_path):
    if trt_api.can_run_engines():
        pytest.skip("this machine can run engines")
    plan = tmp_path / "model.plan"
    export_plan(engines("r50"), plan)
    with pytest.raises(TensorRTUnavailable, match="needs a CUDA GPU"):
        Engine(plan)
    sidecar_path(plan).unlink()
    with pytest.raises(TensorRTUnavailable, match="needs a CUDA GPU"):
        Engine(plan)


def test_deserializing_a_raw_plan_where_the_runtime_allows_it(engines, tmp_path):
    """TensorRT-RTX 1.7 without a GPU: deserializeCudaEngine fails (no CUDA device; its get_engine_validity
    cannot read the GPU's properties either), and netdef says so (`can_deserialize`). Where a runtime can, the
    plan's own I/O and profiles must be the sidecar's."""
    plan = tmp_path / "model.plan"
    side = export_plan(engines("r50_3p"), plan)
    try:
        _, engine = trt_api.deserialize(plan.read_bytes())
    except TensorRTError as e:
        assert not trt_api.can_deserialize(), e
        return
    meta = metadata_from_engine(engine)
    assert meta["inputs"] == side["inputs"] and meta["outputs"] == side["outputs"]
    assert engine_file.profiles(meta) == [tuple(p) for p in THREE_PROFILES]


class StandInEngine:
    """The ICudaEngine methods `metadata_from_engine` reads, for a ResNet with THREE_PROFILES (deserializing a
    real engine needs a GPU)."""

    num_io_tensors, num_layers, num_optimization_profiles = 2, 57, len(THREE_PROFILES)
    shapes = {"input": (-1, 3, 224, 224), "logits": (-1, 1000)}

    def get_tensor_name(self, i: int) -> str:
        return list(self.shapes)[i]

    def get_tensor_mode(self, name: str):
        mode = trt_api.module().TensorIOMode
        return mode.INPUT if name == "input" else mode.OUTPUT

    def get_tensor_shape(self, name: str):
        return self.shapes[name]

    def get_tensor_dtype(self, name: str):
        return trt_api.module().float32

    def get_tensor_profile_shape(self, name: str, k: int):
        return [(b, *self.shapes[name][1:]) for b in THREE_PROFILES[k]]


def test_metadata_of_a_raw_plan_without_sidecar():
    """What `Engine(plan)` and `netdef info` use when a raw plan has no sidecar: the engine's own I/O and profiles."""
    from netdef.cli.info import format_raw_plan

    meta = metadata_from_engine(StandInEngine())
    assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
    assert engine_file.profiles(meta) == list(THREE_PROFILES) and meta["options"]["batch"] == [1, 256, 256]
    text = format_raw_plan({"plan_bytes": 1 << 20, "plan_sha256": "ab" * 32, "sidecar": None, "metadata": meta},
                           Path("m.plan"))
    assert "batch profiles 1:1:4,5:32:64,65:256:256, 57 layers" in text and "logits" in text


def test_a_raw_plan_whose_io_numpy_cannot_hold_is_refused_by_name():
    """TensorRT 10.x/11.x (and RTX) have data types numpy lacks (BF16, FP8, INT4, FP4): a plan another tool built
    with such an input or output is a TensorRTError naming the tensor and the type, not a KeyError."""
    trt = trt_api.module()
    if not hasattr(trt, "bfloat16"):
        pytest.skip(f"{trt_api.version_string()} has no bfloat16")

    class Bf16Logits(StandInEngine):
        def get_tensor_dtype(self, name: str):
            return trt.bfloat16 if name == "logits" else trt.float32

    with pytest.raises(TensorRTError, match=r"the engine's output 'logits': TensorRT data type BF16 has no numpy "
                                            r"equivalent"):
        metadata_from_engine(Bf16Logits())
    with pytest.raises(TensorRTError, match="BF16 has no numpy equivalent"):
        trt_api.dtype_name(trt.bfloat16)


def test_load_hints_name_each_programs_way():
    meta = {"tensorrt": {"flavor": "tensorrt", "version": "10.9.0"}, "gpu": {"compute_capability": "9.0"}}
    hints = load_hints(meta, "m.plan", ["/p/liba.so", "/p/libb.so"])
    assert hints["requires"] == "tensorrt 10.9.0 on a GPU of compute capability 9.0"
    assert hints["trtexec"] == "trtexec --loadEngine=m.plan --staticPlugins=/p/liba.so --staticPlugins=/p/libb.so"
    assert hints["triton"].startswith('--backend-config=tensorrt,plugins="/p/liba.so;/p/libb.so"')
    assert "LD_PRELOAD=/p/liba.so:/p/libb.so" in hints["triton"]
    assert hints["c++"].startswith("dlopen(") and "deserializeCudaEngine" in hints["c++"]
    rtx = load_hints(dict(meta, tensorrt={"flavor": "tensorrt-rtx", "version": "1.7.1"}), "m.plan", [])
    assert "trtexec" not in rtx and "not TensorRT, trtexec or Triton" in rtx["note"]


# ---------------------------------------------------------------- Triton repositories

@pytest.mark.parametrize("name, opts", [
    ("r50", TritonOptions()),
    ("r50_3p", TritonOptions(name="resnet50_multi", version=3, instances=2, gpus=(0, 1), max_queue_delay_us=250,
                             cuda_graphs=True)),
    ("y5s", TritonOptions(instances=3, max_queue_delay_us=0)),
])
def test_triton_repository_matches_the_engine(engines, name, opts, tmp_path):
    engine = engines(name)
    res = write_repository(engine, tmp_path / "models", opts)
    meta, plan = engine_file.read_plan(engine)
    model = tmp_path / "models" / (opts.name or meta["arch"]["name"])
    assert res.config == model / "config.pbtxt" and res.plan == model / str(opts.version) / "model.plan"
    assert res.plan.read_bytes() == plan
    config = parse_config(res.config)
    check_config_matches(config, meta, opts)
    # the text is the dict model_config returns, field for field
    _, json_format, pb2 = schema()
    assert config == json_format.ParseDict(model_config(meta, opts), pb2.ModelConfig())
    assert not res.libraries and not (model / "plugins.txt").exists()


def test_triton_refuses_a_config_that_another_version_would_not_fit(engines, tmp_path):
    """config.pbtxt is shared by a model's versions: writing version 1 of another profile layout while version 2
    holds the old plan is refused before anything is written; the same engine again is fine."""
    repo = tmp_path / "models"
    for version in (1, 2, 1):
        write_repository(engines("r50"), repo, TritonOptions(name="r50", version=version))
    config = (repo / "r50" / "config.pbtxt").read_bytes()
    with pytest.raises(OptionError, match=r"version 2's plan takes other inputs, outputs or batch sizes than this "
                                          r"engine, and the config.pbtxt written now would serve both: use another "
                                          r"--name, or remove .*/r50/2 first"):
        write_repository(engines("r50_3p"), repo, TritonOptions(name="r50", version=1))
    with pytest.raises(OptionError, match=r"version 1's plan .* and the kept config.pbtxt serves both"):
        write_repository(engines("r50_3p"), repo, TritonOptions(name="r50", version=3, existing_config="keep"))
    assert (repo / "r50" / "config.pbtxt").read_bytes() == config and not (repo / "r50" / "3").exists()
    (repo / "r50" / "1" / "model.plan.json").unlink()
    with pytest.raises(OptionError, match=r"version 1's plan has no sidecar to tell whether it fits this engine's "
                                          r"configuration, and the config.pbtxt written now would serve both"):
        write_repository(engines("r50"), repo, TritonOptions(name="r50", version=3))


def test_triton_keep_config_refuses_a_plan_the_kept_config_does_not_fit(engines, tmp_path):
    """--keep-config over the same version keeps the config.pbtxt written for the plan it replaces: an engine of
    other inputs, outputs or batch sizes is refused before anything is written (Triton would refuse the model,
    and the old plan would be gone); an engine that fits is written."""
    repo = tmp_path / "models"
    write_repository(engines("r50"), repo, TritonOptions(name="r50"))
    model = repo / "r50"
    before = {p: p.read_bytes() for p in model.rglob("*") if p.is_file()}
    with pytest.raises(OptionError, match=r"^--keep-config: .*/r50/1/model.plan takes other inputs, outputs or batch "
                                          r"sizes than this engine, and the kept .*/r50/config.pbtxt is the one "
                                          r"written for it; --replace-config writes the one for this engine, another "
                                          r"--name deploys"):
        write_repository(engines("r50_3p"), repo, TritonOptions(name="r50", existing_config="keep"))
    assert {p: p.read_bytes() for p in model.rglob("*") if p.is_file()} == before
    assert write_repository(engines("r50"), repo, TritonOptions(name="r50", existing_config="keep")).plan.is_file()
    config = model / "config.pbtxt"  # edited by hand (for the new engine, say): kept, as asked, with the note
    config.write_text(config.read_text() + "model_warmup [{ name: \"w\" batch_size: 1 }]\n")
    res = write_repository(engines("r50_3p"), repo, TritonOptions(name="r50", existing_config="keep"))
    assert res.config_kept and any("kept as it is (--keep-config): check that it serves" in n for n in res.notes)


def test_triton_says_when_it_replaces_another_plan_of_the_version(engines, tmp_path):
    """`netdef triton new.engine --repo models/` (version 1 by default) over a deployed model of the same
    configuration replaced its plan without a word; now a note names it. The same engine again: no note."""
    def replaced(res: Repository) -> list[str]:
        return [n for n in res.notes if n.startswith("replaced")]

    repo = tmp_path / "models"
    assert replaced(write_repository(engines("r50"), repo, TritonOptions(name="r50"))) == []
    plan = repo / "r50" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes() + b"another build")  # a plan of another engine of the same configuration
    other = hashlib.sha256(plan.read_bytes()).hexdigest()
    assert replaced(write_repository(engines("r50"), repo, TritonOptions(name="r50"))) == [
        f"replaced {plan}, another plan (SHA-256 {other[:12]}...): Triton serves this engine as version 1 once it "
        "loads the model again; a later --version deploys an engine as a new version, which Triton serves instead, "
        "the old one kept on disk"]
    assert replaced(write_repository(engines("r50"), repo, TritonOptions(name="r50"))) == []


def test_triton_says_a_version_below_the_latest_is_not_served(engines, tmp_path):
    """A redeploy as version 1 beside a version 2 (Triton's default policy serves the latest version alone) says
    the plan will not be served, and how to deploy it so that it is; the replaced-plan note claims no serving."""
    repo = tmp_path / "models"
    write_repository(engines("r50"), repo, TritonOptions(name="r50", version=2))
    res = write_repository(engines("r50"), repo, TritonOptions(name="r50"))
    later = [n for n in res.notes if "a later one" in n]
    assert later == [f"{repo / 'r50'} has version 2, a later one: Triton serves only a model's latest version (its "
                     f"default version_policy), so it serves version 2, not this plan: deploy it as --version 3, or "
                     f"remove {repo / 'r50' / '2'}"], res.notes
    plan = repo / "r50" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes() + b"another build")
    res = write_repository(engines("r50"), repo, TritonOptions(name="r50"))
    assert [n for n in res.notes if n.startswith("replaced")][0].startswith(f"replaced {plan}, another plan (SHA-256 ")
    assert not any("serves this engine" in n for n in res.notes) and any("a later one" in n for n in res.notes)
    assert not any("a later one" in n for n in write_repository(engines("r50"), repo,
                                                                  TritonOptions(name="r50", version=3)).notes)


def test_triton_keeps_a_hand_edited_config_unless_told(engines, tmp_path):
    """A config.pbtxt tuned by hand (or written for another engine) is never replaced silently: adding a version is
    refused before anything is written, --keep-config adds the plan under it, --replace-config writes the new one;
    a config that differs in its comments only is rewritten as before."""
    from netdef.cli import main

    repo = tmp_path / "models"
    write_repository(engines("r50"), repo, TritonOptions(name="r50"))
    config = repo / "r50" / "config.pbtxt"
    written = config.read_text()
    config.write_text("# my notes\n" + written)
    write_repository(engines("r50"), repo, TritonOptions(name="r50"))  # comments only: rewritten
    assert config.read_text() == written
    tuned = written + "model_warmup [{ name: \"w\" batch_size: 1 }]\n"
    config.write_text(tuned)
    with pytest.raises(OptionError, match=r"r50/config.pbtxt exists and differs from the one for this engine \(edited "
                                          r"by hand, or another engine's settings\): --keep-config .* "
                                          r"--replace-config"):
        write_repository(engines("r50"), repo, TritonOptions(name="r50", version=2))
    assert config.read_text() == tuned and not (repo / "r50" / "2").exists()
    assert main(["triton", str(engines("r50")), "--repo", str(repo), "--name", "r50", "--version", "2",
                 "--keep-config"]) == 0
    assert config.read_text() == tuned and (repo / "r50" / "2" / "model.plan").is_file()
    assert main(["triton", str(engines("r50")), "--repo", str(repo), "--name", "r50", "--replace-config"]) == 0
    assert config.read_text() == written


def test_triton_repository_of_a_plugin_engine(engines, tmp_path):
    engine = engines("y5s_plugin")
    meta, plan = engine_file.read_plan(engine)
    library = Path(meta["plugins"][0]["library"])
    r = run_cli("triton", str(engine), "--repo", str(tmp_path / "models"), "--name", "y5s_nms")
    assert r.returncode == 0, r.stderr
    model = tmp_path / "models" / "y5s_nms"
    copied = model / library.name
    assert copied.read_bytes() == library.read_bytes()
    option = f'--backend-config=tensorrt,plugins="{copied.absolute()}"'
    assert option in r.stdout and f"LD_PRELOAD={copied.absolute()}" in r.stdout  # printed ...
    options = (model / "plugins.txt").read_text().splitlines()
    assert option in options and f"LD_PRELOAD={copied.absolute()}" in options  # ... and written next to it
    config = parse_config(model / "config.pbtxt")
    check_config_matches(config, meta, TritonOptions(name="y5s_nms"))
    assert [list(t.dims) for t in config.output] == [[1], [100, 4], [100], [100]]
    # the repository's plan has a sidecar whose plugin library is the copy, by a path relative to it
    side = json.loads(sidecar_path(model / "1" / "model.plan").read_text())
    assert side["plugins"][0]["library"] == str(Path("..") / library.name)
    got, raw = read_raw_plan(model / "1" / "model.plan")
    assert raw == plan and Path(got["plugins"][0]["library"]) == copied.absolute()


def test_triton_writes_plugin_files_over_their_own_kind_only(engines, tmp_path):
    """plugins.txt (with --replace-config) and the plugin library's copy were written over whatever file had their
    name in the model folder; like every output they replace only a file of their kind (netdef's plugins.txt, whose
    first line may go past the bytes checked, and a compiled library), checked before anything is written."""
    engine, name = tmp_path / "p.engine", "a_model_name_that_pushes_the_first_line_of_plugins_txt_past_64_bytes"
    write_engine_with_plugin_header(engines("r50"), engine, tmp_path / "libplug.so")
    repo, model = tmp_path / "models", tmp_path / "models" / name
    model.mkdir(parents=True)
    for file, content, kind in [("libplug.so", b"my notes\n", "a compiled library"),
                                ("plugins.txt", b"# my plugins\ntorch\n", r"netdef's server options \(plugins.txt\)")]:
        (model / file).write_bytes(content)
        with pytest.raises(OptionError, match=f"{file} exists and is not {kind} .*: netdef writes over {kind} only"):
            write_repository(engine, repo, TritonOptions(name=name, existing_config="replace"))
        assert (model / file).read_bytes() == content and [p.name for p in model.iterdir()] == [file]
        (model / file).unlink()
    res = write_repository(engine, repo, TritonOptions(name=name))
    options = (model / "plugins.txt").read_bytes()
    assert res.libraries == [model / "libplug.so"] and options.startswith(f"# {name} needs the TensorRT".encode())
    (model / "libplug.so").write_bytes(b"\x7fELF an older copy")  # their own kind: written again
    write_repository(engine, repo, TritonOptions(name=name))
    assert (model / "libplug.so").read_bytes() == (tmp_path / "libplug.so").read_bytes()
    assert (model / "plugins.txt").read_bytes() == options


def test_triton_refuses_a_changed_plugin_library(engines, tmp_path):
    engine = engines("y5s_plugin")
    library = Path(engine_file.read_meta(engine)["plugins"][0]["library"])
    original = library.read_bytes()
    try:
        library.write_bytes(original + b"changed")
        with pytest.raises(NetdefError, match="changed since .* was built"):
            write_repository(engine, tmp_path / "models")
    finally:
        library.write_bytes(original)
    assert not (tmp_path / "models").exists()  # nothing written


def test_engine_whose_batch_starts_above_one_is_served_without_batching(engines):
    """Triton's batcher forms batches from 1: an engine built for batches 8..8 is a non-batching model whose
    dims carry the batch axis, and clients send whole batches."""
    meta = engine_file.read_meta(engines("r50"))
    meta["options"] = dict(meta["options"], batch=[8, 8, 8], profiles=None)
    _, json_format, pb2 = schema()
    config = json_format.ParseDict(model_config(meta), pb2.ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[8, 3, 224, 224]]
    with pytest.raises(OptionError, match="without dynamic batching"):
        model_config(meta, TritonOptions(max_queue_delay_us=100))


@pytest.mark.parametrize("args, message", [
    (["--name", "a/b"], "a Triton model name is a folder name"),
    (["--name", "..."], "not starting with '.' (a hidden folder Triton would not list)"),
    (["--name", ".."], "not starting with '.'"),
    (["--version", "0"], "--version 0: must be >= 1"),
    (["--gpus", "0,0"], "--gpus 0,0: device(s) [0] listed more than once; --instances N runs N instances"),
    # parsed as --devices is: strictly
    (["--gpus", "0x1"], "--gpus '0x1': expected device indices such as 0,1, or 'all'"),
    (["--gpus", "1_0"], "--gpus '1_0': expected device indices"),
    (["--gpus", "0,-1"], "--gpus '0,-1': device indices must be >= 0"),
    (["--instances", "x"], "--instances 'x': expected an integer"),
    # beyond the field types of Triton's model_config.proto: config.pbtxt would not parse
    (["--instances", "3000000000"], "--instances 3000000000: must be from 1 to 2^31-1"),
    (["--gpus", "99999999999"], "distinct GPU indices"),
    (["--gpus="], "--gpus '': "),  # an empty value, named
    (["--max-queue-delay-us", str(2**64)], "must be from 0 to 2^64-1"),
    (["--version", str(2**63)], "Triton model versions are numbers from 1 to 2^63-1"),
])
def test_triton_option_errors_are_one_line(engines, tmp_path, args, message):
    r = run_cli("triton", str(engines("r50")), "--repo", str(tmp_path / "models"), *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "models").exists()


def test_a_raw_plan_without_sidecar_has_no_metadata_for_triton(engines, tmp_path):
    plan = tmp_path / "bare.plan"
    plan.write_bytes(engine_file.read_plan(engines("r50"))[1])
    with pytest.raises(EngineFileError, match="without netdef's metadata .*netdef export-plan"):
        write_repository(plan, tmp_path / "models")


# ---------------------------------------------------------------- on the GPU

@pytest.mark.gpu
def test_raw_plan_runs_like_its_engine(engines, tmp_path):
    engine = engines("r50_3p")
    plan = tmp_path / "r50.plan"
    export_plan(engine, plan)
    x = np.random.default_rng(0).standard_normal((5, 3, 224, 224)).astype(np.float32)
    want = Engine(engine)(x)["logits"]  # numpy in, numpy out
    for path in (plan, shutil.copy(plan, tmp_path / "bare.plan")):  # with its sidecar, and without
        got = Engine(path)
        assert got.profiles == [tuple(p) for p in THREE_PROFILES]
        np.testing.assert_array_equal(got(x)["logits"], want)


def test_run_plan_never_writes_its_output_over_an_input(tmp_path, monkeypatch):
    """scripts/run_plan.py refuses, before it loads TensorRT, an --output that is one of its inputs (by another
    name, or without the .npz np.savez adds), and writes its .npz atomically (Ctrl-C leaves the old file)."""
    run_plan = load_script("run_plan")
    plan, x = tmp_path / "model.plan", tmp_path / "x.npz"
    plan.write_bytes(b"vtrt plan")
    np.savez(x, input=np.ones(3, np.float32))
    before = x.read_bytes()
    os.link(x, tmp_path / "hard.npz")
    (tmp_path / "link.npz").symlink_to(plan)
    for output in (str(tmp_path / "x"), str(tmp_path / "hard.npz"), str(tmp_path / "link.npz")):
        with pytest.raises(SystemExit, match=r"--output .* is also an input"):
            run_plan.main([str(plan), "--input", str(x), "--output", output])
    with pytest.raises(SystemExit, match="no folder"):
        run_plan.main([str(plan), "--output", str(tmp_path / "missing" / "out.npz")])
    engine = tmp_path / "model.engine"  # said "model.engine is a TensorRT plan, and its Python module ... is not
    engine.write_bytes(engine_file.MAGIC + b"{}")  # installed", or with TensorRT failed to deserialize it
    with pytest.raises(SystemExit, match=r"model\.engine is no TensorRT plan \(it starts with b'NETD'.*"
                                         r"netdef export-plan"):
        run_plan.main([str(engine)])
    engine.unlink()

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 part")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_plan.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_plan.save(x, {"output": np.zeros(2)})
    assert x.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "hard.npz", "link.npz", "model.plan", "x.npz"]


def test_run_plan_names_a_missing_or_foreign_input_and_a_batch_below_one(tmp_path):
    """scripts/run_plan.py's --input of a file that is missing or no numpy file reached np.load (a traceback, after
    TensorRT had loaded the plan), and --batch 0 was taken; each is refused naming the option."""
    run_plan = load_script("run_plan")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"vtrt plan")
    with pytest.raises(SystemExit, match=r"^--input .*missing\.npy: no such file \(an \.npy of the first input"):
        run_plan.main([str(plan), "--input", str(tmp_path / "missing.npy")])
    with pytest.raises(SystemExit, match=r"^--batch 0: must be >= 1$"):
        run_plan.main([str(plan), "--batch", "0"])
    (tmp_path / "x.txt").write_text("1 2 3")
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "cut.npz", a=np.ones(100))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:200])
    for name in ("x.txt", "empty.npy", "cut.npz"):  # EOFError, zipfile.BadZipFile: tracebacks before
        with pytest.raises(SystemExit, match=rf"^--input .*{name}: not a whole \.npy or \.npz numpy file"):
            run_plan.read_feeds(str(tmp_path / name), ["a"], plan)
    np.savez(tmp_path / "two.npz", a=np.ones(2))
    with pytest.raises(SystemExit, match=r"two\.npz lacks the input\(s\) \['b'\] \(it has \['a'\]\)"):
        run_plan.read_feeds(str(tmp_path / "two.npz"), ["a", "b"], plan)
    np.save(tmp_path / "one.npy", np.ones(2))
    with pytest.raises(SystemExit, match=r"takes 2 inputs \['a', 'b'\]: give them as an \.npz keyed by name"):
        run_plan.read_feeds(str(tmp_path / "one.npy"), ["a", "b"], plan)
    assert run_plan.read_feeds(str(tmp_path / "one.npy"), ["a"], plan)["a"].tolist() == [1.0, 1.0]
    assert run_plan.read_feeds(str(tmp_path / "two.npz"), ["a"], plan)["a"].tolist() == [1.0, 1.0]


def test_run_plan_refuses_what_a_uint8_input_would_wrap():
    """scripts/run_plan.py feeds an integer (uint8 image) input only integers in its range: a cast would wrap
    normalized floats (-0.5 -> 0, 300 -> 44); its random data for such an input spans 0..255."""
    run_plan = load_script("run_plan")
    with pytest.raises(SystemExit, match=r"^input images takes uint8 \(an engine built with --input-dtype uint8 "
                                         r"takes the images themselves, 0\.\.255\) and the given array is float32"):
        run_plan.as_input("images", np.array([-0.5, 0.7], np.float32), np.uint8)
    with pytest.raises(SystemExit, match=r"^input images takes uint8 \(0\.\.255\) and the given values span 0\.\.300"):
        run_plan.as_input("images", np.array([0, 300]), np.uint8)
    got = run_plan.as_input("images", np.array([[0, 255]], np.int64), np.uint8)
    assert got.dtype == np.uint8 and got.tolist() == [[0, 255]]
    assert run_plan.as_input("x", np.array([1.5]), np.float16).dtype == np.float16
    values = run_plan.random_values([4, 3, 8, 8], np.uint8, np.random.default_rng(0))
    assert values.dtype == np.uint8 and values.min() < 16 and values.max() > 240
    values = run_plan.random_values([1000], np.int8, np.random.default_rng(0))  # never wrapped to negatives
    assert values.min() >= 0 and values.max() == 127


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["r50_3p", "y5s_plugin_real"])
def test_raw_plan_runs_in_a_plain_tensorrt_script(engines, tmp_path, name):
    """scripts/run_plan.py (TensorRT and torch only; importing netdef fails in its process) runs the exported plan,
    loading the plugin library by path from the sidecar, with outputs equal to the engine's (batch 5 picks the
    three-profile engine's second profile)."""
    import subprocess
    import sys

    if name == "y5s_plugin_real":
        engine = tmp_path / "y5s_plugin.engine"
        build_engine("yolov5s", engines("y5s").parent / "yolov5s.wts", engine,
                     BuildOptions(batch=(1, 8, 32), opt_level=0, params={"head": "plugin"}), log=lambda m: None)
    else:
        engine = engines(name)
    plan = tmp_path / "model.plan"
    side = export_plan(engine, plan)
    assert (len(side["plugins"]) == 1) == (name == "y5s_plugin_real")
    if name == "y5s_plugin_real":  # a photo, so that the NMS keeps boxes
        from netdef.tools.preprocess import letterbox

        data = pytest.importorskip("skimage.data")

        x = letterbox([data.astronaut()] * 5, (640, 640), bgr=False)[0].numpy()
    else:
        x = np.random.default_rng(0).random((5, 3, 224, 224), np.float32)
    np.save(tmp_path / "x.npy", x)
    script = Path(__file__).parents[1] / "scripts" / "run_plan.py"
    code = ("import runpy, sys; sys.modules['netdef'] = None; sys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert not [m for m in sys.modules if m.startswith('netdef.')]")
    r = subprocess.run([sys.executable, "-c", code, str(script), str(plan), "--input", str(tmp_path / "x.npy"),
                        "--output", str(tmp_path / "out.npz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    want = Engine(engine).infer({side["inputs"][0]["name"]: x}, as_numpy=True)
    with np.load(tmp_path / "out.npz") as got:
        assert set(got.files) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    if name == "y5s_plugin_real":
        assert int(want["num_dets"].sum()) > 0  # the plugin ran and kept boxes



@pytest.fixture
def stand_in_engine(tmp_path):
    """An engine file with a complete header and a stand-in plan (no TensorRT needed), e.engine in tmp_path."""
    from test_engine_file import complete_meta

    engine = tmp_path / "e.engine"
    engine_file.write_engine(engine, b"ftrt" + bytes(60), complete_meta() | {"plugins": []})
    return engine


def test_a_triton_model_is_written_whole_or_not_at_all(stand_in_engine, tmp_path, monkeypatch):
    """The plan, its sidecar and config.pbtxt are renamed together: a configuration that cannot be written (a full
    disk) left the new plan in the repository under no or the old configuration, a model Triton fails on."""
    import errno
    import tempfile

    engine = stand_in_engine
    mkstemp = tempfile.mkstemp

    repo = tmp_path / "models"

    def full_disk(*args, prefix="", dir=None, **kwargs):  # the write's temporary file, not a check's probe elsewhere
        if prefix.startswith(".config.pbtxt.") and Path(dir) == repo / "m":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return mkstemp(*args, prefix=prefix, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*config\.pbtxt: No space left on device"):
        write_repository(engine, repo, TritonOptions(name="m"))
    assert not repo.exists() or not [p for p in repo.rglob("*") if p.is_file()]
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    res = write_repository(engine, repo, TritonOptions(name="m"))
    assert res.config.is_file() and res.plan.read_bytes() == b"ftrt" + bytes(60)


def test_a_folder_where_netdef_names_a_file_is_to_be_moved_not_renamed(stand_in_engine, tmp_path):
    """A folder in the place of a file netdef names itself (a plan's sidecar, a Triton model's config.pbtxt) was
    answered "give a file name (e.g. x.plan.json/out.json)", a name no option takes: now, move that folder away."""
    (tmp_path / "x.plan.json").mkdir()
    with pytest.raises(OptionError, match=r"^sidecar .*x\.plan\.json is a directory where netdef writes that file "
                                          r"\(it belongs with .*x\.plan\): move that folder away$"):
        export_plan(stand_in_engine, tmp_path / "x.plan")
    (tmp_path / "models" / "m" / "config.pbtxt").mkdir(parents=True)
    with pytest.raises(OptionError, match=r"^model configuration .*config\.pbtxt is a directory where netdef writes "
                                          r"that file \(it belongs with .*models/m\): move that folder away$"):
        write_repository(stand_in_engine, tmp_path / "models", TritonOptions(name="m"))


def test_an_engine_whose_name_is_no_utf8_gives_a_repository(stand_in_engine, tmp_path):
    """An engine file name of bytes that are no UTF-8 (Latin-1 'e\\xfe.engine'): `netdef triton` failed with a
    UnicodeEncodeError traceback writing config.pbtxt, whose comment names the engine; it says \\xfe there now."""
    engine = tmp_path / os.fsdecode(b"e\xfe.engine")
    stand_in_engine.rename(engine)
    res = write_repository(engine, tmp_path / "models", TritonOptions(name="m"))
    assert "e\\xfe.engine" in res.config.read_text(encoding="utf-8")


def test_the_same_engine_gives_the_same_repository_and_plan(stand_in_engine, tmp_path):
    """A Triton repository (or a raw plan) written again from the same engine, later, is byte for byte the same: a
    repository CI writes on every run, or one kept in version control, changes only when the engine does."""
    import time

    engine = stand_in_engine

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    write_repository(engine, tmp_path / "a", TritonOptions(name="m"))
    export_plan(engine, tmp_path / "a" / "e.plan")
    time.sleep(1.1)  # a clock in the files (seconds) would now differ
    write_repository(engine, tmp_path / "b", TritonOptions(name="m"))
    export_plan(engine, tmp_path / "b" / "e.plan")
    first = files(tmp_path / "a")
    assert first == files(tmp_path / "b") and "m/1/model.plan.json" in first and "e.plan.json" in first


def test_triton_says_which_files_it_wrote_when_it_keeps_the_config(stand_in_engine, tmp_path, capsys):
    """--keep-config leaves config.pbtxt as it was: stdout (what a CI log or a script reads) names the plan as
    written and the configuration as kept, never as written."""
    from netdef.cli import main

    engine = stand_in_engine
    repo = tmp_path / "models"
    assert main(["triton", str(engine), "--repo", str(repo), "--name", "m"]) == 0
    config = repo / "m" / "config.pbtxt"
    assert f"wrote {config} and {repo / 'm' / '1' / 'model.plan'}" in capsys.readouterr().out
    tuned = config.read_text() + "model_warmup [{ name: \"w\" batch_size: 1 }]\n"
    config.write_text(tuned)
    assert main(["triton", str(engine), "--repo", str(repo), "--name", "m", "--version", "2", "--keep-config"]) == 0
    out = capsys.readouterr().out
    assert config.read_text() == tuned
    assert f"wrote {repo / 'm' / '2' / 'model.plan'} (kept {config} as it was)" in out and f"wrote {config}" not in out


@pytest.mark.parametrize("config, model, why", [
    ('name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n', "1/model.onnx",
     r'm/config\.pbtxt says platform: "onnxruntime_onnx"; \S+/m/1/model\.onnx is a model of Triton\'s onnxruntime'),
    ("# tuned\nbackend: 'python'\ninstance_group [{ kind: KIND_CPU }]\n", "1/model.py",
     r"m/config\.pbtxt says backend: \"python\"; \S+/m/1/model\.py is a model of Triton's python"),
    (None, "3/model.savedmodel/saved_model.pb", r"m/3/model\.savedmodel is a model of Triton's tensorflow backend"),
    ("", "2/model.pt", r"m/2/model\.pt is a model of Triton's pytorch backend")])
def test_triton_never_writes_into_a_model_of_another_backend(stand_in_engine, tmp_path, capsys, config, model, why):
    """A model folder of another backend (an ONNX model's config.pbtxt and 1/model.onnx) was answered "differs ...
    --replace-config writes the new one", which then wrote a TensorRT config over the ONNX model's and a plan beside
    model.onnx: now refused before anything is written, naming the backend and the file, with or without
    --keep-config and --replace-config, which are about TensorRT configurations."""
    from netdef.cli import main

    repo, model_dir = tmp_path / "models", tmp_path / "models" / "m"
    (model_dir / model).parent.mkdir(parents=True)
    (model_dir / model).write_bytes(b"a model")
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}

    before = files()
    for policy in ([], ["--keep-config"], ["--replace-config"]):
        assert main(["triton", str(stand_in_engine), "--repo", str(repo), "--name", "m", *policy]) == 1
        err = capsys.readouterr().err
        assert re.search(rf"^netdef triton: error: \S+/models/m holds a model of another backend than TensorRT's "
                         rf"\(\S+/{why}.*\): deploy this engine as a model of its own with another --name, e.g. "
                         r"--name m_trt \(--keep-config and --replace-config never", err), err
        assert "Traceback" not in err and files() == before
    assert main(["triton", str(stand_in_engine), "--repo", str(repo), "--name", "m_trt"]) == 0
    assert files().items() >= before.items()


def test_triton_reads_a_tensorrt_config_as_its_own(stand_in_engine, tmp_path):
    """Only a top-level platform or backend naming another backend is another backend's model: netdef's config
    with a comment or a nested field that says one, and a hand-written `backend: "tensorrt"` config, are not."""
    repo = tmp_path / "models"
    res = write_repository(stand_in_engine, repo, TritonOptions(name="m"))
    written = res.config.read_text()
    res.config.write_text('# platform: "onnxruntime_onnx"\n' + written)  # comments only: rewritten
    write_repository(stand_in_engine, repo, TritonOptions(name="m"))
    assert res.config.read_text() == written
    nested = written + 'parameters [{ key: "backend" value { string_value: "onnxruntime" } }]\n'
    res.config.write_text(nested)
    assert write_repository(stand_in_engine, repo, TritonOptions(name="m", existing_config="keep")).config_kept
    res.config.write_text(written.replace('platform: "tensorrt_plan"', 'backend: "tensorrt"'))
    write_repository(stand_in_engine, repo, TritonOptions(name="m", existing_config="replace"))
    assert res.config.read_text() == written


def test_triton_gpus_are_parsed_as_devices_are(stand_in_engine, tmp_path):
    """--gpus takes what --devices takes ('0, 2', 'all': every GPU, as without it) and is not checked against this
    machine's GPUs: Triton may run on another."""
    from netdef.cli import main

    engine = stand_in_engine
    for i, (gpus, want) in enumerate([("0, 2", "gpus: [0, 2]"), ("7", "gpus: [7]"), ("all", None)]):
        assert main(["triton", str(engine), "--repo", str(tmp_path / "models"), "--name", f"m{i}", "--gpus", gpus]) == 0
        config = (tmp_path / "models" / f"m{i}" / "config.pbtxt").read_text()
        assert (want in config) if want else "gpus:" not in config


def test_info_on_a_sidecar_names_its_plan(stand_in_engine, tmp_path):
    """`netdef info model.plan.json` read the sidecar as a .wts file ("line 1 must be the tensor count"); now it
    names the plan to give instead."""
    plan = tmp_path / "e.plan"
    export_plan(stand_in_engine, plan)
    r = run_cli("info", str(sidecar_path(plan)))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"`netdef info {plan}`" in r.stderr and "tensor count" not in r.stderr, r.stderr


def test_a_line_break_in_the_engines_name_stays_in_the_comment(stand_in_engine, tmp_path):
    """config.pbtxt's first comment names the engine: a file name with a line break ended the comment there, and
    the rest of the name was read as configuration (here a second `name` field; Triton failed to parse it)."""
    engine = tmp_path / 'e\nname: "x".engine'
    stand_in_engine.rename(engine)
    res = write_repository(engine, tmp_path / "models", TritonOptions(name="m"))
    assert '/e\\nname: "x".engine (' in res.config.read_text()
    assert parse_config(res.config).name == "m"


def test_triton_says_when_the_plugin_options_cannot_load_from_the_repositorys_path(stand_in_engine, tmp_path):
    """The server options for a plugin engine name the copied library by its absolute path: under a folder whose
    name holds ';' (Triton's plugins= separator), ':' or a space (LD_PRELOAD's), they were printed as if they
    worked; a note now says they do not, and why."""
    engine = tmp_path / "p.engine"
    write_engine_with_plugin_header(stand_in_engine, engine, tmp_path / "libplug.so")
    plain = write_repository(engine, tmp_path / "models", TritonOptions(name="m"))
    assert not any("plugin libraries' paths hold" in note for note in plain.notes)
    res = write_repository(engine, tmp_path / "my models;v2", TritonOptions(name="m"))
    assert res.libraries and any("paths hold ' ;'" in note and "plugins= at ';'" in note for note in res.notes)


@pytest.mark.parametrize("kind", ["directory", "named pipe"])
def test_a_sidecar_that_is_no_file_is_named_not_passed_over(stand_in_engine, tmp_path, kind):
    """A folder (or a named pipe) named PLAN.json was taken for no sidecar at all: `netdef info` said "no sidecar",
    `netdef triton` "without netdef's metadata (no sidecar ...)", and Engine fell back to the deserialized plan;
    each now names it and says to move it away (a pipe is never opened)."""
    plan = tmp_path / "e.plan"
    export_plan(stand_in_engine, plan)
    side = sidecar_path(plan)
    side.unlink()
    side.mkdir() if kind == "directory" else os.mkfifo(side)
    for read in (read_raw_plan, read_any_meta):
        with pytest.raises(EngineFileError, match=f"e.plan.json is a {kind} where a plan's sidecar belongs.*move it"):
            read(plan)


def test_an_empty_repo_is_refused_not_the_working_folder(stand_in_engine, tmp_path, monkeypatch):
    """`--repo ""` (an unset variable in "$REPO") wrote the model into the working folder, `--repo -` a folder
    named '-' (the file outputs refuse '-')."""
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(OptionError, match=r"--repo '': give the folder of the model repository"):
        write_repository(stand_in_engine, "", TritonOptions(name="m"))
    with pytest.raises(OptionError, match=r"--repo -: a model repository is a folder, not standard output"):
        write_repository(stand_in_engine, "-", TritonOptions(name="m"))  # wrote a folder named '-'
    assert sorted(tmp_path.iterdir()) == before


def test_info_on_a_triton_config_names_a_plan(stand_in_engine, tmp_path):
    """`netdef info REPO/NAME/config.pbtxt` read it as a .wts file ("line 1 must be the tensor count, found '#
    written by netdef ..."); now it says what the file is and names a version's plan to give."""
    res = write_repository(stand_in_engine, tmp_path / "models", TritonOptions(name="m"))
    r = run_cli("info", str(res.config))
    assert r.returncode == 1 and "tensor count" not in r.stderr, r.stderr
    assert "is a Triton model configuration" in r.stderr and f"`netdef info {res.plan}`" in r.stderr, r.stderr


def test_info_on_a_plugin_options_file_or_an_onnx_model_says_what_it_is(stand_in_engine, tmp_path):
    """`netdef info` of plugins.txt (beside a plugin engine's Triton model) or of an ONNX model gave the .wts
    reader's error about line 1; now each is named for what it is, with what to give instead."""
    engine = tmp_path / "p.engine"
    write_engine_with_plugin_header(stand_in_engine, engine, tmp_path / "libplug.so")
    res = write_repository(engine, tmp_path / "models", TritonOptions(name="m"))
    r = run_cli("info", str(res.model_dir / "plugins.txt"))
    assert r.returncode == 1 and "tensor count" not in r.stderr, r.stderr
    assert "is the server options of a Triton model" in r.stderr and f"`netdef info {res.plan}`" in r.stderr, r.stderr
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\t\x12\x07pytorch" + bytes(40))
    r = run_cli("info", str(onnx))
    assert r.returncode == 1 and "is an ONNX model" in r.stderr and "netdef export" in r.stderr, r.stderr
    for name, what, hint in (("my.yaml", "YAML", "for an architecture, `netdef show"),
                             ("blocks.py", "Python source", "for blocks, `netdef blocks --blocks")):
        (tmp_path / name).write_text("# torchvision.models.resnet18: key names\n")
        r = run_cli("info", str(tmp_path / name))
        assert r.returncode == 1 and f"{name} is {what}, not an engine" in r.stderr and hint in r.stderr, r.stderr


def test_triton_says_plugins_txt_is_left_from_an_earlier_plugin_engine(stand_in_engine, tmp_path):
    """A model written for a plugin engine, then for one without plugins (--replace-config), kept plugins.txt
    saying the model needs the plugin library, without a word; a note now says it is left from the earlier one."""
    engine = tmp_path / "p.engine"
    write_engine_with_plugin_header(stand_in_engine, engine, tmp_path / "libplug.so")
    first = write_repository(engine, tmp_path / "models", TritonOptions(name="m"))
    assert not any("earlier plugin engine" in note for note in first.notes)
    res = write_repository(stand_in_engine, tmp_path / "models", TritonOptions(name="m", existing_config="replace"))
    assert any(f"{res.model_dir / 'plugins.txt'} (and the libraries it names) came with an earlier plugin "
               "engine" in note
               for note in res.notes), res.notes


@pytest.mark.parametrize("text", ["{", '{"sidecar": {}}', '{"plugins": [{"name": "x"}]}'])
def test_run_plan_names_a_sidecar_it_cannot_read(tmp_path, monkeypatch, text):
    """scripts/run_plan.py read the plugin libraries from a cut or foreign PLAN.json with a traceback
    (JSONDecodeError, KeyError 'plugins'); it now names the sidecar and says what to do."""
    import torch

    run_plan = load_script("run_plan")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"ftrt" + bytes(60))
    sidecar_path(plan).write_text(text)
    # the sidecar is read after TensorRT's import and the GPU check, before TensorRT is used: stand-ins for both
    monkeypatch.setattr(run_plan.importlib, "import_module", lambda name: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit, match=r"model\.plan\.json: no plugin libraries to read from it .*--plugin"):
        run_plan.main([str(plan)])


def test_export_plan_says_when_the_plugin_library_is_missing_or_changed(stand_in_engine, tmp_path):
    """export-plan of a plugin engine whose library was gone (a cleared cache) or changed printed "load it before
    deserializing the plan" without a word about it (`netdef triton` refused the same engine); a note now says so."""
    engine, library = tmp_path / "p.engine", tmp_path / "libplug.so"
    write_engine_with_plugin_header(stand_in_engine, engine, library)
    r = run_cli("export-plan", str(engine), "-o", str(tmp_path / "a.plan"))
    assert r.returncode == 0 and "libplug.so" not in r.stderr, r.stderr
    library.write_bytes(library.read_bytes() + b"changed")
    r = run_cli("export-plan", str(engine), "-o", str(tmp_path / "b.plan"))
    assert r.returncode == 0 and f"note: plugin library {library} changed since {engine} was built" in r.stderr
    library.unlink()
    r = run_cli("export-plan", str(engine), "-o", str(tmp_path / "c.plan"))
    assert r.returncode == 0 and f"note: {engine} needs plugin library {library} (yolo_decode_nms), which is missing" \
        in r.stderr, r.stderr


def test_build_refuses_to_write_an_engine_over_an_exported_plan_with_its_sidecar(tmp_path):
    """`netdef build ... -o model.plan` over the raw plan `netdef export-plan` wrote (a Triton model's, say) would
    leave model.plan.json describing a plan that is gone and a file Triton cannot load: refused before any work,
    both files left as they were (a .plan name is refused as such; a raw plan with its sidecar under any other name
    too); a plan without a sidecar is any output file."""
    from netdef.build import build_engine

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"ftrt" + b"\0" * 60)
    (tmp_path / "model.plan.json").write_text('{"sidecar": {}}')
    with pytest.raises(OptionError, match=r"model\.plan: a \.plan name says a bare TensorRT plan .* name it "
                                          r"\S+model\.engine"):
        build_engine("resnet18", tmp_path / "missing.wts", plan)
    assert plan.read_bytes() == b"ftrt" + b"\0" * 60 and (tmp_path / "model.plan.json").is_file()
    sidecar = (tmp_path / "model.plan.json").rename(tmp_path / "model.bin.json")
    plan = plan.rename(tmp_path / "model.bin")
    with pytest.raises(OptionError, match=r"model\.bin is a raw TensorRT plan with its sidecar .*model\.bin\.json "
                                          r"\(netdef export-plan\): a netdef engine written there would leave"):
        build_engine("resnet18", tmp_path / "missing.wts", plan)
    assert plan.read_bytes() == b"ftrt" + b"\0" * 60 and sidecar.is_file()
    sidecar.unlink()
    with pytest.raises(NetdefError, match="missing.wts"):  # no sidecar: on to the weights
        build_engine("resnet18", tmp_path / "missing.wts", plan)


def _variant(engine: Path, path: Path, **changes: Any) -> Path:
    """A copy of `engine` (header and plan) with header fields changed."""
    meta, plan = engine_file.read_plan(engine)
    engine_file.write_engine(path, plan, meta | changes)
    return path


def test_triton_adds_a_version_of_another_architecture_under_the_model_name(stand_in_engine, tmp_path):
    """A version added without --name to a model folder of the architecture's name was refused as taking other
    inputs when the older version's plan came from another architecture of the same inputs and outputs (a
    fine-tuned copy of the YAML): its configuration was compared under its own name."""
    meta = engine_file.read_meta(stand_in_engine)
    tuned = _variant(stand_in_engine, tmp_path / "ft.engine", arch=meta["arch"] | {"name": "lenet_ft"})
    write_repository(tuned, tmp_path / "models", TritonOptions(name="lenet"))
    res = write_repository(stand_in_engine, tmp_path / "models", TritonOptions(version=2))
    assert res.plan == tmp_path / "models" / "lenet" / "2" / "model.plan" and res.plan.is_file()


def test_triton_names_the_other_version_that_does_not_fit_the_options(stand_in_engine, tmp_path):
    """--max-queue-delay-us for a batching engine beside a version 1 of whole batches (4:4:4) blamed this engine
    ("the engine's smallest batch is 4 ... rebuild"); the refusal now names version 1's plan."""
    whole = _variant(stand_in_engine, tmp_path / "b4.engine",
                     options=engine_file.read_meta(stand_in_engine)["options"] | {"batch": [4, 4, 4]})
    write_repository(whole, tmp_path / "models", TritonOptions(name="m"))
    with pytest.raises(OptionError, match=r"m: version 1's plan does not fit these options \(--max-queue-delay-us: "
                                          r"the engine's smallest batch is 4.*\), and the config.pbtxt written now"):
        write_repository(stand_in_engine, tmp_path / "models", TritonOptions(name="m", version=2,
                                                                             max_queue_delay_us=100))
    assert not (tmp_path / "models" / "m" / "2").exists()


def test_one_plugins_txt_loads_the_plugins_of_every_version(stand_in_engine, tmp_path):
    """Two versions built with two plugin library files (another netdef or compiler): plugins.txt named only the
    first version's (kept) or only the last one's (replaced), silently. It now names both, by version number (so
    writing a version again changes nothing), with --replace-config; --keep-config says what the plans need; each
    plan's sidecar names its own library only; two files of one plugin creator are noted, and a library copy that
    is gone is left out of the options, with a note."""
    one, two = tmp_path / "one.engine", tmp_path / "two.engine"
    write_engine_with_plugin_header(stand_in_engine, one, tmp_path / "libplug1.so")
    write_engine_with_plugin_header(stand_in_engine, two, tmp_path / "libplug2.so")
    repo, model = tmp_path / "models", tmp_path / "models" / "m"
    lib1, lib2 = (str((model / f"libplug{k}.so").absolute()) for k in (1, 2))
    write_repository(one, repo, TritonOptions(name="m"))
    with pytest.raises(OptionError, match=r"plugins.txt exists and differs"):
        write_repository(two, repo, TritonOptions(name="m", version=2))
    kept = write_repository(two, repo, TritonOptions(name="m", version=2, existing_config="keep"))
    assert "libplug2" not in (model / "plugins.txt").read_text()
    assert f"{model / 'plugins.txt'} kept as it is (--keep-config): the model's plans need {lib1}, {lib2}" in kept.notes
    res = write_repository(two, repo, TritonOptions(name="m", version=2, existing_config="replace"))
    assert res.server_options[0] == f'--backend-config=tensorrt,plugins="{lib1};{lib2}"'
    assert any("libplug1.so and libplug2.so both register plugin NetdefYoloDecodeNms version 1: a Triton process "
               "loads the first" in n for n in res.notes), res.notes
    text = (model / "plugins.txt").read_text()
    assert res.server_options[0] in text.splitlines()
    assert "yolo_decode_nms (libplug1.so), yolo_decode_nms (libplug2.so)" in text.splitlines()[0]
    assert f"start tritonserver with {res.server_options[0]}" in (model / "config.pbtxt").read_text()
    hints = json.dumps(json.loads(sidecar_path(res.plan).read_text())["sidecar"]["load"])
    assert "libplug2.so" in hints and "libplug1.so" not in hints  # version 2's plan needs its own library only
    write_repository(one, repo, TritonOptions(name="m"))  # version 1 again: the same plugins.txt, not "differs"
    assert (model / "plugins.txt").read_text() == text
    (model / "libplug1.so").unlink()
    again = write_repository(two, repo, TritonOptions(name="m", version=2, existing_config="replace"))
    assert any(f"version 1 of m needs the plugin library {model / 'libplug1.so'}, which is not there (left out of the "
               "server options)" in n for n in again.notes), again.notes
    assert again.server_options[0] == f'--backend-config=tensorrt,plugins="{lib2}"'


@pytest.mark.parametrize("kept, problem", [
    ("garbage {\n", r"the \{ or \[ after 'garbage' is not closed"),
    ('name: "m"\n}\n', r"a '\}' closes nothing"),
    ('name: "other"\n', r'its name "other" is not the model folder\'s, m'),
    ("max_batch_size: 4096\n", r"its max_batch_size 4096 is beyond the engine's largest batch, \d+"),
    ('input [ { name: "wrong" } ]\n', r"it lists input wrong, which the engine lacks \(its inputs: .*\); it lacks the "
                                      r"engine's input"),
    ('output { name: "nope" }\n', r"it lists output nope, which the engine lacks"),
])
def test_triton_keep_config_refuses_a_config_triton_would_refuse(stand_in_engine, tmp_path, kept, problem):
    """--keep-config wrote the plan under a config.pbtxt Triton cannot load for it (unpaired braces, another name, a
    larger max_batch_size, inputs the engine lacks) and exited 0: refused now, naming the problem, nothing written;
    a hand-tuned config that fits is kept."""
    repo = tmp_path / "models"
    write_repository(stand_in_engine, repo, TritonOptions(name="m"))
    config = repo / "m" / "config.pbtxt"
    config.write_text(kept)
    with pytest.raises(OptionError, match=rf"^--keep-config: {re.escape(str(config))} cannot serve this engine "
                                          rf"\(Triton would refuse the model\): {problem}.*; mend it, or "
                                          r"--replace-config writes the one for this engine$"):
        write_repository(stand_in_engine, repo, TritonOptions(name="m", version=2, existing_config="keep"))
    assert config.read_text() == kept and not (repo / "m" / "2").exists()
    meta = engine_file.read_meta(stand_in_engine)
    fits = f'name: "m"\nmax_batch_size: 0x2\ninput [ {{ name: "{meta["inputs"][0]["name"]}" }} ]\n'  # hex: protobuf's
    config.write_text(fits)
    kept = write_repository(stand_in_engine, repo, TritonOptions(name="m", version=2, existing_config="keep"))
    assert kept.config_kept and config.read_text() == fits


def test_two_triton_writes_into_one_repository_wait_for_each_other(stand_in_engine, tmp_path):
    """Two `netdef triton` runs into one model at once both passed the check between versions and left a
    config.pbtxt that did not fit the plan Triton serves: a writer holds a lock on the repository folder itself
    (nothing added to it), and the second checks the versions the first wrote."""
    import threading

    from netdef.deploy.triton import _write_repository
    from netdef.fileio import folder_lock

    repo = tmp_path / "models"
    whole = _variant(stand_in_engine, tmp_path / "b4.engine",
                     options=engine_file.read_meta(stand_in_engine)["options"] | {"batch": [4, 4, 4]})
    result: list[Any] = []

    def second() -> None:
        try:
            result.append(write_repository(whole, repo, TritonOptions(name="m", version=2)))
        except OptionError as e:
            result.append(e)

    with folder_lock(repo) as unlocked:
        assert unlocked is None
        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)
        assert t.is_alive() and list(repo.iterdir()) == []  # waiting for the lock
        # the first writer, under the lock it holds (write_repository would wait for it, as the thread does)
        _write_repository(stand_in_engine, repo, TritonOptions(name="m"))
    t.join(10)
    assert len(result) == 1 and isinstance(result[0], OptionError) and "version 1's plan" in str(result[0])
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1", "config.pbtxt"]
    assert [p.name for p in repo.iterdir()] == ["m"]


def test_a_failed_triton_write_leaves_no_repository_folder_and_a_lockless_one_says_so(stand_in_engine, tmp_path,
                                                                                       monkeypatch):
    """The lock makes the repository folder: a write that fails (not an engine) removes it again; where no lock
    can be taken (a file system without locks) the model is written and a note says so."""
    import errno

    from netdef import fileio

    with pytest.raises(EngineFileError):
        write_repository(tmp_path / "missing.engine", tmp_path / "new" / "models")
    assert not (tmp_path / "new").exists()

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fileio.fcntl, "flock", no_locks)
    res = write_repository(stand_in_engine, tmp_path / "models", TritonOptions(name="m"))
    assert res.plan.is_file() and any(n.startswith(f"written without a lock on {tmp_path / 'models'} (no lock on ")
                                      for n in res.notes), res.notes


def test_the_later_version_note_names_no_version_past_trions_largest(stand_in_engine, tmp_path):
    """Beside a version 2^63-1, the note said to deploy as --version 2^63, which the option refuses."""
    from netdef.deploy.triton import MAX_VERSION

    repo = tmp_path / "models"
    write_repository(stand_in_engine, repo, TritonOptions(name="m", version=MAX_VERSION))
    notes = write_repository(stand_in_engine, repo, TritonOptions(name="m", version=5)).notes
    later = [n for n in notes if "a later one" in n]
    assert len(later) == 1 and later[0].endswith(f"not this plan: remove {repo / 'm' / str(MAX_VERSION)}"), notes


def test_export_plan_and_triton_name_what_a_non_plan_is(stand_in_engine, tmp_path):
    """`export-plan E -o x.wts` wrote a plan under a weights name; an architecture YAML given as the engine was
    'a damaged file, or another format'."""
    with pytest.raises(OptionError, match=r"plan .*x\.wts: a \.wts name says \.wts weights, but this writes a bare "
                                          r"TensorRT plan .*: name it .*x\.plan$"):
        export_plan(stand_in_engine, tmp_path / "x.wts")
    assert not (tmp_path / "x.wts").exists()
    yaml = tmp_path / "net.yaml"
    yaml.write_text("input: {name: x, shape: [3, 8, 8]}\nlayers: []\n")
    with pytest.raises(EngineFileError, match=r"net\.yaml is neither a netdef engine nor a TensorRT plan \(it is YAML, "
                                              r"an architecture perhaps: an engine of an architecture is built with "
                                              r"`netdef build ARCH -w WEIGHTS -o OUT\.engine`\)"):
        write_repository(yaml, tmp_path / "models")
