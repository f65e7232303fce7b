"""The `netdef` command line: one module per command (`register(subparsers)` and its `cmd_*` function), one
error handler (`guard.run_guarded`): errors print one line on stderr and exit 1; `--debug`, before or after
the command, shows the traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import __version__, interrupts
from ..errors import OptionError
from .guard import run_guarded
from .options import Invalid, checked

COMMAND_MODULES = ("export", "build", "refit", "run", "info", "show", "verify", "blocks", "calibrate", "detect", "bench",
                   "profile", "export_plan", "triton", "serve", "demo")
COMMAND_NAMES = tuple(m.replace("_", "-") for m in COMMAND_MODULES)


def commands() -> list[ModuleType]:
    """The command modules, imported on first use: importing them takes a quarter of a second, and a Ctrl-C then
    is `main`'s to report (`interrupted`), not a traceback from the import of `netdef.cli`."""
    return [importlib.import_module(f".{m}", __name__) for m in COMMAND_MODULES]

EPILOG = """typical use:
  netdef export torchvision:resnet50 -o weights/resnet50.wts
  netdef build resnet50 --weights weights/resnet50.wts -o resnet50.engine --precision fp16 --batch 1:8:32
  netdef refit resnet50.engine --weights weights/resnet50_epoch2.wts   # engines built with --refittable
  netdef run resnet50.engine --batch 8
  netdef info resnet50.engine
  netdef show yolov5s -w weights/yolov5s.wts     # rows, arguments, keys, shapes (no build)
  netdef verify resnet18 -w weights/resnet18.wts --model torchvision:resnet18 --cpu   # first divergent layer
  netdef bench resnet50.engine --batch 1,8,32 --cuda-graph
  netdef profile resnet50.engine --batch 1 --compare other.engine
  netdef calibrate resnet50 --weights weights/resnet50.wts --data images/ -o r50.calib.json
  netdef detect yolov5s.engine photos/ --out detections/
  netdef export-plan resnet50.engine -o resnet50.plan        # bare plan + resnet50.plan.json, for trtexec/C++
  netdef triton resnet50.engine --repo models/ --instances 2  # Triton model repository
  netdef serve resnet50.engine --devices 0,1 --max-queue-delay-us 500  # Triton via PyTriton
"""
DEBUG_HELP = "show Python tracebacks on errors"


def main(argv: list[str] | None = None) -> int:
    """Run `netdef ARGV` and return its exit status. The working folder is on the module path while it runs, as
    `python -m netdef.cli` has it (which puts it first; appended here, after the installed packages), so that
    `--blocks my_blocks`, `export mymodel:make` and a checkpoint pickling ./mymodel.py's classes find their modules
    with the `netdef` command too."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # before PyTorch's import fails on it with a fatal error
        print("netdef: error: the working folder was deleted: cd to an existing folder", file=sys.stderr)
        return 1
    from ..block_modules import folder_importable

    with folder_importable(cwd):  # `python -m` put it first; the script did not (taken off again after)
        return _main(sys.argv[1:] if argv is None else list(argv))


def run() -> None:
    """The `netdef` command (and `python -m netdef`): `main`, then the process exits with its status; a signal
    during the interpreter's shutdown after the command finished keeps that status (`interrupts.exit_on_signal`)."""
    status = main()
    interrupts.exit_on_signal(status)
    sys.exit(status)


def _main(argv: list[str]) -> int:
    """`main` once the working folder is importable."""
    hint = tensorrtx_usage(argv)
    if hint:
        print(f"netdef: error: {hint}", file=sys.stderr)
        return 2
    try:
        parser = make_parser()
    except KeyboardInterrupt:  # while the command modules are imported
        print("interrupted", file=sys.stderr)
        return 130
    args, extra = parser.parse_known_args(argv)
    hint = ultralytics_usage(args, extra)
    if hint:
        print(f"netdef: error: {hint}", file=sys.stderr)
        return 2
    if extra:  # the command's usage, not the list of commands
        command_parser(parser, getattr(args, "command", None)).error(f"unrecognized arguments: {' '.join(extra)}")
    twice = given_twice(command_parser(parser, getattr(args, "command", None)), argv)
    if twice:
        command_parser(parser, args.command).error(f"{twice} is given twice: give it once (argparse would keep the "
                                                   "last one without a word)")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(lambda: args.func(checked(args)), prog=f"netdef {args.command}", debug=args.debug)


def tensorrtx_usage(argv: list[str]) -> str | None:
    """For a tensorrtx program's command line given to netdef (`yolov5_det -s W.wts E.engine s`, `-d E.engine
    IMAGES`: no netdef command first, `-s` or `-d` among the words), netdef's commands that do the same; else None."""
    words = [w for w in argv if w != "--debug"]
    if not words or words[0] in COMMAND_NAMES and not (words[0] == "build" and "-s" in words):  # `build -s W E s`
        return None
    flag = next((w for w in words if w in ("-s", "-d")), None)
    if flag is None:
        return None
    rest = words[words.index(flag) + 1:]
    if flag == "-d":
        engine = rest[0] if rest else "ENGINE"
        images = rest[1] if len(rest) > 1 else "IMAGES"
        labels = f" --names {rest[2]}" if len(rest) > 2 else ""
        return (f"netdef has no `-d`: tensorrtx's `-d ENGINE IMAGES` is `netdef detect {engine} {images} --out "
                f"DIR{labels}` (class names: --names, else those the engine records from `netdef build --names` or "
                f"the checkpoint; thresholds: --conf and --iou, else YOLOv5's detect.py's and Ultralytics' "
                f"defaults; a plugin engine's are built in)")
    wts = rest[0] if rest else "WEIGHTS.wts"
    engine = rest[1] if len(rest) > 1 else "OUT.engine"
    arch = "ARCH"
    program = words[0].lower() if not words[0].startswith("-") else ""
    family, _, task = program.partition("_")
    if len(rest) > 1:
        from ..spec import available_archs  # only here: reading the architecture list takes a moment

        names, suffix = available_archs(), "" if task in ("", "det") else f"-{task}"
        scale = rest[2] if len(rest) > 2 else ""
        guesses = [f"{family}{scale}{suffix}", f"{family}{scale[:-1]}-p{scale[-1:]}{suffix}"] if family and scale \
            else []
        guesses.append(Path(wts).name.removesuffix(".wts"))  # yolov5s6.wts: its name
        arch = next((g for g in guesses if g in names), arch)
    how = ("the class count comes from the weights" if arch != "ARCH" else "ARCH: the family and scale, yolov5s, "
           "yolov8n-seg, resnet50; the class count comes from the weights; tensorrtx's `c gd gw`: README's 'Coming "
           "from tensorrtx'")
    return f"netdef has no `-s`: tensorrtx's `-s WTS ENGINE SCALE` is `netdef build {arch} -w {wts} -o {engine}` ({how})"


def _has(dest: str) -> Callable[[argparse.Namespace], bool]:
    """Whether a command's parsed arguments have option `dest` (the command takes it)."""
    return lambda a: hasattr(a, dest)


ULTRALYTICS_OPTIONS: dict[str, tuple[str, Callable[[argparse.Namespace], bool]]] = {
    # Ultralytics' export arguments no netdef command takes: netdef's option for each, where the command has it
    # (`netdef export` writes weights only: each of them is `netdef build`'s)
    "imgsz": ("--input-shape HxW", _has("input_shape")),
    "img-size": ("--input-shape HxW", _has("input_shape")),
    "img": ("--input-shape HxW", _has("input_shape")),
    "half": ("--precision fp16", _has("precision")),
    "int8": ("--precision int8 (with --calibration, from `netdef calibrate`)", _has("calibration")),
    "dynamic": ("--batch MIN:OPT:MAX (and --input-shape MIN:OPT:MAX for dynamic sizes)",
                lambda a: a.command == "build"),
    "batch-size": ("--batch", _has("batch")),
    "fp16": ("--precision fp16", _has("precision")),
    "nc": ("--set nc=N (the class count comes from the weights where they tell it)", _has("set")),
    "nms": ("--set head=plugin (decode and NMS inside the engine, for the YOLO architectures)",
            lambda a: a.command == "build"),
}
FORMATS = {  # Ultralytics' `format=engine`: what the command writes instead
    "export": "it writes .wts weights only; `netdef build ARCH -w WEIGHTS.wts -o NAME.engine` makes the engine",
    "build": "it always writes a TensorRT engine; `netdef export-plan` then writes the bare plan for trtexec, Triton "
             "or C++",
}


def ultralytics_usage(args: argparse.Namespace, extra: list[str]) -> str | None:
    """For an Ultralytics export argument among the words argparse did not take (`--imgsz 640`, `imgsz=640`,
    `--half`), the parsed command's option that does the same (for `export`, `netdef build`'s); else None
    (argparse reports what is left)."""
    command = getattr(args, "command", None)
    for i, word in enumerate(extra):
        name, eq, value = word.lstrip("-").partition("=")
        name = name.replace("_", "-")
        given = word if eq else "--" + name
        if not command or not (word.startswith("--") or eq):
            continue
        if name == "format" and command in FORMATS:
            return f"netdef {command} has no {given}: {FORMATS[command]}"
        if name not in ULTRALYTICS_OPTIONS:
            continue
        how, applies = ULTRALYTICS_OPTIONS[name]
        if command != "export" and not applies(args):
            continue
        value = value if eq else (extra[i + 1] if i + 1 < len(extra) and not extra[i + 1].startswith("-") else "")
        if how.startswith("--input-shape") and value.isdigit() and int(value) > 0:
            size = -(-int(value) // 32) * 32  # Ultralytics rounds imgsz up to a multiple of the stride
            how = f"--input-shape {size}x{size}" + (f" (Ultralytics rounds {value} up to {size}, a multiple of the "
                                                    f"YOLO stride 32)" if size != int(value) else "")
        if command == "export":
            return f"netdef export has no {given}: it writes weights only; give {how} to `netdef build`"
        return f"netdef {command} has no {given}: netdef's option is {how}"
    return None


EMPTY_NEEDS = {  # what an option or argument takes (by its dest), for the error on an empty value
    **dict.fromkeys(("output", "weights", "state_dict", "timing_cache", "calibration", "names", "input", "json",
                     "chart", "engine_out", "compare", "engine", "file"), "a file"),
    **dict.fromkeys(("repo", "workdir", "out"), "a folder (. for this one)"),
    **dict.fromkeys(("source", "model"), "a checkpoint, torchvision:NAME or module:callable"),
    "arch": "an architecture's name (resnet18) or its .yaml file", "blocks": "a module name or a .py file",
    "target": "an engine file, or an architecture's name or .yaml file", "data": "an image folder or an array file",
    "images": "image files or folders", "input_shape": "a size such as 640x640",
}


def refuse_empty(action: argparse.Action) -> None:
    """Make `action` (an option or argument that takes a value) report an empty value ('' of an unset "$VAR") as an
    error naming it (through `checked`), where the command would read it as not given or as the working folder;
    an OptionError its own `type` raises is reported the same way, not as a traceback."""
    convert = action.type or str
    label = "/".join(action.option_strings) or f"the {action.dest} argument"
    fix = f"give {EMPTY_NEEDS.get(action.dest, 'a value')}" + ("" if action.required or not action.option_strings
                                                                 else f", or leave {label} out")

    paths = EMPTY_NEEDS.get(action.dest, "").startswith(("a file", "a folder"))

    def check(text: str) -> Any:
        if text == "":
            return Invalid(OptionError(f"{label} '': an empty value (an unset shell variable?): {fix}"))
        if paths and (text != text.strip() or any(ord(c) < 32 for c in text)) and not os.path.lexists(text):
            return Invalid(OptionError(f"{label} {text!r}: a name with a line break, a tab or spaces at its ends (a "
                                       "copied line, or a shell quoting slip?): give the name without them"))
        try:
            return convert(text)
        except OptionError as e:
            return Invalid(e)

    check.__name__ = getattr(convert, "__name__", "value")  # argparse's "invalid NAME value" names the type
    action.type = check


def given_twice(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The first option of `parser` that takes one value (`--batch`, not the repeatable `--set`) given more than
    once in `argv` (`--batch 1:1:4 ... --batch 5:8:8`); None where none is."""
    single = {o: a for a in parser._actions if type(a) is argparse._StoreAction and a.option_strings
              for o in a.option_strings}
    seen: set[int] = set()
    for word in argv[:argv.index("--")] if "--" in argv else argv:
        name = word.split("=", 1)[0] if word.startswith("--") else word[:2] if word.startswith("-") else ""
        action = single.get(name)  # --batch=1:8, -oFILE: -o
        if action is not None:
            if id(action) in seen:
                return "/".join(action.option_strings)
            seen.add(id(action))
    return None


def command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of `command` (its usage goes with its errors); `parser` itself where there is none."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices.get(command, parser) if command else parser


def make_parser() -> argparse.ArgumentParser:
    """The parser of every netdef command; `--debug` is accepted before and after the command."""
    p = argparse.ArgumentParser(prog="netdef", epilog=EPILOG,
                                description="PyTorch weights (.wts) -> TensorRT engines, layer by layer.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"netdef {__version__}")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands():
        command.register(sub)
    for cmd in sub.choices.values():
        for action in cmd._actions:
            if action.nargs != 0 and action.choices is None:  # argparse refuses '' where there are choices
                refuse_empty(action)
        # SUPPRESS: no default that would hide `netdef --debug CMD`
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        cmd.allow_abbrev = False  # `--int8` is not `--int8-exclude`: an unknown option is said as such
    p.allow_abbrev = False
    return p


if __name__ == "__main__":
    sys.exit(main())
