"""`netdef export` of a checkpoint that pickles model classes whose code is not importable names the package to
install (Ultralytics' YOLOv8/YOLO11/YOLO26 checkpoints pickle `ultralytics.*` classes)."""
from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

from netdef.errors import NetdefError, OptionError
from netdef.export import load_checkpoint

torch = pytest.importorskip("torch")


class _Missing(torch.nn.Module):  # pickled by reference under a module name that will not exist at load time
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)


def _pickle_under(module: str, path) -> None:
    fake = types.ModuleType(module)
    _Missing.__module__ = module
    fake._Missing = _Missing
    sys.modules[module] = fake
    try:
        torch.save({"model": _Missing()}, path)
    finally:
        del sys.modules[module]
        _Missing.__module__ = __name__


@pytest.mark.parametrize("module", ["ultralytics_netdef_missing", "ultralytics.netdef_missing"])
def test_missing_ultralytics_module_names_the_package(module, tmp_path):
    path = tmp_path / "yolo.pt"
    _pickle_under(module, path)
    with pytest.raises(NetdefError, match=rf"module '{module}' not found\)\. This looks like an Ultralytics "
                                          r"\(YOLOv8/YOLO11/YOLO26\) checkpoint: `pip install ultralytics`"):
        load_checkpoint(path)


def test_other_missing_module_gets_no_ultralytics_hint(tmp_path):
    """A module of one's own: its folder on PYTHONPATH is the fix; where its file lies beside the checkpoint (run
    from another folder), that folder is named."""
    path = tmp_path / "other.pt"
    _pickle_under("netdef_missing_pkg", path)
    with pytest.raises(NetdefError, match=r"module 'netdef_missing_pkg' not found\)\. Install the package that "
                                          r"provides it \(`pip install netdef_missing_pkg`\?\), or, for code of your "
                                          r"own, put the folder holding netdef_missing_pkg on PYTHONPATH \(or run from "
                                          r"it\)\. Alternatively save "
                                          r"`model\.state_dict\(\)` .*verify's --model then takes the code") as info:
        load_checkpoint(path)
    assert "Ultralytics" not in str(info.value)
    (tmp_path / "netdef_missing_pkg.py").write_text("")
    folder = re.escape(str(tmp_path))
    with pytest.raises(NetdefError, match=rf"Its code, netdef_missing_pkg, lies beside the checkpoint: run from "
                                          rf".* or put that folder on PYTHONPATH \(`PYTHONPATH={folder} netdef \.\.\.`\)"):
        load_checkpoint(path)


def test_state_dict_goes_into_a_checkpoints_pickled_model(tmp_path):
    """`export ckpt.pt --state-dict ft.pt`: the fine-tuned weights, in float32, not the checkpoint's (fp16) ones;
    a checkpoint holding only weights has no model to load them into, and says so."""
    import numpy as np
    import torch

    from netdef.export import export_wts
    from netdef.wts import read_wts

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save({"model": model.half(), "ema": None}, tmp_path / "ck.pt")  # as Ultralytics saves it
    tuned = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()
    torch.save(tuned, tmp_path / "ft.pt")
    export_wts(str(tmp_path / "ck.pt"), tmp_path / "ft.wts", state_dict=str(tmp_path / "ft.pt"))
    got = read_wts(tmp_path / "ft.wts")
    for k, v in tuned.items():
        if v.is_floating_point():
            np.testing.assert_array_equal(got[k], v.numpy().ravel(), err_msg=k)
    with pytest.raises(NetdefError, match="ft.pt holds weights, not a model to load them into"):
        export_wts(str(tmp_path / "ft.pt"), tmp_path / "x.wts", state_dict=str(tmp_path / "ft.pt"))


def test_a_state_dict_that_does_not_fit_says_how(tmp_path):
    """`export SOURCE --state-dict SD` whose tensors differ from the model's: the head's class count (an Ultralytics
    head's `nc`) or the first differing shapes and keys, and what to do, in one line, not PyTorch's list."""
    import torch

    from netdef.export import load_source

    (tmp_path / "heads.py").write_text(
        "import torch\n"
        "class Head(torch.nn.Module):\n"
        "    def __init__(self, nc):\n"
        "        super().__init__()\n"
        "        self.nc, self.cv3 = nc, torch.nn.Conv2d(4, nc, 1)\n"
        "class Model(torch.nn.Module):\n"
        "    def __init__(self, nc=80):\n"
        "        super().__init__()\n"
        "        self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), Head(nc))\n")
    heads = load_source(f"{tmp_path / 'heads.py'}:Model")
    torch.save(type(heads)(nc=3).state_dict(), tmp_path / "nc3.pt")
    with pytest.raises(NetdefError, match=r"nc3\.pt does not fit the model of .*heads\.py:Model: the head's class "
                                          r"count differs \(the model's 80, \S*nc3\.pt's 3\), 2 tensor\(s\)' shapes "
                                          r"differ \(model\.1\.cv3\.weight: \[80, 4, 1, 1\] in the model, \[3, 4, 1, "
                                          r"1\] in .*`netdef build` takes the class count from the weights\)$"):
        load_source(f"{tmp_path / 'heads.py'}:Model", state_dict=str(tmp_path / "nc3.pt"))
    torch.save({"conv.weight": torch.zeros(4, 3, 1, 1)}, tmp_path / "other.pt")
    with pytest.raises(NetdefError, match=r"4 key\(s\) missing from \S*other\.pt \(e\.g\. model\.0\.weight, "
                                          r"model\.0\.bias, model\.1\.cv3\.weight, \.\.\.\), 1 key\(s\) not in the "
                                          r"model \(e\.g\. conv\.weight\); give the checkpoint of the model these "
                                          r"weights were trained as, or export them alone \(`netdef export \S*other\.pt "
                                          r"-o OUT\.wts`\)$"):
        load_source(f"{tmp_path / 'heads.py'}:Model", state_dict=str(tmp_path / "other.pt"))
    (tmp_path / "weights_only.py").write_text("def make():\n    return {'conv.weight': 0}\n")
    with pytest.raises(NetdefError, match=r"weights_only\.py:make gives a dict, not a torch module to load the "
                                          r"weights into"):  # a callable returning a state_dict: no AttributeError
        load_source(f"{tmp_path / 'weights_only.py'}:make", state_dict=str(tmp_path / "other.pt"))


def test_a_missing_dependency_of_the_models_code_is_named_with_its_importer(tmp_path, monkeypatch):
    """The pickled class's module is importable but imports a package that is not installed (YOLOv5's code and
    pandas): the error names that package, the file that imports it, and the pip command."""
    import importlib

    name = "netdef_test_pickled_models"  # a module name no other test uses
    source = tmp_path / f"{name}.py"
    source.write_text("import torch\n\n\nclass Net(torch.nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    torch.save({"model": module.Net()}, tmp_path / "net.pt")
    del sys.modules[name]
    source.write_text("import netdef_absent_dependency\nimport torch\n\n\nclass Net(torch.nn.Module):\n    pass\n")
    importlib.invalidate_caches()
    with pytest.raises(NetdefError, match=rf"net\.pt: the model's code \(.*{name}\.py:1\) imports "
                                          r"'netdef_absent_dependency', which is not installed: `pip install "
                                          r"netdef_absent_dependency`"):
        load_checkpoint(tmp_path / "net.pt")
    sys.modules.pop(name, None)


def test_export_leaves_the_callers_random_streams_alone(tmp_path):
    """export_wts seeds the global generators while the model is made (reproducible exports) and puts their
    states back: a training loop exporting each epoch keeps its own random stream."""
    import random

    import numpy as np

    from netdef.errors import OptionError
    from netdef.export import export_wts
    from netdef.wts import read_wts

    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    want = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    export_wts("torchvision:resnet18", tmp_path / "a.wts", seed=3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
    export_wts("torchvision:resnet18", tmp_path / "b.wts", seed=3)
    assert (tmp_path / "a.wts").read_bytes() == (tmp_path / "b.wts").read_bytes()
    assert read_wts(tmp_path / "a.wts")["fc.weight"].shape == (512000,)
    with pytest.raises(OptionError, match=r"--seed 99999999999999999999: expected an integer from 0 to 2\*\*63 - 1"):
        export_wts("torchvision:resnet18", tmp_path / "c.wts", seed=99999999999999999999)


def test_a_plain_pickle_and_a_wts_given_as_checkpoint_are_named(tmp_path):
    """pickle.dump's file is no torch.save checkpoint (torch says 'Invalid magic number'); a .wts named .pt is
    named as one, and neither it nor a PNG image is unpickled (no 'full unpickling' notice: refused before)."""
    import pickle

    from netdef.export import load_checkpoint

    plain = tmp_path / "weights.pkl"
    plain.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(NetdefError, match=r"weights\.pkl: it is a plain pickle, not a torch\.save file: load it with "
                                          r"pickle and torch\.save what it holds"):
        load_checkpoint(plain)
    wts = tmp_path / "best.pt"
    wts.write_text("1\nw 1 3f800000\n")
    said = []
    with pytest.raises(NetdefError, match=r"best\.pt \(best\.pt looks like a \.wts weights file\): it holds weights "
                                          r"already; give it to `netdef build ARCH -w FILE`$"):
        load_checkpoint(wts, log=said.append)
    png = tmp_path / "photo.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(NetdefError, match=r"photo\.pt looks like a PNG image\): give the \.pt/\.pth file torch\.save "
                                          r"wrote$"):
        load_checkpoint(png, log=said.append)
    assert said == []  # a file that is recognisably no checkpoint is never unpickled with pickle's full power


def test_randomize_constants_gives_every_constant_tensor_values():
    """--randomize-constants: initial norms, zero biases and 1e-6 layer scales get values in [0.5, 1.5), the same for
    the same seed; tensors that already vary and integer buffers are kept."""
    from netdef.export import randomize_constants

    def model():
        torch.manual_seed(0)
        m = torch.nn.Module()
        m.conv = torch.nn.Conv2d(3, 4, 3)
        torch.nn.init.zeros_(m.conv.bias)
        m.ln = torch.nn.LayerNorm(4)
        m.gamma = torch.nn.Parameter(torch.full((4, 1, 1), 1e-6))
        m.register_buffer("index", torch.arange(4))
        return m

    a, b = model(), model()
    conv = a.conv.weight.detach().clone()
    assert randomize_constants(a, seed=3) == ["gamma", "conv.bias", "ln.weight", "ln.bias"]
    randomize_constants(b, seed=3)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert torch.equal(a.conv.weight, conv) and torch.equal(a.index, torch.arange(4))
    assert all(0.5 <= float(t.min()) and float(t.max()) < 1.5
               for t in (p.detach() for p in (a.gamma, a.conv.bias, a.ln.weight, a.ln.bias)))


def test_randomize_bn_on_a_model_without_batchnorm_says_so(tmp_path):
    """--randomize-bn on a model with no BatchNorm (a transformer) changes nothing: a note says so and points at
    --randomize-constants, which that model's LayerNorms and zero biases need."""
    from netdef.export import export_wts

    said: list[str] = []
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    export_wts(model, tmp_path / "m.wts", randomize_bn=True, log=said.append)
    assert said == ["[netdef] note: --randomize-bn: the model has no BatchNorm, nothing changed (--randomize-constants "
                    "gives constant weights such as LayerNorm's affines and zero biases random values)"]
    said.clear()
    export_wts(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)), tmp_path / "c.wts",
               randomize_bn=True, log=said.append)
    assert said == []


def test_unpickling_code_is_said_before_it_runs(tmp_path):
    """A checkpoint that holds more than tensors is loaded with pickle's full power only after a line saying so;
    an empty file or a folder is named as such."""
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "net.pt")
    said = []
    ckpt = load_checkpoint(tmp_path / "net.pt", log=said.append)
    assert isinstance(ckpt["model"], torch.nn.Linear)
    assert said == [f"[netdef] {tmp_path / 'net.pt'} does not load as tensors alone: loading it with full "
                    "unpickling, which runs code the file names (load only checkpoints you trust)"]
    torch.save({"w": torch.ones(2)}, tmp_path / "sd.pt")
    said.clear()
    load_checkpoint(tmp_path / "sd.pt", log=said.append)
    assert said == []
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(NetdefError, match=r"empty\.pt is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(NetdefError, match=r"is a directory: give the checkpoint file"):
        load_checkpoint(tmp_path)


def test_a_damaged_checkpoint_is_refused_not_exported(tmp_path):
    """Bytes changed inside torch.save's zip file (a bad copy) loaded as weights without a word, and a cut-short
    file failed with miniz's words: both are named damaged, before anything is unpickled."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(4096, dtype=torch.float32)}, good)
    data = bytearray(good.read_bytes())
    start = data.index(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[:64])
    data[start + 100:start + 200] = bytes(100)
    (tmp_path / "changed.pt").write_bytes(data)
    with pytest.raises(NetdefError, match=r"changed\.pt is damaged: its record \S+/data/0 fails its CRC-32 check"):
        load_checkpoint(tmp_path / "changed.pt")
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(NetdefError, match=r"cut\.pt is damaged \(its zip directory does not read: .*cut short"):
        load_checkpoint(tmp_path / "cut.pt")
    assert load_checkpoint(good)["w"][4095] == 4095
    torch.serialization.set_crc32_options(False)  # faster saves of large checkpoints: no CRC-32 written, none checked
    try:
        torch.save({"w": torch.arange(4096, dtype=torch.float32)}, tmp_path / "no_crc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    assert load_checkpoint(tmp_path / "no_crc.pt")["w"][4095] == 4095


def test_class_names_beside_a_wts_whose_name_is_no_utf8(tmp_path):
    """A .wts named in bytes that are no UTF-8 (Latin-1 'y\\xff.wts'): the names file, which records the .wts's name,
    failed to encode (a UnicodeEncodeError traceback, nothing written); the name is recorded as y\\xff.wts."""
    import json
    import os

    from netdef.class_names import names_sidecar, read_names_sidecar
    from netdef.export import export_wts
    from netdef.fileio import file_sha256

    model = torch.nn.Conv2d(1, 2, 1)
    model.names = ["cat", "dog"]
    out = tmp_path / os.fsdecode(b"y\xff.wts")
    export_wts(model, out, log=lambda m: None)
    assert read_names_sidecar(names_sidecar(out)) == (["cat", "dog"], file_sha256(out))
    assert json.loads(names_sidecar(out).read_bytes())["weights"] == "y\\xff.wts"


def test_a_damaged_names_file_says_where_its_json_breaks(tmp_path):
    """A names file cut short or mangled by hand said 'not JSON (it looks like a JSON file)'; now where it breaks.
    A binary file there still says what its bytes look like."""
    from netdef.class_names import read_names_sidecar

    cut = tmp_path / "y.wts.names.json"
    cut.write_text('{"names": [\n')
    with pytest.raises(NetdefError, match=r"y\.wts\.names\.json: not JSON \(invalid JSON: Expecting value: line 2 "
                                          r"column 1 \(char 12\)\): export the weights again"):
        read_names_sidecar(cut)
    cut.write_bytes(b"\x00\x01junk")
    with pytest.raises(NetdefError, match=r"not JSON \(it starts with b'\\x00\\x01junk'\)"):
        read_names_sidecar(cut)


def test_a_text_file_is_never_unpickled(tmp_path):
    """An architecture YAML given as the checkpoint (`netdef export lenet.yaml`, `verify --model`) was loaded with full
    unpickling after the notice that this runs code, and failed with "UnpicklingError: invalid load key, '#'";
    torch.save writes a zip file or a pickle, so a file starting otherwise is named as no checkpoint, unpickled never."""
    said = []
    for name, text in (("lenet.yaml", "# LeNet\nname: lenet\n"), ("h.pt", "hello")):
        (tmp_path / name).write_text(text)
        with pytest.raises(NetdefError, match=rf"cannot read checkpoint .*{name}: it is not a PyTorch checkpoint \(it "
                                              rf"starts with b'{text[:5]}.*\): torch\.save writes a zip file or a "
                                              "pickle"):
            load_checkpoint(tmp_path / name, log=said.append)
    assert said == []
    (tmp_path / "m.onnx").write_bytes(b"\x08\x09\x12\x07pytorch")  # an ONNX model: what to give instead
    with pytest.raises(NetdefError, match=r"m\.onnx: it is not a PyTorch checkpoint .*; an ONNX model holds no "
                                          r"PyTorch module to export: give the checkpoint or the code"):
        load_checkpoint(tmp_path / "m.onnx", log=said.append)


def test_the_class_names_a_model_carries():
    """Ultralytics' {0: 'cat', ...} and YOLOv5's list, in class order; Ultralytics' default names (the indices) and
    anything that is no list of names are none."""
    from types import SimpleNamespace

    from netdef.class_names import model_names

    assert model_names(SimpleNamespace(names={1: "dog", 0: "cat", 2: "fox"})) == ["cat", "dog", "fox"]
    assert model_names(SimpleNamespace(names=("person", "car"))) == ["person", "car"]
    for names in ({0: "0", 1: "1"}, ["0", "1", "2"], {0: "cat", 2: "fox"}, ["cat", 1], [], "cat", None,
                  {0: "cat", "x": "dog"}):  # keys of mixed types: none, not a TypeError from sorting them
        assert model_names(SimpleNamespace(names=names)) is None, names
    assert model_names(torch.nn.Conv2d(1, 1, 1)) is None
    # '0' keys (a names mapping read from JSON or YAML) are the class indices, as Ultralytics' check_class_names
    assert model_names(SimpleNamespace(names={"1": "dog", "0": "cat"})) == ["cat", "dog"]
    assert model_names(SimpleNamespace(names={0: "cat", "1": "dog"})) == ["cat", "dog"]


@pytest.mark.parametrize("names, said", [({0: "cat", 2: "fox"}, True), (["cat", 1], True), ({0: "0", 1: "1"}, False),
                                         (None, False)])
def test_names_a_model_carries_but_export_cannot_record_are_said(tmp_path, names, said):
    """A model whose names are no class names in class order (a gap in the indices, a name that is no string):
    export records none, as before, and now says so and how to give them; Ultralytics' default names (the
    indices) and no names stay quiet."""
    from netdef.class_names import names_sidecar
    from netdef.export import export_wts

    model = torch.nn.Conv2d(1, 2, 1)
    model.names = names
    logged: list[str] = []
    export_wts(model, tmp_path / "y.wts", log=logged.append)
    assert not names_sidecar(tmp_path / "y.wts").exists()
    notes = [m for m in logged if "are not class names in class order" in m]
    assert len(notes) == said and (not said or "`netdef build --names FILE` gives them" in notes[0]), logged


def test_export_checks_its_outputs_and_state_dict_before_loading_the_checkpoint(tmp_path, monkeypatch):
    """A names file path netdef may not write over (a file of the user's, a folder) and a missing or wrong --state-dict
    are refused before the (maybe large) checkpoint is loaded, and nothing is written."""
    from netdef.cli import main
    from netdef.export import export_wts

    ckpt = tmp_path / "big.pt"
    torch.save(torch.nn.Conv2d(1, 1, 1).state_dict(), ckpt)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    out = tmp_path / "y.wts"
    mine = tmp_path / "y.wts.names.json"
    mine.write_text("cat\ndog\n")
    with pytest.raises(NetdefError, match=r"the class names file .*y\.wts\.names\.json exists and is not a netdef "
                                          r"class names file"):
        export_wts(str(ckpt), out)
    mine.unlink()
    mine.mkdir()
    with pytest.raises(NetdefError, match=r"the class names file .*y\.wts\.names\.json is a directory"):
        export_wts(str(ckpt), out)
    mine.rmdir()
    for state_dict, said in ((tmp_path / "gone.pt", r"checkpoint not found: .*gone\.pt"),
                             (tmp_path, r"is a directory: give the checkpoint file"),
                             (out.with_suffix(".png"), r"y\.png looks like a PNG image")):
        if state_dict.suffix == ".png":
            state_dict.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
        with pytest.raises(NetdefError, match=said):
            export_wts(str(ckpt), out, state_dict=str(state_dict))
    assert loads == [] and not out.exists() and not mine.exists()
    assert main(["export", str(ckpt), "-o", str(out)]) == 0 and len(loads) == 1  # the checks pass a good export

    named = torch.nn.Conv2d(1, 1, 1)
    named.names = ["cat", "dog"]
    long = tmp_path / ("w" * 246 + ".wts")  # a legal name, but its names file's is too long
    with pytest.raises(OptionError, match=r"the class names file .*\.wts\.names\.json: its name is 261 bytes long, "
                                          r"over the \d+ bytes .*; the model carries 2 class names, written to "
                                          r"OUTPUT\.names\.json: give a shorter -o"):
        export_wts(named, long)
    assert not long.exists()
    del named.names  # without names the long name is fine
    export_wts(named, long)
    assert long.exists()


def test_a_wts_and_its_class_names_are_written_together(tmp_path, monkeypatch):
    """The names file was written after the .wts had replaced the old one: a full disk there left new weights beside
    the old weights' names (which `build` then ignored). Both are renamed once both are written: all or none."""
    import errno
    import tempfile

    from netdef.class_names import names_sidecar, read_names_sidecar
    from netdef.export import export_wts
    from netdef.fileio import file_sha256

    def named(seed: int, names: list[str]):
        torch.manual_seed(seed)
        model = torch.nn.Conv2d(1, 2, 1)
        model.names = names
        return model

    out = tmp_path / "y.wts"
    export_wts(named(0, ["cat", "dog"]), out, log=lambda m: None)
    old = out.read_bytes(), names_sidecar(out).read_bytes()
    real = tempfile.mkstemp

    def no_room_for_names(*args, **kwargs):
        if ".names.json" in kwargs.get("prefix", ""):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", no_room_for_names)
    with pytest.raises(OSError, match=r"y\.wts\.names\.json: No space left on device"):
        export_wts(named(1, ["fox", "owl"]), out, log=lambda m: None)
    assert (out.read_bytes(), names_sidecar(out).read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.wts", "y.wts.names.json"]
    monkeypatch.undo()
    export_wts(named(1, ["fox", "owl"]), out, log=lambda m: None)
    assert read_names_sidecar(names_sidecar(out)) == (["fox", "owl"], file_sha256(out))


def test_an_export_without_names_removes_the_names_of_the_weights_it_replaces(tmp_path, monkeypatch):
    """Weights without class names exported over a .wts whose names file an earlier export wrote: the stale names
    file goes with the rename (a failed write keeps both), names of the very bytes written stay, and a names file
    of another .wts (copied beside it under this name) is left alone."""
    import shutil

    from netdef.class_names import names_sidecar
    from netdef.export import export_wts

    def model(seed: int, names: list[str] | None = None):
        torch.manual_seed(seed)
        m = torch.nn.Conv2d(1, 2, 1)
        if names:
            m.names = names
        return m

    out, logs = tmp_path / "y.wts", []
    export_wts(model(0, ["cat", "dog"]), out, log=logs.append)
    export_wts(model(0), out, log=logs.append)  # the same bytes: their names still hold
    before = out.read_bytes(), names_sidecar(out).read_bytes()
    monkeypatch.setattr("netdef.fileio.interrupts.deferred", lambda: 1 / 0)  # fails before any rename
    with pytest.raises(ZeroDivisionError):
        export_wts(model(1), out, log=logs.append)
    monkeypatch.undo()
    assert (out.read_bytes(), names_sidecar(out).read_bytes()) == before
    export_wts(model(1), out, log=logs.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.wts"]
    assert logs[-1] == f"[netdef] removed {names_sidecar(out)}: the class names of the weights {out} held before " \
                       "(this model carries none)"
    other = tmp_path / "other.wts"
    export_wts(model(2, ["fox"]), other, log=logs.append)
    shutil.copy(names_sidecar(other), names_sidecar(out))  # names of other.wts's bytes, not of y.wts's
    export_wts(model(3), out, log=logs.append)
    assert names_sidecar(out).read_bytes() == names_sidecar(other).read_bytes()


def test_a_state_dict_that_fits_one_architecture_is_told_how_to_build(tmp_path, monkeypatch):
    """`netdef export` of a plain state_dict says which architecture to build, as for an Ultralytics checkpoint,
    where its weights fit exactly one (LeNet's); nothing where none does. Only architectures whose first and last
    rows' keys the weights have are built (the search stays under a second)."""
    import torch

    from netdef import define
    from netdef.errors import TensorRTUnavailable
    from netdef.examples.digits import LeNet
    from netdef.export import export_wts

    built: list[str] = []
    fits = define._fits
    monkeypatch.setattr(define, "_fits", lambda spec, *a: built.append(spec.name) or fits(spec, *a))
    logs: list[str] = []
    export_wts(LeNet().state_dict(), tmp_path / "l.wts", log=logs.append)
    assert logs == [f"[netdef] these weights fit netdef's lenet: build it with `netdef build lenet -w "
                    f"{tmp_path / 'l.wts'} -o l.engine`"]
    assert built == ["lenet"]
    export_wts(torch.nn.Conv2d(1, 2, 1), tmp_path / "c.wts", log=logs.append)
    assert len(logs) == 1 and built == ["lenet"]

    def no_tensorrt():
        raise TensorRTUnavailable("no TensorRT Python module found")

    monkeypatch.setattr("netdef.trt_api.module", no_tensorrt)  # export needs only PyTorch: no hint, no error
    export_wts(LeNet().state_dict(), tmp_path / "l.wts", log=logs.append)
    assert len(logs) == 1 and built == ["lenet"]


def test_a_state_dict_of_prefixed_keys_is_told_to_strip_the_prefix(tmp_path):
    """DataParallel's `module.` before every key: no architecture fits, but without it LeNet's does; export names
    --strip-prefix (with which the weights fit); where the bare keys fit nothing either, the module. of a wrapper
    (never a model's own) is still named, another prefix (a model's own attribute, maybe) is not."""
    import torch

    from netdef.examples.digits import LeNet
    from netdef.export import export_wts

    logs: list[str] = []
    export_wts({f"module.{k}": v for k, v in LeNet().state_dict().items()}, tmp_path / "l.wts", log=logs.append)
    assert logs == ["[netdef] these weights, without the prefix module. of every key, fit netdef's lenet: export "
                    f"them with --strip-prefix module., then build it with `netdef build lenet -w {tmp_path / 'l.wts'} "
                    "-o l.engine`"]
    export_wts({f"module.{k}": v for k, v in torch.nn.Conv2d(1, 2, 1).state_dict().items()}, tmp_path / "c.wts",
               log=logs.append)
    assert logs[1:] == ["[netdef] note: every key starts with module. (a DataParallel or DistributedDataParallel "
                        "model's state_dict), which the model's own keys and an architecture's rows lack: export with "
                        "--strip-prefix module. (Python: strip_prefix='module.')"]
    export_wts({f"net.{k}": v for k, v in torch.nn.Conv2d(1, 2, 1).state_dict().items()}, tmp_path / "n.wts",
               log=logs.append)
    assert len(logs) == 2
    # a PyTorch Lightning checkpoint: its prefix is the LightningModule's attribute, named
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in torch.nn.Conv2d(1, 2, 1).state_dict().items()},
                "pytorch-lightning_version": "2.4.0", "epoch": 3}, ckpt)
    export_wts(ckpt, tmp_path / "pl.wts", log=logs.append)
    assert logs[2:] == ["[netdef] note: every key starts with net. (a PyTorch Lightning checkpoint: the attribute of "
                        "the LightningModule that holds the network), which the network's own keys lack: where your "
                        "architecture's rows name the network's keys, export with --strip-prefix net. (Python: "
                        "strip_prefix='net.')"]


def test_the_architectures_weights_fit_are_netdefs_own_not_a_working_folders_file_of_that_name(tmp_path,
                                                                                                 monkeypatch):
    """fitting_architectures searches netdef's own architectures (`available_archs(own=True)`), so each is loaded
    from netdef's file: ./architectures/lenet.yaml (another network) shadowed netdef's lenet there, and LeNet's
    weights fitted nothing; ./lenet.yaml is no architecture name's file either."""
    from netdef.define import fitting_architectures
    from netdef.examples.digits import LeNet
    from netdef.spec import load_spec

    other = "name: lenet\ninput: {name: x, shape: [1, 8, 8]}\nlayers:\n  - [-1, 1, Conv2d, {c2: 3}, conv1]\n"
    (tmp_path / "architectures").mkdir()
    (tmp_path / "architectures" / "lenet.yaml").write_text(other)
    (tmp_path / "lenet.yaml").write_text(other)
    monkeypatch.chdir(tmp_path)
    assert fitting_architectures(LeNet().state_dict()) == ["lenet"]
    assert load_spec("lenet").path.resolve() == tmp_path / "architectures" / "lenet.yaml"  # a name built: the user's


def test_strip_prefix_writes_a_wrapped_models_keys_as_the_architecture_reads_them(tmp_path):
    """`--strip-prefix model` turns a Lightning module's 'model.conv1.weight' into 'conv1.weight' (the dot added),
    leaves out and names the keys without it, and is refused where no key has it or the prefix is empty."""
    from netdef.examples.digits import LeNet
    from netdef.export import export_wts
    from netdef.wts import read_wts

    wrapped = {**{f"model.{k}": v for k, v in LeNet().state_dict().items()}, "loss.weight": torch.ones(2)}
    logs: list[str] = []
    export_wts(wrapped, tmp_path / "l.wts", strip_prefix="model", log=logs.append)
    assert set(read_wts(tmp_path / "l.wts")) == {k for k in LeNet().state_dict() if "num_batches" not in k}
    assert logs[0] == "[netdef] --strip-prefix model.: left out 1 key(s) of the source without it, e.g. loss.weight"
    assert "build it with `netdef build lenet -w" in logs[-1]
    with pytest.raises(NetdefError, match=r"^--strip-prefix module\.: no key of the source starts with it \(its keys: "
                                          r"model\.conv1\.weight, model\.bn1\.weight, model\.bn1\.bias, \.\.\.\)$"):
        export_wts(wrapped, tmp_path / "m.wts", strip_prefix="module.")
    with pytest.raises(OptionError, match=r"^--strip-prefix '\.': expected the keys' leading name"):
        export_wts(wrapped, tmp_path / "m.wts", strip_prefix=".")
    assert not (tmp_path / "m.wts").exists()


def test_a_family_yaml_named_without_a_scale_gets_the_scale_ultralytics_took():
    """An Ultralytics model whose YAML file names no scale (my-yolo11-neck.yaml: Ultralytics took the first of its
    `scales:`, 't') is told to copy its YAML under a name with that scale, which netdef then reads as Ultralytics
    did (the plain name is a family netdef refuses to guess)."""
    from netdef.export import _why_no_architecture

    cfg = {"scales": {"t": [0.33, 0.3, 768], "s": [0.5, 0.5, 1024]}, "scale": "", "yaml_file": "a/my-yolo11-neck.yaml",
           "backbone": [[-1, 1, "Conv", [64, 3, 2]]], "head": [[-1, 1, "Conv", [64, 3, 2]]]}
    assert "copy Ultralytics' YAML of it to my-yolo11t-neck.yaml" in _why_no_architecture(cfg, "w.wts")
    assert "to my-yolo11s-neck.yaml" in _why_no_architecture(dict(cfg, scale="s", yaml_file="my-yolo11s-neck.yaml"),
                                                             "w.wts")
    # custom.yaml: no digits to put the scale after; the copy gets Ultralytics' `scale:` key instead
    hint = _why_no_architecture(dict(cfg, yaml_file="a/custom.yaml"), "w.wts")
    assert "copy Ultralytics' YAML of it to custom.yaml (with `scale: t` added, the scale Ultralytics took" in hint


def test_an_edited_yaml_of_a_known_name_is_not_built_as_netdefs_file():
    """A model trained from Ultralytics' yolo11.yaml edited in place (an upsampling mode, the Segment head's mask
    count) and saved as yolo11n.yaml / yolo11n-seg.yaml: its weights have the shapes of netdef's yolo11n(-seg), so
    export's hint `netdef build yolo11n` gave an engine computing something else (the upsampling) or a build error
    (nm). The hint now names the row that differs and says to build the model's own YAML; Ultralytics' unedited
    YAMLs still get netdef's name."""
    pytest.importorskip("ultralytics")
    import yaml

    from netdef.export import _build_hint, ultralytics_arch
    from netdef.testing import ultralytics_reference as ref

    def hint(cfg: dict) -> str:
        model = types.SimpleNamespace(yaml=cfg, args={"imgsz": 640})
        named = ultralytics_arch(model)
        return _build_hint(model, {}, *named, "w.wts")

    for family, stem in (("yolo11", "yolo11n"), ("yolo11-seg", "yolo11n-seg"), ("yolo26", "yolo26n")):
        cfg = dict(yaml.safe_load(ref.cfg_text(family)), yaml_file=f"{stem}.yaml", scale="n")
        assert hint(cfg) == f"build it with `netdef build {stem} -w w.wts -o w.engine`"
    cfg = dict(yaml.safe_load(ref.cfg_text("yolo11")), yaml_file="yolo11n.yaml", scale="n")
    cfg["head"][0] = [-1, 1, "nn.Upsample", [None, 2, "bilinear"]]
    assert hint(cfg).startswith("its YAML differs from netdef's yolo11n (yolo11.yaml) at row 11 (nn.Upsample: "
                                "[-1, 1, 'nn.Upsample', [None, 2, 'bilinear']], netdef's [-1, 1, 'nn.Upsample', "
                                "['None', 2, 'nearest']]), so that architecture would compute something else from the "
                                "same weights; its rows are all netdef blocks: copy Ultralytics' YAML of it to "
                                "yolo11n.yaml")
    cfg = dict(yaml.safe_load(ref.cfg_text("yolo11-seg")), yaml_file="yolo11n-seg.yaml", scale="n")
    cfg["head"][-1][3] = ["nc", 16, 128]
    assert "differs from netdef's yolo11n-seg (yolo11-seg.yaml) at row 23 (Segment: " in hint(cfg)
    cfg["yaml_file"] = "my-yolo11n-seg.yaml"  # a renamed copy: not taken for netdef's file either
    assert hint(cfg).startswith("netdef has no architecture 'my-yolo11n-seg'")


def test_a_sources_builder_takes_keyword_arguments(tmp_path):
    """torchvision:NAME(k=v, ...) and file.py:fn(k=v): the builder's arguments (a model of 10 classes); bad ones are
    named with the source, and torchvision's pretrained weights (a download) are refused."""
    from netdef.export import export_wts, load_source

    assert load_source("torchvision:resnet18(num_classes=10)").fc.out_features == 10
    assert load_source("torchvision:mobilenet_v2(width_mult=0.5, num_classes=3)").classifier[1].in_features == 1280
    (tmp_path / "mine.py").write_text("import torch\ndef make(c=4, name='x'):\n    return torch.nn.Linear(2, c)\n"
                                      "LAYER = torch.nn.Linear(2, 2)\n")
    assert load_source(f"{tmp_path / 'mine.py'}:make(c=7, name='y')").out_features == 7
    for source, needle in [
        ("torchvision:resnet18(num_clases=10)", r"torchvision's resnet18\(\) refused its arguments: .*num_clases"),
        ("torchvision:resnet18(10)", r"keyword arguments only"),
        ("torchvision:resnet18(num_classes=x)", r"num_classes=x: the value is no literal \(quote a string"),
        ("torchvision:resnet18(num_classes=)", r"not Python's keyword=value syntax"),
        ("torchvision:resnet18(num_classes=", r"its '\(' is not closed"),  # was: no attribute 'resnet18(num_classes='
        ("torchvision:resnet18(weights='DEFAULT')", r"random weights \(nothing is downloaded\)"),
        (f"{tmp_path / 'mine.py'}:LAYER(c=1)", r"LAYER is a Linear, not a callable to give arguments to"),
        (f"{tmp_path / 'mine.py'}:make(d=1)", r"calling make\(\) raised TypeError: .*'d'"),
    ]:
        with pytest.raises(NetdefError, match=needle):
            load_source(source)
    (tmp_path / "my (copy)").mkdir()  # parentheses in the path: the arguments are those after the callable's name
    (tmp_path / "my (copy)" / "mine.py").write_text((tmp_path / "mine.py").read_text())
    assert load_source(f"{tmp_path / 'my (copy)' / 'mine.py'}:make(c=3)").out_features == 3
    assert load_source(f"{tmp_path / 'my (copy)' / 'mine.py'}:make()").out_features == 4
    with pytest.raises(NetdefError, match=r"give a file name \(e\.g\. \S*resnet18\.wts\)"):  # not resnet18(...).wts
        export_wts("torchvision:resnet18(num_classes=10)", tmp_path)


def test_a_model_yaml_given_as_a_checkpoint_says_how_to_build_its_model(tmp_path):
    """`--model yolo11n-3.yaml` (verify) or `netdef export` of a YAML: not a checkpoint, and the error names the
    source form that builds the model from it (Ultralytics' model classes take cfg=)."""
    from netdef.export import load_checkpoint

    y = tmp_path / "yolo11n-3.yaml"
    y.write_text("nc: 3\nscales: {n: [0.5, 0.25, 1024]}\n")
    with pytest.raises(NetdefError, match=r"yolo11n-3\.yaml: it is not a PyTorch checkpoint .*a model's YAML is built "
                                          r"by its code: Ultralytics' \"ultralytics\.nn\.tasks:DetectionModel\(cfg='"):
        load_checkpoint(y)
    t = tmp_path / "notes.txt"
    t.write_text("hello\n")
    with pytest.raises(NetdefError, match=r"torch\.save writes a zip file or a pickle$"):
        load_checkpoint(t)


def test_the_printed_build_command_runs_as_printed():
    """export's hint was `netdef build ARCH -w W`, which build refuses (-o is required), and unquoted paths split
    at their spaces: the command is whole and quoted for a shell."""
    from netdef.export import build_command

    assert build_command("lenet", "weights/l.wts") == "netdef build lenet -w weights/l.wts -o l.engine"
    assert build_command("yolov8n", "my weights/v8 n.wts") == \
        "netdef build yolov8n -w 'my weights/v8 n.wts' -o 'v8 n.engine'"


def test_a_checkpoint_name_ultralytics_would_download_is_said(tmp_path, monkeypatch):
    """`netdef export yolo11n.pt` where there is no such file: Ultralytics' YOLO('yolo11n.pt') downloads it, netdef
    does not, and says so (a path with a folder gets the plain message)."""
    from netdef.export import check_checkpoint

    monkeypatch.chdir(tmp_path)
    with pytest.raises(NetdefError, match=r"checkpoint not found: yolo11n\.pt \(netdef downloads nothing, unlike "
                                          r"Ultralytics' YOLO\('yolo11n\.pt'\): give the path of the \.pt file\)"):
        check_checkpoint("yolo11n.pt")
    with pytest.raises(NetdefError, match=r"checkpoint not found: sub/yolo11n\.pt$"):
        check_checkpoint("sub/yolo11n.pt")


TRAIN_SCRIPT = '''import torch


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 1)


class TinyNet(torch.nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, c, 3)
        self.block = Block(c)


if __name__ == "__main__":
    torch.manual_seed(1)
    torch.save(TinyNet(), "tiny_full.pt")
'''


def test_a_model_pickled_from_a_scripts_main_says_how_to_export_it_and_that_works(tmp_path, monkeypatch, capsys):
    """`torch.save(model, ...)` in a training script run as `python train.py` pickles `__main__.TinyNet`, which no
    module defines when netdef loads it: the error says so and names the script that defines the class, with the
    command that exports it through that script (`train.py:TinyNet --state-dict tiny_full.pt`), which works: the
    checkpoint's `__main__` classes (TinyNet and Block) are found in train.py, whose `__main__` part does not run."""
    import subprocess

    from netdef.cli import main
    from netdef.wts import read_wts

    (tmp_path / "train.py").write_text(TRAIN_SCRIPT)
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "tiny_full.pt", "-o", "tiny.wts"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(
        "netdef export: error: tiny_full.pt pickles the model whole from a script run as __main__ (class TinyNet): "
        "pickle saved the class as `__main__.TinyNet`, which exists only while that script runs, so it cannot be "
        "loaded here. Export it through the code that defines it: `netdef export train.py:TinyNet --state-dict "
        "tiny_full.pt -o OUT.wts` (train.py defines a class TinyNet; the script is imported as a module, so its `if "
        "__name__ == '__main__':` part does not run; a class taking arguments: \"train.py:TinyNet(num_classes=10)\"), "
        "or save `model.state_dict()` instead of the model and export that file\n"), err
    assert not (tmp_path / "tiny.wts").exists()
    assert main(["export", "train.py:TinyNet", "--state-dict", "tiny_full.pt", "-o", "tiny.wts"]) == 0, \
        capsys.readouterr().err
    weights = read_wts(tmp_path / "tiny.wts")
    with torch.random.fork_rng():
        torch.manual_seed(1)
        stem = torch.nn.Conv2d(1, 3, 3)  # the script's first random weights: the checkpoint's, not a fresh init's
    assert sorted(weights) == ["block.conv.bias", "block.conv.weight", "stem.bias", "stem.weight"]
    np.testing.assert_array_equal(weights["stem.weight"], stem.weight.detach().numpy().ravel())
    sys.modules.pop("train", None)


def test_a_script_that_does_not_define_the_pickled_class_is_named(tmp_path, monkeypatch):
    """`SCRIPT.py:Make --state-dict ckpt.pt` where SCRIPT.py lacks the checkpoint's `__main__` class: said, naming the
    file; with no script in sight the hint names SCRIPT.py as a placeholder."""
    import subprocess

    (tmp_path / "train.py").write_text(TRAIN_SCRIPT)
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True)
    (tmp_path / "train.py").unlink()
    (tmp_path / "other.py").write_text("def make():\n    return {}\n")
    monkeypatch.chdir(tmp_path)
    from netdef.export import load_source

    with pytest.raises(NetdefError, match=r"`netdef export SCRIPT\.py:TinyNet --state-dict tiny_full\.pt -o OUT\.wts` "
                                          r"\(SCRIPT\.py is the script that defines TinyNet; "):
        load_checkpoint("tiny_full.pt", log=lambda m: None)
    with pytest.raises(NetdefError, match=r"^tiny_full\.pt pickles the model whole from a script run as __main__ "
                                          rf"\(class TinyNet\), and {re.escape(str(tmp_path / 'other.py'))} does "
                                          r"not define TinyNet: give the script that does"):
        load_source("other.py:make", state_dict="tiny_full.pt", log=lambda m: None)
    sys.modules.pop("other", None)


def test_a_state_dict_of_numpy_arrays_is_exported_and_a_weight_key_without_a_tensor_is_refused(tmp_path):
    """A mapping of numpy arrays is a state_dict as one of torch tensors is; a key named as a weight whose value is
    None (or no tensor) is an error naming it, not an entry left out of the .wts (other entries, `epoch`, are)."""
    import torch

    from netdef.export import export_wts
    from netdef.wts import read_wts

    out = tmp_path / "np.wts"
    export_wts({"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.arange(2.0)}, out, log=lambda m: None)
    got = read_wts(out)
    assert sorted(got) == ["fc.bias", "fc.weight"] and got["fc.bias"].tolist() == [0.0, 1.0]
    with pytest.raises(NetdefError, match=r"\['fc\.bias'\] is None, not a tensor: a weight's key without its values"):
        export_wts({"fc.weight": torch.ones(2, 3), "fc.bias": None, "epoch": 3}, tmp_path / "n.wts", log=print)
    assert not (tmp_path / "n.wts").exists()
