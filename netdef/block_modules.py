"""Loading researchers' block modules: the modules whose `@block("Name")` functions a YAML may use.

A module is named by a dotted name on sys.path (`my_pkg.blocks`) or by a `.py` path. Four sources ask for one:
`--blocks MOD` (repeatable), the `NETDEF_BLOCKS` environment variable (os.pathsep-separated), the entry-point
group `netdef.blocks` of installed packages (`[project.entry-points."netdef.blocks"] any = "my_pkg.blocks"`),
and a YAML's top-level `blocks: [my_pkg.blocks, ./my_blocks.py]` (paths relative to the YAML file). Each module
is imported once; an import that fails is a netdef error naming the module and who asked for it. A .py file's
own folder is on the module path, after the installed packages, while it runs (`import helpers` beside it works,
as in a script); `netdef.cli.main` puts the working folder there for dotted names.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType

from .errors import NetdefError, OptionError, raised_at
from .fileio import file_sha256, read_head, recognised, special_kind
from .registry import BLOCKS

ENV_VAR = "NETDEF_BLOCKS"
ENTRY_POINT_GROUP = "netdef.blocks"
HOW_TO_LOAD = (f"load a module of your own blocks with --blocks MODULE|FILE.py, the {ENV_VAR} environment variable, "
               f"a top-level 'blocks: [MODULE]' in the YAML, or a package's '{ENTRY_POINT_GROUP}' entry point")
EXPECTED = "a block module is a module on sys.path that registers blocks (my_pkg.blocks) or a .py file of blocks"

_loaded: dict[str, ModuleType] = {}  # a module name or a resolved .py path -> the module it gave
_digests: dict[str, str] = {}  # the same key -> its file's SHA-256 when imported (edited since: imported again)
_installed_done = False


def is_path(ref: str) -> bool:
    """Whether `ref` names a .py file (else it is a dotted module name)."""
    return ref.endswith(".py") or "/" in ref or os.sep in ref


def load_block_module(ref: str, source: str, base: Path | None = None,
                      error: type[NetdefError] = OptionError) -> ModuleType:
    """Import the block module `ref` (a dotted name, or a .py path relative to `base` or the working folder)
    once. `source` says who asked for it (`--blocks`, `NETDEF_BLOCKS`, `entry point NAME`, `FILE:LINE`) and is
    named, with the module, in the `error` raised when the import fails."""
    ref = str(ref).strip()
    if not ref:
        raise error(f"{source}: an empty block module name")
    if is_path(ref):
        path = Path(ref).expanduser()
        path = (base / path if base is not None and not path.is_absolute() else path).resolve()
        key, what = str(path), f"block file {path}"
        if key not in _loaded and path.is_dir():
            raise error(f"{source}: {path} is a directory: name a .py file of blocks (or a module on sys.path)")
        if key not in _loaded and not path.is_file():
            raise error(f"{source}: block file {path} not found" + (f" (relative to {base})" if base else ""))
        if key not in _loaded and path.suffix != ".py":
            raise error(f"{source}: {_not_blocks(path)}")
    else:
        key, what = ref, f"block module '{ref}'"
    if key in _loaded and _digests.get(key) == _file_digest(_loaded[key]):
        return _loaded[key]
    before = set(BLOCKS)
    try:
        if key in _loaded:  # its file changed since: run it again (its blocks replace their old selves)
            module = _run_again(_loaded[key])
        else:
            module = import_file(path) if is_path(ref) else importlib.import_module(ref)
    except NetdefError as e:  # the registry's own errors (a block name registered twice)
        _forget_blocks(before)
        raise error(f"{source}: {what}: {e}") from e
    except BaseException as e:  # noqa: BLE001  anything the researcher's module raises while it is imported
        _forget_blocks(before)
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C, SIGTERM: an interrupt, not the module's fault
            raise
        if isinstance(e, SystemExit):  # sys.exit(), exit() or `raise SystemExit` at its top level
            code = "" if e.code is None else repr(e.code)
            raise error(f"{source}: cannot import {what}: it called sys.exit({code}){raised_at(e)} while imported: a "
                        "block module must not exit (keep script code under `if __name__ == '__main__':`)") from e
        missing = isinstance(e, ModuleNotFoundError) and bool(e.name) and ref.startswith(e.name)  # not its imports'
        named = base / ref if base is not None else Path(ref)  # r18.wts, a folder: a path given as a module name
        if missing and not is_path(ref) and named.exists():
            raise error(f"{source}: {_not_blocks(named)}") from e
        hint = " (is it installed, or on PYTHONPATH?)" if missing else ""
        where = "" if missing else raised_at(e)  # a module not found was raised inside importlib: no use to say
        raise error(f"{source}: cannot import {what}: {type(e).__name__}: {e}{where}{hint}") from e
    if getattr(module, "__file__", None) is None and hasattr(module, "__path__"):  # a folder without __init__.py
        raise error(f"{source}: {_not_blocks(Path(next(iter(module.__path__), ref)))}")
    _track_helpers(module, {n for n, b in BLOCKS.items() if n not in before or b.fn.__module__ == module.__name__})
    _loaded[key], _digests[key] = module, _file_digest(module)
    return module


def _not_blocks(path: Path) -> str:
    """What a file or directory given where a block module was expected is (as `special_kind` says it), and what
    is expected."""
    kind = special_kind(path) if path.is_dir() else recognised(read_head(path)) or "a file"
    return f"{path} is {kind}, not a module of blocks: {EXPECTED}"


def _run_again(module: ModuleType) -> ModuleType:
    """Execute the module's edited .py file again in the same module object (importlib.reload needs the module
    findable on sys.path; a block file named by path is not)."""
    spec = importlib.util.spec_from_file_location(module.__name__, module.__file__)
    if spec is None or spec.loader is None:
        raise ImportError(f"{module.__file__} is not a Python module")
    with folder_importable(Path(module.__file__).parent):
        spec.loader.exec_module(module)
    return module


def on_path(folder: str | os.PathLike) -> bool:
    """Whether `folder` is on sys.path ('' and '.' count as the working folder)."""
    target = os.path.realpath(folder)
    return any(isinstance(p, str) and os.path.realpath(p or os.curdir) == target for p in sys.path)


@contextlib.contextmanager
def folder_importable(folder: str | os.PathLike) -> Iterator[None]:
    """`folder` on sys.path for the `with` block, appended (installed packages keep their precedence) where it is
    not there already, and taken off again after it: a .py file of the user's, imported by path, finds the modules
    beside it as the same file run as a script does (`import helpers`)."""
    entry = None if on_path(folder) else os.path.abspath(folder)
    if entry is not None:
        sys.path.append(entry)
    try:
        yield
    finally:
        if entry is not None and entry in sys.path:
            sys.path.remove(entry)


def _file_digest(module: ModuleType) -> str:
    """The SHA-256 of the module's .py file ('' without one)."""
    path = getattr(module, "__file__", None)
    return file_sha256(path) if path and path.endswith(".py") and os.path.isfile(path) else ""


def _track_helpers(module: ModuleType, blocks: set[str]) -> None:
    """The new `blocks`' source digests also cover the researcher's own modules that `module` uses (a
    `helpers.py` beside it), so an edited helper makes an engine built with those blocks out of date, as an
    edited block file does."""
    helpers = sorted(file_sha256(p) for p in helper_files(module))
    for name in blocks if helpers else ():
        block = BLOCKS[name]
        digest = hashlib.sha256("".join([block.source_sha, *helpers]).encode()).hexdigest()
        BLOCKS[name] = dataclasses.replace(block, source_sha=digest)


def helper_files(module: ModuleType) -> list[str]:
    """The files of the researcher's own modules that the block module `module` uses (`_own_modules`), its own
    file left out: the sources besides it that an engine's architecture hash covers."""
    own = {os.path.realpath(p) for p in [getattr(module, "__file__", None)] if p}
    return sorted(_own_modules(module) - own)


def _own_modules(module: ModuleType) -> set[str]:
    """The files of the modules `module` uses (modules in its globals, the modules that define the functions
    and classes there, and the modules its import statements name: `from helpers import ACT` brings a constant),
    followed through theirs, that are the researcher's own: outside the Python installation's library folders
    (standard library, site-packages) and netdef."""
    libraries = _library_dirs()
    seen, todo, files = {module.__name__}, [module], set()
    while todo:
        current = todo.pop()
        for value in [*vars(current).values(), *_imported(current)]:
            dep = value if isinstance(value, ModuleType) else sys.modules.get(getattr(value, "__module__", None) or "")
            if dep is None or dep.__name__ in seen:
                continue
            seen.add(dep.__name__)
            path = getattr(dep, "__file__", None)
            real = os.path.realpath(path) if path and path.endswith(".py") and os.path.isfile(path) else None
            if real and not any(real.startswith(d + os.sep) for d in libraries):
                files.add(real)
                todo.append(dep)
    return files


def _imported(module: ModuleType) -> list[ModuleType]:
    """The loaded modules the import statements of `module`'s .py file name (relative ones resolved in its
    package); none where the file cannot be read or parsed."""
    path = getattr(module, "__file__", None)
    try:
        tree = ast.parse(Path(path).read_bytes()) if path and path.endswith(".py") else None
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            try:
                base = importlib.util.resolve_name(base, module.__package__ or "") if node.level else base
            except (ImportError, ValueError):
                continue
            names += [base, *(f"{base}.{a.name}" for a in node.names)]  # `from pkg import mod` names a module too
    return [sys.modules[n] for n in dict.fromkeys(names) if n in sys.modules]


@functools.lru_cache(maxsize=1)
def _library_dirs() -> frozenset[str]:
    import site
    import sysconfig

    paths = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= set(site.getsitepackages()) | {site.getusersitepackages(), os.path.dirname(os.path.abspath(__file__))}
    return frozenset(os.path.realpath(p) for p in paths if p)


def import_file(path: Path) -> ModuleType:
    """Import a .py file as a module named after it (its stem, made unique when that name is taken), its folder on
    the module path while it runs (`folder_importable`); a file imported already under a module name (`import
    my_blocks`, `--blocks my_blocks`) is that module."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and file.endswith(".py") and os.path.realpath(file) == os.path.realpath(path):
            return module
    name = path.stem if path.stem.isidentifier() else "netdef_blocks"
    if name in sys.modules:
        name = f"{name}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look the module up
    try:
        with folder_importable(Path(path).parent):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _forget_blocks(before: set[str]) -> None:
    """Unregister the blocks a failed import registered before it failed."""
    for name in set(BLOCKS) - before:
        del BLOCKS[name]


def load_installed_blocks() -> None:
    """Import the modules of the `netdef.blocks` entry points and of NETDEF_BLOCKS (once per process)."""
    global _installed_done
    if _installed_done:
        return
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None)
        source = f"entry point '{ep.name}' ({ENTRY_POINT_GROUP}{f' of {dist}' if dist else ''})"
        load_block_module(ep.module, source, error=NetdefError)
    for ref in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if ref.strip():
            load_block_module(ref, f"{ENV_VAR}={os.environ[ENV_VAR]}")
    _installed_done = True


def load_blocks(refs: Iterable[str] = ()) -> None:
    """Import the installed block modules (entry points, NETDEF_BLOCKS), then `refs` (the --blocks values)."""
    load_installed_blocks()
    for ref in refs:
        load_block_module(ref, f"--blocks {ref}")
