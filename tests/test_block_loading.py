"""Researchers' own blocks: --blocks (a .py path or a module name), NETDEF_BLOCKS, a YAML's `blocks:`, the
`netdef.blocks` entry point of an installed package; clear errors for bad modules, duplicate names and unknown
blocks. CPU builds (TensorRT-RTX)."""
from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest

from netdef import blocks as builtin_blocks, block_modules, registry  # netdef's blocks: in clean_registry's copy
from netdef.cli import main
from netdef.errors import NetdefError, OptionError, SpecError
from netdef.wts import read_wts, write_wts

ROOT = Path(__file__).resolve().parent.parent
BLOCK_SOURCE = '''
from netdef.registry import block


@block("{name}", width_args=("c2",))
def conv_relu(net, x, prefix, c2, k=3):
    """Convolution with bias + ReLU, keys `prefix.weight` and `prefix.bias`."""
    return net.conv(x, prefix, c2, k, 1, k // 2, act="relu")
'''


def arch_yaml(block_name: str, extra: str = "") -> str:
    """A tiny architecture using `block_name`; `extra` (top-level YAML) goes on line 4, the first row is then on
    line 6 (extra empty) or later."""
    return "\n".join(["name: tiny", "input: {name: input, shape: [1, 8, 8]}", "output: logits", extra, "layers:",
                      f"  - [-1, 1, {block_name}, {{c2: 4}}, conv1]", "  - [-1, 1, Flatten, {}, flat]",
                      "  - [-1, 1, Linear, {c2: 3}, fc]", ""])


@pytest.fixture
def tiny(tmp_path, clean_registry):
    """tmp_path with tiny_blocks.py (block TinyConvRelu), tiny.yaml using it, tiny.wts fitting it."""
    (tmp_path / "tiny_blocks.py").write_text(BLOCK_SOURCE.format(name="TinyConvRelu"))
    (tmp_path / "tiny.yaml").write_text(arch_yaml("TinyConvRelu"))
    rng = np.random.default_rng(0)
    write_wts(tmp_path / "tiny.wts", {"conv1.weight": rng.random((4, 1, 3, 3)), "conv1.bias": rng.random(4),
                                      "fc.weight": rng.random((3, 256)), "fc.bias": rng.random(3)})
    return tmp_path


def build_args(d: Path, *extra: str) -> list[str]:
    return ["build", str(d / "tiny.yaml"), "-w", str(d / "tiny.wts"), "-o", str(d / "tiny.engine"), *extra]


def cli(*args: str, cwd: Path | None = None, env: dict | None = None,
        python: str = sys.executable) -> subprocess.CompletedProcess:
    """`python -m netdef.cli ARGS` in a new process (a fresh block registry)."""
    env = dict(os.environ, **(env or {}))
    env.setdefault("PYTHONPATH", os.pathsep.join(sys.path))
    return subprocess.run([python, "-m", "netdef.cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_build_with_a_block_file_from_the_command_line(tiny):
    res = cli(*build_args(tiny, "--blocks", str(tiny / "tiny_blocks.py")))
    assert res.returncode == 0, res.stderr
    assert (tiny / "tiny.engine").stat().st_size > 1000 and "built" in res.stdout


def test_editing_a_block_makes_the_engine_out_of_date(tiny):
    """The architecture's identity includes the source of blocks outside netdef: an unchanged block keeps the
    engine, an edited one rebuilds it (each build a new process, as from the shell)."""
    from netdef.spec import load_spec

    args = build_args(tiny, "--blocks", str(tiny / "tiny_blocks.py"))
    assert cli(*args).returncode == 0
    again = cli(*args)
    assert again.returncode == 0 and "is up to date" in again.stderr, again.stderr
    block_modules.load_block_module(str(tiny / "tiny_blocks.py"), "test")
    before = load_spec(tiny / "tiny.yaml").sha256
    assert before != load_spec("lenet").sha256 and load_spec("lenet").sha256 == load_spec("lenet").sha256
    edited = BLOCK_SOURCE.format(name="TinyConvRelu").replace('act="relu"', 'act="silu"')
    assert edited != BLOCK_SOURCE.format(name="TinyConvRelu")
    (tiny / "tiny_blocks.py").write_text(edited)
    rebuilt = cli(*args)
    assert rebuilt.returncode == 0 and "is up to date" not in rebuilt.stderr and "built" in rebuilt.stdout


def test_an_edited_block_file_is_imported_again_in_the_same_process(tiny, capsys):
    """A notebook or script that edits its block file between two builds: the second build imports it again (the
    block replaces its old self) and rebuilds the engine; an unchanged file is not imported again."""
    args = build_args(tiny, "--blocks", str(tiny / "tiny_blocks.py"))
    assert main(args) == 0
    first = registry.get_block("TinyConvRelu")
    assert main(args) == 0 and "is up to date" in capsys.readouterr().err
    assert registry.get_block("TinyConvRelu") is first
    (tiny / "tiny_blocks.py").write_text(BLOCK_SOURCE.format(name="TinyConvRelu").replace('act="relu"', 'act="silu"'))
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "is up to date" not in err and "built" in out
    assert registry.get_block("TinyConvRelu").source_sha != first.source_sha


def test_a_block_defined_again_by_the_same_code_replaces_itself(clean_registry):
    """A notebook cell that defines a block, run twice: the second definition replaces the first (same module and
    name); another function under that name is still refused."""
    def define():
        @registry.block("CellBlock")
        def cell_block(net, x, prefix):
            return x
        return cell_block

    first, second = define(), define()
    assert first is not second and registry.get_block("CellBlock").fn is second
    with pytest.raises(NetdefError, match="block 'CellBlock' is registered twice"):
        registry.block("CellBlock")(lambda net, x, prefix: x)


def test_a_block_of_ones_own_replaces_netdefs_only_when_it_says_so(clean_registry):
    """A researcher's ADown (written before netdef had one; the YAML keeps Ultralytics' name): an error saying
    how to replace netdef's, then with `replaces=True` it is the block built; it does not replace another
    module's block of the name."""
    assert registry.get_block("ADown").fn.__module__.startswith(builtin_blocks.__name__)

    def my_adown(net, x, prefix, c2):
        return x

    def their_adown(net, x, prefix, c2):
        return x

    with pytest.raises(NetdefError, match=r"block 'ADown' is registered twice: by netdef\.blocks\.\S+ .*\(rename "
                                          r"yours, or register it with @block\('ADown', replaces=True\)"):
        registry.block("ADown")(my_adown)
    assert registry.block("ADown", replaces=True)(my_adown) is my_adown and registry.get_block("ADown").fn is my_adown
    with pytest.raises(NetdefError, match=r"rename one of them\)$"):
        registry.block("ADown", replaces=True)(their_adown)


@pytest.mark.parametrize("imports, act", [("import tiny_helpers", "tiny_helpers.ACT"),
                                          ("from tiny_helpers import ACT", "ACT")])  # a constant alone: was missed
def test_editing_a_helper_the_block_module_imports_makes_the_engine_out_of_date(tiny, imports, act):
    """A helper module of the researcher's own (beside the block file, imported by it) counts as the block's
    source too: editing it rebuilds, as editing the block file does, also where the block file takes only a
    constant from it."""
    (tiny / "tiny_helpers.py").write_text('ACT = "relu"\n')
    (tiny / "tiny_blocks.py").write_text(f"{imports}\n" + BLOCK_SOURCE.format(name="TinyConvRelu").replace(
        'act="relu"', f"act={act}"))
    args = build_args(tiny, "--blocks", str(tiny / "tiny_blocks.py"))
    env = {"PYTHONPATH": os.pathsep.join([str(tiny), *sys.path])}
    assert cli(*args, env=env).returncode == 0
    assert "is up to date" in cli(*args, env=env).stderr
    (tiny / "tiny_helpers.py").write_text('ACT = "sigmoid"\n')
    rebuilt = cli(*args, env=env)
    assert rebuilt.returncode == 0 and "is up to date" not in rebuilt.stderr and "built" in rebuilt.stdout, \
        rebuilt.stderr


def test_a_folder_given_as_a_block_file_says_so(tiny):
    res = cli(*build_args(tiny, "--blocks", str(tiny)))
    assert res.returncode == 1 and f"{tiny} is a directory: name a .py file of blocks" in res.stderr, res.stderr


def test_a_folder_or_weights_file_given_as_a_module_name_says_what_it_is(tiny):
    """`--blocks imgs` (a folder named without a slash) was imported from the working folder as an empty namespace
    package, silently; `--blocks tiny.wts` said "No module named 'tiny'". Both name what was given and what is
    expected, from --blocks, NETDEF_BLOCKS and a YAML's blocks: alike."""
    (tiny / "imgs").mkdir()
    (tiny / "notes.yaml").write_text(arch_yaml("TinyConvRelu", "blocks: [tiny.wts]"))
    expected = "not a module of blocks: a block module is a module on sys.path that registers blocks"
    for args, env, says in [(["--blocks", "imgs"], {}, "--blocks imgs: "),
                            (["--blocks", "tiny.wts"], {}, "--blocks tiny.wts: tiny.wts is a .wts weights file, "),
                            (["--blocks", "./tiny.wts"], {}, f"{tiny / 'tiny.wts'} is a .wts weights file, "),
                            ([], {block_modules.ENV_VAR: "imgs"}, f"NETDEF_BLOCKS=imgs: {tiny / 'imgs'} is a directory, ")]:
        res = cli("blocks", *args, cwd=tiny, env=env)
        assert res.returncode == 1 and says in res.stderr and expected in res.stderr, res.stderr
        assert "is a directory, " in res.stderr or "weights file" in res.stderr, res.stderr
    res = cli(*build_args(tiny)[:1], str(tiny / "notes.yaml"), *build_args(tiny)[2:], cwd=tiny)
    assert res.returncode == 1 and f"notes.yaml:4: 'blocks': {tiny / 'tiny.wts'} is a .wts weights file, " \
        f"{expected}" in res.stderr and not (tiny / "tiny.engine").exists(), res.stderr
    with pytest.raises(OptionError, match=f"^x.yaml:3: {re.escape(str(tiny / 'imgs'))} is a directory, {expected}"):
        block_modules.load_block_module("imgs", "x.yaml:3", base=tiny)  # not importable from here: a folder still


def test_an_output_on_a_loaded_block_file_is_refused_before_any_work(tiny, monkeypatch, capsys):
    """A block module is an input like the YAML: `-o` on it (from --blocks or NETDEF_BLOCKS) is refused and the
    file stays as it was."""
    blocks = tiny / "tiny_blocks.py"
    source = blocks.read_text()
    for how in (["--blocks", str(blocks)], []):
        if not how:
            monkeypatch.setenv(block_modules.ENV_VAR, str(blocks))
        args = ["build", str(tiny / "tiny.yaml"), "-w", str(tiny / "tiny.wts"), "-o", str(blocks), *how]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"the engine output {blocks} is also an input of this command ({blocks})" in err, err
        assert blocks.read_text() == source

def test_without_the_module_the_unknown_block_error_says_how_to_load_one(tiny, capsys):
    assert main(build_args(tiny)) == 1
    err = capsys.readouterr().err
    assert "tiny.yaml:6: row 0: unknown block 'TinyConvRelu'" in err and err.count("\n") == 1, err
    for way in ("--blocks", "NETDEF_BLOCKS", "blocks:", "netdef.blocks"):
        assert way in err
    assert not (tiny / "tiny.engine").exists()


def test_a_module_name_on_sys_path(tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny))
    assert main(build_args(tiny, "--blocks", "tiny_blocks")) == 0
    assert registry.get_block("TinyConvRelu").module == "tiny_blocks"


def test_netdef_blocks_environment_variable(tiny, monkeypatch, capsys):
    other = tiny / "more"
    other.mkdir()
    bare = BLOCK_SOURCE.format(name="MoreConvRelu").replace(
        'def conv_relu(net, x, prefix, c2, k=3):\n    """Convolution with bias + ReLU, keys `prefix.weight` and '
        '`prefix.bias`."""\n', "def conv_relu(net, x, prefix, c2, k=3):\n")
    assert '"""' not in bare  # a block without a docstring
    (other / "more_blocks.py").write_text(bare)
    monkeypatch.setenv("NETDEF_BLOCKS", os.pathsep.join([str(tiny / "tiny_blocks.py"), str(other / "more_blocks.py")]))
    assert main(build_args(tiny)) == 0
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert f"TinyConvRelu(c2, k=3)  [tiny_blocks ({tiny / 'tiny_blocks.py'})]" in out
    assert "MoreConvRelu(c2, k=3)" in out and "Convolution with bias + ReLU" in out  # TinyConvRelu's docstring
    assert not [line for line in out.splitlines() if line and not line.strip()]  # no docstring: no "    " line
    nc = [line for line in out.splitlines() if line.strip().startswith("--set nc=")]  # several blocks take nc
    assert len(nc) > 2 and "(default None)" in nc[0] and all(line.endswith("(as under Classifier)") for line in nc[1:])
    monkeypatch.setattr(block_modules, "_installed_done", False)
    monkeypatch.setenv("NETDEF_BLOCKS", "nowhere/gone.py")
    assert main(["blocks"]) == 1
    assert capsys.readouterr().err.startswith(f"netdef blocks: error: NETDEF_BLOCKS=nowhere/gone.py: block file "
                                              f"{Path('nowhere/gone.py').resolve()} not found")


def test_yaml_names_its_block_modules_relative_to_itself(tiny, monkeypatch):
    (tiny / "arch").mkdir()
    (tiny / "arch" / "tiny.yaml").write_text(arch_yaml("TinyConvRelu", "blocks: [../tiny_blocks.py]"))
    monkeypatch.chdir(tiny / "arch")
    assert main(["build", "tiny.yaml", "-w", str(tiny / "tiny.wts"), "-o", str(tiny / "t.engine")]) == 0
    assert (tiny / "t.engine").is_file()


def test_an_architecture_given_in_python_names_block_modules_relative_to_its_base(tiny):
    """parse_spec(text, base=DIR): `blocks:` paths are relative to DIR (there is no YAML file to be relative to)."""
    from netdef.spec import parse_spec

    text = arch_yaml("TinyConvRelu", "blocks: [tiny_blocks.py]")
    with pytest.raises(SpecError, match=r"^<tiny>:4: 'blocks': .*tiny_blocks\.py"):
        parse_spec(text, "tiny", base=tiny / "elsewhere")
    spec = parse_spec(text, "tiny", base=tiny)
    assert spec.rows[0].block.name == "TinyConvRelu" and spec.identity()["path"] is None


def test_a_scripts_own_blocks_are_recorded_with_its_file(clean_registry):
    """Blocks defined in the script that builds (module `__main__`) are recorded in the header's arch.blocks with
    the script's file: `__main__` alone names nothing a reader could find."""
    from netdef.spec import parse_spec

    def conv_relu(net, x, prefix, c2):
        """Convolution with bias + ReLU."""
        return net.conv(x, prefix, c2, 3, act="relu")

    conv_relu.__module__ = "__main__"
    registry.block("ScriptConvRelu", width_args=("c2",))(conv_relu)
    spec = parse_spec(arch_yaml("ScriptConvRelu"), "tiny")
    assert spec.identity()["blocks"] == [f"__main__ ({__file__})"]


def test_a_bad_yaml_block_module_names_the_yaml_line(tiny):
    from netdef.spec import load_spec

    (tiny / "bad.yaml").write_text(arch_yaml("TinyConvRelu", "blocks:\n  - tiny_blocks.py\n  - no_such_blocks_mod"))
    with pytest.raises(SpecError) as e:
        load_spec(tiny / "bad.yaml")
    assert str(e.value).startswith(f"{tiny / 'bad.yaml'}:6: 'blocks': cannot import block module 'no_such_blocks_mod'")
    (tiny / "bad2.yaml").write_text(arch_yaml("TinyConvRelu", "blocks: tiny_blocks.py"))
    with pytest.raises(SpecError, match="'blocks': expected a list of block modules"):
        load_spec(tiny / "bad2.yaml")


def test_a_bad_module_path_is_one_clear_error(tiny, capsys):
    assert main(build_args(tiny, "--blocks", str(tiny / "missing_blocks.py"))) == 1
    err = capsys.readouterr().err
    assert err == f"netdef build: error: --blocks {tiny / 'missing_blocks.py'}: block file " \
                  f"{tiny / 'missing_blocks.py'} not found\n"
    assert main(build_args(tiny, "--blocks", "no_such_pkg.blocks")) == 1
    err = capsys.readouterr().err
    assert err == ("netdef build: error: --blocks no_such_pkg.blocks: cannot import block module 'no_such_pkg.blocks': "
                   "ModuleNotFoundError: No module named 'no_such_pkg' (is it installed, or on PYTHONPATH?)\n")


def test_a_module_that_fails_names_its_line_and_leaves_no_blocks(tiny):
    (tiny / "broken.py").write_text(BLOCK_SOURCE.format(name="HalfDone") + "\n\nraise RuntimeError('oops')\n")
    with pytest.raises(OptionError) as e:
        block_modules.load_block_module(str(tiny / "broken.py"), "--blocks broken.py")
    broken = tiny / "broken.py"
    assert f"--blocks broken.py: cannot import block file {broken}: RuntimeError: oops at {broken}:11" in str(e.value)
    assert "HalfDone" not in registry.BLOCKS  # the failed module's blocks are unregistered
    (tiny / "syntax.py").write_text("def f(:\n")
    with pytest.raises(OptionError, match=r"SyntaxError: .* at .*syntax.py:1"):
        block_modules.load_block_module(str(tiny / "syntax.py"), "--blocks syntax.py")


@pytest.mark.parametrize("exits, shown", [("raise SystemExit(3)", "sys.exit(3)"),
                                          ("sys.exit('bye')", "sys.exit('bye')"), ("sys.exit()", "sys.exit()")])
def test_a_block_module_that_exits_is_an_error_naming_it(tiny, capsys, exits, shown):
    """`raise SystemExit(3)` at a block module's top level ended netdef with exit 3 and no word (`sys.exit('bye')`:
    'bye' alone); now it is netdef's one-line error naming the module, who asked for it and the line, exit 1, and
    the blocks it registered first are gone. Ctrl-C stays an interrupt."""
    module = tiny / "exit_blocks.py"
    module.write_text(BLOCK_SOURCE.format(name="Exits") + f"\nimport sys\n{exits}\n")
    line = len(module.read_text().splitlines())
    assert main(build_args(tiny, "--blocks", str(module))) == 1
    assert capsys.readouterr().err == (f"netdef build: error: --blocks {module}: cannot import block file {module}: "
                                       f"it called {shown} at {module}:{line} while imported: a block module must "
                                       "not exit (keep script code under `if __name__ == '__main__':`)\n")
    assert "Exits" not in registry.BLOCKS and not (tiny / "tiny.engine").exists()
    (tiny / "ctrl_c.py").write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        block_modules.load_block_module(str(tiny / "ctrl_c.py"), "--blocks ctrl_c.py")


def test_a_block_name_registered_by_two_modules_is_an_error(tiny, capsys):
    (tiny / "rival_blocks.py").write_text(BLOCK_SOURCE.format(name="TinyConvRelu"))
    assert main(build_args(tiny, "--blocks", str(tiny / "tiny_blocks.py"), "--blocks",
                           str(tiny / "rival_blocks.py"))) == 1
    err = capsys.readouterr().err
    assert (f"block 'TinyConvRelu' is registered twice: by tiny_blocks ({tiny / 'tiny_blocks.py'}) and by "
            f"rival_blocks ({tiny / 'rival_blocks.py'})") in err, err
    assert err.startswith(f"netdef build: error: --blocks {tiny / 'rival_blocks.py'}:")


def test_the_same_module_twice_is_imported_once(tiny):
    first = block_modules.load_block_module(str(tiny / "tiny_blocks.py"), "--blocks")
    assert block_modules.load_block_module("./tiny_blocks.py", "x", base=tiny) is first
    (tiny / "again.yaml").write_text(arch_yaml("TinyConvRelu", "blocks: [tiny_blocks.py]"))
    from netdef.spec import load_spec

    assert load_spec(tiny / "again.yaml").rows[0].block.fn is registry.get_block("TinyConvRelu").fn


def test_a_file_imported_by_module_name_is_the_same_module_by_path(tiny, monkeypatch):
    """`--blocks tiny_blocks` (or the researcher's own `import tiny_blocks`) and a YAML's `blocks: [tiny_blocks.py]`
    name one file: one module, not a second copy whose blocks clash with the first."""
    monkeypatch.syspath_prepend(str(tiny))
    by_name = block_modules.load_block_module("tiny_blocks", "--blocks")
    assert block_modules.load_block_module(str(tiny / "tiny_blocks.py"), "x.yaml:3") is by_name
    (tiny / "again.yaml").write_text(arch_yaml("TinyConvRelu", "blocks: [tiny_blocks.py]"))
    assert main(["build", str(tiny / "again.yaml"), "-w", str(tiny / "tiny.wts"), "-o", str(tiny / "again.engine"),
                 "--blocks", "tiny_blocks"]) == 0


def test_block_loading_options_on_every_command():
    from netdef.cli import make_parser

    p = make_parser()
    for cmd in (["build", "a", "-w", "w", "-o", "o"], ["calibrate", "a", "-w", "w", "-d", "d", "-o", "o"],
                ["show", "a"], ["blocks"]):
        assert p.parse_args([*cmd, "--blocks", "x.py", "--blocks", "y"]).blocks == ["x.py", "y"]


@pytest.fixture(scope="module")
def venv_with_block_package(tmp_path_factory) -> Path:
    """A venv that sees this checkout's netdef and its requirements (a .pth file, as tests/test_install.py
    does) and has a tiny package installed with pip whose `netdef.blocks` entry point registers PkgConvRelu."""
    tmp = tmp_path_factory.mktemp("blockpkg")
    pkg = tmp / "pkg"
    (pkg / "netdef_tiny_blocks").mkdir(parents=True)
    (pkg / "netdef_tiny_blocks" / "__init__.py").write_text(BLOCK_SOURCE.format(name="PkgConvRelu"))
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "netdef-tiny-blocks"
        version = "0.1"

        [project.entry-points."netdef.blocks"]
        tiny = "netdef_tiny_blocks"

        [tool.setuptools]
        packages = ["netdef_tiny_blocks"]
        """))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = [str(ROOT), sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(purelib, "zz_netdef_test_deps.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", str(pkg)], check=True, capture_output=True)
    return venv


def test_an_installed_package_registers_its_blocks_by_entry_point(venv_with_block_package, tiny):
    (tiny / "pkg.yaml").write_text(arch_yaml("PkgConvRelu"))
    py = str(venv_with_block_package / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", block_modules.ENV_VAR)}
    run = subprocess.run([py, "-m", "netdef.cli", "build", "pkg.yaml", "-w", "tiny.wts", "-o", "pkg.engine"],
                         cwd=tiny, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert (tiny / "pkg.engine").stat().st_size > 1000
    listing = subprocess.run([py, "-m", "netdef.cli", "blocks"], cwd=tiny, capture_output=True, text=True, env=env)
    assert "PkgConvRelu(c2, k=3)  [netdef_tiny_blocks (" in listing.stdout, listing.stderr
    # this interpreter does not have the package: the same build fails with the unknown-block error
    assert "unknown block 'PkgConvRelu'" in cli("build", "pkg.yaml", "-w", "tiny.wts", "-o", "x.engine",
                                                 cwd=tiny).stderr


def test_a_broken_entry_point_names_itself(tiny, monkeypatch):
    from importlib import metadata

    ep = metadata.EntryPoint(name="broken", value="no_such_blocks_pkg", group=block_modules.ENTRY_POINT_GROUP)
    monkeypatch.setattr(block_modules.metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    with pytest.raises(NetdefError, match=r"^entry point 'broken' \(netdef.blocks\): cannot import block module "
                                          r"'no_such_blocks_pkg': ModuleNotFoundError"):
        block_modules.load_blocks()


def test_a_build_parameter_declared_unlike_another_blocks_names_both(clean_registry):
    """A block of one's own that declares `conf_thres` otherwise than netdef's YOLO heads is refused with both
    blocks and their modules named (it said "unlike another block" and showed only the other's Param); the same
    block defined again with a changed parameter (a notebook cell edited and run again) is not a conflict."""
    assert "Detect" in registry.BLOCKS  # netdef's blocks are loaded (builtin_blocks)
    with pytest.raises(NetdefError) as e:
        @registry.block("MyHead", params={"conf_thres": registry.Param(0.25, float, help="score threshold")})
        def my_head(net, x, prefix):
            return x
    msg = str(e.value)
    assert "block 'MyHead' of " in msg and "block 'Detect' of netdef.blocks.yolo" in msg and "--set conf_thres" in msg

    for default in (0.5, 0.7):
        @registry.block("MyGate", params={"gate": registry.Param(default, float)})
        def my_gate(net, x, prefix):
            return x
    assert registry.BLOCKS["MyGate"].params["gate"].default == 0.7


@pytest.mark.parametrize("command", ["build", "show"])
def test_a_block_that_returns_nothing_is_named_at_its_own_row(tiny, capsys, command):
    """A block without `return`: its own row is named, not the next row's AttributeError on a None input (which
    `show`'s row listing raised as a traceback)."""
    source = BLOCK_SOURCE.format(name="TinyConvRelu").replace("return net.conv", "net.conv")
    (tiny / "tiny_blocks.py").write_text(source)
    args = build_args(tiny) if command == "build" else ["show", str(tiny / "tiny.yaml"), "-w", str(tiny / "tiny.wts")]
    assert main([*args, "--blocks", str(tiny / "tiny_blocks.py")]) != 0
    assert capsys.readouterr().err.endswith("tiny.yaml:6: row 0 (TinyConvRelu): block TinyConvRelu "
                                            "(tiny_blocks.conv_relu) returned None: a block returns its output tensor "
                                            "(`return y`)\n")


@pytest.mark.parametrize("result, shown", [(lambda net, y: np.zeros(3), "ndarray"),
                                           (lambda net, y: y.shape, "Dims"),
                                           (lambda net, y: [y, "y"], "list")])
def test_a_block_that_returns_no_tensor_is_named_at_its_own_row(clean_registry, result, shown):
    """A block returning an array or a shape (not a tensor) is a BlockError naming its row, from the Python API and
    check_block alike (was an AttributeError from inside netdef where the output was marked or the next row used
    it)."""
    from netdef.errors import BlockError
    from netdef.network import Network
    from netdef.spec import build_network, parse_spec
    from netdef.testing.check_block import define_block

    @registry.block("ReturnsNoTensor")
    def returns_no_tensor(net, x, prefix):
        return result(net, net.activation(x, "relu", prefix))

    spec = parse_spec({"input": {"name": "x", "shape": [3, 4, 4]}, "output": "y",
                       "layers": [[-1, 1, "ReturnsNoTensor", {}, "a"], [-1, 1, "Act", {"kind": "relu"}, "b/relu"]]},
                      "mine")
    with pytest.raises(BlockError, match=rf"^<mine>:6: row 0 \(ReturnsNoTensor\): block ReturnsNoTensor "
                                         rf"\(.*returns_no_tensor\) returned {shown}, not a tensor: a block returns "
                                         r"the tensor its last net.\* call made"):
        build_network(spec, Network({}))
    with pytest.raises(BlockError, match=rf"^check_block: .*returns_no_tensor returned {shown}, not a tensor"):
        define_block(returns_no_tensor, [(1, 3, 4, 4)], {})


def test_a_block_that_cannot_take_net_x_prefix_or_has_no_name_is_refused_when_registered(clean_registry):
    """@block on a function of fewer than three positional parameters (fn(x), fn(net, *, x, prefix)) or with a name
    that is no string: refused at registration, not a TypeError inside every build that uses it (reported as a bug
    in the block) or a block no row can name."""
    for fn in (lambda x: x, lambda net, x: x, lambda net, *, x, prefix: x):
        with pytest.raises(NetdefError, match=r"^block 'Few' of .*: <lambda>\(.*\) does not take \(net, x, prefix\) "
                                              r"first: a block is fn\(net, x, prefix, ...\)"):
            registry.block("Few")(fn)
    for name in (5, "", None):
        with pytest.raises(NetdefError, match=r"a block's name is a non-empty string"):
            registry.block(name)
    registry.block("Many")(lambda *args: args[1])  # *args takes them


@pytest.mark.parametrize("param, why", [
    (registry.Param(0.5, int), r"the default 0.5, which its declaration refuses \(expected an int\)"),
    (registry.Param("a", str, choices=("b", "c")), r"the default 'a', which .* refuses \(use one of b, c\)"),
    (registry.Param(-1.0, valid=(lambda v: v > 0, "a positive number")), r"the default -1.0, .*\(expected a positive"),
])
def test_a_build_parameter_whose_default_its_declaration_refuses_is_named(clean_registry, param, why):
    """Param(0.5, int): --set would refuse 0.5, yet the block read it unchecked where not set; refused when it is
    registered."""
    with pytest.raises(NetdefError, match=rf"^block 'Thresholded' of .*: build parameter 'thr' has {why}"):
        registry.block("Thresholded", params={"thr": param})(lambda net, x, prefix: x)
    registry.block("Thresholded", params={"thr": registry.Param(None, float)})(lambda net, x, prefix: x)


def test_width_and_repeat_arguments_the_block_does_not_take_are_refused(tiny):
    """@block(width_args=("c2",)) on a function without c2 would leave its channels unscaled by width_multiple,
    silently, and a repeat_arg it lacks would pass the row's number as an unknown keyword at build time: both are
    refused when the module registers the block, naming the argument and what the function takes."""
    for option, what in [('width_args=("c3",)', "width_args names 'c3'"), ('repeat_arg="n"', "repeat_arg names 'n'")]:
        (tiny / "tiny_blocks.py").write_text(BLOCK_SOURCE.format(name="TinyConvRelu")
                                             .replace('width_args=("c2",)', option))
        with pytest.raises(NetdefError, match=rf"block 'TinyConvRelu' of tiny_blocks \(.*\): {what}, which conv_relu "
                                              r"does not take after \(net, x, prefix\): \(c2, k=3\)$"):
            block_modules.load_blocks([str(tiny / "tiny_blocks.py")])


def test_a_block_function_without_a_prefix_parameter_is_told_what_its_first_three_receive(tiny, capsys):
    """def conv_relu(net, x, c2, k=3): the row's c2 meets the prefix in c2 ('multiple values for argument'), and
    width_args c2 is not among the arguments after the prefix; both errors say what a block's first three
    parameters receive, not only that c2 came twice or is not taken."""
    note = ("(a block is fn(net, x, prefix, ...): its first three parameters, (net, x, c2), receive the network, the "
            "input and the row's key prefix)")
    source = BLOCK_SOURCE.format(name="TinyConvRelu").replace("x, prefix, c2", "x, c2")
    for width, error in [("", "tiny.yaml:6: row 0: bad arguments for TinyConvRelu: multiple values for argument "
                              f"'c2' {note}; TinyConvRelu takes (k=3)\n"),
                         ('width_args=("c2",)', "which conv_relu does not take after (net, x, prefix): (k=3) "
                                                f"{note}\n")]:
        (tiny / "tiny_blocks.py").write_text(source.replace('width_args=("c2",)', width))
        assert main([*build_args(tiny), "--blocks", str(tiny / "tiny_blocks.py")]) != 0
        assert capsys.readouterr().err.endswith(error)


def test_a_block_file_imports_the_modules_beside_it_as_a_script_does(tiny, capsys):
    """The block file imports tiny_helpers.py beside it, whose folder is not on sys.path: found, as `python
    tiny_blocks.py` would find it (the folder is on the module path while the file runs, and taken off again); a
    module found nowhere is an error naming the file's line."""
    (tiny / "tiny_helpers.py").write_text('ACT = "relu"\n')
    (tiny / "tiny_blocks.py").write_text("import tiny_helpers\n" + BLOCK_SOURCE.format(name="TinyConvRelu").replace(
        'act="relu"', "act=tiny_helpers.ACT"))
    path = list(sys.path)
    assert str(tiny) not in path
    assert main([*build_args(tiny), "--blocks", str(tiny / "tiny_blocks.py")]) == 0, capsys.readouterr().err
    assert sys.path == path
    assert sys.modules["tiny_helpers"].__file__ == str(tiny / "tiny_helpers.py")
    (tiny / "tiny_blocks.py").write_text("import tiny_nowhere\n" + BLOCK_SOURCE.format(name="TinyConvRelu"))
    assert main([*build_args(tiny), "--blocks", str(tiny / "tiny_blocks.py")]) != 0
    assert capsys.readouterr().err.endswith(f"No module named 'tiny_nowhere' at {tiny / 'tiny_blocks.py'}:1\n")
    assert sys.path == path


def test_a_block_files_folder_comes_after_the_installed_packages(tmp_path, clean_registry, monkeypatch):
    """A module beside the block file named like an installed one (the standard library's colorsys) does not replace
    it: the file's folder is appended to the module path, not put first."""
    (tmp_path / "colorsys.py").write_text("raise RuntimeError('the installed colorsys was shadowed')\n")
    (tmp_path / "shadow_blocks.py").write_text("import colorsys\n" + BLOCK_SOURCE.format(name="ShadowConv"))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)  # imported afresh, put back afterwards
    module = block_modules.load_block_module(str(tmp_path / "shadow_blocks.py"), "--blocks")
    assert Path(module.colorsys.__file__).parent != tmp_path


def test_a_bad_width_arg_of_a_partial_is_refused_by_name(clean_registry):
    """A block registered from a functools.partial (no __name__) with a width_args name it does not take: the
    registration error, not an AttributeError while making it."""
    import functools

    def conv(net, x, prefix, c2, k=1):
        return x

    with pytest.raises(NetdefError, match=r"^block 'P' of .*: width_args names 'c3', which functools\.partial\("):
        registry.block("P", width_args=("c3",))(functools.partial(conv, k=3))


def test_width_and_repeat_arguments_a_row_cannot_give_by_name_are_refused(clean_registry):
    """repeat_arg/width_args naming *args or **kwargs (no one argument: a row's {kwargs: 64} was scaled, its number
    passed as kwargs=3) or a positional-only repeat_arg (the number, passed by keyword where the row gives fewer
    arguments, failed as 'passed as a keyword' at the row) are refused when the block registers, naming the block
    and the parameter. A positional-only width argument is scaled where a row gives it (by position): registered."""
    def star(net, x, prefix, c2, *args, **kwargs):
        return x

    def only(net, x, prefix, c2=8, n=1, /):
        return x

    for fn, option, needle in [(star, {"width_args": ("args",)}, r"width_args names 'args', which is \*args"),
                               (star, {"repeat_arg": "args"}, r"repeat_arg names 'args', which is \*args"),
                               (star, {"width_args": ("kwargs",)}, r"width_args names 'kwargs', which is \*\*kwargs"),
                               (star, {"repeat_arg": "kwargs"}, r"repeat_arg names 'kwargs', which is \*\*kwargs"),
                               (only, {"repeat_arg": "n"}, r"repeat_arg names 'n', which is positional-only")]:
        with pytest.raises(NetdefError, match=rf"^block 'Bad' of .*: {needle}.*a parameter '\w+' that a row can name"):
            registry.block("Bad", **option)(fn)
        assert "Bad" not in registry.BLOCKS
    registry.block("Only", width_args=("c2",))(only)
    registry.block("Star", width_args=("c2",), repeat_arg="n")(star)  # c2 named, n taken by **kwargs: as before


def test_show_lists_the_rows_of_a_block_file_given_with_blocks(tiny, capsys):
    """`netdef show --blocks FILE.py`: the YAML's row of the block defined there is listed with its arguments, keys,
    shapes and parameters, and the key report passes; without --blocks the row's block is unknown."""
    args = ["show", str(tiny / "tiny.yaml"), "-w", str(tiny / "tiny.wts")]
    assert main(args) == 1
    assert "tiny.yaml:6: row 0: unknown block 'TinyConvRelu'" in capsys.readouterr().err
    assert main([*args, "--blocks", str(tiny / "tiny_blocks.py")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^0 +-1 +1 +40 +TinyConvRelu +conv1 +\(B, 4, 8, 8\) +\[c2=4\]$", out, re.M), out
    assert re.search(r"^ +conv1\.weight \[4, 1, 3, 3\]\n +conv1\.bias \[4\]$", out, re.M), out
    assert "tiny: 3 rows, 811 parameters" in out and "every key there is used" in out


def test_calibrate_with_a_block_file_given_with_blocks(tiny, capsys, monkeypatch):
    """`netdef calibrate --blocks FILE.py`. Without --blocks the YAML's block is unknown. With it, calibration
    needs a CUDA GPU and full TensorRT (it runs an engine): on TensorRT-RTX without a GPU it loads the block, the
    YAML, the data and the weights and then says so. With only the engine's run replaced by netdef's float64
    evaluator of the same recording network, the rest is real: the FP32 recording engine with the block is built
    (TensorRT-RTX), the ranges are collected and the table written, and an int8 build with it and --blocks works."""
    from netdef import runtime, trt_api
    from netdef.engine_file import read_meta
    from netdef.int8.calibrate import recording_network
    from netdef.spec import load_spec
    from netdef.verify.evaluate import evaluate

    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    np.save(tiny / "x.npy", x)
    table = tiny / "t.json"
    args = ["calibrate", str(tiny / "tiny.yaml"), "-w", str(tiny / "tiny.wts"), "-d", str(tiny / "x.npy"),
            "-o", str(table), "--method", "max", "--batch", "4"]
    assert main(args) == 1
    assert "tiny.yaml:6: row 0: unknown block 'TinyConvRelu'" in capsys.readouterr().err
    args += ["--blocks", str(tiny / "tiny_blocks.py")]
    gpu = trt_api.can_run_engines()  # on a GPU, the whole calibration runs as it is
    if not gpu:
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "error: calibration runs the FP32 network on a CUDA GPU with full TensorRT" in err, err
        assert not table.exists()

    class CpuEngine:
        """The recording engine's outputs computed by netdef's evaluator (float64) from its network definition."""

        def __init__(self, path):
            assert read_meta(path)["calibration_points"] == {"conv1": "conv", "fc": "linear"}  # the built engine
            net, _ = recording_network(load_spec(tiny / "tiny.yaml"), tiny / "tiny.wts")
            self.layers = trt_api.describe_layers(net.definition)
            self.outputs = [net.definition.get_output(i).name for i in range(net.definition.num_outputs)]

        def infer(self, x, as_numpy=True):
            values = evaluate(self.layers, {"input": x})
            return {name: values[name].numpy() for name in self.outputs}

    with monkeypatch.context() as m:
        if not gpu:
            m.setattr(trt_api, "can_run_engines", lambda: True)
            m.setattr(runtime, "Engine", CpuEngine)
        assert main(args) == 0
    assert f"wrote {table}: 2 ranges from 6 inputs" in capsys.readouterr().out
    amax = json.loads(table.read_text())["amax"]
    w = {k: torch.as_tensor(v).double() for k, v in read_wts(tiny / "tiny.wts").items()}  # flat arrays
    hidden = torch.nn.functional.conv2d(torch.as_tensor(x).double(), w["conv1.weight"].reshape(4, 1, 3, 3),
                                        w["conv1.bias"], padding=1).relu()
    assert amax == pytest.approx({"conv1": float(np.abs(x).max()), "fc": float(hidden.max())}, rel=1e-5)
    assert main(["build", str(tiny / "tiny.yaml"), "-w", str(tiny / "tiny.wts"), "-o", str(tiny / "int8.engine"),
                 "--precision", "int8", "--calibration", str(table), "--blocks", str(tiny / "tiny_blocks.py")]) == 0
    assert read_meta(tiny / "int8.engine")["precision"] == "int8"
