"""The command line end to end on CPU: export -> build -> info, up-to-date builds, one-line errors."""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pytest

from netdef import engine_file
from netdef.cli import main
from netdef.errors import EngineMismatchError, NetdefError
from netdef.wts import read_wts

from helpers import run_cli


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["export", "torchvision:resnet18", "-o", str(d / "r18.wts"), "--randomize-bn"]) == 0
    return d


def test_export_writes_every_key(r18):
    import torchvision

    keys = set(read_wts(r18 / "r18.wts"))
    expected = {k for k in torchvision.models.resnet18().state_dict() if not k.endswith("num_batches_tracked")}
    assert keys == expected


def test_export_without_o_writes_beside_a_checkpoint_or_in_the_working_folder(tmp_path, monkeypatch, capsys):
    """As tensorrtx's gen_wts.py: runs/best.pt -> runs/best.wts; a source that is no file, in the working folder,
    named without its call's arguments."""
    import torch

    (tmp_path / "runs").mkdir()
    torch.save(torch.nn.Conv2d(3, 4, 1).state_dict(), tmp_path / "runs" / "best.pt")
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(Path("runs") / "best.pt")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {Path('runs') / 'best.wts'}: 2 tensors")
    assert set(read_wts(tmp_path / "runs" / "best.wts")) == {"weight", "bias"}
    assert main(["export", "torchvision:resnet18(num_classes=10)"]) == 0
    assert capsys.readouterr().out.startswith("wrote resnet18.wts: 102 tensors")


def test_export_from_checkpoint_dict(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save({"epoch": 3, "model": model}, tmp_path / "ckpt.pt")  # a pickled model under 'model'
    torch.save({"state_dict": model.state_dict()}, tmp_path / "sd.pth")
    for f in ("ckpt.pt", "sd.pth"):
        assert main(["export", str(tmp_path / f), "-o", str(tmp_path / f"{f}.wts")]) == 0
        assert set(read_wts(tmp_path / f"{f}.wts")) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                                        "1.running_mean", "1.running_var"}
    from netdef.export import export_wts  # from Python, a Path is the checkpoint file as its string is

    assert set(export_wts(tmp_path / "sd.pth", tmp_path / "p.wts", log=lambda m: None)) == set(read_wts(tmp_path /
                                                                                                     "sd.pth.wts"))


def test_export_of_a_model_function_that_fails_is_one_line_naming_its_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels.py").write_text("def raises():\n    raise RuntimeError('no weights here')\n")
    (tmp_path / "badmodule.py").write_text("x = 1\nraise ValueError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["export", "mymodels:raises", "-o", str(tmp_path / "e.wts")]) == 1
    assert capsys.readouterr().err == ("netdef export: error: mymodels:raises: calling raises() raised RuntimeError: "
                                       f"no weights here at {tmp_path / 'mymodels.py'}:2\n")
    assert main(["export", "badmodule:model", "-o", str(tmp_path / "e.wts")]) == 1
    assert capsys.readouterr().err == ("netdef export: error: cannot import 'badmodule:model': ValueError: "
                                       f"half-written module at {tmp_path / 'badmodule.py'}:2\n")
    assert not (tmp_path / "e.wts").exists()


def test_a_model_function_in_a_missing_file_is_named(tmp_path, capsys):
    """`--model models/zoo.py:fn` names a file (as --blocks takes one): where there is none, the error says so."""
    assert main(["export", "models/zoo.py:fn", "-o", str(tmp_path / "e.wts")]) == 1
    assert capsys.readouterr().err == ("netdef export: error: cannot import 'models/zoo.py:fn': no Python file "
                                       "models/zoo.py\n")
    assert not (tmp_path / "e.wts").exists()


def test_a_model_file_imports_the_modules_beside_it(tmp_path, capsys):
    """`netdef export models/variants.py:make` where variants.py imports `mynet` beside it, whose folder is not on the
    module path: found, as when variants.py runs as a script (as --blocks files find theirs)."""
    pytest.importorskip("torch")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mynet.py").write_text("import torch\n\ndef make():\n    return {'w': torch.ones(2)}\n")
    (tmp_path / "models" / "variants.py").write_text("from mynet import make\n")
    source = str(tmp_path / "models" / "variants.py") + ":make"
    path = list(sys.path)
    try:
        assert main(["export", source, "-o", str(tmp_path / "e.wts")]) == 0, capsys.readouterr().err
        assert sys.path == path  # the folder was on it while variants.py ran
        assert list(read_wts(tmp_path / "e.wts")) == ["w"]
    finally:
        for name in ("mynet", "variants"):
            sys.modules.pop(name, None)


def test_build_info_and_up_to_date(r18, capsys):
    eng = r18 / "r18.engine"
    args = ["build", "resnet18", "--weights", str(r18 / "r18.wts"), "-o", str(eng), "--batch", "1:2:4",
            "--opt-level", "0"]
    assert main(args) == 0
    first = engine_file.read_meta(eng)
    assert first["options"]["batch"] == [1, 2, 4] and first["arch"]["name"] == "resnet18"
    assert main(args) == 0  # unchanged: kept
    assert "up to date" in capsys.readouterr().err
    assert engine_file.read_meta(eng)["created"] == first["created"]
    assert main(args + ["--precision", "fp16"]) == 0  # a changed option rebuilds
    assert engine_file.read_meta(eng)["precision"] == "fp16"
    capsys.readouterr()
    assert main(["info", str(eng)]) == 0
    out = capsys.readouterr().out
    assert "resnet18 fp16" in out and "logits" in out and "1:2:4" in out
    assert main(["info", str(r18 / "r18.wts"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"] == 102
    bad = eng.parent / "bad.wts"  # info checks every value, as a build reads them: a CI gate on weights
    bad.write_text("1\nw 3 3f800000 zzzzzzzz 00000000\n")
    assert main(["info", str(bad)]) == 1
    assert "bad.wts:2 (key 'w'): value 2 'zzzzzzzz' is not hexadecimal" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["build", "resnet18", "--weights", "nope.wts", "-o", "x.engine"], "weights file not found"),
    (["build", "resnet18", "--weights", "W", "-o", "x.engine", "--batch", "4:2:8"], "1 <= min <= opt <= max"),
    (["build", "nosuchnet", "--weights", "W", "-o", "x.engine"], "no architecture 'nosuchnet'"),
    (["export", "torchvision:resnet9000", "-o", "x.wts"], "torchvision has no model 'resnet9000'"),
    (["info", "missing.engine"], "no such file"),
])
def test_errors_are_one_line_without_traceback(r18, args, needle):
    args = [str(r18 / "r18.wts") if a == "W" else a for a in args]
    res = run_cli(*args)
    assert res.returncode == 1
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_weights_file_or_engine_where_the_architecture_goes_says_what_it_is(r18, tmp_path):
    """`netdef show r18.wts` and `netdef build r18.engine -w ...` listed every architecture name; the file is told by
    its content (a .wts named weights.bin too), not by its suffix."""
    wts, engine = r18 / "r18.wts", tmp_path / "r18.engine"
    engine.write_bytes(engine_file.MAGIC + bytes(64))
    (tmp_path / "weights.bin").write_bytes(wts.read_bytes()[:4096])
    expected = "not an architecture: give the architecture's name (resnet18) or its .yaml file, and the weights with"
    for args, what in [(["show", str(wts)], f"{wts} is a .wts weights file"),
                       (["show", str(tmp_path / "weights.bin")], "weights.bin is a .wts weights file"),
                       (["build", str(engine), "-w", str(wts), "-o", str(tmp_path / "y.engine")],
                        f"{engine} is a netdef engine")]:
        res = run_cli(*args)
        assert res.returncode == 1 and f"{what}, {expected}" in res.stderr and "resnet152" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "y.engine").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX pipes")
def test_a_pipe_or_folder_where_the_architecture_goes_is_named(tmp_path):
    """`netdef show fifo` (and a folder) said "no architecture 'fifo'" and listed every architecture name."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name, what in (("fifo", "a named pipe"), ("folder", "a directory")):
        res = run_cli("show", str(tmp_path / name))
        assert res.returncode == 1 and f"{tmp_path / name} is {what}, not an architecture" in res.stderr, res.stderr
        assert "resnet152" not in res.stderr, res.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/null"), reason="POSIX devices and pipes")
def test_a_device_or_pipe_given_as_a_file_is_named_as_what_it_is(tmp_path):
    """`netdef info /dev/null` said "no such file" (it exists: it is no regular file); export-plan "engine not found"."""
    os.mkfifo(tmp_path / "pipe")
    for args, needle in [(["info", "/dev/null"], "/dev/null is a character device, not a file: give an engine"),
                         (["info", str(tmp_path / "pipe")], f"{tmp_path / 'pipe'} is a named pipe, not a file"),
                         (["info", str(tmp_path)], f"{tmp_path} is a directory, not a file"),
                         (["export-plan", "/dev/null", "-o", str(tmp_path / "x.plan")],
                          "/dev/null is a character device, not an engine file")]:
        res = run_cli(*args)
        assert res.returncode == 1 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_failed_build_leaves_no_engine(r18, tmp_path):
    wts = read_wts(r18 / "r18.wts")
    del wts["fc.bias"]
    from netdef.wts import write_wts

    write_wts(tmp_path / "bad.wts", wts)
    res = run_cli("build", "resnet18", "--weights", str(tmp_path / "bad.wts"), "-o", str(tmp_path / "bad.engine"))
    assert res.returncode == 1 and "fc.bias" in res.stderr
    assert not (tmp_path / "bad.engine").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.wts"]  # no temp files either


def test_mismatched_engine_is_refused(r18):
    meta = engine_file.read_meta(r18 / "r18.engine")
    with pytest.raises(EngineMismatchError, match="only load in the version that built them"):
        engine_file.check_compatible(meta, "r18.engine", "8.6.0", "tensorrt", ("NVIDIA H100", "9.0"))
    meta["tensorrt"] = {"flavor": "tensorrt", "version": "8.6.0"}
    with pytest.raises(EngineMismatchError, match="compute capability"):
        engine_file.check_compatible(meta, "r18.engine", "8.6.0", "tensorrt", ("NVIDIA H100", "9.0"))


def test_not_an_engine(tmp_path):
    p = tmp_path / "raw.plan"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(NetdefError, match="not a netdef engine"):
        engine_file.read_meta(p)


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("export", "build", "run", "info"):
        assert cmd in res.stdout


@pytest.mark.parametrize("argv, needle", [
    (["yolov5_det", "-s", "y.wts", "y.engine", "s"], "`netdef build yolov5s -w y.wts -o y.engine`"),
    (["yolov8_seg", "-s", "y.wts", "y.engine", "n"], "`netdef build yolov8n-seg -w y.wts -o y.engine`"),
    (["--debug", "yolov5", "-s", "y.wts", "y.engine", "c", "0.33", "0.5"], "`netdef build ARCH -w y.wts -o y.engine`"),
    (["-s", "y.wts", "y.engine", "s"], "`netdef build ARCH -w y.wts -o y.engine`"),
    (["yolov5_det", "-d", "y.engine", "../images"], "`netdef detect y.engine ../images --out DIR`"),
    (["yolov5_seg", "-d", "y.engine", "imgs", "coco.txt"], "`netdef detect y.engine imgs --out DIR --names coco.txt` "
                                                           "(class names: --names, else those the engine records"),
    (["yolov8_det", "-s", "y.wts", "y.engine", "n2"], "`netdef build yolov8n-p2 -w y.wts -o y.engine`"),  # P2
    (["-s", "yolov5s6.wts", "y.engine", "s6"], "`netdef build yolov5s6 -w yolov5s6.wts -o y.engine`"),  # its name
    (["build", "-s", "yolov5s.wts", "y.engine", "s"], "`netdef build yolov5s -w yolov5s.wts -o y.engine`"),
])
def test_a_tensorrtx_command_line_is_answered_with_netdefs(capsys, argv, needle):
    """tensorrtx's `yolov5_det -s WTS ENGINE SCALE` / `-d ENGINE IMAGES`, typed out of habit: the netdef commands
    that do the same, not argparse's list of commands."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netdef: error: netdef has no `-") and needle in err, err


BUILD = ["build", "yolo11n", "-w", "y.wts", "-o", "y.engine"]


@pytest.mark.parametrize("argv, needle", [
    ([*BUILD, "--imgsz", "481"], "build has no --imgsz: netdef's option is --input-shape 512x512 (Ultralytics "
                                 "rounds 481 up to 512"),
    (["--debug", "verify", "yolo11n", "-w", "y.wts", "--model", "m.py:f", "imgsz=640"],
     "verify has no imgsz=640: netdef's option is --input-shape 640x"),
    ([*BUILD, "--half"], "build has no --half: netdef's option is --precision fp16"),
    ([*BUILD, "--fp16"], "build has no --fp16: netdef's option is --precision fp16"),
    ([*BUILD, "--int8"], "build has no --int8: netdef's option is --precision int8"),  # not read as --int8-exclude
    ([*BUILD, "nc=3"], "build has no nc=3: netdef's option is --set nc=N"),
    ([*BUILD, "--dynamic"], "build has no --dynamic: netdef's option is --batch MIN:OPT:MAX"),
    (["run", "y.engine", "--batch-size", "4"], "run has no --batch-size: netdef's option is --batch"),
    ([*BUILD, "--nms"], "build has no --nms: netdef's option is --set head=plugin"),
    ([*BUILD, "--format", "engine"], "build has no --format: it always writes a TensorRT engine; `netdef "
                                     "export-plan` then writes the bare plan"),
    ([*BUILD, "format=engine"], "build has no format=engine: it always writes a TensorRT engine"),
    # export writes weights only: the build step's option
    (["export", "y.pt", "-o", "y.wts", "--imgsz", "320"], "export has no --imgsz: it writes weights only; give "
                                                          "--input-shape 320x320 to `netdef build`"),
    (["export", "y.pt", "-o", "y.wts", "imgsz=300"], "export has no imgsz=300: it writes weights only; give "
                                                     "--input-shape 320x320 (Ultralytics rounds 300 up to 320"),
    (["export", "y.pt", "-o", "y.wts", "--half"], "export has no --half: it writes weights only; give --precision "
                                                  "fp16 to `netdef build`"),
    (["export", "y.pt", "-o", "y.wts", "--dynamic"], "export has no --dynamic: it writes weights only; give --batch "
                                                     "MIN:OPT:MAX"),
    (["export", "y.pt", "-o", "y.wts", "format=engine"], "export has no format=engine: it writes .wts weights only; "
                                                         "`netdef build ARCH -w WEIGHTS.wts -o NAME.engine` makes"),
])
def test_an_ultralytics_export_argument_is_answered_with_netdefs(capsys, argv: list[str], needle: str) -> None:
    """Ultralytics' export arguments, typed out of habit: the command's own option, not argparse's bare
    'unrecognized arguments'; where the command has no such option (show has no --precision, verify no
    --calibration, run no batch range) or the word is an option's value (-o img=1.engine), argparse's error."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netdef: error: netdef ") and needle in err, err
    for argv, left in [(["show", "yolo11n", "--half"], "--half"),
                       (["verify", "yolo11n", "-w", "y.wts", "--model", "m.py:f", "--int8"], "--int8"),
                       (["run", "y.engine", "--dynamic"], "--dynamic"), (["show", "yolo11n", "--nms"], "--nms")]:
        with pytest.raises(SystemExit):
            main(argv)
        assert f"unrecognized arguments: {left}" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # -o's value is the output's name: argparse's error is for --bogus alone
        main(["build", "yolo11n", "-w", "y.wts", "-o", "img=1.engine", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_detect_help_says_where_a_pose_engines_kpt_shape_comes_from():
    """The header's record (the weights' kpt_shape: 5 keypoints for a custom-trained yolov8n-pose built from the
    17-keypoint YAML) is the default, not the YAML's."""
    res = run_cli("detect", "--help")
    assert res.returncode == 0 and "the kpt_shape its header records" in " ".join(res.stdout.split())


# ---------------------------------------------------------------- option values and the one error handler

@pytest.mark.parametrize("args, needle", [
    (["run", "x.engine", "--batch", "abc"], "netdef run: error: --batch 'abc': expected an integer"),
    (["run", "x.engine", "--batch", "0"], "netdef run: error: --batch 0: must be >= 1"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--batch", "1:x"], "netdef build: error: --batch '1:x'"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--workspace", "-1"], "--workspace -1: must be >= 1"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--opt-level", "9"], "--opt-level 9: must be 0..5"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--input-shape=-5,-5"], "--input-shape '-5,-5'"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--input-shape", "480x640x3"],
     "--input-shape '480x640x3': expected H,W"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--set", "conf"], "--set 'conf': expected KEY=VALUE"),
    (["build", "resnet18", "-w", "W", "-o", "x.engine", "--set", "nc=3", "--set", "nc=80"],
     "--set nc is given twice (nc=3, nc=80): give it once"),  # the last one won without a word
    (["profile", "x.engine", "--batch", "1", "x"], "netdef profile: error: --batch 'x'"),
    (["bench", "x.engine", "--seconds", "0"], "netdef bench: error: --seconds 0: must be > 0"),
    (["detect", "x.engine", "imgs", "--out", "o", "--conf", "1.5"], "--conf 1.5: must be 0.0..1.0"),
])
def test_bad_option_values_are_one_line_errors(tmp_path, args, needle):
    args = [str(tmp_path / "r.wts") if a == "W" else a for a in args]
    res = run_cli(*args)
    assert res.returncode == 1 and needle in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x.engine").exists()


def test_build_options_from_the_command_line():
    from netdef.cli import make_parser
    from netdef.cli.build import build_options

    a = make_parser().parse_args(["build", "yolov5s", "-w", "y.wts", "-o", "y.engine", "--input-shape", "480x640",
                                  "--batch", "1:8:32", "--set", "conf_thres=0.25", "--set", "head=plugin",
                                  "--int8-exclude", "model.24.*"])
    opts = build_options(a)
    assert opts.input_hw == (480, 640) and opts.batch == (1, 8, 32) and opts.int8_exclude == ("model.24.*",)
    assert opts.params == {"conf_thres": 0.25, "head": "plugin"}


def test_calibrate_command_line(monkeypatch, capsys):
    import netdef.int8.calibrate as cal
    from netdef.int8.calibration import CalibrationTable

    calls = {}
    monkeypatch.setattr(cal, "calibrate", lambda *args, **kw: calls.update(args=args, kw=kw) or
                        CalibrationTable("f", "max", {"a": 1.0}, {"images": 64}))
    args = ["calibrate", "lenet", "-w", "l.wts", "-d", "imgs", "-o", "t.json"]
    assert main(args + ["--method", "max", "--input-shape", "32,32", "--mean", "0.5", "--max-images", "64"]) == 0
    assert calls["args"] == ("lenet", "l.wts", "imgs", "t.json")
    kw = calls["kw"]
    assert kw["method"] == "max" and list(kw["input_hw"]) == [32, 32] and kw["mean"] == [0.5]
    assert kw["max_images"] == 64 and kw["std"] is None and kw["batch"] == 16
    assert "next: netdef build lenet --weights l.wts --input-shape 32,32" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args + ["--method", "minmax"])
    capsys.readouterr()
    for extra, message in [(["--input-shape", "3,3,3"], "--input-shape '3,3,3'"),
                           (["--batch", "0"], "--batch 0: must be >= 1"),
                           (["--percentile", "101"], "--percentile 101: must be <= 100.0"),
                           (["--std", "a,b"], "--std 'a,b'")]:
        assert main(args + extra) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"netdef calibrate: error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_shows_the_traceback(where):
    args = ["--debug", "info", "missing.engine"] if where == "before" else ["info", "missing.engine", "--debug"]
    res = run_cli(*args)
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "NetdefError: no such file: missing.engine" in res.stderr


def test_the_error_handler(capsys):
    from netdef.cli.guard import SIGPIPE_EXIT, run_guarded
    from netdef.errors import OptionError

    def fails(error: BaseException):
        def fn():
            raise error
        return fn

    assert run_guarded(lambda: 3, prog="netdef x") == 3 and run_guarded(lambda: None, prog="netdef x") == 0
    assert run_guarded(fails(OptionError("--batch 'a': expected an integer")), prog="netdef run") == 1
    assert capsys.readouterr().err == "netdef run: error: --batch 'a': expected an integer\n"
    assert run_guarded(fails(KeyboardInterrupt()), prog="netdef run") == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert run_guarded(fails(BrokenPipeError()), prog="netdef info") == SIGPIPE_EXIT
    assert capsys.readouterr() == ("", "")
    denied = PermissionError(13, "Permission denied", "/srv/models/tmpx1.plan")
    assert run_guarded(fails(denied), prog="netdef export-plan") == 1
    assert capsys.readouterr().err == ("netdef export-plan: error: [Errno 13] Permission denied: "
                                       "'/srv/models/tmpx1.plan' (--debug shows where)\n")
    with pytest.raises(OptionError):
        run_guarded(fails(OptionError("x")), prog="netdef run", debug=True)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_guarded(lambda: 1 / 0, prog="netdef run")


@pytest.fixture(scope="module")
def r18_engine(r18):
    """A small resnet18 engine of the exported weights (built once)."""
    eng = r18 / "r18_small.engine"
    assert main(["build", "resnet18", "--weights", str(r18 / "r18.wts"), "-o", str(eng), "--batch", "1:1:2",
                 "--opt-level", "0"]) == 0
    return eng


def test_bench_and_profile_refuse_a_report_over_their_engine_before_timing(r18_engine, capsys):
    eng = r18_engine
    before = eng.read_bytes()
    capsys.readouterr()
    for args in (["bench", str(eng), "--json", str(eng)], ["bench", str(eng), "--chart", str(eng)],
                 ["profile", str(eng), "--json", str(eng)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"{args[2]} {eng} is also an input of this command ({eng})" in err, err
    assert eng.read_bytes() == before


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(40)  # a photo a mistyped output path points at


@pytest.mark.parametrize("args, what, kind", [
    (["build", "resnet18", "-w", "WTS", "-o", "VICTIM"], "the engine output", "a netdef engine or TensorRT plan"),
    (["export", "torchvision:resnet18", "-o", "VICTIM"], "the .wts output", "a .wts file"),
    (["export-plan", "ENGINE", "-o", "VICTIM"], "plan", "a raw TensorRT plan"),
    (["export-plan", "ENGINE", "-o", "PLAN"], "sidecar", "a netdef plan sidecar"),  # PLAN.json is the photo
    (["refit", "ENGINE", "-w", "WTS", "-o", "VICTIM"], "the refitted engine", "a netdef engine or TensorRT plan"),
    (["run", "ENGINE", "--output", "VICTIM.npy"], "--output", "a numpy file (.npy or .npz)"),
    (["bench", "ENGINE", "--json", "VICTIM"], "--json", "a netdef results file (--json)"),
    (["bench", "ENGINE", "--chart", "VICTIM"], "--chart", "a Matplotlib chart (PNG)"),
    (["profile", "ENGINE", "--json", "VICTIM"], "--json", "a netdef results file (--json)"),
    (["calibrate", "lenet", "-w", "WTS", "-d", "DATA", "-o", "VICTIM"], "the calibration table",
     "a netdef calibration table"),
    (["triton", "ENGINE", "--repo", "REPO", "--name", "m"], "plan", "a netdef engine or TensorRT plan"),
])
def test_outputs_never_replace_a_file_of_another_kind(r18, r18_engine, tmp_path, capsys, args, what, kind):
    """An existing output file is written over only when it is what the command writes (an engine, a .wts, JSON,
    numpy): a mistyped path naming a photo, a checkpoint or a config is refused before any work, unchanged."""
    victim = tmp_path / ("VICTIM.npy" if "VICTIM.npy" in args else "VICTIM")
    if "PLAN" in args:
        victim = tmp_path / "PLAN.json"
    if "REPO" in args:
        victim = tmp_path / "REPO" / "m" / "1" / "model.plan"
        victim.parent.mkdir(parents=True)
    victim.write_bytes(JPEG)
    names = {"WTS": str(r18 / "r18.wts"), "ENGINE": str(r18_engine), "DATA": str(tmp_path / "DATA"),
             "VICTIM": str(tmp_path / "VICTIM"), "VICTIM.npy": str(victim), "PLAN": str(tmp_path / "PLAN"),
             "REPO": str(tmp_path / "REPO")}
    capsys.readouterr()
    assert main([names.get(a, a) for a in args]) == 1
    err = capsys.readouterr().err
    assert f"{what} {victim} exists and is not {kind} (it looks like a JPEG image)" in err, err
    assert err.count("\n") == 1 and victim.read_bytes() == JPEG
    assert sorted(p.name for p in victim.parent.iterdir()) == [victim.name]  # nothing else written beside it


def test_kind_checks_refuse_configs_pipes_and_speak_of_the_input(r18_engine, tmp_path, capsys):
    """An INI/TOML file is no JSON to replace; a named pipe is refused without being read (no hang); refit in
    place of a file that is no engine says so as an input."""
    import os

    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[metadata]\nname = mine\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    capsys.readouterr()
    assert main(["bench", str(r18_engine), "--json", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"--json {cfg} exists and is not a netdef results file (--json) (it starts with b'[metadata]\\nname ')" in err
    assert cfg.read_text() == "[metadata]\nname = mine\n"
    coco, sidecar = tmp_path / "coco.json", tmp_path / "e.plan.json"
    for path, doc in ((coco, '{"images": [], "annotations": []}'), (sidecar, "[1, 2, 3]")):
        path.write_text(doc)
    for args, what, kind in ((["bench", str(r18_engine), "--json", str(coco)], f"--json {coco}", "results file"),
                             (["calibrate", "lenet", "-w", "x.wts", "-d", "d.npy", "-o", str(coco)],
                              f"the calibration table {coco}", "calibration table"),
                             (["export-plan", str(r18_engine), "-o", str(tmp_path / "e.plan")], f"sidecar {sidecar}",
                              "plan sidecar")):
        assert main(args) == 1
        assert f"{what} exists and is JSON of another kind, not a netdef {kind}" in capsys.readouterr().err
    assert coco.read_text() == '{"images": [], "annotations": []}' and sidecar.read_text() == "[1, 2, 3]"
    assert main(["profile", str(r18_engine), "--json", str(fifo)]) == 1
    assert f"--json {fifo} exists and is not a regular file" in capsys.readouterr().err
    wts = tmp_path / "w.wts"
    wts.write_text("0\n")
    assert main(["refit", str(wts), "-w", str(wts).replace("w.wts", "v.wts")]) == 1
    assert f"{wts} is not a netdef engine" in capsys.readouterr().err
    wts.write_text("1\nw 1 3f800000\n")  # the .wts given in the engine's place is named as one
    assert main(["refit", str(wts), "-w", str(wts).replace("w.wts", "v.wts")]) == 1
    assert f"{wts} is not a netdef engine: it looks like a .wts weights file" in capsys.readouterr().err


def test_outputs_replace_empty_files_and_files_of_their_kind(r18, r18_engine, tmp_path):
    from netdef import engine_file
    from netdef.fileio import JSON_FILE, NUMPY_FILE
    from netdef.wts import WTS_FILE

    for _ in range(2):  # the second run replaces the first one's plan, sidecar and repository files
        assert main(["export-plan", str(r18_engine), "-o", str(tmp_path / "r18.plan")]) == 0
        assert main(["triton", str(r18_engine), "--repo", str(tmp_path / "repo"), "--name", "r18"]) == 0

    out = tmp_path / "r18.wts"
    out.write_bytes(b"")  # e.g. made by mktemp
    assert main(["export", "torchvision:resnet18", "-o", str(out)]) == 0
    assert main(["export", "torchvision:resnet18", "-o", str(out), "--seed", "1"]) == 0  # over the first .wts
    assert WTS_FILE.test(out.read_bytes()[:64]) and not WTS_FILE.test(b"{\"a\": 1}")
    assert JSON_FILE.test(b"  \n{") and not JSON_FILE.test(b"[metadata]\nname = x") and not JSON_FILE.test(b"1 2")
    assert NUMPY_FILE.test(b"\x93NUMPY\x01\x00") and NUMPY_FILE.test(b"PK\x03\x04") and not NUMPY_FILE.test(JPEG)
    kind = engine_file.ENGINE_FILE
    assert kind.test(engine_file.MAGIC + bytes(8)) and kind.test(engine_file.MAGIC[:5])  # a cut engine too
    assert kind.test(b"ftrt\x00\x00\x00\x00") and kind.test(b"vtrt\x00") and not kind.test(JPEG)


def test_run_output_names_and_guards_the_file_numpy_writes(r18_engine, tmp_path, capsys):
    import numpy as np

    from netdef.cli.run import numpy_file

    assert numpy_file("logits", 1) == "logits.npy" and numpy_file("o.npy", 1) == "o.npy"
    assert numpy_file("o.npz", 1) == "o.npz" and numpy_file("outs", 2) == "outs.npz"
    assert numpy_file("o.npy", 2) == "o.npy.npz"
    eng = r18_engine
    x = tmp_path / "cal.npy"
    np.save(x, np.zeros((1, 3, 224, 224), np.float32))
    capsys.readouterr()
    assert main(["run", str(eng), "--input", str(x), "--output", str(tmp_path / "cal")]) == 1
    assert f"--output {x} is also an input of this command ({x})" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_quietly(tmp_path):
    """`netdef info --json big.wts | head -c 100`: no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    import numpy as np
    from netdef.wts import write_wts

    write_wts(tmp_path / "big.wts", {f"layer{i}.weight": np.zeros(1, np.float32) for i in range(20000)})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "netdef.cli", "info", "--json", str(tmp_path / "big.wts")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()  # the reader goes away long before the JSON (about 1 MB) is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_the_netdef_command_imports_from_the_working_folder_as_python_m_does(tmp_path):
    """The `netdef` console script (netdef.cli:main called from a script in another folder: unlike `python -m`,
    Python puts that folder on the module path, not the working one) finds the working folder's modules as `python
    -m netdef.cli` does: `--blocks my_blocks` by module name, `export mymodel:make`, and a checkpoint that pickles
    ./mymodel.py's class."""
    import subprocess

    pytest.importorskip("torch")
    work, scripts = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    scripts.mkdir()
    (scripts / "netdef").write_text("import sys\nfrom netdef.cli import main\nsys.exit(main())\n")  # as pip's
    (work / "my_blocks.py").write_text("from netdef.registry import block\n\n\n@block('WorkConv')\n"
                                       "def conv(net, x, prefix, c2):\n    return net.conv(x, prefix, c2, 1)\n")
    (work / "mymodel.py").write_text("import torch\n\n\nclass Tiny(torch.nn.Module):\n    def __init__(self):\n"
                                     "        super().__init__()\n        self.fc = torch.nn.Linear(2, 2)\n\n\n"
                                     "def make():\n    return Tiny()\n")
    subprocess.run([sys.executable, "-c", "import torch, mymodel; torch.save(mymodel.make(), 'tiny_full.pt')"],
                   cwd=work, check=True)
    here = os.path.realpath(work)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.realpath(p) != here))

    def netdef(*args: str, module: bool = False) -> subprocess.CompletedProcess:
        command = ["-m", "netdef.cli"] if module else [str(scripts / "netdef")]
        return subprocess.run([sys.executable, *command, *args], cwd=work, env=env, capture_output=True, text=True)

    for module in (False, True):
        res = netdef("blocks", "--blocks", "my_blocks", module=module)
        assert res.returncode == 0 and f"WorkConv(c2)  [my_blocks ({work / 'my_blocks.py'})]" in res.stdout, res.stderr
    for source in ("mymodel:make", "tiny_full.pt"):
        res = netdef("export", source, "-o", "tiny.wts")
        assert res.returncode == 0 and res.stdout == "wrote tiny.wts: 2 tensors, 6 values\n", res.stderr
        assert sorted(read_wts(work / "tiny.wts")) == ["fc.bias", "fc.weight"]


def test_examples_use_the_same_error_handler(capsys):
    pytest.importorskip("torch")
    from netdef.examples.digits import main as digits_main

    assert digits_main(["--epochs", "0"]) == 1
    assert capsys.readouterr().err == "netdef digits: error: --epochs 0: must be >= 1\n"


def test_dir_of_netdef_lists_its_submodules():
    """dir(netdef) (a notebook's completion) lists every submodule, imported or not, and none of __init__'s imports."""
    import pkgutil

    import netdef

    names = dir(netdef)
    assert {m.name for m in pkgutil.iter_modules(netdef.__path__) if m.name != "__main__"} <= set(names)
    assert {"runtime", "verify", "testing", "NetdefError", "__version__"} <= set(names)
    assert not {"pkgutil", "importlib", "Any", "annotations"} & set(names)


def test_only_the_command_line_imports_argparse():
    import ast
    from pathlib import Path

    import netdef

    root = Path(netdef.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("cli", "examples"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "argparse" for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


# ---------------------------------------------------------------- export messages, checkpoints, order of checks

def test_export_a_checkpoint_with_an_epoch_and_an_optimizer(tmp_path, capsys):
    """A training checkpoint saved as {**state_dict, 'epoch': 3, ...}: its tensors are exported, the rest named."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save({**model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    assert main(["export", str(tmp_path / "ckpt.pt"), "-o", str(tmp_path / "ckpt.wts")]) == 0
    assert set(read_wts(tmp_path / "ckpt.wts")) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                                    "1.running_var"}
    err = capsys.readouterr().err
    assert "ckpt.pt: exporting its 7 tensors; skipped 2 entries that are not tensors: 'epoch', 'optimizer'" in err
    torch.save({"epoch": 3, "net": model.state_dict()}, tmp_path / "nested.pt")  # no tensors at the top: an error
    assert main(["export", str(tmp_path / "nested.pt"), "-o", str(tmp_path / "nested.wts")]) == 1
    assert "a dict without tensors" in capsys.readouterr().err


def test_export_takes_the_checkpoint_entry_that_holds_weights(tmp_path, capsys):
    """{'state_dict': ..., 'model': 'resnet'} (the model's name beside its weights) exported 'model' and failed on
    the str ("exporting 'model' (the weights Ultralytics deploys), not 'state_dict'"); an entry that is no model or
    dict is not a candidate, and one that holds none says what each key holds."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    torch.save({"state_dict": model.state_dict(), "model": "resnet"}, tmp_path / "named.pt")
    assert main(["export", str(tmp_path / "named.pt"), "-o", str(tmp_path / "named.wts")]) == 0
    assert set(read_wts(tmp_path / "named.wts")) == {"0.weight", "0.bias"} and "exporting 'model'" not in \
        capsys.readouterr().err
    torch.save({"model": {"depth": 50}, "state_dict": model.state_dict()}, tmp_path / "config.pt")  # a config dict
    assert main(["export", str(tmp_path / "config.pt"), "-o", str(tmp_path / "config.wts")]) == 0
    assert set(read_wts(tmp_path / "config.wts")) == {"0.weight", "0.bias"}
    torch.save({"model": "resnet", "ema": None, "epoch": 3}, tmp_path / "none.pt")
    assert main(["export", str(tmp_path / "none.pt"), "-o", str(tmp_path / "none.wts")]) == 1
    assert "its 'ema' is None and 'model' is str, no model: the checkpoint holds no weights" in capsys.readouterr().err
    assert not (tmp_path / "none.wts").exists()


def _quantized(torch):
    with warnings.catch_warnings():  # torch warns that its quantized tensors are deprecated
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.rand(3), 0.1, 0, torch.quint8)


@pytest.mark.parametrize("make, why", [
    (lambda torch: torch.empty(2, 3, device="meta"), r"it is a meta tensor, a shape without values .*assign=True"),
    (lambda torch: torch.eye(3).to_sparse(), r"it is a sparse_coo tensor: call \.to_dense\(\) on it"),
    (_quantized, r"it is a quantized tensor: give the float model's weights, or call \.dequantize\(\) on it"),
])
def test_tensors_without_plain_values_are_named_not_tracebacks(tmp_path, make, why):
    """A meta-device state_dict (NotImplementedError: Cannot copy out of meta tensor) or a sparse tensor
    (TypeError) ended export, define_network and verify in a traceback; each names the key and what to do."""
    import torch

    from netdef.define import define_network
    from netdef.errors import WeightKeyError
    from netdef.wts import write_wts

    tensor = make(torch)
    with pytest.raises(NetdefError, match=rf"cannot write .*x\.wts: tensor 'w' cannot be converted to float32: {why}"):
        write_wts(tmp_path / "x.wts", {"w": tensor})
    assert not (tmp_path / "x.wts").exists()
    with pytest.raises(WeightKeyError, match=rf"in-memory weights: 'fc.weight': {why}"):
        define_network("lenet", {"fc.weight": tensor}, log=lambda m: None)


def test_export_says_what_it_loads_and_counts_tensors(tmp_path, capsys):
    from netdef.export import export_wts

    sd = export_wts("netdef.examples.digits:LeNet", tmp_path / "lenet.wts", progress=True)
    err = capsys.readouterr().err
    assert "[netdef] loading netdef.examples.digits:LeNet with PyTorch ..." in err
    assert f"[netdef] writing {tmp_path / 'lenet.wts'}: {len(sd)} tensors ..." in err
    assert f"{len(sd)}/{len(sd)}" in err and " tensors/s" in err and "B/s" not in err  # the bar counts tensors
    export_wts("netdef.examples.digits:LeNet", tmp_path / "quiet.wts")
    assert capsys.readouterr().err == (f"[netdef] these weights fit netdef's lenet: build it with `netdef build lenet "
                                       f"-w {tmp_path / 'quiet.wts'} -o quiet.engine`\n")  # no progress: the hint alone


@pytest.fixture
def fake_engine(tmp_path):
    """An engine file with a valid header (loading it goes on to need a GPU)."""
    from test_engine_file import complete_meta

    path = tmp_path / "x.engine"
    engine_file.write_engine(path, b"plan", complete_meta())
    return path


@pytest.mark.parametrize("args, needle", [
    (["run", "ENGINE", "--input", "MISSING.npy"], "--input MISSING.npy: no such file"),
    (["run", "ENGINE", "--input", "BAD.npy"], "--input BAD.npy: not a .npy file (save the input array with "
                                              "numpy.save)"),
    (["run", "ENGINE", "--output", "ENGINE"], "--output ENGINE is also an input of this command"),
    (["detect", "ENGINE", "MISSING.jpg", "--out", "OUT"], "no such image or folder: MISSING.jpg"),
    (["detect", "ENGINE", "BAD.npy", "--out", "OUT"], "cannot read image BAD.npy"),
    (["detect", "ENGINE", "EMPTY", "--out", "OUT"], "EMPTY holds no images"),
    (["calibrate", "lenet", "-w", "MISSING.wts", "-d", "DATA.npy", "-o", "T.json"], "MISSING.wts: weights file not"),
    (["calibrate", "lenet", "-w", "MISSING.wts", "-d", "MISSING.npy", "-o", "T.json"], "calibration data MISSING.npy"),
])
def test_inputs_are_checked_before_the_gpu(tmp_path, fake_engine, capsys, args, needle):
    """Without a GPU, a missing or bad input is still reported as such (not as the missing GPU)."""
    import numpy as np

    (tmp_path / "BAD.npy").write_text("not numpy")
    (tmp_path / "EMPTY").mkdir()
    np.save(tmp_path / "DATA.npy", np.zeros((2, 1, 16, 16), np.float32))
    names = {"ENGINE": str(fake_engine)} | {n: str(tmp_path / n) for n in
                                             ("MISSING.npy", "BAD.npy", "MISSING.jpg", "OUT", "EMPTY", "MISSING.wts",
                                              "DATA.npy", "T.json")}
    assert main([names.get(a, a) for a in args]) == 1
    err = capsys.readouterr().err
    for name, path in names.items():
        needle = needle.replace(name, path)
    assert needle in err and err.count("\n") == 1, err
    assert "GPU" not in err and not (tmp_path / "OUT").exists() and not (tmp_path / "T.json").exists()


def test_a_described_engine_says_it_is_not_loaded(fake_engine):
    """Engine.described reads the header only: its checks work, every call that would need the engine says so."""
    import numpy as np

    from netdef.errors import EngineFileError, OptionError, TensorRTUnavailable
    from netdef.runtime import Engine

    eng = Engine.described(fake_engine)
    assert [t.name for t in eng.inputs] == ["input"]
    assert repr(eng) == ("<Engine.described x.engine: input (-1, 1, 28, 28) float32 -> logits (-1, 10) float32, "
                         "batch 1:4:8, fp16>")
    with pytest.raises(OptionError, match="batch 16 is outside the engine's profile 1..8"):
        eng.check_feeds({"input": np.zeros((16, 1, 28, 28), np.float32)})
    with pytest.raises(OptionError, match="input 'input' is a list: give a numpy array or a torch tensor"):
        eng.check_feeds({"input": [[0.0] * 28] * 28})  # was an AttributeError ('list' object has no attribute 'shape')
    for dtype in (np.bool_, np.complex64):  # a cast would give 0/1 or drop the imaginary part
        with pytest.raises(OptionError, match=f"input 'input' takes float32 values, got {np.dtype(dtype).name}$"):
            eng.check_feeds({"input": np.zeros((2, 1, 28, 28), dtype)})
    for call in (lambda: eng.infer({}), lambda: eng.prepare_step(1), lambda: eng.capture({}),
                 lambda: eng.bind({}, stream=0), lambda: eng.enqueue({}, stream=0), lambda: eng.refit({}),
                 lambda: eng.on_device().__enter__()):
        with pytest.raises(TensorRTUnavailable, match=r"x\.engine is only described \(Engine\.described\)"):
            call()
    (fake_engine.parent / "r18.wts").write_text("1\nfc.bias 1 3f800000\n")
    with pytest.raises(EngineFileError, match=r"r18\.wts is neither a netdef engine nor a TensorRT plan \(it is a "
                                              r"\.wts file"):
        Engine.described(fake_engine.parent / "r18.wts")  # not None, which means a raw plan without a sidecar


@pytest.mark.parametrize("args, needle", [
    (["run", "ENGINE", "--batch", "16"], "input 'input' batch 16 is outside the engine's profile 1..8"),
    (["run", "ENGINE", "--input-shape", "32x32"], "x.engine was built for the input size 28x28 only, not 32x32"),
    (["run", "ENGINE", "--input", "WRONG.npy"], "input 'input' has shape (2, 3, 28, 28); the engine expects "
                                                "(-1, 1, 28, 28)"),
    (["detect", "DETECTOR", "PHOTO.png", "--out", "OUT", "--rect"], "--rect needs an engine built with a dynamic "
                                                                    "input size"),
    (["detect", "DETECTOR", "PHOTO.png", "--out", "OUT", "--input-shape", "640x640"],
     "y.engine takes 320x320 only"),
    (["detect", "CLASSIFIER", "PHOTO.png", "--out", "OUT", "--conf", "0.5"], "is a classification engine: conf "
                                                                             "applies to detection engines only"),
])
def test_mistakes_the_header_shows_are_reported_before_the_gpu(tmp_path, fake_engine, capsys, args, needle):
    """What an engine's header tells (its batch range, input size, task) is checked before loading it: without a
    GPU such mistakes are reported as themselves, not as the missing GPU."""
    import numpy as np
    from PIL import Image

    from test_engine_file import complete_meta

    np.save(tmp_path / "WRONG.npy", np.zeros((2, 3, 28, 28), np.float32))
    Image.new("RGB", (64, 48)).save(tmp_path / "PHOTO.png")
    for name, model, outputs in (("y", {"task": "detect", "nc": 80, "head": "decode", "stride": 32},
                                  [{"name": "output", "shape": [-1, 84, 2100], "dtype": "float32"}]),
                                 ("c", {"task": "classify", "nc": 5, "head": "probs"},
                                  [{"name": "output", "shape": [-1, 5], "dtype": "float32"}])):
        meta = complete_meta() | {"model": model, "outputs": outputs, "plugins": [],
                                  "inputs": [{"name": "images", "shape": [-1, 3, 320, 320], "dtype": "float32"}]}
        engine_file.write_engine(tmp_path / f"{name}.engine", b"plan", meta)
    names = {"ENGINE": str(fake_engine), "WRONG.npy": str(tmp_path / "WRONG.npy"), "OUT": str(tmp_path / "OUT"),
             "PHOTO.png": str(tmp_path / "PHOTO.png"), "DETECTOR": str(tmp_path / "y.engine"),
             "CLASSIFIER": str(tmp_path / "c.engine")}
    capsys.readouterr()
    assert main([names.get(a, a) for a in args]) == 1
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "GPU" not in err, err


def test_detect_refuses_a_file_as_its_output_folder(fake_engine, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "coffee.png")
    (tmp_path / "out.txt").write_text("keep me")
    assert main(["detect", str(fake_engine), str(tmp_path / "coffee.png"), "--out", str(tmp_path / "out.txt")]) == 1
    assert "--out" in capsys.readouterr().err and (tmp_path / "out.txt").read_text() == "keep me"


def test_detect_api_reads_the_images_before_the_engine(fake_engine, tmp_path):
    from netdef.tools.detect import detect

    with pytest.raises(NetdefError, match="no such image or folder"):
        detect(fake_engine, [tmp_path / "missing.jpg"])


def test_ctrl_c_during_a_build_cancels_it_and_writes_nothing(r18, tmp_path):
    """SIGINT while TensorRT builds: with progress callbacks (TensorRT 10+, RTX) it is sent from the first build
    phase's message, inside TensorRT's callback (where a KeyboardInterrupt would be swallowed), and TensorRT is
    told to stop at its next step ("build cancelled"); TensorRT 8.6 has no callbacks: sent with "building ...".
    Either way KeyboardInterrupt (exit 130 on the command line), no engine or timing cache is written, an existing
    engine is kept, and Python's SIGINT handler is back afterwards."""
    import os
    import signal

    from netdef import trt_api
    from netdef.build import BuildOptions, build_engine

    out, cache = tmp_path / "r18.engine", tmp_path / "r18.timing"
    out.write_bytes(engine_file.MAGIC + b"an older engine")
    cancellable = trt_api.progress_monitor_base() is not None
    lines = []

    def log(msg: str) -> None:
        lines.append(msg)
        building = any(m.startswith("[netdef] building") for m in lines[:-1])
        if (msg.startswith("[netdef]   ") and building) if cancellable else msg.startswith("[netdef] building"):
            if not any("interrupted" in m for m in lines):
                os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        build_engine("resnet18", r18 / "r18.wts", out, BuildOptions(opt_level=0, timing_cache=str(cache)), log=log)
    assert out.read_bytes() == engine_file.MAGIC + b"an older engine" and not cache.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.engine"]
    assert signal.getsignal(signal.SIGINT) is handler
    if cancellable:
        assert "[netdef] interrupted: build cancelled" in lines, lines


def test_an_exception_of_the_callers_log_during_a_build_is_raised_and_nothing_written(r18, tmp_path):
    """A `log=` callback that raises while TensorRT builds (inside its progress callback, which would swallow the
    exception, or in the ticking thread): the build stops and build_engine raises that exception; no engine."""
    from netdef import trt_api
    from netdef.build import BuildOptions, build_engine

    if trt_api.progress_monitor_base() is None:
        pytest.skip("this TensorRT reports no build phases (8.6): the caller's log is not called during the build")
    out = tmp_path / "r18.engine"

    def log(msg: str) -> None:
        if msg.startswith("[netdef]   "):  # a build phase's message: inside TensorRT's callback
            raise LookupError("the caller's own log failed")

    with pytest.raises(LookupError, match="the caller's own log failed"):
        build_engine("resnet18", r18 / "r18.wts", out, BuildOptions(opt_level=0), log=log)
    assert list(tmp_path.iterdir()) == []


def test_an_exception_of_the_log_in_the_ticking_thread_is_kept_for_the_caller(monkeypatch):
    """TensorRT without progress callbacks (8.6): only the ticking thread calls `log` during a build. What it
    raises there (where a thread's exception would be lost) is kept as `error`, cancels, and silences later
    messages; the build's caller raises it."""
    import time

    from netdef import compiler, trt_api

    monkeypatch.setattr(trt_api, "progress_monitor_base", lambda: None)
    said = []

    def log(msg: str) -> None:
        said.append(msg)
        raise LookupError("the caller's own log failed")

    with compiler.BuildProgress(None, log, every=0.0) as progress:
        deadline = time.perf_counter() + 10
        while progress.error is None and time.perf_counter() < deadline:
            time.sleep(0.05)
        progress.say("after the error")
    assert isinstance(progress.error, LookupError) and progress.cancelled and not progress.cancellable
    assert said == ["[netdef]   ... still building (0 s)"]


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_from_outside_during_a_build_is_never_lost(r18, tmp_path, capfd, signum):
    """A signal from another process (here a timer thread) at any moment of a build: Python runs the handler when
    TensorRT next calls back into Python, before the callback's frame exists; it is kept and raised when the build
    returns (KeyboardInterrupt, or Terminated for SIGTERM in a command), TensorRT catches no exception, nothing is
    written."""
    import os
    import signal
    import threading

    from netdef import interrupts
    from netdef.build import BuildOptions, build_engine
    from netdef.errors import Terminated

    sig = getattr(signal, signum)
    out = tmp_path / "r18.engine"
    interrupted = 0
    for delay in (0.02, 0.1, 0.3, 0.6, 1.0, 1.5):
        timer, lines, caught = threading.Timer(delay, os.kill, (os.getpid(), sig)), [], None
        try:  # (pytest.raises would let a KeyboardInterrupt in place of Terminated end the whole session)
            with interrupts.handled():  # as a command runs
                timer.start()
                build_engine("resnet18", r18 / "r18.wts", out, BuildOptions(opt_level=0), log=lines.append)
                timer.join()  # the build ended first: the signal lands in this join
        except BaseException as e:
            caught = e
        timer.join()
        assert type(caught) is (KeyboardInterrupt if signum == "SIGINT" else Terminated), (delay, caught)
        assert "Exception caught" not in "".join(capfd.readouterr())
        wrote = any(m.startswith("[netdef] wrote") for m in lines)
        assert out.exists() == wrote and [p.name for p in tmp_path.iterdir()] == (["r18.engine"] if wrote else [])
        if wrote:
            out.unlink()
        interrupted += not wrote
    assert interrupted >= 2  # the build takes longer than the first delays


def test_signals_inside_a_tensorrt_call_are_raised_when_it_returns():
    """tensorrt_call: the handler keeps a signal whatever frame it runs in (TensorRT's callbacks are entered without
    one of netdef's frames) and the call's end raises it; a second one while it waits ends the process; a pending
    signal is raised before a call starts; where Python's default SIGINT handler is installed the call installs
    netdef's for its duration only."""
    import os
    import signal
    import subprocess
    import sys

    from netdef import interrupts

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    inside = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.tensorrt_call():
            inside.append(signal.getsignal(signal.SIGINT))
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10000):
                pass
            inside.append(interrupts.CANCEL.is_set())
    assert inside == [interrupts.handler, True] and not interrupts.CANCEL.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.tensorrt_call():
                with interrupts.tensorrt_call():  # nested: the outermost raises
                    os.kill(os.getpid(), signal.SIGINT)
                    for _ in range(10000):
                        pass
                inside.append("not yet")
        assert inside[-1] == "not yet"
    code = ("import os, signal, time\nfrom netdef import interrupts\n"
            "with interrupts.handled():\n    with interrupts.tensorrt_call():\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n        time.sleep(0.2)\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n        time.sleep(5)\nprint('survived')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM and "survived" not in done.stdout


def test_a_second_signal_ends_a_call_that_never_returns_to_python():
    """A TensorRT 8.6 build may not call back into Python for minutes, and Python runs no handler until it does:
    inside `watched` (around every build) the signals are read as they arrive, the first sets CANCEL at once and
    a second ends the process by the signal, the call unfinished. zlib stands in for TensorRT: C code that
    releases the GIL and never runs Python while it works."""
    import signal
    import subprocess
    import sys

    code = ("import os, signal, threading, time, zlib\nfrom netdef import interrupts\n"
            "data = os.urandom(96 << 20)\n"
            "with interrupts.handled():\n    with interrupts.tensorrt_call(), interrupts.watched(print):\n"
            "        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
            "        threading.Timer(0.25, lambda: print('cancel:', interrupts.CANCEL.is_set(), flush=True)).start()\n"
            "        threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
            "        t0 = time.perf_counter()\n        zlib.compress(data, 9)\n"
            "        print('returned after', time.perf_counter() - t0, 's')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the messages are flushed by netdef
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "returned" not in done.stdout, done.stdout  # else zlib finished before the signals: more data
    assert done.returncode == -signal.SIGINT and "cancel: True" in done.stdout, (done.stdout, done.stderr)
    assert "[netdef] SIGINT: another one ends the process at once\n" in done.stdout  # say=print: flushed first
    assert "[netdef] SIGINT again: quitting at once" in done.stdout


def test_a_signal_kept_to_the_end_of_a_command_is_raised_there():
    """A signal kept inside a TensorRT callback near the end of a command is not dropped with the handler: the end of
    `handled()` raises it (exit 130 on the command line)."""
    import os
    import signal

    from netdef import interrupts

    @interrupts.trt_callback
    def callback():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):
            pass

    with pytest.raises(KeyboardInterrupt):
        with interrupts.handled():
            callback()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupts.CANCEL.is_set()


def test_a_kept_signal_decides_how_a_failing_block_ends():
    """A signal kept while the block then fails (TensorRT returned an error after a Ctrl-C, a NetdefError after a
    SIGTERM) is what the block raises, with the failure as its cause: the user's signal decides the exit code."""
    import os
    import signal

    from netdef import interrupts
    from netdef.errors import NetdefError, Terminated

    @interrupts.trt_callback
    def callback(signum):
        os.kill(os.getpid(), signum)
        for _ in range(10000):
            pass

    with pytest.raises(KeyboardInterrupt) as info:
        with interrupts.tensorrt_call():
            callback(signal.SIGINT)
            raise RuntimeError("TensorRT failed")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(Terminated) as info:
        with interrupts.handled():
            callback(signal.SIGTERM)
            raise NetdefError("a later error")
    assert isinstance(info.value.__cause__, NetdefError)


def test_the_tensorrt_logger_is_one_per_process_and_chosen_by_its_first_use():
    """A command's first TensorRT logger writes to stderr from Python; a program's own first use gets TensorRT's
    (no Python callback to lose a Ctrl-C in); later calls return the same one at the level asked."""
    import subprocess
    import sys

    code = ("import os, signal, sys\nfrom netdef import interrupts, trt_api\nfrom netdef.cli.guard import run_guarded\n"
            "if sys.argv[1] == 'command':\n    run_guarded(lambda: trt_api.logger() and 0, prog='netdef')\n"
            "if sys.argv[1] == 'background':\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "    run_guarded(lambda: trt_api.logger() and 0, prog='netdef')\n"
            "a = trt_api.logger()\nos.environ['NETDEF_TRT_LOG'] = 'ERROR'\nb = trt_api.logger()\n"
            "print(type(a).__name__, a is b)")
    for mode, name in (("command", "StderrLogger"), ("library", "Logger"), ("background", "StderrLogger")):
        done = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == [name, "True"], (mode, done.stdout, done.stderr)


def test_a_missing_driver_after_another_error_is_not_shown_without_a_gpu(monkeypatch, capsys):
    """TensorRT-RTX on a machine without a GPU follows a rejected layer's error with CUDA's 'driver version is
    insufficient' (cudaError 35): not that error's cause, so netdef's logger neither shows nor keeps it there."""
    from netdef import trt_api

    import dataclasses

    log = trt_api._stderr_logger()
    rtx = dataclasses.replace(trt_api.info(), flavor="tensorrt-rtx")
    monkeypatch.setattr(trt_api, "info", lambda: rtx)
    monkeypatch.setattr(trt_api, "gpu_identity", lambda device=None: None)
    trt_api.forget_errors()
    error = trt_api.module().ILogger.Severity.ERROR
    log.log(error, "Error Code 4: Internal Error (cat: all concat input tensors must have the same dimensions)")
    log.log(error, "Error Code 1: Cuda Runtime (cudaError 35: CUDA driver version is insufficient)")
    err = capsys.readouterr().err
    assert "concat input tensors" in err and "cudaError" not in err
    assert list(trt_api._ERRORS) == ["Error Code 4: Internal Error (cat: all concat input tensors must have the same "
                                     "dimensions)"]
    trt_api.forget_errors()  # alone (a driver too old on a GPU machine, say), it is the cause: shown
    log.log(error, "Error Code 1: Cuda Runtime (cudaError 35: CUDA driver version is insufficient)")
    assert "cudaError 35" in capsys.readouterr().err
    trt_api.forget_errors()


def test_handled_on_a_worker_thread_leaves_the_main_threads_state(r18):
    """A build on a worker thread enters `handled()` there: it changes nothing (signals are the main thread's), so
    a signal the main thread keeps is still raised."""
    import os
    import signal
    import threading

    from netdef import interrupts

    @interrupts.trt_callback
    def callback():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):
            pass

    def worker():
        with interrupts.handled():
            pass

    with interrupts.handled():
        callback()
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert interrupts.CANCEL.is_set()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_a_build_leaves_ignored_and_host_signal_handlers_alone(r18, tmp_path):
    """A background job's ignored SIGINT stays ignored during a build, and a host program's own handlers are
    neither replaced nor bypassed (netdef takes over Python's default SIGINT handler and its commands' SIGTERM
    handler only)."""
    import signal

    from netdef.build import BuildOptions, build_engine

    seen = []

    def host(signum, frame):
        pass

    def log(msg: str) -> None:
        if msg.startswith("[netdef] building"):
            seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, host)
        build_engine("resnet18", r18 / "r18.wts", tmp_path / "a.engine", BuildOptions(opt_level=0), log=log)
        assert seen == [(signal.SIG_IGN, host)]
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (signal.SIG_IGN, host)
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_temporary_file(tmp_path, capsys):
    """`kill` / `docker stop` while a command writes its output: `terminated`, exit 143, the old file kept and
    no temporary file left; the previous SIGTERM handler is back afterwards."""
    import os
    import signal

    from netdef.cli.guard import run_guarded
    from netdef.fileio import atomic_write

    out = tmp_path / "big.wts"
    out.write_bytes(b"1\nold 0\n")

    def chunks():
        yield b"2\n"
        os.kill(os.getpid(), signal.SIGTERM)  # mid-write
        yield b"never written\n"

    handler = signal.getsignal(signal.SIGTERM)
    assert run_guarded(lambda: atomic_write(out, chunks()), prog="netdef") == 143
    assert capsys.readouterr().err == "terminated\n"
    assert out.read_bytes() == b"1\nold 0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["big.wts"]
    assert signal.getsignal(signal.SIGTERM) is handler



def test_outputs_named_like_folders_or_stdout_and_pipes_as_weights(tmp_path, capsys):
    """`-o engines/` (no such folder) would have written a file named engines, `-o -` a file named '-'; a pipe
    given as weights is named as one; a deleted working folder is said before PyTorch's import trips on it."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for args, needle in ((["export", "torchvision:resnet18", "-o", f"{tmp_path}/engines/"], "ends with '/', a folder's "
                                                                                            "name: give a file name"),
                         (["export", "torchvision:resnet18", "-o", "-"], "'-': netdef writes files, not standard "
                                                                         "output"),
                         (["build", "resnet18", "-w", str(fifo), "-o", str(tmp_path / "e.engine")],
                          "weights file is not a regular file (a pipe or a device")):
        assert main(args) == 1
        assert needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    gone = tmp_path / "gone"
    gone.mkdir()
    code = f"import os, sys\nos.chdir({str(gone)!r})\nos.rmdir({str(gone)!r})\nfrom netdef.cli import main\n" \
           "sys.exit(main(['info', 'x.wts']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "the working folder was deleted" in done.stderr


@pytest.mark.parametrize("args, suggested", [
    (["build", "yolo11n", "-w", "x.wts", "-o", "OUT"], "yolo11n.engine"),
    (["build", "yolo11n", "-w", "x.wts", "-o", "e.engine", "--timing-cache", "OUT"], "yolo11n.timing"),
    (["export", "torchvision:resnet18", "-o", "OUT"], "resnet18.wts"),
    (["export", "runs/best.pt", "-o", "OUT"], "best.wts"),
    (["export-plan", "m/y.engine", "-o", "OUT"], "y.plan"),
    (["refit", "m/y.engine", "-w", "x.wts", "-o", "OUT"], "y.engine"),
    (["calibrate", "lenet", "-w", "x.wts", "-d", "d", "-o", "OUT"], "lenet_table.json"),
    (["run", "m/y.engine", "--output", "OUT"], "y.npy"),
    (["bench", "m/y.engine", "--json", "OUT"], "y.json"),
])
def test_an_output_given_as_a_folder_gets_a_real_file_name(tmp_path, monkeypatch, capsys, args, suggested):
    """`-o dirout` (an existing folder) or `-o engines/`: the error suggests the file name the command would
    write there, after what it is made from and with the command's usual suffix, not `dirout/out`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "y.engine").write_bytes(b"not read")
    (tmp_path / "dirout").mkdir()
    for out, shown in (("dirout", "dirout"), ("engines/", "engines")):
        assert main([out if a == "OUT" else a for a in args]) == 1
        err = capsys.readouterr().err
        assert f"give a file name (e.g. {Path(shown) / suggested})\n" in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dirout", "m", "y.engine"]


def test_a_large_detections_json_of_netdefs_is_replaced(tmp_path, monkeypatch):
    """JSON outputs beyond what is parsed to check their kind (MAX_JSON_BYTES: 5000 images' detections) are told by
    their first bytes: netdef's own detections.json is replaced, someone else's large JSON is not."""
    from netdef import fileio
    from netdef.errors import OptionError
    from netdef.tools.detect import DETECTIONS_FILE

    monkeypatch.setattr(fileio, "MAX_JSON_BYTES", 16)
    ours, theirs = tmp_path / "detections.json", tmp_path / "coco.json"
    ours.write_text('[\n {\n  "image": "0",\n  "boxes": []\n }\n]')
    theirs.write_text('{"images": [], "annotations": []}')
    fileio.check_output(ours, kind=DETECTIONS_FILE)
    with pytest.raises(OptionError, match="is JSON of another kind, not a netdef detections.json"):
        fileio.check_output(theirs, kind=DETECTIONS_FILE)


def test_files_written_together_are_renamed_together(tmp_path):
    """atomic_write_all (a plan and its sidecar): a failure while writing the second leaves both old files and no
    temporary file; otherwise both are replaced."""
    import errno

    from netdef.fileio import atomic_write_all

    plan, side = tmp_path / "m.plan", tmp_path / "m.plan.json"
    plan.write_bytes(b"old plan")
    side.write_bytes(b"{}")

    def full_disk():
        yield b"{"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"cannot write .*m\.plan\.json: No space left on device"):
        atomic_write_all({plan: b"new plan", side: full_disk()})
    assert plan.read_bytes() == b"old plan" and side.read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan", "m.plan.json"]
    atomic_write_all({plan: b"new plan", side: b'{"sidecar": {}}'})
    assert plan.read_bytes() == b"new plan" and side.read_bytes() == b'{"sidecar": {}}'


def test_sighup_unwinds_and_an_ignored_one_stays_ignored(tmp_path, capsys):
    """A closed terminal or ssh session (SIGHUP) mid-write: `terminated (signal 1)`, exit 129, the old file kept and
    no temporary file left; under `nohup` (SIGHUP ignored) netdef leaves it ignored."""
    import os
    import signal

    from netdef.cli.guard import run_guarded
    from netdef.fileio import atomic_write

    out = tmp_path / "big.wts"
    out.write_bytes(b"1\nold 0\n")

    def chunks():
        yield b"2\n"
        os.kill(os.getpid(), signal.SIGHUP)
        yield b"never written\n"

    assert run_guarded(lambda: atomic_write(out, chunks()), prog="netdef") == 129
    assert capsys.readouterr().err == "terminated (signal 1)\n"
    assert out.read_bytes() == b"1\nold 0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["big.wts"]
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        seen = []
        assert run_guarded(lambda: seen.append(signal.getsignal(signal.SIGHUP)), prog="netdef") == 0
        assert seen == [signal.SIG_IGN]
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_signal_after_the_rename_says_the_file_is_complete(tmp_path, monkeypatch, capsys):
    """SIGTERM once an export's .wts is renamed into place (during the renames: kept until they are done; or just
    after): still `terminated`, exit 143 (the command was stopped), but the message says the file was written
    completely, and it is there whole, no temporary file beside it."""
    import os
    import signal

    import torch

    from netdef import fileio
    from netdef.cli.guard import run_guarded
    from netdef.fileio import atomic_write
    from netdef.wts import read_wts

    torch.save({"conv.weight": torch.ones(2, 1, 1, 1)}, tmp_path / "m.pt")
    out = tmp_path / "m.wts"
    replace = os.replace

    def replaced_then_killed(src, dst):  # the commit point: the signal comes right after the rename
        replace(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(fileio.os, "replace", replaced_then_killed)
    assert main(["export", str(tmp_path / "m.pt"), "-o", str(out)]) == 143
    monkeypatch.setattr(fileio.os, "replace", replace)
    assert capsys.readouterr().err.endswith(f"terminated: {out} was written completely before the signal\n")
    assert set(read_wts(out)) == {"conv.weight"} and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.wts"]

    def written_then_killed():
        atomic_write(tmp_path / "a.json", b"{}")
        atomic_write(tmp_path / "b.json", b"[]")
        os.kill(os.getpid(), signal.SIGHUP)

    assert run_guarded(written_then_killed, prog="netdef") == 129
    assert capsys.readouterr().err == (f"terminated (signal 1): {tmp_path / 'a.json'}, {tmp_path / 'b.json'} were "
                                       "written completely before the signal\n")
    assert run_guarded(lambda: os.kill(os.getpid(), signal.SIGTERM), prog="netdef") == 143  # a new command: none
    assert capsys.readouterr().err == "terminated\n"


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL leaves `.NAME.netdef-XXXX.tmp`; the next write of NAME removes it when nobody holds its lock and it
    is old (not a live writer's, not a fresh one, not another file's or another program's); a write error names
    the target."""
    import os
    import subprocess
    import sys
    import time

    from netdef import fileio

    old = time.time() - fileio.ORPHAN_AGE_S - 60
    orphan, fresh, held, other, foreign = (tmp_path / n for n in (
        ".w.wts.netdef-a1.tmp", ".w.wts.netdef-b2.tmp", ".w.wts.netdef-c3.tmp", ".x.wts.netdef-d4.tmp",
        ".w.wts.e5.tmp"))
    for p in (orphan, fresh, held, other, foreign):
        p.write_bytes(b"partial")
        if p is not fresh:
            os.utime(p, (old, old))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\nf = open(sys.argv[1], 'r+b')\n"
                               "fcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)", str(held)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        fileio.atomic_write(tmp_path / "w.wts", b"1\nw 0\n")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["w.wts", fresh.name, held.name, other.name, foreign.name])
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'file' / 'w.wts'}"):
        fileio.atomic_write(tmp_path / "file" / "w.wts", b"x")


def test_atomic_writes_without_file_locks_and_beside_a_writer_of_this_process(tmp_path, monkeypatch):
    """A file system without locks (NFS without lockd: ENOLCK) still takes atomic writes, and removes no temporary
    file it cannot lock; a stalled writer of this same process (POSIX locks do not exclude it) keeps its file."""
    import errno
    import os
    import threading
    import time

    from netdef import fileio

    old = time.time() - fileio.ORPHAN_AGE_S - 60
    orphan = tmp_path / ".w.wts.netdef-a1.tmp"
    orphan.write_bytes(b"partial")
    os.utime(orphan, (old, old))

    def no_locks(*a):
        raise OSError(errno.ENOLCK, "No locks available")

    if fileio.fcntl is not None:
        monkeypatch.setattr(fileio.fcntl, "lockf", no_locks)
    fileio.atomic_write(tmp_path / "w.wts", b"1\nw 0\n")
    assert (tmp_path / "w.wts").read_bytes() == b"1\nw 0\n" and orphan.exists()  # nothing removed unlocked
    monkeypatch.undo()

    started, go = threading.Event(), threading.Event()

    def stalled():
        yield b"first "
        started.set()
        go.wait(30)
        yield b"second"

    writer = threading.Thread(target=fileio.atomic_write, args=(tmp_path / "s.wts", stalled()))
    writer.start()
    assert started.wait(30)
    [tmp] = [p for p in tmp_path.iterdir() if p.name.startswith(".s.wts.netdef-")]
    os.utime(tmp, (old, old))  # as if stalled for longer than ORPHAN_AGE_S
    fileio.atomic_write(tmp_path / "s.wts", b"other")
    assert tmp.exists()  # this process's own writer: not an orphan
    go.set()
    writer.join()
    assert (tmp_path / "s.wts").read_bytes() == b"first second"


def test_ctrl_c_while_tensorrt_is_imported_is_not_a_missing_tensorrt(monkeypatch):
    """Ctrl-C while TensorRT's extension initializes comes out of the import as ImportError("initialization
    failed") raised during the KeyboardInterrupt: that is the interrupt, not a TensorRT that is not installed (a
    command would go on without it and exit 0)."""
    import importlib

    from netdef import trt_api
    from netdef.errors import TensorRTUnavailable

    def interrupted(name):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed")  # noqa: B904  as the extension's init raises it

    trt_api.module.cache_clear()
    monkeypatch.setattr(importlib, "import_module", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            trt_api.module()
        monkeypatch.setattr(importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
        with pytest.raises(TensorRTUnavailable, match="no TensorRT Python module found"):
            trt_api.module()
    finally:
        monkeypatch.undo()
        trt_api.module.cache_clear()


def test_a_signal_inside_a_tensorrt_callback_is_kept_for_netdefs_code():
    """Inside a function TensorRT calls (a logger's log, a progress step) netdef's handler raises nothing
    (TensorRT would swallow it): it sets CANCEL and keeps the signal, which `check()` raises afterwards, or
    which is delivered again shortly to land outside the callback."""
    import os
    import signal
    import time

    from netdef import interrupts
    from netdef.errors import Terminated

    @interrupts.trt_callback
    def callback():  # as TensorRT would call it
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs here, between bytecodes
            pass
        return "returned"

    with interrupts.handled():
        assert callback() == "returned" and interrupts.CANCEL.is_set()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        interrupts.check()  # consumed: nothing more
    with interrupts.handled():
        assert not interrupts.CANCEL.is_set() and callback() == "returned"
        with pytest.raises(KeyboardInterrupt):  # delivered again after RETRY_S, outside the callback
            time.sleep(1)
    with interrupts.handled():
        with pytest.raises(Terminated):  # outside any callback: raised at once (SIGTERM as Terminated)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert not interrupts.CANCEL.is_set()  # it belonged to the block



def test_demo_writes_over_its_own_weights_only(tmp_path, capsys):
    """`netdef demo --workdir weights/` keeps the user's resnet18.wts (it used to become random weights); a workdir
    of an earlier demo run is written again (the demo's weights are the same every run)."""
    import numpy as np

    from netdef.wts import write_wts

    mine = tmp_path / "resnet18.wts"
    write_wts(mine, {"fc.weight": np.ones(4, np.float32)})
    before = mine.read_bytes()
    capsys.readouterr()
    assert main(["demo", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"--workdir {tmp_path}: {mine} holds other weights than the demo's random ones (yours?)" in err, err
    assert err.count("\n") == 1 and mine.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["resnet18.wts"]  # no engine built from random weights beside it
    own = tmp_path / "own"
    assert main(["demo", "--workdir", str(own)]) == 0
    first = (own / "resnet18.wts").read_bytes()
    assert main(["demo", "--workdir", str(own)]) == 0
    assert (own / "resnet18.wts").read_bytes() == first


def test_demo_workdir_that_is_a_file_says_what_it_is(tmp_path, capsys):
    """`netdef demo --workdir r18.wts` (an existing file) said "[Errno 17] File exists"; a folder inside a file,
    "[Errno 20]". Refused before any work, naming the file and what it is, which stays as it was."""
    from netdef.wts import write_wts

    wts = tmp_path / "r18.wts"
    write_wts(wts, {"w": [1.0]})
    before = wts.read_bytes()
    for workdir in (wts, wts / "sub"):
        capsys.readouterr()
        assert main(["demo", "--workdir", str(workdir)]) == 1
        err = capsys.readouterr().err
        assert err == (f"netdef demo: error: --workdir {workdir}: {wts} is not a folder (it looks like a .wts weights "
                       "file): give a folder for the demo's .wts and engines (a new one, or an earlier demo's)\n"), err
    assert wts.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r18.wts"]


def test_demo_arch_it_does_not_take_lists_those_it_takes(tmp_path, capsys):
    """`netdef demo --arch resnet19` said only "torchvision has no model 'resnet19'", and unet or yolov5s (netdef's,
    not torchvision's) the same: the error lists the names the demo takes, the nearest first, before any work."""
    pytest.importorskip("torchvision")
    for arch, near in (("resnet19", " (did you mean resnet18?)"), ("yolov5s", "")):
        assert main(["demo", "--arch", arch, "--workdir", str(tmp_path / "d")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"netdef demo: error: --arch {arch}: the demo takes a torchvision model netdef has an "
                              "architecture of, one of efficientnet_b0, mobilenet_v2, "), err
        assert err.endswith(f"wide_resnet50_2{near}; other architectures are built with `netdef build`\n"), err
    assert not (tmp_path / "d").exists()


def test_run_output_is_written_atomically(fake_engine, tmp_path, monkeypatch, capsys):
    """`run --output` replaces an earlier result only with a complete one: a run stopped while the array is written
    (Ctrl-C, a full disk) leaves the earlier file as it was and no temporary file (np.save used to truncate it)."""
    from types import SimpleNamespace

    import numpy as np

    import netdef.runtime

    class Engine:  # runs without a GPU: the engine's one output, 'logits'
        described = staticmethod(lambda path: None)

        def __init__(self, *args, **kwargs):
            self.inputs = [SimpleNamespace(name="input", dtype=np.float32)]

        def infer(self, feeds, as_numpy):
            return {"logits": np.arange(10, dtype=np.float32).reshape(1, 10)}

    monkeypatch.setattr(netdef.runtime, "Engine", Engine)
    x, out = tmp_path / "x.npy", tmp_path / "logits.npy"
    np.save(x, np.zeros((1, 1, 28, 28), np.float32))
    assert main(["run", str(fake_engine), "--input", str(x), "--output", str(out)]) == 0
    before = out.read_bytes()
    assert np.array_equal(np.load(out), np.arange(10).reshape(1, 10))
    write_array = np.lib.format.write_array

    def stopped(fp, array, *args, **kwargs):  # the header and part of the data, then Ctrl-C
        write_array(fp, array[:, :3], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", stopped)
    assert main(["run", str(fake_engine), "--input", str(x), "--output", str(out)]) == 130
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x.npy", "logits.npy", fake_engine.name])


def test_bench_refuses_one_file_for_its_results_and_its_chart(r18_engine, tmp_path, capsys):
    """--json and --chart naming one file: the PNG would replace the results JSON written just before it."""
    out = tmp_path / "r18"
    capsys.readouterr()
    for chart in (out, tmp_path / "sub" / ".." / "r18"):
        assert main(["bench", str(r18_engine), "--json", str(out), "--chart", str(chart)]) == 1
        err = capsys.readouterr().err
        assert f"--json and --chart both name {out}: the chart would replace the results" in err, err
        assert err.count("\n") == 1 and "GPU" not in err
    assert not out.exists()


def test_the_timing_cache_is_checked_before_the_weights_are_read(tmp_path, capsys):
    """--timing-cache naming a photo, or the build's own YAML (written over after the build on a GPU), is refused
    before any work, as the engine output is: not after a large .wts has been read and the network defined."""
    photo, wts = tmp_path / "photo.jpg", tmp_path / "cut.wts"
    photo.write_bytes(JPEG)
    wts.write_text("2\nconv1.weight 3 3f800000\n")  # unreadable: reading it first would report it instead
    yaml = tmp_path / "mine.yaml"
    yaml.write_text((Path(engine_file.__file__).parent / "architectures" / "resnet18.yaml").read_text())
    capsys.readouterr()
    for arch, cache, needle in (("resnet18", photo, f"the timing cache {photo} exists and is not a TensorRT timing "
                                                    "cache (it looks like a JPEG image)"),
                                (str(yaml), yaml, f"the timing cache {yaml} is also an input of this command")):
        assert main(["build", arch, "-w", str(wts), "-o", str(tmp_path / "r.engine"), "--timing-cache",
                     str(cache)]) == 1
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert photo.read_bytes() == JPEG and not (tmp_path / "r.engine").exists()


def test_an_output_name_near_the_length_limit_is_written(tmp_path):
    """A legal 250-byte file name: its temporary file `.NAME.netdef-XXXXXXXX.tmp` was over the 255-byte limit, so the
    write failed with 'File name too long' after the whole build or export. A killed writer's temporary file of such a
    name is still found and removed by the next write."""
    import os
    import time

    from netdef import fileio

    out = tmp_path / ("w" * 246 + ".wts")
    assert main(["export", "torchvision:resnet18", "-o", str(out)]) == 0
    assert len(read_wts(out)) == 102 and [p.name for p in tmp_path.iterdir()] == [out.name]
    orphan = tmp_path / f"{fileio._temp_head(out)}a1b2c3d4.tmp"
    orphan.write_bytes(b"partial")
    old = time.time() - fileio.ORPHAN_AGE_S - 60
    os.utime(orphan, (old, old))
    fileio.atomic_write(out, b"1\nw 0\n")
    assert [p.name for p in tmp_path.iterdir()] == [out.name] and out.read_bytes() == b"1\nw 0\n"


def test_info_shows_the_class_names_of_an_engine_without_a_model_record(tmp_path, capsys):
    """`build --names` records names for any architecture (a ResNet records no head "model"): `netdef info` shows
    them there too, as it does beside a YOLO head's record."""
    from test_engine_file import complete_meta

    engine = tmp_path / "r.engine"
    engine_file.write_engine(engine, b"ftrt" + bytes(60), complete_meta() | {"names": ["cat", "dog"]})
    assert "model" not in engine_file.read_meta(engine)
    capsys.readouterr()
    assert main(["info", str(engine)]) == 0
    assert "  names  cat, dog" in capsys.readouterr().out.splitlines()


def test_info_shows_the_build_parameters(tmp_path, capsys):
    """An engine built with `--set` (GoogLeNet's transform_input, a YOLO head's thresholds) says so in `netdef
    info`, as --set takes them; the text showed them only with --json."""
    from test_engine_file import complete_meta

    engine = tmp_path / "e.engine"
    meta = complete_meta()
    for params, want in (({"transform_input": True, "head": "plugin", "conf_thres": 0.4},
                          ["  set    conf_thres=0.4 head=plugin transform_input=true"]), ({}, [])):
        engine_file.write_engine(engine, b"ftrt" + bytes(60), meta | {"options": meta["options"] | {"params": params}})
        capsys.readouterr()
        assert main(["info", str(engine)]) == 0
        assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("  set ")] == want


def test_info_json_lists_the_profiles_as_the_text_shows_them(tmp_path, capsys):
    """`info --json` has a top-level "profiles" ([min, opt, max] batches, as engine_file.profiles and the text's
    "batch profiles"), for one profile (options.batch) and several (options.profiles); the header's keys stay."""
    from test_engine_file import complete_meta

    for options, want in (({"batch": [1, 4, 8], "profiles": []}, [[1, 4, 8]]),
                          ({"batch": [1, 32, 64], "profiles": [[1, 1, 4], [5, 32, 64]]}, [[1, 1, 4], [5, 32, 64]])):
        engine = tmp_path / "e.engine"
        meta = complete_meta()
        engine_file.write_engine(engine, b"ftrt" + bytes(60), meta | {"options": meta["options"] | options})
        capsys.readouterr()
        assert main(["info", "--json", str(engine)]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["profiles"] == want and info["options"]["batch"] == options["batch"]
        assert set(info) == set(engine_file.read_meta(engine)) | {"kind", "profiles"}
        assert main(["info", str(engine)]) == 0
        assert f"batch profile{'s' if len(want) > 1 else ''} {','.join(':'.join(map(str, p)) for p in want)}, " \
            in capsys.readouterr().out


def test_build_names_must_be_one_per_class_of_a_classifier(r18, tmp_path):
    """README: `build --names FILE` gives "one per class of the model". A ResNet records no head "model", so a names
    file of 3 lines was recorded for its 1000 classes; its Classifier row's count is checked now, naming both files."""
    names = tmp_path / "three.txt"
    names.write_text("cat\ndog\nfox\n")
    wts, engine = r18 / "r18.wts", tmp_path / "r.engine"
    result = run_cli("build", "resnet18", "-w", str(wts), "-o", str(engine), "--names", str(names))
    assert result.returncode == 1 and not engine.exists()
    assert f"{names}: 3 class names, but {wts} holds a model of 1000 classes: give one name per class" in result.stderr


def test_command_modules_load_in_main_where_a_ctrl_c_is_reported(monkeypatch, capsys):
    """Importing netdef.cli imports no command module (a quarter second of imports a Ctrl-C would interrupt with a
    traceback); `main` imports them and reports a Ctrl-C there as `interrupted` (130). Every module of netdef/cli
    with a `register` function is a command."""
    import subprocess

    import netdef.cli as cli

    code = ("import sys, netdef.cli as c; "
            "print(sorted(m for m in c.COMMAND_MODULES if 'netdef.cli.' + m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    folder = Path(cli.__file__).parent
    registering = {f.stem for f in folder.glob("*.py") if "\ndef register(" in f.read_text()}
    assert registering == set(cli.COMMAND_MODULES)

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "commands", interrupted)
    assert cli.main(["info", "x.engine"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_given_as_an_input_is_refused_not_read(tmp_path):
    """A named pipe (or a device) where a command reads a file: export-plan, triton, run, `refit -w` and `--names`
    opened it to read its first bytes and waited for a writer forever; export said "checkpoint not found" and
    --calibration "not found" of a pipe that is there. Each now says what it is, at once (refit goes on to the missing
    engine)."""
    import subprocess

    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    engine = tmp_path / "e.engine"
    commands = [["export-plan", str(pipe), "-o", str(tmp_path / "x.plan")], ["triton", str(pipe), "--repo",
                str(tmp_path / "m")], ["run", str(pipe)], ["refit", str(engine), "-w", str(pipe)],
                ["export", str(pipe), "-o", str(tmp_path / "x.wts")],
                ["build", "lenet", "-w", str(pipe), "-o", str(engine), "--names", str(pipe)],
                ["build", "lenet", "-w", str(pipe), "-o", str(engine), "--precision", "int8",
                 "--calibration", str(pipe)]]
    code = ("import sys; from netdef.cli import main\n"
            f"for argv in {commands!r}:\n    print('exit', main(argv), file=sys.stderr, flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(("netdef", "exit"))]
    said = dict(zip(lines[::2], lines[1::2]))
    assert len(lines) == 2 * len(commands) and set(said.values()) == {"exit 1"}, res.stderr[-3000:]
    assert [ln for ln in said if f"{pipe} is a named pipe" not in ln] == [f"netdef refit: error: engine not found: "
                                                                         f"{engine}"], res.stderr[-3000:]


@pytest.mark.parametrize("text, want", [("1,8,64", [1, 8, 64]), ("17x3", [17, 3]), (" 1, 8", [1, 8]),
                                        ("1,", None), ("1,,8", None), ("1,x", None), ("", None), ("a", None)])
def test_number_lists_refuse_an_empty_item(text, want):
    """A comma-separated option value with an empty item (`--concurrency 1,x`, `1,,8`) is an error naming the
    option; it was left out silently (1,x ran concurrency 1 alone)."""
    from netdef.cli.options import parse_numbers
    from netdef.errors import OptionError

    if want is None:
        with pytest.raises(OptionError, match=f"--concurrency '{text}': expected client counts"):
            parse_numbers(text, "--concurrency", int, what="client counts such as 1,8,64")
    else:
        assert parse_numbers(text, "--concurrency", int, what="client counts such as 1,8,64") == want


EMPTY = "an empty value (an unset shell variable?)"


@pytest.mark.parametrize("argv, said", [
    (["build", "lenet", "-w", "W", "-o", "E", "--names", ""], f"--names '': {EMPTY}: give a file, or leave --names "
                                                               "out"),
    (["build", "lenet", "-w", "W", "-o", "E", "--timing-cache", ""], f"--timing-cache '': {EMPTY}: give a file, or "
                                                                     "leave --timing-cache out"),
    (["build", "lenet", "-w", "W", "-o", "E", "--input-shape="], f"--input-shape '': {EMPTY}: give a size such as "
                                                                 "640x640, or leave --input-shape out"),
    (["build", "lenet", "-w", "W", "-o", ""], f"-o/--output '': {EMPTY}: give a file"),
    (["build", "lenet", "-w", "", "-o", "E"], f"--weights/-w '': {EMPTY}: give a file"),
    (["build", "", "-w", "W", "-o", "E"], f"the arch argument '': {EMPTY}: give an architecture's name (resnet18) or "
                                          "its .yaml file"),
    (["build", "lenet", "-w", "W", "-o", "E", "--blocks", ""], f"--blocks '': {EMPTY}: give a module name or a .py "
                                                               "file, or leave --blocks out"),
    (["export", "", "-o", "E"], f"the source argument '': {EMPTY}: give a checkpoint, torchvision:NAME or "
                                "module:callable"),
    (["info", ""], f"the file argument '': {EMPTY}: give a file"),
    (["detect", "E", "", "--out", "d"], f"the images argument '': {EMPTY}: give image files or folders"),
    (["triton", "E", "--repo", ""], f"--repo '': {EMPTY}: give a folder (. for this one)"),
    (["serve", "E", "--preferred-batch", "8,x"], "--preferred-batch '8,x': expected batch sizes such as 16,32, opt "
                                                 "or none"),  # raised by the option's type: was a traceback
    (["build", "lenet", "-w", "W", "-o", "l.engine\n"], "-o/--output 'l.engine\\n': a name with a line break, a tab "
                                                       "or spaces at its ends (a copied line, or a shell quoting "
                                                       "slip?): give the name without them"),  # was written so
    (["triton", "E", "--repo", "repo "], "--repo 'repo ': a name with a line break"),
])
def test_an_empty_value_is_an_error_naming_the_option(tmp_path, capsys, argv, said):
    """`--names "$NAMES"` with NAMES unset: --names, --timing-cache and --input-shape were read as not given (the
    build went on with the defaults), -o, -w and the architecture as '.' (`. is a directory`). Every option and
    argument that takes a value refuses an empty one before any work, naming it; an error an option's own type
    raises is the same one line, not a traceback."""
    from helpers import lenet_weights
    from netdef.wts import write_wts

    write_wts(tmp_path / "l.wts", lenet_weights(0))
    argv = [str(tmp_path / "l.wts") if a == "W" else str(tmp_path / "l.engine") if a == "E" else a for a in argv]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(f"netdef {argv[0]}: error: {said}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.wts"]


def test_an_unrecognized_argument_shows_the_commands_usage(capsys):
    """`netdef build ... --bogus` printed netdef's top-level usage (COMMAND ...), not build's options."""
    with pytest.raises(SystemExit) as e:
        main(["build", "lenet", "-w", "l.wts", "-o", "l.engine", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: netdef build [-h] --weights WEIGHTS -o OUTPUT"), err
    assert err.endswith("netdef build: error: unrecognized arguments: --bogus\n"), err


def test_names_files_of_too_long_a_name_are_no_files(tmp_path, capsys):
    """A .wts or engine of a legal name so long that its side files' names (WTS.names.json, ENGINE.json) are over
    the file system's limit: `build` failed with '[Errno 36] File name too long: ...wts.names.json', `info` with
    '...wts.json' and a rebuild over such an engine with '....engine.json'; such a side file cannot exist, so there is
    none. One netdef writes is refused before any work, naming it and the limit."""
    from helpers import lenet_weights
    from netdef.wts import write_wts

    wts, engine = tmp_path / ("w" * 247 + ".wts"), tmp_path / ("e" * 245 + ".engine")  # 251, 252 bytes
    write_wts(wts, lenet_weights(0))
    build = ["build", "lenet", "-w", str(wts), "-o", str(engine)]
    assert main(build) == 0 and engine.is_file()
    assert main(build) == 0 and "is up to date" in capsys.readouterr().err  # probes engine.json
    assert main(["info", str(wts)]) == 0 and "16 tensors" in capsys.readouterr().out  # probes wts.json
    plan = tmp_path / ("p" * 250 + ".plan")
    assert main(["export-plan", str(engine), "-o", str(plan)]) == 1
    assert capsys.readouterr().err == (f"netdef export-plan: error: cannot write {plan}.json: its name is 260 bytes "
                                       f"long, over the 255 bytes a file name may have on the file system of "
                                       f"{tmp_path}: give a shorter name\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([wts.name, engine.name])


def test_a_names_file_that_gives_a_key_twice_is_refused(tmp_path, capsys):
    """A data.yaml with `names:` twice kept the last without a word; a key given twice is refused with the file and
    line, as in an architecture YAML (JSON too)."""
    from helpers import lenet_weights
    from netdef.class_names import load_names
    from netdef.wts import write_wts

    data = tmp_path / "data.yaml"
    data.write_text("path: coco\nnames:\n  0: cat\n  1: dog\nnames: [fox]\n")
    write_wts(tmp_path / "l.wts", lenet_weights(0))
    assert main(["build", "lenet", "-w", str(tmp_path / "l.wts"), "-o", str(tmp_path / "l.engine"), "--names",
                 str(data)]) == 1
    assert capsys.readouterr().err == (f"netdef build: error: class names {data}:5: 'names' is given twice in one "
                                       "mapping (first on line 2): keep one\n")
    assert not (tmp_path / "l.engine").exists()
    (tmp_path / "n.json").write_text('{"names": {"0": "cat", "0": "dog"}}')
    with pytest.raises(NetdefError, match=r"n\.json:1: '0' is given twice in one mapping \(first on line 1\)"):
        load_names(tmp_path / "n.json")
    data.write_text("path: coco\nnames:\n  0: cat\n  1: dog\n")
    assert load_names(data) == ["cat", "dog"]


def test_a_names_file_of_many_classes_loads_and_an_alias_bomb_is_refused(tmp_path):
    """60,000 classes (ImageNet-21k has 21,841) as a data.yaml mapping are 120,000 values, more than an
    architecture may expand to: they load; aliases that expand far beyond the text are refused."""
    from netdef.class_names import load_names

    data = tmp_path / "data.yaml"
    data.write_text("names:\n" + "".join(f"  {i}: c{i}\n" for i in range(60_000)))
    assert load_names(data)[-1] == "c59999"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg"))
    (tmp_path / "bomb.yaml").write_text(bomb + "names: *g\n")
    with pytest.raises(NetdefError, match=r"bomb\.yaml:\d+: its aliases expand to more than 100000 values .*far more "
                                          r"than its text holds"):
        load_names(tmp_path / "bomb.yaml")


@pytest.mark.parametrize("argv, option", [
    (["build", "lenet", "-w", "l.wts", "-o", "a.engine", "--batch", "1:1:4", "--batch", "5:8:8"], "--batch"),
    (["build", "lenet", "-w", "l.wts", "-o", "a.engine", "--output=b.engine"], "-o/--output"),
    (["build", "lenet", "-wl.wts", "-o", "a.engine", "-w", "m.wts"], "--weights/-w"),
    (["detect", "a.engine", "x.jpg", "--out", "o", "--conf", "0.2", "--conf=0.3"], "--conf"),
])
def test_an_option_of_one_value_given_twice_is_refused(argv, option, capsys):
    """argparse keeps the last of `--batch 1:1:4 --batch 5:8:8` without a word: refused before any work, naming
    the option (repeatable ones, --set and --int8-exclude, are not single)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"error: {option} is given twice: give it once" in capsys.readouterr().err


def test_a_signal_after_the_command_finished_keeps_its_status(tmp_path, monkeypatch):
    """Ctrl-C in the second of interpreter shutdown after a command finished (its files written): the process
    ended with 130 and no word (a KeyboardInterrupt in PyTorch's and TensorRT's teardown); it now ends at once
    with the command's own status. A caller's main([...]) leaves the signal handlers as they were."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "late_signal.py"
    script.write_text("import atexit, os, signal, sys, time\nfrom netdef.cli import run\n\n\ndef late():\n"
                      "    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(2)\n"
                      "    print('not ended', file=sys.stderr)\n\n\natexit.register(late)\n"
                      "sys.argv = ['netdef', 'info', 'missing.engine']\nrun()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "netdef info: error: no such file: missing.engine\n"
    before = signal.getsignal(signal.SIGINT)  # a caller's main(), with or without arguments: handlers as they were
    assert main(["info", str(tmp_path / "missing.engine")]) == 1
    monkeypatch.setattr(sys, "argv", ["netdef", "info", str(tmp_path / "missing.engine")])
    assert main() == 1
    assert signal.getsignal(signal.SIGINT) is before
    import threading  # and from another thread: no "signal only works in main thread"

    got = []
    worker = threading.Thread(target=lambda: got.append(main(["info", str(tmp_path / "missing.engine")])))
    worker.start()
    worker.join()
    assert got == [1]


def test_a_timing_cache_this_tensorrt_cannot_use_is_recorded_as_not_used(tmp_path):
    """TensorRT-RTX without a GPU times no tactics: the header recorded `--timing-cache FILE` as if the build had
    used it; it now says "not used", and `netdef info` shows it."""
    from helpers import lenet_weights
    from netdef import engine_file, trt_api
    from netdef.build import BuildOptions, build_engine
    from netdef.cli.info import build_option_lines

    if trt_api.timing_cache_supported():
        pytest.skip("this TensorRT times tactics: the cache is used")
    out, cache = tmp_path / "l.engine", tmp_path / "l.timing"
    build_engine("lenet", lenet_weights(0), out, BuildOptions(timing_cache=str(cache)), log=lambda m: None)
    meta = engine_file.read_meta(out)
    assert meta["timing_cache"] == "not used" and not cache.exists()
    assert build_option_lines(meta) == [f"  built with --timing-cache {cache} (not used)"]
