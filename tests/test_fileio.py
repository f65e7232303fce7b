"""fileio's atomic writes: what they check right before the rename, and the names they refuse."""
from __future__ import annotations

import os

import pytest

from netdef.errors import WrittenMeanwhile
from netdef.fileio import atomic_write_all, path_key


@pytest.mark.parametrize("how", ["in place", "replaced", "created"])
def test_a_file_another_program_writes_before_the_rename_is_kept(tmp_path, how):
    """`expect` is checked right before the rename: a write between the caller's read and the rename (here by the
    writer's last chunk) keeps that program's file, names it, and leaves no temporary file."""
    out = tmp_path / "m.engine"
    if how != "created":
        out.write_bytes(b"old engine")
    before = path_key(out)

    def chunks():
        yield b"new engine"
        if how == "replaced":  # another build's atomic write: a new inode
            (tmp_path / "other").write_bytes(b"their engine")
            os.replace(tmp_path / "other", out)
        else:
            out.write_bytes(b"their engine")

    with pytest.raises(WrittenMeanwhile, match=rf"{out} was written by another program while netdef was writing it"):
        atomic_write_all({out: chunks()}, expect={out: before})
    assert out.read_bytes() == b"their engine" and sorted(p.name for p in tmp_path.iterdir()) == ["m.engine"]
    atomic_write_all({out: b"new engine"}, expect={out: path_key(out)})  # unchanged since read: written
    assert out.read_bytes() == b"new engine"


def test_a_name_too_long_for_the_file_system_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """A 256-byte name (over NAME_MAX) was written whole to its temporary file, then the rename failed with the raw
    'File name too long'; now a NameTooLong (a NetdefError and an OSError) names the file and the reason first, for
    the output check of a command too. A 250-byte name whose temporary file's name would be too long is written."""
    import errno

    from netdef import fileio
    from netdef.cli import main
    from netdef.errors import NameTooLong, NetdefError
    from netdef.fileio import atomic_write, check_output

    long = tmp_path / "new" / ("p" * 251 + ".plan")  # 256 bytes, in a folder the write would create
    for fail in (lambda: atomic_write(long, b"plan"), lambda: atomic_write_all({tmp_path / "m.plan": b"plan",
                                                                                long: b"{}"}),
                 lambda: check_output(long)):
        with pytest.raises(NameTooLong, match=rf"cannot write {long}: its name is 256 bytes long, over the 255 bytes "
                                              rf"a file name may have on the file system of {long.parent}: give a "
                                              r"shorter name") as e:
            fail()
        assert isinstance(e.value, NetdefError) and isinstance(e.value, OSError)
        assert (e.value.errno, e.value.strerror) == (errno.ENAMETOOLONG, "File name too long")
        assert list(tmp_path.iterdir()) == []
    assert main(["export-plan", str(tmp_path / "m.engine"), "-o", str(long)]) == 1
    assert f"netdef export-plan: error: cannot write {long}: its name is 256 bytes long" in capsys.readouterr().err
    fine = tmp_path / ("p" * 245 + ".plan")  # 250 bytes: its temporary file's name is shortened
    atomic_write(fine, b"plan")
    assert [p.name for p in tmp_path.iterdir()] == [fine.name] and fine.read_bytes() == b"plan"

    monkeypatch.setattr(fileio, "name_max", lambda folder: 64)  # a file system of short names: even the shortened
    short = tmp_path / ("q" * 60 + ".pl")  # temporary name (the first 40 characters and a hash) is too long
    with pytest.raises(NameTooLong, match=rf"cannot write {short}: the name of the temporary file it is written to "
                                          rf"first \(\.q{{40}}-[0-9a-f]{{16}}\.netdef-XXXXXXXX\.tmp\) is 78 bytes "
                                          r"long, over the 64 bytes"):
        atomic_write(short, b"plan")
    assert [p.name for p in tmp_path.iterdir()] == [fine.name]


@pytest.mark.parametrize("reported", [-1, 0])
def test_a_file_system_that_reports_no_name_limit_gets_the_usual_one(tmp_path, monkeypatch, reported):
    """pathconf's NAME_MAX of -1 (no limit known) or 0 (some FUSE and network file systems) is not a limit every
    name passes: the usual 255 bytes is taken, and a plain write goes through."""
    from netdef import fileio

    monkeypatch.setattr(fileio.os, "pathconf", lambda folder, name: reported)
    assert fileio.name_max(tmp_path) == 255
    atomic_write_all({tmp_path / "model.plan": b"plan"})
    assert (tmp_path / "model.plan").read_bytes() == b"plan"


def test_a_name_too_long_error_survives_pickling(tmp_path):
    """NameTooLong crosses process boundaries (multiprocessing workers) as itself: its message, file and errno."""
    import errno
    import pickle

    from netdef.errors import NameTooLong

    e = NameTooLong(tmp_path / "x", "its name is 300 bytes long")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is NameTooLong and str(back) == str(e) and back.filename == e.filename
    assert back.errno == errno.ENAMETOOLONG


def test_an_output_named_as_another_kind_of_file_is_refused(tmp_path):
    """An engine written as out.wts, or weights as mine.engine, would be taken by every later command for what its
    name says: refused before any work, with the name to use; other suffixes (or none) are the user's choice."""
    from netdef.errors import OptionError
    from netdef.export import export_wts
    from netdef.engine_file import ENGINE_FILE
    from netdef.fileio import check_output

    with pytest.raises(OptionError, match=r"the engine output .*out\.wts: a \.wts name says \.wts weights, but "
                                          r"this writes a TensorRT engine: name it .*out\.engine"):
        check_output(tmp_path / "out.wts", what="the engine output", kind=ENGINE_FILE)
    for fine in ("r18.engine", "r18.PLAN", "r18.trt", "r18.bin", "r18"):
        check_output(tmp_path / fine, what="the engine output", kind=ENGINE_FILE)
    with pytest.raises(OptionError, match=r"mine\.engine: a \.engine name says a TensorRT engine, but this writes "
                                          r"\.wts weights: name it .*mine\.wts"):
        export_wts({"w": [1.0]}, tmp_path / "mine.engine", log=lambda m: None)
    assert not (tmp_path / "mine.engine").exists()
    from netdef.build import build_engine
    from helpers import lenet_weights

    for plan in ("x.plan", "x.TRT"):  # names that say a bare plan, which a netdef engine is not
        with pytest.raises(OptionError, match=rf"the engine output .*{plan}: a \.(plan|trt) name says a bare "
                                              r"TensorRT plan .*`netdef export-plan` writes one of an engine\), but "
                                              r"this writes a TensorRT engine: name it .*x\.engine"):
            build_engine("lenet", lenet_weights(0), tmp_path / plan, log=lambda m: None)
        assert not (tmp_path / plan).exists()


def test_a_side_file_whose_name_is_too_long_is_no_file(tmp_path):
    """`W.wts.names.json` or `E.engine.json` of a legal .wts or engine name may be over the file system's limit: such
    a file cannot exist, so its probes say False where Path's raised ENAMETOOLONG; a real file is still found."""
    import errno

    from netdef.class_names import names_sidecar
    from netdef.deploy.plan import sidecar_path
    from netdef.fileio import side_file

    long = tmp_path / ("w" * 250 + ".wts")  # 254 bytes: legal
    for side in (names_sidecar(long), sidecar_path(long), side_file(long, ".x")):
        with pytest.raises(OSError) as e:
            os.stat(side)
        assert e.value.errno == errno.ENAMETOOLONG
        assert not side.exists() and not side.is_file()
    (tmp_path / "y.wts.names.json").write_text("{}")
    assert names_sidecar(tmp_path / "y.wts").is_file() and not sidecar_path(tmp_path / "y.wts").exists()


def test_an_output_folder_that_takes_no_files_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """`-o /proc/x.engine`: /proc is a folder root may write, as os.access says, but no file can be created there;
    the build ran to its end before the write failed. An empty file created and removed at once tells it first."""
    import errno

    from netdef import fileio
    from netdef.cli import main
    from netdef.errors import OptionError
    from netdef.fileio import check_output

    check_output(tmp_path / "new" / "ok.engine")
    assert list(tmp_path.iterdir()) == []  # the probe is gone, and no folder was made
    real_open = os.open

    def no_new_files(path, flags, *args):  # a file system that refuses new entries (a pseudo file system)
        if flags & os.O_CREAT:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        return real_open(path, flags, *args)

    assert str(tmp_path) in fileio._CREATABLE  # probed once per folder: detect checks an output per image
    monkeypatch.setattr(fileio, "_CREATABLE", set())
    monkeypatch.setattr(fileio.os, "open", no_new_files)
    out = tmp_path / "sub" / "x.engine"
    with pytest.raises(OptionError, match=rf"the engine output {out}: no file can be created in {tmp_path} \(No such "
                                          r"file or directory\): give a path in a folder you can write"):
        check_output(out, what="the engine output")
    monkeypatch.undo()
    if os.access("/proc", os.W_OK | os.X_OK):  # Linux as root: the case itself, on the command line, before the
        # weights are read (another user is told "no permission to write in /proc" earlier)
        assert main(["build", "lenet", "-w", str(tmp_path / "missing.wts"), "-o", "/proc/x.engine"]) == 1
        assert capsys.readouterr().err == ("netdef build: error: the engine output /proc/x.engine: no file can be "
                                           "created in /proc (No such file or directory): give a path in a folder "
                                           "you can write\n")
