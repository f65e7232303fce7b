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
