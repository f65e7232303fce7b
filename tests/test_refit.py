"""Refit on the CPU: the arrays a refit hands to TensorRT are the build's own (same code, same arrays), and
bad new weights are refused before anything is written. TensorRT-RTX cannot build a refittable engine
without a GPU, so the engine here is a plain one whose header is marked refittable; building, refitting and
running refittable engines is tested on the GPU (tests/test_refit_gpu.py)."""
from __future__ import annotations

import numpy as np
import pytest

from netdef import engine_file, trt_api
from netdef.build import BuildOptions, build_engine, define_network
from netdef.errors import NetdefError, OptionError, TensorRTUnavailable, WeightKeyError
from netdef.refit import refit_arrays, refit_file
from netdef.wts import write_wts

from helpers import lenet_weights

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def refittable(tmp_path_factory):
    """(engine path, meta, .wts A, .wts B): LeNet (fp16) from weights A, its header marked refittable."""
    d = tmp_path_factory.mktemp("refit")
    write_wts(d / "a.wts", lenet_weights(0))
    write_wts(d / "b.wts", lenet_weights(1))
    opts = BuildOptions(precision="fp16", batch=(1, 4, 8), opt_level=0)
    res = build_engine("lenet", d / "a.wts", d / "lenet.engine", opts, log=lambda m: None)
    meta, plan = engine_file.read_plan(res.path)
    meta = engine_file.write_engine(res.path, plan, dict(meta, options=dict(meta["options"], refittable=True)))
    return res.path, meta, d / "a.wts", d / "b.wts"


@pytest.mark.skipif(trt_api.gpu_identity() is not None, reason="the refittable build runs on the GPU there")
def test_tensorrt_rtx_without_a_gpu_says_it_cannot_build_refittable(tmp_path):
    if trt_api.info().flavor != "tensorrt-rtx":
        pytest.skip("TensorRT-RTX only")
    write_wts(tmp_path / "a.wts", lenet_weights(0))
    logged = []
    with pytest.raises(TensorRTUnavailable, match="cannot build refittable engines without a GPU"):
        build_engine("lenet", tmp_path / "a.wts", tmp_path / "e.engine", BuildOptions(refittable=True),
                     log=logged.append)
    assert not any("reading" in m for m in logged), logged  # refused before the weights are read


def test_the_refit_benchmark_says_it_needs_a_gpu_before_any_work(tmp_path):
    """scripts/bench_refit.py without a GPU: one error before it exports or builds anything (minutes saved)."""
    import importlib.util
    from pathlib import Path

    if trt_api.can_run_engines():
        pytest.skip("a GPU machine runs the benchmark")
    path = Path(__file__).parents[1] / "scripts" / "bench_refit.py"
    spec = importlib.util.spec_from_file_location("bench_refit_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(NetdefError, match=r"timing an engine needs a CUDA GPU and full TensorRT"):
        script.main(["--models", "resnet50", "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


def test_refit_arrays_are_the_builds_own(refittable):
    """Same arrays as a network defined from B directly, for every weighted layer; and not A's."""
    _, meta, a, b = refittable
    arrays, _, opts = refit_arrays(meta, b, log=lambda m: None)
    direct = trt_api.layer_weights(define_network("lenet", b, opts, log=lambda m: None).definition)
    old = trt_api.layer_weights(define_network("lenet", a, opts, log=lambda m: None).definition)
    assert arrays.keys() == direct.keys() and len(arrays) >= 6  # conv1/conv2 kernel+bias, fc weights+biases
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], direct[key])
        assert arrays[key].dtype == direct[key].dtype
    assert any(not np.array_equal(arrays[k], old[k]) for k in arrays)


@pytest.mark.parametrize("change, error, needle", [
    (lambda w: {k: v for k, v in w.items() if k != "fc1.bias"}, WeightKeyError, "missing"),
    (lambda w: w | {"extra.weight": np.zeros(3, np.float32)}, WeightKeyError, "not used"),
    (lambda w: w | {"fc2.weight": np.zeros((3, 64), np.float32), "fc2.bias": np.zeros(3, np.float32)},
     WeightKeyError, "'fc2.weight' has 192 values"),
])
def test_bad_new_weights_are_refused_and_the_engine_is_untouched(refittable, tmp_path, change, error, needle):
    path, _, _, _ = refittable
    before = path.read_bytes()
    write_wts(tmp_path / "bad.wts", change(lenet_weights(2)))
    with pytest.raises(error, match=needle):
        refit_file(path, tmp_path / "bad.wts", log=lambda m: None)
    assert path.read_bytes() == before


def test_a_changed_structure_needs_a_rebuild(refittable):
    _, meta, _, b = refittable
    with pytest.raises(NetdefError, match="change the structure of lenet .*rebuild with `netdef build`"):
        refit_arrays(dict(meta, structure="0" * 64), b, log=lambda m: None)


def test_a_plain_engine_is_not_refittable(tmp_path):
    write_wts(tmp_path / "a.wts", lenet_weights(0))
    res = build_engine("lenet", tmp_path / "a.wts", tmp_path / "e.engine", BuildOptions(opt_level=0), log=lambda m: None)
    assert "refit_key" not in res.meta
    with pytest.raises(OptionError, match="built without --refittable"):
        refit_arrays(res.meta, tmp_path / "a.wts")
    said = []
    with pytest.raises(OptionError, match=r"^.*e\.engine was built without --refittable: rebuild it with `netdef "
                                          r"build \.\.\. --refittable`"):  # which engine: the file is named
        refit_file(res.path, tmp_path / "a.wts", tmp_path / "out.engine", log=said.append)
    assert said == [] and not (tmp_path / "out.engine").exists()  # refused before any work is announced


@pytest.fixture
def classifier_engine(tmp_path, monkeypatch):
    """(engine path, .wts A, .wts B, .wts C, said): LeNet with a Classifier row (10 classes) built from A without
    names, its header marked refittable; TensorRT's refit replaced by a stand-in that hands the plan back (no GPU
    here), so that the header refit_file writes can be looked at; `said` collects the log."""
    from pathlib import Path

    import netdef
    from netdef.compiler import build_key

    yaml = (Path(netdef.__file__).parent / "architectures" / "lenet.yaml").read_text()
    yaml = yaml.replace("name: lenet", "name: lenet_cls").replace("Linear, {c2: 10}", "Classifier, {c2: 10}")
    (tmp_path / "lenet_cls.yaml").write_text(yaml)
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        write_wts(tmp_path / f"{name}.wts", lenet_weights(seed))
    res = build_engine(str(tmp_path / "lenet_cls.yaml"), tmp_path / "a.wts", tmp_path / "e.engine",
                       BuildOptions(opt_level=0), log=lambda m: None)
    meta, plan = engine_file.read_plan(res.path)
    options = dict(meta["options"], refittable=True)
    refit_key = build_key(meta["arch"]["sha256"], "", BuildOptions.from_meta(options), meta["gpu"])
    engine_file.write_engine(res.path, plan, dict(meta, options=options, refit_key=refit_key))
    monkeypatch.setattr(trt_api, "can_run_engines", lambda: True)
    monkeypatch.setattr(trt_api, "deserialize", lambda p: (None, bytes(p)))
    monkeypatch.setattr(trt_api, "refit_engine", lambda engine, arrays: len(arrays))
    monkeypatch.setattr(trt_api, "serialize", lambda engine: engine)
    return res.path, tmp_path / "a.wts", tmp_path / "b.wts", tmp_path / "c.wts", []


def test_refit_records_the_class_names_of_the_new_weights(classifier_engine, tmp_path, capsys):
    """As `netdef build` records them: NEW.wts.names.json (for these weights), else none, --names overriding; a
    change is said; the header's keys then say 'up to date' to a build of the same weights and names."""
    from netdef.class_names import names_sidecar, write_names_sidecar
    from netdef.cli import main
    from netdef.fileio import file_sha256

    engine, _, b, c, said = classifier_engine
    digits = [f"digit{i}" for i in range(10)]
    write_names_sidecar(names_sidecar(b), digits, b, file_sha256(b))
    meta = refit_file(engine, b, log=said.append)
    assert engine_file.read_meta(engine)["names"] == meta["names"] == digits
    assert f"class names changed: {engine} records digit0, digit1, digit2, digit3, digit4, ... (from {b}.names.json); " \
           "it had none" in said[-1], said
    opts = BuildOptions.from_meta(meta["options"])
    again = build_engine(str(tmp_path / "lenet_cls.yaml"), b, engine, opts, log=said.append)
    assert not again.built and "is up to date" in said[-1]  # build_key and refit_key carry the new names

    said.clear()
    meta = refit_file(engine, b, log=said.append)  # the same names: nothing said about them
    assert meta["names"] == digits and not any("class names changed" in m for m in said), said
    meta = refit_file(engine, c, log=said.append)  # no names beside c.wts: the engine records none, and says so
    assert "names" not in meta and "names" not in engine_file.read_meta(engine)
    assert f"class names changed: {engine} records none now ({c} comes without names: give --names FILE to record " \
           "some); it had digit0" in said[-1], said
    (tmp_path / "n.txt").write_text("\n".join(reversed(digits)) + "\n")
    capsys.readouterr()
    assert main(["refit", str(engine), "-w", str(b), "--names", str(tmp_path / "n.txt")]) == 0
    assert engine_file.read_meta(engine)["names"] == digits[::-1]  # --names over b.wts.names.json
    assert f"records digit9, digit8, digit7, digit6, digit5, ... (from {tmp_path / 'n.txt'}); it had none" in \
        capsys.readouterr().err


@pytest.mark.parametrize("in_place", [True, False])
def test_a_refit_never_replaces_an_engine_written_while_it_ran(classifier_engine, tmp_path, monkeypatch, in_place):
    """Another build or refit that writes the output while this refit runs (it read the engine seconds before)
    keeps its engine: the refit ends with an error, writing nothing."""
    engine, _, b, _, said = classifier_engine
    output = engine if in_place else tmp_path / "out.engine"
    meta, plan = engine_file.read_plan(engine)

    def refit_meanwhile(cuda_engine, arrays):  # another process's refit finishes first
        engine_file.write_engine(output, plan, dict(meta, refit={"by": "another process"}))
        return len(arrays)

    monkeypatch.setattr(trt_api, "refit_engine", refit_meanwhile)
    with pytest.raises(NetdefError, match=rf"{output} was written by another program while this refit ran"):
        refit_file(engine, b, None if in_place else output, log=said.append)
    assert engine_file.read_meta(output)["refit"] == {"by": "another process"}
    import netdef.refit

    real = netdef.refit.identified

    def written_while_hashing(weights):  # seconds of hashing a large .wts, after the engine was read
        engine_file.write_engine(output, plan, dict(meta, refit={"by": "a third process"}))
        return real(weights)

    monkeypatch.setattr(trt_api, "refit_engine", lambda cuda_engine, arrays: len(arrays))
    monkeypatch.setattr(netdef.refit, "identified", written_while_hashing)
    with pytest.raises(NetdefError, match=rf"{output} was written by another program while this refit ran"):
        refit_file(engine, b, None if in_place else output, log=said.append)
    assert engine_file.read_meta(output)["refit"] == {"by": "a third process"}


@pytest.mark.parametrize("in_place", [True, False])
def test_a_refit_never_replaces_an_engine_written_while_it_writes(classifier_engine, tmp_path, monkeypatch, in_place):
    """A write of the output after the refit's own engine bytes are written, right before the rename (another build
    finishing then), is seen too: that engine is kept, the refit ends with an error and leaves no temporary file."""
    from netdef import fileio

    engine, _, b, _, said = classifier_engine
    output = engine if in_place else tmp_path / "out.engine"
    meta, plan = engine_file.read_plan(engine)
    real = fileio.atomic_write_all

    def written_before_the_rename(files, **kw):
        def chunks(parts):
            yield from parts  # the refit's engine, whole in its temporary file
            real({output: engine_file.MAGIC + b"another build's"})  # then the other program's rename

        return real({p: chunks(c) for p, c in files.items()}, **kw)

    monkeypatch.setattr(engine_file, "atomic_write_all", written_before_the_rename, raising=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(NetdefError, match=rf"{output} was written by another program while this refit ran"):
        refit_file(engine, b, None if in_place else output, log=said.append)
    assert output.read_bytes() == engine_file.MAGIC + b"another build's"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*files, output.name})


def test_refit_refuses_names_of_another_class_count_and_leaves_the_engine(classifier_engine, tmp_path):
    """The class count is part of the engine: names of another count are an error naming both files and a rebuild,
    before anything is written."""
    from netdef.class_names import names_sidecar, write_names_sidecar
    from netdef.fileio import file_sha256

    engine, _, b, _, said = classifier_engine
    before = engine.read_bytes()
    write_names_sidecar(names_sidecar(b), ["cat", "dog", "fox"], b, file_sha256(b))
    with pytest.raises(NetdefError, match=rf"{b}\.names\.json: 3 class names, but {engine} holds a model of 10 "
                                          r"classes: give one name per class \(the class count is part of the engine: "
                                          r"a model of another count needs a rebuild, `netdef build`\)"):
        refit_file(engine, b, log=said.append)
    with pytest.raises(NetdefError, match=r"n\.txt: 3 class names, but .* 10 classes"):
        refit_file(engine, tmp_path / "c.wts", names=["a", "b", "c"], names_from=tmp_path / "n.txt", log=said.append)
    with pytest.raises(OptionError, match=r"names \['a', ''\]: expected a non-empty list of non-empty strings"):
        refit_file(engine, tmp_path / "c.wts", names=["a", ""], log=said.append)
    assert engine.read_bytes() == before


def test_refit_arch_is_checked_against_the_engine(refittable, tmp_path, capsys):
    """`netdef refit --arch YAML`: the architecture the header cannot find, used only if it is the engine's own
    (its hash): another one is refused before any weight is read."""
    from netdef.cli import main
    from netdef.spec import load_spec

    engine, _, _, b = refittable
    other = tmp_path / "lenet.yaml"
    other.write_text(load_spec("lenet").path.read_text().replace("c2: 64", "c2: 32"))
    before = engine.read_bytes()
    assert main(["refit", str(engine), "-w", str(b), "--arch", str(other)]) != 0
    assert f"architecture {other} is not the one the engine was built from (lenet, " in capsys.readouterr().err
    assert engine.read_bytes() == before


REFIT_BLOCK = '''from netdef.registry import block


@block("RefitConvRelu", width_args=("c2",))
def conv_relu(net, x, prefix, c2, k=3):
    return net.conv(x, prefix, c2, k, 1, k // 2, act="relu")
'''


def test_an_edited_block_file_is_named_not_only_the_yaml(tmp_path, capsys, clean_registry):
    """The header's architecture hash covers the YAML and the blocks' sources: where it differs, the refit error
    names both, the block file by name, and the file modified after the build; a YAML that no longer loads (its
    block module not given) gives that error with the modules the engine was built with; a YAML gone is said so."""
    import os

    from netdef import block_modules, registry
    from netdef.cli import main

    (tmp_path / "my_blocks.py").write_text(REFIT_BLOCK)
    yaml = tmp_path / "tinynet.yaml"
    yaml.write_text("name: tinynet\ninput: {name: input, shape: [1, 8, 8]}\noutput: logits\nlayers:\n"
                    "  - [-1, 1, RefitConvRelu, {c2: 4}, conv1]\n  - [-1, 1, Flatten, {}, flat]\n"
                    "  - [-1, 1, Linear, {c2: 3}, fc]\n")
    rng = np.random.default_rng(0)
    write_wts(tmp_path / "t.wts", {"conv1.weight": rng.random((4, 1, 3, 3)), "conv1.bias": rng.random(4),
                                   "fc.weight": rng.random((3, 256)), "fc.bias": rng.random(3)})
    block_modules.load_block_module(str(tmp_path / "my_blocks.py"), "--blocks")
    res = build_engine(str(yaml), tmp_path / "t.wts", tmp_path / "e.engine", BuildOptions(opt_level=0),
                       log=lambda m: None)
    meta, plan = engine_file.read_plan(res.path)
    engine_file.write_engine(res.path, plan, dict(meta, options=dict(meta["options"], refittable=True)))
    assert meta["arch"]["blocks"] == ["my_blocks"]
    refit = ["refit", str(res.path), "-w", str(tmp_path / "t.wts"), "-o", str(tmp_path / "out.engine")]

    with (tmp_path / "my_blocks.py").open("a") as f:
        f.write("# a comment\n")
    later = os.stat(tmp_path / "my_blocks.py").st_mtime + 60
    os.utime(tmp_path / "my_blocks.py", (later, later))
    assert main([*refit, "--blocks", str(tmp_path / "my_blocks.py")]) == 1
    err = capsys.readouterr().err
    assert err == (f"netdef refit: error: architecture tinynet ({yaml}) is not the one the engine was built from: "
                   f"the engine's hash covers {yaml}'s YAML text and the source of its blocks: "
                   f"{tmp_path / 'my_blocks.py'} (RefitConvRelu), and one of them changed (modified after the "
                   f"build: {tmp_path / 'my_blocks.py'}): rebuild the engine with `netdef build` (or put back the "
                   "files it was built from)\n"), err

    del registry.BLOCKS["RefitConvRelu"]  # as in a new process without --blocks
    assert main(refit) == 1
    assert capsys.readouterr().err.startswith(
        f"netdef refit: error: the engine's architecture {yaml} does not load (the engine was built with the "
        f"blocks of my_blocks): {yaml}:5: row 0: unknown block 'RefitConvRelu'")

    yaml.rename(tmp_path / "moved.yaml")
    assert main(refit) == 1
    assert capsys.readouterr().err == (
        f"netdef refit: error: the engine's architecture tinynet is gone: no file {yaml}, and no architecture "
        "named tinynet: pass the YAML it was built from with `netdef refit --arch YAML` (if it moved), or rebuild "
        "the engine with `netdef build`\n")
    assert not (tmp_path / "out.engine").exists()
