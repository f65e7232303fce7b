"""Every ResNet builds and serializes with the installed builder (TensorRT-RTX in CI), fp32 and fp16."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import misnamed_tensors
from netdef import engine_file
from netdef.build import BuildOptions, build_engine, define_network
from netdef.spec import load_spec

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_builds_fp32_and_fp16(name, torchvision_wts, tmp_path):
    # ResNet-34/101/152 (0.2, 0.4 and 0.5 GB of .wts) are used here alone: written into tmp_path, deleted after
    model, wts = torchvision_wts(name, folder=None if name in ("resnet18", "resnet50") else tmp_path)
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"{name}_{precision}.engine"
        res = build_engine(name, wts, out, BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0),
                           log=lambda m: None)
        assert res.built and out.stat().st_size > 1000
        meta = engine_file.read_meta(out)
        assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"}]
        assert meta["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
        assert meta["precision"] == precision and meta["options"]["batch"] == [1, 4, 8]
        _, plan = engine_file.read_plan(out)
        assert len(plan) > 1000


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_layer_names_are_weight_prefixes(name, torchvision_wts):
    model, wts = torchvision_wts(name)
    net = define_network(load_spec(name), wts, BuildOptions(), log=lambda m: None)
    layers = [net.definition.get_layer(i) for i in range(net.definition.num_layers)]
    conv_names = {l.name for l in layers if l.type == net.trt.LayerType.CONVOLUTION}
    torch_convs = {n for n, m in model.named_modules() if type(m).__name__ in ("Conv2d", "Linear")}
    assert conv_names == torch_convs  # each convolution is named exactly after its PyTorch module
    assert not [l for l in layers if l.type == net.trt.LayerType.MATRIX_MULTIPLY]  # fc: a 1x1 conv on pooled features
    # weightless layers carry the module prefix before '/', so they still point at a PyTorch module
    modules = {n for n, _ in model.named_modules()}
    for l in layers:
        base = l.name.split("/")[0].split("#")[0]
        assert base in modules or base == "input", l.name
    # every layer name is unique
    assert len({l.name for l in layers}) == len(layers)
    # tensors carry their layer's name, so TensorRT's reformat copies ("<tensor> copy") name a module too
    assert misnamed_tensors(net.definition) == []


class _FakeCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return self.data


class _FakeConfig:
    """A builder config whose TensorRT keeps `keep` bytes of a timing cache file (8 bytes: an empty cache)."""

    def __init__(self, keep: int):
        self.keep = keep

    def create_timing_cache(self, data: bytes) -> _FakeCache:
        return _FakeCache(b"h" * 8 + b"e" * max(0, min(self.keep, len(data)) - 8) if data else b"h" * 8)

    def set_timing_cache(self, cache: _FakeCache, ignore_mismatch: bool) -> bool:
        return True


def test_unreadable_timing_cache_is_an_error(tmp_path, monkeypatch):
    """TensorRT only logs when it cannot read a timing cache and builds without it: netdef says so and stops."""
    from netdef import compiler, trt_api
    from netdef.errors import NetdefError

    monkeypatch.setattr(trt_api, "timing_cache_supported", lambda: True)
    path = tmp_path / "t.cache"
    path.write_bytes(b"x" * 100)
    logs: list[str] = []
    assert compiler.load_timing_cache(_FakeConfig(100), str(path), logs.append)[1] == "loaded"
    assert logs[-1].startswith("[netdef] timing cache") and logs[-1].endswith("loaded 100 bytes")
    compiler.load_timing_cache(_FakeConfig(100), str(path), logs.append, tag="onnx")
    assert logs[-1].startswith("[onnx] timing cache")  # the ONNX route's build says whose cache it is
    compiler.load_timing_cache(_FakeConfig(60), str(path), logs.append)
    assert "kept 60 of the 100 bytes" in logs[-2]
    with pytest.raises(NetdefError, match=r"could not read the timing cache .*t.cache \(100 bytes.*if it is a timing "
                                          r"cache, delete it"):
        compiler.load_timing_cache(_FakeConfig(8), str(path), logs.append)
    for other, what in ((b"102\nconv1.weight 9408 3c", "a .wts weights file"), (b"PK\x03\x04", "a zip file"),
                        (b'{"fingerprint": "f"}', "a JSON file")):  # a mistyped path: read, then written over
        path.write_bytes(other)
        with pytest.raises(NetdefError, match=rf"the timing cache .*t.cache exists and is not a TensorRT timing cache "
                                              rf"\(it looks like {what}"):
            compiler.load_timing_cache(_FakeConfig(100), str(path), logs.append)
        assert path.read_bytes() == other


class _RefusingConfig(_FakeConfig):
    """TensorRT 8.6 reading back a cache with Myelin entries it wrote (H100, EfficientNet-B0's ONNX route after
    netdef's build): it logs two errors and keeps the bytes (builds with such a cache on an H100 took 24-28 s
    against 508 s cold, so it uses part of it)."""

    def __init__(self, log):
        super().__init__(100)
        self.trt_log = log

    def create_timing_cache(self, data: bytes) -> _FakeCache:
        from netdef import trt_api

        if data:
            error = trt_api.module().ILogger.Severity.ERROR
            self.trt_log.log(error, "1: [myelinCache.h::deserializeFromBuffer::52] Error Code 1: Myelin (Myelin error "
                                    "from unknown graph)")
            self.trt_log.log(error, "4: The timing cache will not be used!")
        return super().create_timing_cache(data)


def test_a_timing_cache_tensorrt_refuses_is_said(tmp_path, monkeypatch, capsys):
    """TensorRT logs that it will not use a timing cache (all or part of it): netdef warns, quoting it, and the
    build's state is "refused" (compare_routes.py reported such a build as "warm" before)."""
    from netdef import compiler, trt_api

    monkeypatch.setattr(trt_api, "timing_cache_supported", lambda: True)
    path = tmp_path / "t.cache"
    path.write_bytes(b"x" * 100)
    logs: list[str] = []
    stderr_logger = trt_api._stderr_logger()
    mark = trt_api.error_mark()
    assert compiler.load_timing_cache(_RefusingConfig(stderr_logger), str(path), logs.append)[1] == "refused"
    assert len(trt_api.errors_since(mark)) == 2
    assert logs[-1].startswith(f"[netdef] warning: TensorRT did not use all of the timing cache {path} (100 bytes; "
                               "it said: 1: [myelinCache.h")
    assert logs[-1].endswith("will not be used!): this build times again the tactics it could not take from it")
    assert "The timing cache will not be used!" in capsys.readouterr().err  # TensorRT's own words, as it logged them
    mark = trt_api.error_mark()  # errors before the mark are not this cache's
    assert compiler.load_timing_cache(_FakeConfig(100), str(path), logs.append)[1] == "loaded"
    assert trt_api.errors_since(mark) == []
    assert compiler.load_timing_cache(_RefusingConfig(stderr_logger), str(tmp_path / "new.cache"),
                                      logs.append)[1] == "new"


def test_an_empty_timing_cache_reads_back(tmp_path, monkeypatch):
    """A level-0 build times no tactics and writes an empty cache (203 bytes with TensorRT 8.6): reading it back
    is no error (an H200 run refused it before)."""
    from netdef import compiler, trt_api

    monkeypatch.setattr(trt_api, "timing_cache_supported", lambda: True)
    path = tmp_path / "t.cache"
    path.write_bytes(b"h" * 8)  # what _FakeConfig serializes for an empty cache
    logs: list[str] = []
    assert compiler.load_timing_cache(_FakeConfig(8), str(path), logs.append)[1] == "loaded"
    assert logs[-1].endswith("loaded 8 bytes")


def test_a_timing_cache_that_cannot_be_written_keeps_the_engine(tmp_path, monkeypatch):
    """The timing cache was written before the engine: a full disk there threw the finished build away. The engine
    is written first; the cache's failure is still an error, which says the engine was written."""
    import errno

    from helpers import lenet_weights
    from netdef import compiler, trt_api
    from netdef.wts import write_wts

    monkeypatch.setattr(trt_api, "timing_cache_supported", lambda: True)
    write_wts(tmp_path / "l.wts", lenet_weights(0))
    cache, engine = tmp_path / "t.cache", tmp_path / "l.engine"
    real = compiler.atomic_write

    def full_for_the_cache(path, chunks):
        if str(path) == str(cache):
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        real(path, chunks)

    monkeypatch.setattr(compiler, "atomic_write", full_for_the_cache)
    with pytest.raises(OSError, match=r"cannot write .*t\.cache: No space left on device; the engine .*l\.engine "
                                      r"was written, its timing cache not"):
        build_engine("lenet", tmp_path / "l.wts", engine, BuildOptions(timing_cache=str(cache)), log=lambda m: None)
    assert engine_file.read_meta(engine)["arch"]["name"] == "lenet" and not cache.exists()


def test_the_wts_progress_bar_can_be_turned_off_from_python(tmp_path, monkeypatch, capsys):
    """A program of yours on a terminal: define_network / build_engine draw a bar while reading the .wts unless
    progress=False."""
    import sys

    from netdef.define import define_network
    from netdef.wts import write_wts

    write_wts(tmp_path / "l.wts", {"fc.weight": np.ones((2, 4), np.float32), "fc.bias": np.zeros(2, np.float32)})
    (tmp_path / "l.yaml").write_text("name: l\ninput: {name: x, shape: [4, 1, 1]}\noutput: y\nlayers:\n"
                                     "  - [-1, 1, Linear, {c2: 2}, fc]\n")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    define_network(tmp_path / "l.yaml", tmp_path / "l.wts", log=lambda m: None)
    assert "l.wts" in capsys.readouterr().err  # the bar
    define_network(tmp_path / "l.yaml", tmp_path / "l.wts", log=lambda m: None, progress=False)
    assert capsys.readouterr().err == ""


def test_fp32_rows_are_built_in_float32_and_recorded(torchvision_wts, tmp_path, capsys):
    """--fp32-rows 'layer4*' --fp32-rows fc in an fp16 build: those rows' layers compute in float32 (strongly
    typed: their tensors are float32, cast at the borders; TensorRT 8.6: their precision is set), the others in
    fp16; the header records the patterns (a set) and `netdef info` shows them; a pattern naming no row (a layer inside
    one) is an error listing the rows; --fp32-rows in an fp32 build is refused."""
    from netdef import trt_api
    from netdef.cli import main
    from netdef.errors import OptionError

    _, wts = torchvision_wts("resnet18")
    opts = BuildOptions(precision="fp16", fp32_rows=("layer4*", "fc"))
    net = define_network("resnet18", wts, opts, log=lambda m: None)
    raw = net.definition.raw
    layers = {raw.get_layer(i).name: raw.get_layer(i) for i in range(raw.num_layers)}
    strongly_typed = net.strongly_typed
    for name, fp32 in (("layer4.1.conv2", True), ("fc", True), ("layer3.1.conv2", False), ("conv1", False)):
        layer = layers[name]
        if strongly_typed:
            assert (layer.get_output(0).dtype == trt_api.module().float32) == fp32, name
        else:
            assert (layer.precision_is_set and layer.precision == trt_api.module().float32) == fp32, name
    out = tmp_path / "r18.engine"
    assert main(["build", "resnet18", "-w", str(wts), "-o", str(out), "--precision", "fp16", "--fp32-rows", "layer4*",
                 "--fp32-rows", "fc", "--opt-level", "0"]) == 0
    assert engine_file.read_meta(out)["options"]["fp32_rows"] == ["fc", "layer4*"]  # a set: sorted
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "  built with --fp32-rows fc --fp32-rows 'layer4*' --opt-level 0\n" in capsys.readouterr().out
    # the patterns in another order, or one repeated, are the same engine: up to date
    same = BuildOptions(precision="fp16", fp32_rows=("fc", "layer4*", "fc"), opt_level=0)
    assert same.fp32_rows == ("fc", "layer4*")
    assert not build_engine("resnet18", wts, out, same, log=lambda m: None).built
    with pytest.raises(OptionError, match=r"--fp32-rows 'layer4\.0\.conv1' matches no row of resnet18; it names YAML "
                                          r"rows by their key prefix .*not layers inside one \(row 0: no key prefix, "
                                          r"only '\*' names it\): maxpool, layer1, layer2"):
        define_network("resnet18", wts, BuildOptions(precision="fp16", fp32_rows=("layer4.0.conv1",)),
                       log=lambda m: None)
    with pytest.raises(OptionError, match=r"--fp32-rows keeps rows in float32 in an fp16 or int8 build"):
        define_network("resnet18", wts, BuildOptions(fp32_rows=("fc",)), log=lambda m: None)
    # verify --cpu evaluates the rows kept in float32 as such: every row in float32, the output's error falls
    from netdef.verify import verify

    model = torchvision_wts("resnet18")[0]
    out_error = {rows: verify("resnet18", wts, model, cpu=True, log=lambda m: None,
                              opts=BuildOptions(precision="fp16", fp32_rows=rows)).rows[-1].error
                 for rows in ((), ("*",))}
    assert out_error[("*",)] < out_error[()] / 10, out_error
