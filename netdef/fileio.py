"""Files: atomic writes (readers see the old file or the complete new one, never a part), content hashes,
and netdef's cache folder."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import interrupts, trt_api

try:
    import fcntl  # POSIX: temporary files are locked by their writer
except ImportError:  # elsewhere no orphan is ever removed
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: str | os.PathLike, chunks: Iterable[bytes] | bytes) -> None:
    """Write `chunks` to a temporary file beside `path`, fsync it, then rename it over `path`.

    An existing file keeps its permissions; a symlink at `path` is replaced by the new file (the file it pointed
    to is kept). On any error the temporary file is removed, and an OSError names `path` (a full disk, say).
    The writer locks its temporary file where the file system has locks (advisory: without them the write goes
    on); temporary files of `path` that nobody holds, that no writer of this process has open and that are
    older than ORPHAN_AGE_S (their writer was killed: SIGKILL, a crash) are removed first. A name the file
    system cannot hold, or whose temporary file's it cannot, is refused before anything is written (`check_name`).
    """
    atomic_write_all({path: chunks})


def atomic_write_all(files: Mapping[str | os.PathLike, Iterable[bytes] | bytes], *,
                     sizes: Mapping[str | os.PathLike, int] | None = None,
                     remove: Callable[[], Iterable[str | os.PathLike]] | None = None,
                     expect: Mapping[str | os.PathLike, FileKey | None] | None = None) -> None:
    """`atomic_write` for files that belong together (a plan and its sidecar): every one is written to its
    temporary file first, in order, and only then are they renamed, so a full disk or an error leaves all the old
    ones. Files of known size (`sizes`, else bytes or a list of them) that the free space cannot hold are refused
    before anything is written (`check_room`). `remove`: once every file is written, the files that no longer
    belong with them (a .wts's names file of other weights), removed right after the renames (a signal waits).
    `expect`: path -> its `path_key` as the caller read it (None: no file there), checked right before the renames:
    a file another program wrote since is kept, and `errors.WrittenMeanwhile` names it (nothing renamed)."""
    heads = {Path(name): check_name(Path(name)) for name in files}  # before anything is written: a rename would fail
    for path, head in heads.items():
        _remove_orphans(path, head)  # first: the space they held counts as free
    known = {Path(p): n for p, c in files.items() if (n := (sizes or {}).get(p, _size_of(c))) is not None}
    check_room(known)
    temps: list[tuple[Path, str]] = []
    made: list[Path] = []  # folders this call created: removed again (if still empty) when it fails
    path = None
    committed = False  # every file renamed into place
    try:
        for name, chunks in files.items():
            path = Path(name)
            _make_folders(path.parent, made)
            fd, tmp = tempfile.mkstemp(prefix=heads[path], suffix=".tmp", dir=path.parent)
            temps.append((path, tmp))
            _writing.add(os.path.abspath(tmp))
            with os.fdopen(fd, "wb") as f:
                _try_lock(f)  # released when the file closes, or when its writer dies
                for chunk in [chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, os.stat(path).st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        gone = list(remove()) if remove is not None else []
        with interrupts.deferred():  # a signal waits until every file is renamed
            for name, key in (expect or {}).items():  # last: a write before this point is seen
                if path_key(name) != key:
                    from .errors import WrittenMeanwhile

                    raise WrittenMeanwhile(name)
            for path, tmp in temps:
                os.replace(tmp, path)  # closed first: Windows renames no open file
            for stale in gone:  # after the renames: a failure before leaves the old files together
                Path(stale).unlink(missing_ok=True)
            interrupts.wrote([path for path, _ in temps])  # a signal raised from here on: they are complete
            committed = True
    except BaseException as e:
        if committed:  # a signal kept during the renames, raised at their end: nothing to undo
            raise
        for _, tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _remove_empty(made)  # an empty version folder would be a broken model to Triton
        if isinstance(e, OSError) and e.errno is not None and path is not None:
            full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a full disk, or a quota
            note = _leftovers_note([Path(p) for p in files]) if full else ""
            raise OSError(e.errno, f"cannot write {path}: {e.strerror}{note}") from e
        raise
    finally:
        for _, tmp in temps:
            _writing.discard(os.path.abspath(tmp))


def _size_of(chunks: Iterable[bytes] | bytes) -> int | None:
    """The bytes `chunks` hold where that is known without reading an iterator: bytes, or a list or tuple of them."""
    items = [chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else chunks
    if not isinstance(items, (list, tuple)) or not all(isinstance(c, (bytes, bytearray, memoryview)) for c in items):
        return None
    return sum(memoryview(c).nbytes for c in items)


def check_room(files: Mapping[Path, int]) -> None:
    """An OSError (ENOSPC) naming the files, their folder, the bytes needed and those free where a file system has
    too little free space for the `files` (path -> size in bytes) to be written there, old files still in place.
    Free space is what this user may fill (root: the blocks reserved for it too); where it cannot be told (no
    statvfs, a file system that reports no size, as FUSE ones without statfs do), nothing is checked (the write
    itself then fails on a full disk)."""
    groups: dict[int, tuple[Path, Any, list[Path]]] = {}  # device -> (a folder on it, its statvfs, the files)
    for path in files:
        folder = path.parent
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent
        try:
            device = os.stat(folder).st_dev
            groups.setdefault(device, (folder, os.statvfs(folder), []))[2].append(path)
        except (OSError, AttributeError):  # no statvfs (Windows), or the folder cannot be asked
            continue
    for folder, st, paths in groups.values():
        if not st.f_blocks:
            continue
        block = st.f_frsize or st.f_bsize or 1
        free = (st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail) * block
        if sum(-(-files[p] // block) for p in paths) * block > free:
            needed = sum(files[p] for p in paths)
            raise OSError(errno.ENOSPC, f"cannot write {', '.join(map(str, paths))}: not enough free space in "
                                        f"{folder}: {needed:,} bytes needed, {free:,} free; free some space there or "
                                        f"write elsewhere{_leftovers_note(paths)}")


def _leftovers_note(paths: Iterable[Path]) -> str:
    """For a full disk: the temporary files of `paths` that writes which did not finish left (hidden, and holding
    space until a later write removes them, ORPHAN_AGE_S after), '' when there are none."""
    notes = []
    for path in paths:
        for tmp in _temp_files(path):
            try:
                notes.append(f"a write of {path.name} that did not finish left {tmp}, {tmp.stat().st_size:,} bytes: "
                             f"delete it unless netdef is writing {path.name} now")
            except OSError:
                continue
    return f" ({'; '.join(notes)})" if notes else ""


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders `_make_folders` made (innermost first) that are still empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            pass


def _make_folders(folder: Path, made: list[Path]) -> None:
    """mkdir -p `folder`, appending each folder it creates to `made` as it is created (outermost first)."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
        made.append(f)


TMP_TAG = "netdef-"  # in the temporary files' names: only netdef's are ever removed as orphans
ORPHAN_AGE_S = 600  # a temporary file this old that nobody holds is an orphan (a fresh one may not be locked yet)
_TEMP_TAIL = 12  # what follows `_temp_head` in a temporary file's name: mkstemp's 8 random characters, ".tmp"
_writing: set[str] = set()  # this process's temporary files being written (its own locks do not exclude it)


def name_max(folder: Path) -> int:
    """The bytes a file name may have in `folder` (or the nearest folder above it that exists): NAME_MAX of its
    file system, 255 where that cannot be asked."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        n = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the file system does not say
        return 255
    return n if n > 0 else 255  # -1: no limit known; 0: a file system (FUSE, network) that reports none


def check_name(path: Path) -> str:
    """`errors.NameTooLong` naming `path` where its name, or its temporary files' (`_temp_head`), has more bytes than
    its file system allows (`name_max`); else how its temporary files' names start (`_temp_head`)."""
    from .errors import NameTooLong

    limit = name_max(path.parent)
    where = f"a file name may have on the file system of {path.parent}: give a shorter name"
    if (n := len(os.fsencode(path.name))) > limit:
        raise NameTooLong(path, f"its name is {n} bytes long, over the {limit} bytes {where}")
    head = _temp_head(path, limit)
    if (n := len(os.fsencode(head)) + _TEMP_TAIL) > limit:
        raise NameTooLong(path, f"the name of the temporary file it is written to first ({head}XXXXXXXX.tmp) is {n} "
                                f"bytes long, over the {limit} bytes {where}")
    return head


def _temp_head(path: Path, limit: int | None = None) -> str:
    """How the names of `path`'s temporary files start: `.NAME.netdef-`; for a NAME so long that the temporary name
    (`_TEMP_TAIL` follows) would pass the bytes a file name may have (`limit`, default `name_max` of its folder),
    its first 40 characters and a hash of all of it."""
    head = f".{path.name}.{TMP_TAG}"
    if len(os.fsencode(head)) + _TEMP_TAIL <= (name_max(path.parent) if limit is None else limit):
        return head
    return f".{path.name[:40]}-{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}.{TMP_TAG}"


def _absent_if_too_long(probe: Callable[..., bool]) -> Callable[..., bool]:
    """`probe` (Path.exists, Path.is_file) answering False where the name is too long for the file system."""
    def check(self: Path, *args: Any, **kwargs: Any) -> bool:
        try:
            return probe(self, *args, **kwargs)
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
            return False

    return check


class SideFile(type(Path())):  # type: ignore[misc]  (PosixPath or WindowsPath: Path itself is not subclassed)
    """The path of a file named after another (`W.wts.names.json`, `P.plan.json`): where that name is too long for
    its file system there is no such file, and `exists`/`is_file` say so instead of raising ENAMETOOLONG (writing
    one is refused by `check_name`, naming the limit)."""

    exists = _absent_if_too_long(Path.exists)
    is_file = _absent_if_too_long(Path.is_file)


def side_file(path: str | os.PathLike, suffix: str) -> SideFile:
    """The file named after `path` plus `suffix` (`side_file("y.wts", ".names.json")`: y.wts.names.json)."""
    return SideFile(os.fspath(path) + suffix)


def _try_lock(f: BinaryIO) -> bool:
    """Lock `f` exclusively without waiting; False where another holds it or the file system has no locks."""
    if fcntl is None:
        return False
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _temp_files(path: Path, head: str | None = None) -> list[Path]:
    """`path`'s temporary files (their names start with `head`, default `_temp_head`) that are not being written by
    this process."""
    head = head or _temp_head(path)
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(head) and n.endswith(".tmp")]
    except OSError:
        return []
    return [path.parent / n for n in names if os.path.abspath(path.parent / n) not in _writing]


def _remove_orphans(path: Path, head: str) -> None:
    """Remove `path`'s temporary files (named from `head`) whose writer is gone: none holds its lock (on this
    machine or, where the file system shares locks, on another), not one of this process's writes, older than
    ORPHAN_AGE_S.
    Where locks cannot be taken (no fcntl, a file system without them) nothing is removed."""
    if fcntl is None:
        return
    for candidate in _temp_files(path, head):
        try:
            if time.time() - candidate.stat().st_mtime < ORPHAN_AGE_S:
                continue
            with open(candidate, "r+b") as f:
                if _try_lock(f):  # no lock: a live writer holds it, or locks do not work here
                    os.unlink(candidate)
        except OSError:
            continue


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, waiting: Callable[[], None] | None = None) -> Iterator[str | None]:
    """Hold an exclusive lock on `folder` itself (flock on the folder: nothing is added to it) while writing into
    it, which other processes locking it wait for; a folder made for that is removed again where the block fails and
    leaves it empty. Yields None, or why no lock was taken (a folder that cannot be made or opened, where the writes
    after say why; a system or file system without locks) for the caller to say. `waiting` is called where another
    process holds the lock, before waiting for it."""
    if fcntl is None:
        yield "this system has no file locks"
        return
    made: list[Path] = []
    fd, reason = None, None
    try:
        _make_folders(Path(folder), made)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        reason = f"{folder} cannot be opened ({e.strerror or e})"
    if fd is not None:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # ENOLCK: a file system without locks
            reason = f"no lock on {folder} ({e.strerror or e})"
    try:
        yield reason
    except BaseException:
        _remove_empty(made)
        raise
    finally:
        if fd is not None:
            os.close(fd)  # the lock with it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def printable(value: Any) -> Any:
    """`value` (JSON types) with the undecodable bytes of file names (Python keeps them as lone surrogates, which
    no UTF-8 reader takes) written as \\xNN."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate no file name gave
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return file_sha256_and_key(path)[0]


FileKey = tuple  # (device, inode, size, modification time in ns): which file, in which state (`file_key`)


def file_key(st: os.stat_result) -> FileKey:
    """What tells one state of a file from another: a file replaced (a new inode) or written again (size, time)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def path_key(path: str | os.PathLike) -> FileKey | None:
    """`file_key` of the file at `path` now, None where there is none."""
    try:
        return file_key(os.stat(path))
    except FileNotFoundError:
        return None


def file_sha256_and_key(path: str | os.PathLike) -> tuple[str, FileKey]:
    """(SHA-256 of a file's bytes, `file_key` of the file hashed): a reader that opens the file again later checks
    the key to know it reads the bytes that were hashed (another process may have replaced the file meanwhile)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        key = file_key(os.fstat(f.fileno()))
        for chunk in iter(lambda: f.read(1 << 22), b""):  # written in place meanwhile: its key is another now
            h.update(chunk)
    return h.hexdigest(), key


def cache_dir(kind: str) -> Path:
    """netdef's cache folder for `kind` ("plugins", "bench", ...): $NETDEF_CACHE/kind, default
    $XDG_CACHE_HOME/netdef/kind or ~/.cache/netdef/kind. Not created here."""
    base = os.environ.get("NETDEF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "netdef")
    return Path(base) / kind


@dataclass(frozen=True)
class FileKind:
    """What an output file holds, told from its first bytes: `check_output` writes over an existing file of
    this kind only, so a mistyped -o never destroys a checkpoint, an image or a config."""

    name: str  # "a JSON file"
    test: Callable[[bytes], bool]  # on the file's first HEAD_BYTES bytes
    holds: Callable[[Any], bool] | None = None  # JSON kinds: on the parsed file (MAX_JSON_BYTES at most)
    starts: re.Pattern[bytes] | None = None  # JSON kinds: how a larger file of the kind begins
    # the suffixes a file of this kind is named with (the first suggested); () where any name goes. A new output
    # of the kind named with another kind's suffix (`KNOWN_SUFFIXES`: an engine as out.wts) is refused
    suffixes: tuple[str, ...] = ()


HEAD_BYTES = 64
# an object, or an array of JSON values (detect's detections.json); '[section]' (INI, TOML) is no JSON
_JSON_START = re.compile(rb'\s*(\{|\[\s*([\[{\]"\d-]|true|false|null|$))')
JSON_FILE = FileKind("a JSON file", lambda head: _JSON_START.match(head) is not None)
MAX_JSON_BYTES = 64 << 20  # parsed to tell its kind; a larger one is told by its first bytes (`json_kind` starts)


def json_kind(name: str, holds: Callable[[Any], bool], starts: bytes | None = None) -> FileKind:
    """One of netdef's JSON outputs: a JSON file whose document `holds(doc)` (a COCO annotations file or a config is
    not replaced by a calibration table); one larger than MAX_JSON_BYTES is told by the regular expression
    `starts` on its first bytes (none: never of the kind)."""
    return FileKind(name, JSON_FILE.test, holds, re.compile(starts) if starts else None)


RESULTS_JSON = json_kind("a netdef results file (--json)",
                         lambda d: isinstance(d, dict) and ("environment" in d or "results" in d))
NUMPY_FILE = FileKind("a numpy file (.npy or .npz)", lambda head: head.startswith((b"\x93NUMPY", b"PK\x03\x04")))


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (), what: str = "output",
                 kind: FileKind | None = None, belongs: str | os.PathLike | None = None,
                 name: str | None = None) -> Path:
    """Check, before any work starts, that `path` can be written, is none of the command's `inputs` (nothing
    may overwrite what it reads) and, with `kind`, is new, empty or of that kind (nothing else is written
    over). `belongs`: the output that `path` is named after (a plan of its sidecar, a Triton model's folder of its
    files), so that no option names `path` itself. `name`: the file name suggested where `path` names a folder
    (`output_name`: yolo11n.engine). Returns the path; an OptionError names the problem."""
    from .errors import OptionError

    raw = os.fspath(path)
    if raw == "-":
        raise OptionError(f"{what} '-': netdef writes files, not standard output: give a file name")
    if raw.endswith(("/", os.sep)) and not Path(raw).is_dir():
        raise OptionError(f"{what} {raw} ends with '/', a folder's name: give a file name (e.g. "
                          f"{Path(raw) / (name or 'out')})")
    path = Path(path)
    head = check_name(path)  # an OSError too (an export's names file too long is an error only for a model with names)
    for inp in inputs:
        if inp is not None and not isinstance(inp, (dict, list)) and _same_file(path, Path(inp)):
            raise OptionError(f"{what} {path} is also an input of this command ({inp}): writing it would destroy "
                              f"that input; give another path")
    if path.is_dir() and belongs is not None:
        raise OptionError(f"{what} {path} is a directory where netdef writes that file (it belongs with {belongs}): "
                          "move that folder away")
    if path.is_dir():
        raise OptionError(f"{what} {path} is a directory: give a file name (e.g. {path / (name or 'out')})")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        if _read_only(parent):
            raise OptionError(f"{what} {path}: {parent} is on a read-only file system: give a path on a writable one")
        raise OptionError(f"{what} {path}: no permission to write in {parent}")
    _check_creatable(parent, head, f"{what} {path}")
    if kind is not None and path.exists():
        _check_kind(path, kind, what)
    if kind is not None and kind.suffixes:
        _check_suffix(path, what, kind.suffixes)
    return path


_CREATABLE: set[str] = set()  # folders a probe file was created in, by this process: not probed again


def _check_creatable(folder: Path, head: str, what: str) -> None:
    """OptionError naming `what` where a file cannot be created in `folder` (/proc, /sys: permissions allow it, the
    file system does not), told by creating and removing an empty temporary file (named from `head`) there, once per
    folder (detect checks an output per image)."""
    from .errors import OptionError

    if os.fspath(folder) in _CREATABLE:
        return
    try:
        with interrupts.deferred():  # a signal waits: no probe is left behind
            probe = folder / f"{head}{os.urandom(4).hex()}.tmp"  # as a temporary file of the output is named
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        _CREATABLE.add(os.fspath(folder))
    except OSError as e:
        raise OptionError(f"{what}: no file can be created in {folder} ({e.strerror}): give a path in a folder you "
                          "can write") from None


def shown_path(path: str) -> str:
    """`path` relative to the working folder where it lies inside it, else as it is."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def output_name(named_after: str | os.PathLike, suffix: str) -> str:
    """The file name `check_output` suggests for an output given as a folder: that of what the file is made from (an
    architecture's name, a checkpoint's or an engine's stem: 'yolo11n', 'runs/best.pt'; a source such as
    'torchvision:resnet18' by its last part, without a call's arguments) with the command's usual `suffix`
    ('.engine')."""
    text = re.sub(r"\(.*\)\s*$", "", os.fspath(named_after)) if ":" in os.fspath(named_after) else named_after
    last = re.split(r"[:/\\]", os.fspath(text).rstrip("/\\"))[-1]
    stem = last[:-len(Path(last).suffix)] if Path(last).suffix in _FILE_SUFFIXES else last
    return (stem or "out") + suffix


_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".wts", ".engine", ".plan", ".yaml", ".yml", ".py")

# what a file of these suffixes is, by its name (`FileKind.suffixes`)
_BARE_PLAN = "a bare TensorRT plan (what trtexec, Triton and C++ load; `netdef export-plan` writes one of an engine)"
KNOWN_SUFFIXES = {".wts": ".wts weights", ".engine": "a TensorRT engine", ".plan": _BARE_PLAN, ".trt": _BARE_PLAN,
                  ".onnx": "an ONNX model", ".pt": "a PyTorch checkpoint",
                  ".pth": "a PyTorch checkpoint", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON",
                  ".npy": "a numpy array"}


def _check_suffix(path: str | os.PathLike, what: str, own: tuple[str, ...]) -> None:
    """OptionError where `path`'s suffix names another kind of file than the one written there (an engine written
    as out.wts, weights as mine.engine: every later command would take them for what their names say); `own`:
    the suffixes of what is written (any other suffix, or none, is the user's choice)."""
    from .errors import OptionError

    suffix = Path(path).suffix.lower()
    if suffix in KNOWN_SUFFIXES and suffix not in own:
        raise OptionError(f"{what} {path}: a {suffix} name says {KNOWN_SUFFIXES[suffix]}, but this writes "
                          f"{KNOWN_SUFFIXES[own[0]]}: name it {Path(path).with_suffix(own[0])}")


CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip file, a pickle: a checkpoint, not weights
ELF_START = b"\x7fELF"  # a compiled program or shared library (a plugin library)

# first bytes of files a mistyped path may name, for messages
_KNOWN_STARTS = ((CHECKPOINT_STARTS[0], "a zip file (a PyTorch checkpoint?)"),
                 (CHECKPOINT_STARTS[1], "a pickle (a PyTorch checkpoint?)"),
                 (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                 (ELF_START, "a compiled program or library"), (b"\x93NUMPY", "a numpy array"),
                 (b"NETDEF-ENGINE\n", "a netdef engine"), (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
                 (b"\xfd7zXZ\x00", "an xz-compressed file (decompress it first)"),
                 (b"\x28\xb5\x2f\xfd", "a zstd-compressed file (decompress it first)"))
# then a plan of each flavour trt_api.PLAN_MAGICS knows
UTF8_BOM = b"\xef\xbb\xbf"  # an editor's UTF-8 byte-order mark: no content
WTS_TEXT = "a .wts weights file"  # what `recognised` calls a .wts
_WTS_START = re.compile(rb"(?:\xef\xbb\xbf)?\s*\d+\r?\n\s*\S+[ \t]+\d+")
# TensorRT's calibration cache (tensorrtx's int8calib.table): "TRT-8601-EntropyCalibration2" on line 1
_CALIBRATION_CACHE_START = re.compile(rb"TRT-\d+-\w*Calibration")
CALIBRATION_CACHE = ("a TensorRT calibration cache (tensorrtx's int8calib.table), not netdef's JSON table, which "
                     "`netdef calibrate` writes")


def utf16(head: bytes) -> bool:
    """Whether a file's first bytes are UTF-16 text (PowerShell 5's `>` writes it): a byte-order mark (FF FE, FE FF),
    or printable ASCII with a NUL after (or before) each character."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    pairs = head[:min(len(head), 16) & ~1]
    text = [all(32 <= c < 127 or c in b"\t\r\n" for c in pairs[i::2]) for i in (0, 1)]
    nul = [not any(pairs[i::2]) for i in (0, 1)]
    return len(pairs) >= 4 and (text[0] and nul[1] or nul[0] and text[1])


def recognised(head: bytes) -> str | None:
    """What a file is, told from its first bytes, where they say (a checkpoint, an image, a .wts, JSON...)."""
    starts = _KNOWN_STARTS + tuple((magic, f"a {flavor} plan") for magic, flavor in trt_api.PLAN_MAGICS.items())
    what = next((w for magic, w in starts if head.startswith(magic)), None)
    if what is None and utf16(head):
        what = "UTF-16 text"
    if what is None and _CALIBRATION_CACHE_START.match(head):
        what = CALIBRATION_CACHE
    if what is None and _WTS_START.match(head):
        what = WTS_TEXT
    if what is None and head and JSON_FILE.test(head):
        what = "a JSON file"
    return what


def describe_head(head: bytes) -> str:
    """What a file's first bytes say it is, for an error message: "it looks like a JPEG image", ..."""
    if not head:
        return "it is empty"
    what = recognised(head)
    return f"it looks like {what}" if what else f"it starts with {head[:16]!r}"


def special_kind(path: str | os.PathLike) -> str:
    """What an existing path that is no regular file is, for a message: "a directory", "a character device", ..."""
    mode = os.stat(path).st_mode
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def not_a_file(path: str | os.PathLike) -> str | None:
    """`special_kind` of a path that exists and is no regular file (reading a named pipe would wait for a writer);
    None for a regular file or nothing there."""
    return special_kind(path) if os.path.exists(path) and not os.path.isfile(path) else None


def read_head(path: str | os.PathLike) -> bytes:
    """A file's first HEAD_BYTES bytes (b"" where it cannot be read, or is no regular file: a named pipe would wait for
    a writer)."""
    if not os.path.isfile(path):
        return b""
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return b""


def _check_kind(path: Path, kind: FileKind, what: str) -> None:
    from .errors import OptionError

    if not path.is_file():  # a pipe or a device: reading it could block, writing over it is not replacing a file
        raise OptionError(f"{what} {path} exists and is not a regular file: give the path of a file")
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise OptionError(f"{what} {path} exists and cannot be read ({e.strerror}), so netdef cannot tell whether "
                          f"it is {kind.name} it may replace: give another path") from None
    if head and not kind.test(head):
        raise OptionError(f"{what} {path} exists and is not {kind.name} ({describe_head(head)}): netdef writes over "
                          f"{kind.name} only; move that file away or give another path")
    if head and kind.holds is not None and not _holds(path, kind, head):
        raise OptionError(f"{what} {path} exists and is JSON of another kind, not {kind.name}: netdef writes over "
                          f"{kind.name} only; move that file away or give another path")


def is_kind(path: str | os.PathLike, kind: FileKind) -> bool:
    """Whether the file at `path` is of `kind` (its first bytes and, for a JSON kind, its content)."""
    head = read_head(path)
    return bool(head) and kind.test(head) and (kind.holds is None or _holds(Path(path), kind, head))


def _holds(path: Path, kind: FileKind, head: bytes) -> bool:
    """Whether the JSON file `path` (its first bytes `head`) is `kind`: by its content, or for a file too large to
    parse by how it starts."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return kind.starts is not None and kind.starts.match(head) is not None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return bool(kind.holds(doc))  # type: ignore[misc]


def _read_only(folder: Path) -> bool:
    """Whether `folder` is on a file system mounted read-only (where statvfs tells)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def read_npy(path: str | os.PathLike, option: str) -> Any:
    """The array of the .npy file `path` given as `option` (e.g. --input); OptionErrors naming both."""
    import numpy as np

    from .errors import OptionError

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if not magic.startswith((b"\x93NUMPY", b"PK")):  # .npy, or .npz (a zip file)
            raise OptionError(f"{option} {path}: not a .npy file (save the input array with numpy.save)")
        x = np.load(path)  # pickled arrays stay refused
    except FileNotFoundError:
        raise OptionError(f"{option} {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise OptionError(f"{option} {path}: not a .npy array ({e})") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise OptionError(f"{option} {path}: holds several arrays (.npz); give one array as .npy")
    return x
