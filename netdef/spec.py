"""Architecture YAML: load, validate, and build a `Network` from it.

Format (one row per layer, the Ultralytics row form with an optional fifth element):

    name: resnet18
    input: {name: input, shape: [3, 224, 224]}      # C, H, W; the batch is dynamic
    output: logits                                  # output tensor name(s)
    layers:                                         # or `backbone:` + `head:`
      # [from, number, block, args, key-prefix]
      - [-1, 1, ConvBnAct, {c2: 64, k: 7, s: 2, p: 3, conv: conv1, bn: bn1}, ""]
      - [-1, 2, ResLayer, {planes: 64, kind: basic}, layer1]

`from` is -1 (previous row), a negative offset, an absolute row index, or a list of them. `args`
is a list (positional) or a mapping; strings naming a top-level key (e.g. `nc`, `anchors`) are
replaced by its value. The key prefix defaults to `model.<row>` (Ultralytics' key names).
`depth_multiple` / `width_multiple` scale `number` and the blocks' channel arguments as YOLOv5 does.
A mapping after the row's elements holds row options: `[-1, 1, Linear, {c2: 10}, fc, {scale: false}]`
keeps that row's `number` and channel arguments as written (an output layer with a fixed class count).

A top-level `set: {bn_eps: 1.0e-5}` gives build parameters (the `--set KEY=VALUE` ones the row blocks declare)
for this architecture; `--set` replaces them.

A top-level `blocks: [my_pkg.blocks, my_blocks.py]` names the modules of the row blocks that are not
netdef's own (dotted names, or .py paths relative to the YAML file); see netdef.block_modules.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import inspect
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .blocks.common import _key  # importing netdef.blocks (its __init__) registers the built-in blocks too
from .block_modules import HOW_TO_LOAD, load_block_module, load_installed_blocks
from .errors import BlockError, FamilyError, NetdefError, OptionError, SpecError, WeightKeyError, raised_at
from .fileio import read_head, recognised, special_kind
from .network import IGNORED_KEY_SUFFIXES, Network
from .registry import UNBUILT, Block, Param, bad_arguments, declared_params, get_block, known_blocks, unscaled_channels

USER_DIR = Path("architectures")  # a user's own YAML files, looked up first (relative to the working folder)
PACKAGE_DIR = "architectures"  # netdef's YAML files, package data of netdef
RESERVED = {"name", "description", "source", "input", "output", "layers", "backbone", "head",
            "depth_multiple", "width_multiple", "scales", "key_prefix", "blocks", "set", "activation",
            "scale", "channels", "yaml_file"}  # yaml_file: the path Ultralytics records in a model's yaml
# Ultralytics' top-level `activation: nn.ReLU()` (Conv.default_act): torch's class -> netdef's activation
TORCH_ACTIVATIONS = {"ReLU": "relu", "SiLU": "silu", "LeakyReLU": "leaky", "Hardswish": "hardswish",
                     "Hardsigmoid": "hardsigmoid", "Sigmoid": "sigmoid", "Tanh": "tanh", "ReLU6": "relu6",
                     "GELU": "gelu", "Identity": "none"}
MAX_DIM = 2**31 - 1  # an input dimension (int32): past int64, TensorRT's add_input raised a TypeError
MAX_YAML_VALUES = 100_000  # values of a YAML with its aliases expanded (netdef's own have under 400)
MAX_REPEATS = 1000  # a row's `number`: a typo's 99999999 would define blocks until memory runs out
HEAD_KEYS = ("reg_max", "end2end")  # top-level keys of Ultralytics' YAMLs passed to the rows whose block takes them
ROW_OPTIONS = {"scale": "false keeps the row's number and channel arguments as written (no depth/width scaling)"}
SCALED_NAME = re.compile(r"^(.*?\d+)([nslmx])(.*)$")  # Ultralytics' family + scale names: yolov5s -> yolov5 + s


@dataclass
class Row:
    index: int
    line: int
    sources: list[int]  # absolute row indices; -1 is the network input
    number: int
    block: Block
    args: list
    kwargs: dict
    prefix: str
    multi_input: bool
    frm: Any = -1  # `from` as written
    n: int = 1  # `number` after depth scaling (a repeat_arg block receives it as an argument; `number` is then 1)
    # argument (position in `args`, or name in `kwargs`) -> the top-level key it names (`[nc]`: nc), for `show`
    named: dict[int | str, str] = field(default_factory=dict)


@dataclass
class Spec:
    path: Path | None  # None for an architecture given as text or a dict (parse_spec)
    text: str
    name: str
    input_name: str
    input_shape: tuple[int, ...]  # without the batch
    output_names: list[str]
    rows: list[Row] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    scale: str | None = None  # the `scales:` entry chosen by the name (yolov5s -> s)
    preset: dict[str, Any] = field(default_factory=dict)  # `set:` build parameters the YAML gives (--set wins)
    output_line: int = 1  # the line of `output:` (errors marking the outputs name it)

    def __repr__(self) -> str:  # not the text and every row (`netdef show` lists them)
        return (f"Spec({self.name!r}, {self.source}, input {self.input_name} {list(self.input_shape)}, "
                f"{len(self.rows)} rows, outputs {self.output_names})")

    @property
    def sha256(self) -> str:
        """The architecture's identity: the YAML text, the chosen scale, and the source of every block of the rows
        that is not netdef's own (editing such a block makes engines and calibration tables out of date)."""
        text = self.text if self.scale is None else f"{self.text}\n# scale: {self.scale}\n"
        blocks = {r.block.name: r.block for r in self.rows if r.block.source_sha}
        text += "".join(f"\n# block {n}: {b.module} {b.source_sha}" for n, b in sorted(blocks.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def identity(self) -> dict[str, Any]:
        """What an engine header records of the architecture it was built from: name, YAML path, sha256 (of the
        YAML, its scale and the source of its own blocks: `sha256`), and the modules of those blocks (a script's,
        `__main__`, with its file)."""
        own = sorted({r.block.origin if r.block.module == "__main__" else r.block.module
                      for r in self.rows if r.block.source_sha})
        path = None if self.path is None else str(self.path)
        return {"name": self.name, "path": path, "sha256": self.sha256} | ({"blocks": own} if own else {})

    @property
    def source(self) -> str:
        """Where the architecture comes from, as errors name it: its YAML path, or <name> for text (parse_spec)."""
        return str(self.path) if self.path is not None else f"<{self.name}>"

    def where(self, row: Row) -> str:
        """Where `row` comes from, as errors name it: `FILE:LINE: row N (Block)`."""
        return f"{self.source}:{row.line}: row {row.index} ({row.block.name})"

    def input_shape_for(self, input_hw: tuple[int, int] | None = None) -> tuple[int, ...]:
        """The (C, H, W) input a build uses: the YAML's, with H, W replaced by `input_hw` (--input-shape)."""
        shape = tuple(int(s) for s in self.input_shape)
        if input_hw is None:
            return shape
        if len(shape) != 3:
            raise OptionError(f"--input-shape H,W needs a [C, H, W] input; {self.source} has {list(shape)}")
        return (shape[0], *(int(v) for v in input_hw))

    def build_params(self) -> dict[str, Param]:
        """The build parameters (`--set`) the blocks of this architecture declare."""
        return declared_params(list({id(r.block): r.block for r in self.rows}.values()))

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared build parameter: the `given` value (converted and checked) or its default. A given
        key that no block of this architecture declares is an error, like an unknown YAML key."""
        declared = self.build_params()
        takes = (f"its blocks take {', '.join(sorted(declared))}" if declared
                 else "its blocks take no build parameters")
        for key, value in self.preset.items():  # the YAML's own `set:`, checked like --set
            if key not in declared:
                raise SpecError(f"{self.source}: set: {key}: no block of {self.name} declares it ({takes})")
            try:
                declared[key].convert(key, value)
            except OptionError as e:
                raise SpecError(f"{self.source}: set: {e}") from None
        unknown = sorted(set(given) - set(declared))
        if unknown:
            instead = TENSORRTX_CONSTANTS.get(unknown[0].upper().removeprefix("K").replace("_", ""))
            raise OptionError(f"--set {unknown[0]}: no block of {self.name} declares it ({takes})"
                              + (f"; tensorrtx's config.h {unknown[0]} is {instead} here" if instead else ""))
        cli = set(given)
        given = {**self.preset, **given}
        values = {k: (p.convert(k, given[k]) if k in given else p.default) for k, p in declared.items()}
        for key in given:  # a setting of another head's (conf_thres without the plugin head) would be ignored
            for other, allowed in declared[key].needs.items():
                if other in values and values[other] not in allowed:
                    where = f"--set {key}" if key in cli else f"{self.source}: set: {key}"
                    came = "--set" if other in cli else "the YAML's set:" if other in given else "its default"
                    raise OptionError(f"{where}: applies with {other}={'/'.join(map(str, allowed))} only, and "
                                      f"this build's {other} is {values[other]} ({came}): leave {key} out or set "
                                      f"{other}={allowed[0]}")
        return values


def resolve_arch(name_or_path: str | Path, *, own: bool = False) -> tuple[Path, str | None]:
    """(YAML path, scale) for a YAML path or an architecture name. Names are looked up in ./architectures,
    then in netdef's own (`own`: in netdef's only, as `available_archs(own=True)` lists them); a family file with
    `scales:` serves its scaled names as Ultralytics' do (yolov5s -> yolov5.yaml scale s, yolov5s6 ->
    yolov5-p6.yaml, yolov5s-v5 -> yolov5-v5.yaml)."""
    if isinstance(name_or_path, Mapping) or isinstance(name_or_path, str) and "\n" in name_or_path.strip():
        what = "dict" if isinstance(name_or_path, Mapping) else "YAML text"
        raise OptionError(f"architecture {what}: expected an architecture name, a YAML path or a Spec: make a Spec of "
                          f"the {what} with netdef.spec.parse_spec(arch, 'mynet') and pass that")
    if not isinstance(name_or_path, (str, os.PathLike)):
        what = f"the block function {getattr(name_or_path, '__name__', '?')}()" if callable(name_or_path) else \
            type(name_or_path).__name__
        raise OptionError(f"architecture {what}: expected an architecture name, a YAML path or a Spec (a block is "
                          "used through a YAML row naming it; netdef.testing.check_block.define_block defines one "
                          "block alone)")
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.is_file():
            return p, None
        family = _family_file(p.stem, p.parent, p.suffix)
        if family:
            return family
        if p.parent == Path(".") and p.stem in available_archs(own=own):  # yolo11n.yaml as Ultralytics takes it
            return resolve_arch(p.stem, own=own)
        note = ""
        if p.stem in available_archs():
            whose = "netdef's own" if p.stem in available_archs(own=True) else f"{USER_DIR}/'s"
            note = f" ({whose} {p.stem} is named without .yaml: `{p.stem}`)"
        other = p.with_suffix(".yml" if p.suffix == ".yaml" else ".yaml")
        note = note or (f" ({other} exists: give that path)" if other.is_file() else "")
        raise SpecError(f"architecture file not found: {p}{note}")
    for d in _arch_dirs(own):
        if (d / f"{p}.yaml").is_file():
            return d / f"{p}.yaml", None
        family = _family_file(str(p), d, ".yaml")
        if family:
            return family
    what = recognised(read_head(p)) if p.is_file() else special_kind(p) if p.exists() else None  # r18.wts, a FIFO
    if what is not None:
        raise SpecError(f"{p} is {what}, not an architecture: give the architecture's name (resnet18) or its .yaml "
                        "file, and the weights with --weights")
    here = next((f for f in (p.with_name(f"{p.name}.yaml"), p.with_name(f"{p.name}.yml")) if f.is_file()), None)
    if here is not None:  # a name is looked up in ./architectures/ and netdef's own, not the folder run from
        raise SpecError(f"no architecture '{name_or_path}' in {USER_DIR}/ or netdef's own, but {here} is a file: "
                        f"give its path ({here}), or move it to {USER_DIR}/ to build it by name")
    _refuse_digitless_scale(str(p), own)
    names = available_archs()
    scaled = SCALED_NAME.match(str(p))  # yolo11n-obb: the tasks netdef has of yolo11 at scale n
    kin = [n for n in names if scaled and re.fullmatch(re.escape(scaled[1] + scaled[2]) + r"(-[a-z0-9]+)?", n)]
    of_family = f": of {scaled[1]} at that scale netdef builds {', '.join(kin)}" if kin else ""
    if kin and scaled[1] == "yolo26" and str(p).endswith("-cls"):  # Ultralytics' yolo26-cls.yaml is yolo11-cls's
        of_family += f"; YOLO26's classifier is YOLO11's layout: build {str(p).replace('yolo26', 'yolo11', 1)}"
    if not kin:  # YOLO11N, yolov11n (Ultralytics names YOLO11 and YOLO26 without the v), resnet-50; yolo12n is
        # another architecture, not a misspelt yolo11n
        lower = str(p).lower()
        close = [n for n in (lower, re.sub(r"^yolov(1\d|2\d)", r"yolo\1", lower), lower.replace("-", "_"),
                             lower.replace("-", "")) if n in names][:1] \
            or ([] if lower.startswith("yolo") else difflib.get_close_matches(lower, names, n=3, cutoff=0.8))
        of_family = f": did you mean {' or '.join(close)}?" if close else ""
    listing = "a .yaml path works too" if of_family else f"a .yaml path or one of: {', '.join(names)}"
    raise SpecError(f"no architecture '{name_or_path}'{of_family} ({listing})")  # the names where none is near


def _refuse_digitless_scale(name: str, own: bool) -> None:
    """`mydetn` where `mydet.yaml` is a family with scale n: a scale letter is read after the name's digits, as
    Ultralytics reads yolov8n, and this name has none; say what to do instead of suggesting `mydet`."""
    for d in _arch_dirs(own):
        for q in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            scale = name[len(q.stem):]
            if not re.search(r"\d", q.stem) and name.startswith(q.stem) and scale and scale in _scales_of(q):
                raise SpecError(f"no architecture '{name}': {q} is a family (scales {', '.join(_scales_of(q))}) "
                                f"whose name has no digits, and netdef reads a scale letter after a name's digits, "
                                f"as Ultralytics does (yolov8n): add `scale: {scale}` to {q.name} and build "
                                f"`{q.stem}`, or name the file with digits ({q.stem}1.yaml builds as {q.stem}1{scale})")


def _family(name: str, scales: list[str] | None = None) -> tuple[str, str] | None:
    """Ultralytics' name rule: 'yolov5s6' -> ('yolov5-p6', 's'), 'yolov5s-v5' -> ('yolov5-v5', 's'); with a
    family's `scales` keys, its own letters after the digits ('my-yolo11t-neck' -> ('my-yolo11-neck', 't'))."""
    letters = "|".join(map(re.escape, sorted(map(str, scales), key=len, reverse=True))) if scales else "[nslmx]"
    name = re.sub(rf"(\d+)({letters})6(.+)?$", r"\1\2-p6\3", name)
    m = re.match(rf"^(.*?\d+)({letters})(.*)$", name)
    return (m.group(1) + m.group(3), m.group(2)) if m else None


def _family_file(name: str, folder: Path, suffix: str) -> tuple[Path, str] | None:
    """(family file in `folder`, scale) for a scaled name: Ultralytics' letters n/s/m/l/x, else any key of the
    family file's own `scales:` (a custom 't: [0.33, 0.30, 768]') right after a run of digits."""
    family = _family(name)
    if family and (folder / f"{family[0]}{suffix}").is_file():
        return folder / f"{family[0]}{suffix}", family[1]
    for digits in re.finditer(r"\d+", name):
        for end in range(digits.end() + 1, len(name) + 1):
            path = folder / f"{name[:digits.end()]}{name[end:]}{suffix}"
            if path.is_file() and name[digits.end():end] in map(str, _scales_of(path)):
                return path, name[digits.end():end]
    return None


def _arch_dirs(own: bool = False) -> list[Path]:
    """Where architecture files are looked up, in order: ./architectures, then netdef's; `own`: netdef's only."""
    dirs = [USER_DIR, Path(str(resources.files("netdef") / PACKAGE_DIR))]
    return dirs[1:] if own else dirs


def available_archs(own: bool = False) -> list[str]:
    """Every architecture name: plain files, and each scale of the family files; `own`: netdef's only (not
    ./architectures', whose YAMLs may import block modules of their own)."""
    names = set()
    for d in _arch_dirs(own):
        for q in d.glob("*.yaml") if d.is_dir() else []:
            scales = _scales_of(q)
            names.update(_scaled_names(q.stem, scales) if scales else [q.stem])
    return sorted(names)


def _scales_of(path: Path) -> list[str]:
    try:
        data = _parse_once(path.read_text(encoding="utf-8"))[1]  # read only: its keys
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):  # a UTF-16 file of an editor's: no scales
        return []
    scales = data.get("scales") if isinstance(data, dict) else None
    return list(scales) if isinstance(scales, dict) else []


def _scaled_names(family: str, scales: list[str]) -> list[str]:
    """yolov5 + s -> yolov5s; yolov5-p6 + s -> yolov5s6; yolov5-v5 + s -> yolov5s-v5."""
    m = re.match(r"^(.*?\d+)(-p6)?(.*)$", family)
    if not m:
        return [family]
    return [f"{m.group(1)}{s}{'6' if m.group(2) else ''}{m.group(3)}" for s in scales]


def load_spec(path: str | Path | Spec, *, own: bool = False) -> Spec:
    """Parse and validate an architecture YAML (a path or a name; a Spec is itself); errors name the file and
    line. `own`: a name is netdef's architecture, never one of ./architectures of that name."""
    if isinstance(path, Spec):
        return path
    path, scale = resolve_arch(path, own=own)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not a text file (byte {e.start} is not UTF-8): an architecture is YAML text") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read the architecture: {e.strerror or e}") from None
    return _spec(text, path, str(path), path.stem, path.parent, scale, named=False)


def parse_spec(text: str | Mapping[str, Any], name: str | None = None, *, base: str | Path = ".") -> Spec:
    """An architecture from YAML text or a dict of the same keys (a model defined in Python, no file): `name` names
    it (default: its `name:`, else 'model'; with a family's scale: parse_spec(yolo11_text, "yolo11n")); `blocks:`
    paths are relative to `base`. Errors name it <name> and the line of the text (of a dict: of its YAML dump).
    Its identity (engine headers, refit) is that text: a dict dumped with its keys in another order is another."""
    if isinstance(text, os.PathLike):
        raise SpecError(f"parse_spec({type(text).__name__}({os.fspath(text)!r})): that is a file's path; parse_spec "
                        "takes the YAML text itself, load_spec(path) reads a file")
    if name is None:
        name = _own_name(text, "model", "<model>")
    if isinstance(text, Mapping):
        try:
            text = yaml.safe_dump(_plain(text), sort_keys=False, default_flow_style=None, width=120)
        except yaml.YAMLError as e:
            raise SpecError(f"<{name}>: cannot be written as YAML (an architecture's values are numbers, strings, "
                            f"lists and mappings): {e}") from None
    if not isinstance(text, str) or not isinstance(name, str) or not name:
        raise SpecError(f"parse_spec({type(text).__name__}, {name!r}): expected YAML text or a dict, and a name")
    if "\n" not in text.strip() and (text.strip().endswith((".yaml", ".yml")) or os.path.isfile(text.strip())):
        raise SpecError(f"parse_spec({text.strip()!r}): that is a file's name; parse_spec takes the YAML text itself, "
                        f"load_spec(path) reads a file")
    return _spec(text, None, f"<{name}>", name, Path(base), None, named=True)


def _own_name(text: Any, fallback: str, where: str) -> str:
    """The `name:` of an architecture's text or dict (a string, or an integer as YAML reads `name: 18`), else
    `fallback` (a file's stem, 'model' for text); a name of another kind (a list, a mapping, a float, true) is a
    SpecError naming `where` and the line. load_spec and parse_spec both name a spec by it."""
    data, line = text, 1
    if isinstance(text, str):
        try:
            root, data = _parse_once(text)
        except (yaml.YAMLError, RecursionError):  # reported with `where` and the line when it is parsed
            return fallback
        if isinstance(root, yaml.MappingNode):
            line = next((k.start_mark.line + 1 for k, _ in root.value if k.value == "name"), 1)
    given = data.get("name") if isinstance(data, Mapping) else None
    if given is None or given == "":
        return fallback
    if not isinstance(given, (str, int)) or isinstance(given, bool):
        raise SpecError(f"{where}:{line}: 'name': expected a name (a string), got {given!r}: give one, quoted where "
                        f"YAML would read another value, or leave it out (the name is then {fallback!r})")
    return str(given)


def _plain(value: Any) -> Any:
    """A dict's values as YAML writes them: numpy numbers and arrays as Python's (np.int64(3) -> 3), tuples as
    lists; anything else as it is."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.tolist() if hasattr(value, "tolist") and type(value).__module__ == "numpy" else value


def _spec(text: str, path: Path | None, where: str, stem: str, base: Path, scale: str | None, *,
          named: bool) -> Spec:
    """Parse and validate an architecture's text; `where` (a path or <name>) begins its errors, `stem` names it
    (the YAML's `name:` wins unless `named`), `blocks:` paths are relative to `base`."""
    try:
        root, data = _parsed(text)
        check_yaml_tree(where, root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SpecError(f"{where}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    except RecursionError:
        raise SpecError(f"{where}: not valid YAML for an architecture: an alias refers to itself (or it nests too "
                        "deep)") from None
    if not isinstance(data, dict):
        raise SpecError(f"{where}: the top level must be a mapping with 'input' and 'layers'")
    key_lines = {k.value: k.start_mark.line + 1 for k, _ in root.value if isinstance(k, yaml.ScalarNode)}
    if any(not isinstance(k, str) for k in data):
        raise SpecError(f"{where}: top-level keys must be names, got {sorted(map(repr, data))}")

    def fail(key: str, msg: str) -> SpecError:
        return SpecError(f"{where}:{key_lines.get(key, 1)}: '{key}': {msg}")

    ultralytics = "input" not in data and isinstance(data.get("backbone"), list) and isinstance(data.get("head"), list)
    if ultralytics and not difflib.get_close_matches("input", [k for k in data if k not in RESERVED], n=1):
        # an Ultralytics model YAML as it ships: its predictor's input and netdef's YOLO output names
        data = {**data, "input": {"name": "images", "shape": [data.get("channels", 3), 640, 640]}}
        last = data["head"][-1] if data["head"] else None
        segment = isinstance(last, list) and len(last) > 2 and str(last[2]).startswith("Segment")
        data.setdefault("output", ["output", "proto"] if segment else "output")
    inp = data.get("input")
    if "input" not in data:
        near = difflib.get_close_matches("input", [k for k in data if k not in RESERVED], n=1)
        hint = f" ('{near[0]}' on line {key_lines.get(near[0], 1)} is not one: netdef reads 'input')" if near else ""
        raise SpecError(f"{where}: no 'input' key{hint}: give input: {{name: ..., shape: [C, H, W]}}")
    near = (difflib.get_close_matches("shape", [k for k in inp if isinstance(k, str)], n=1)
            if isinstance(inp, dict) and "shape" not in inp else [])
    if near:
        raise fail("input", f"no 'shape' ('{near[0]}' is not one: netdef reads name and shape)")
    if not isinstance(inp, dict) or not isinstance(inp.get("shape"), list) or len(inp["shape"]) < 1 \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in inp["shape"]):
        raise fail("input", "expected {name: ..., shape: [C, H, W]} with positive integers")
    if max(inp["shape"]) > MAX_DIM:  # TensorRT's add_input takes no such number (a TypeError traceback)
        raise fail("input", f"shape {inp['shape']}: dimensions must be positive integers that fit int32 (at most "
                            f"{MAX_DIM}): a typo?")
    if set(inp) - {"name", "shape"}:  # a dtype or a batch netdef would not use: the input is float32, its batch dynamic
        raise fail("input", f"unknown key(s) {sorted(set(inp) - {'name', 'shape'})}: netdef reads name and shape "
                            "(the input is float32 with a dynamic batch: `BuildOptions(batch=...)`, --batch)")
    in_name = inp.get("name", "input")
    if isinstance(in_name, bool) or not isinstance(in_name, (str, int)) or not str(in_name).strip():
        raise fail("input", f"'name': expected the input tensor's name (a non-empty string), got {in_name!r}")
    out = data.get("output", "output")
    out_names = [out] if isinstance(out, str) else out
    if not isinstance(out_names, list) or not out_names or not all(isinstance(n, str) and n.strip()
                                                                   for n in out_names):
        raise fail("output", f"expected an output name or a list of names, got {out!r}")
    clash = next((n for i, n in enumerate(out_names) if n == str(in_name) or n in out_names[:i]), None)
    if clash is not None:  # TensorRT would log an error renaming the tensor and keep another name for the output
        what = "the input's name" if clash == str(in_name) else "the name of another output"
        raise fail("output", f"'{clash}' is {what}: each input and output tensor needs a name of its own")

    row_nodes = []
    for section in ("layers", "backbone", "head"):
        for k, v in root.value:
            if k.value == section:
                if not isinstance(v, yaml.SequenceNode):
                    raise fail(section, "must be a list of rows")
                row_nodes.extend(v.value)
    raw_rows = (data.get("layers") or []) + (data.get("backbone") or []) + (data.get("head") or [])
    if not raw_rows:
        lists = [k for k, v in data.items() if k not in RESERVED and isinstance(v, list) and v and all(
            isinstance(r, list) and len(r) >= 4 and isinstance(r[2], str) for r in v)]  # `lyers:`: rows, misfiled
        if lists:
            raise fail(lists[0], "a list of rows under a key netdef does not read: give them as 'layers' (or "
                                 "'backbone' and 'head')")
        raise SpecError(f"{where}: no rows: give 'layers' (or 'backbone' and 'head')")

    _load_yaml_blocks(where, base, data, root, fail)
    # a family file named with one of its scales (my-yolo11n.yaml, a copy of yolo11.yaml): that scale, as Ultralytics
    # reads such a file
    own_scale = _family(stem, list(data["scales"])) or _family(stem) \
        if scale is None and isinstance(data.get("scales"), dict) else None
    scale = own_scale[1] if own_scale else scale
    if scale is None and data.get("scale") not in (None, ""):  # Ultralytics' `scale: n` (a model's saved yaml)
        scale = str(data["scale"])
    if "channels" in data and data["channels"] != inp["shape"][0]:
        raise fail("channels", f"{data['channels']!r} (the model's input channels), but input: shape [C, H, W] has C = "
                               f"{inp['shape'][0]}: make them agree (or leave Ultralytics' channels: out)")
    own_name = _own_name(text, stem, where)
    gd, gw, max_ch = _multiples(data, scale, fail, path, stem)
    params = {k: v for k, v in data.items() if k not in RESERVED}
    name = (stem if own_scale or named and scale is None else _scaled_names(stem, [scale])[0] if scale is not None
            else own_name)
    preset = data.get("set", {})
    if not isinstance(preset, dict) or not all(isinstance(k, str) for k in preset):
        raise fail("set", "expected a mapping of build parameters, e.g. {bn_eps: 1.0e-5}, as --set KEY=VALUE gives them")
    if "activation" in data and "default_act" not in preset:
        preset = {**preset, "default_act": torch_activation(data["activation"], fail)}
    spec = Spec(path, text, name, str(in_name), tuple(inp["shape"]), out_names,
                params=params, scale=scale, preset=dict(preset), output_line=key_lines.get("output", 1))
    key_prefix = str(data.get("key_prefix", "model"))
    width = (gw, max_ch, unscaled_channels(params))
    used: set[str] = set()
    for i, (raw, node) in enumerate(zip(raw_rows, row_nodes)):
        spec.rows.append(_parse_row(where, i, node.start_mark.line + 1, raw, params, gd, width, key_prefix, used,
                                    raw_rows, _prefix_text(node)))
    unused = [k for k in params if k not in used]  # a typo, or an Ultralytics option netdef ignores
    if unused:
        raise fail(unused[0], f"unknown top-level key: no row uses it (netdef reads {', '.join(sorted(RESERVED))} "
                        f"and keys that rows name in their args, such as nc and anchors)")
    return spec


def _parsed(text: str) -> tuple[Any, Any]:
    """(the YAML node tree, the data) of an architecture's text; the text's parse is kept (a family file serves
    each of its scales and tasks: a search of the architectures weights fit loads it 4 to 20 times), the data
    given as a copy of its own (a Spec's parameters are the data's values)."""
    import copy

    root, data = _parse_once(text)
    return root, copy.deepcopy(data)


@functools.lru_cache(maxsize=64)
def _parse_once(text: str) -> tuple[Any, Any]:
    return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)


def check_yaml_tree(where: str, root: Any, limit: int = MAX_YAML_VALUES) -> None:
    """Refuse a key given twice in one mapping (YAML loaders keep the last one silently), an alias inside its own
    anchor, and aliases that expand to more than `limit` values (nested anchors, a 'billion laughs'; a document
    without aliases has fewer values than characters, so a limit of its length refuses only expansions). Each
    node is walked once: an alias is its anchor's node, shared."""
    sizes: dict[int, int | None] = {}  # id(node) -> its size with aliases expanded; None while it is being counted

    def size(node: Any) -> int:
        line = node.start_mark.line + 1
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise SpecError(f"{where}:{line}: not valid YAML for an architecture: an alias refers to itself")
            return sizes[id(node)] or 0
        sizes[id(node)] = None
        children = [] if isinstance(node, yaml.ScalarNode) else node.value
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(where, node)
            children = [n for pair in children for n in pair]
        total = 1 + sum(map(size, children))
        if total > limit:
            raise SpecError(f"{where}:{line}: its aliases expand to more than {limit} values (anchors aliased in "
                            "aliases of one another), far more than its text holds: write the values out or alias "
                            "less")
        sizes[id(node)] = total
        return total

    if root is not None:  # an empty text: no tree
        size(root)


def _refuse_duplicate_keys(where: str, node: Any) -> None:
    """A key given twice in the mapping `node` is an error (YAML loaders keep the last one silently)."""
    seen: dict[tuple[str, str], int] = {}
    for k, _ in node.value:
        if isinstance(k, yaml.ScalarNode):
            key = (k.tag, k.value)  # 1 and '1' are different keys
            if key in seen:
                raise SpecError(f"{where}:{k.start_mark.line + 1}: '{k.value}' is given twice in one mapping "
                                f"(first on line {seen[key]}): keep one")
            seen[key] = k.start_mark.line + 1


def _load_yaml_blocks(where: str, base: Path, data: dict, root: Any, fail: Callable[[str, str], SpecError]) -> None:
    """Import the installed block modules and those the YAML's `blocks:` names (paths relative to `base`: the
    YAML's folder)."""
    load_installed_blocks()
    if "blocks" not in data:
        return
    nodes = next(v for k, v in root.value if k.value == "blocks")
    if not isinstance(nodes, yaml.SequenceNode) or not all(isinstance(n, yaml.ScalarNode) for n in nodes.value):
        raise fail("blocks", "expected a list of block modules: dotted names or .py paths (relative to this file)")
    for node in nodes.value:
        load_block_module(str(node.value), f"{where}:{node.start_mark.line + 1}: 'blocks'", base=base,
                          error=SpecError)


def torch_activation(text: Any, fail: Any) -> str:
    """Ultralytics' `activation: nn.LeakyReLU(0.1)` as netdef's activation name ('leaky:0.1')."""
    m = re.fullmatch(r"\s*(?:torch\.)?nn\.(\w+)\((.*)\)\s*", str(text))
    args = [a.strip() for a in m[2].split(",") if a.strip() and not a.strip().startswith("inplace")] if m else []
    if m is None or m[1] not in TORCH_ACTIVATIONS or len(args) > (1 if m[1] in ("LeakyReLU", "GELU") else 0):
        raise fail("activation", f"expected one of {', '.join(f'nn.{c}()' for c in TORCH_ACTIVATIONS)} (Ultralytics' "
                                 f"Conv activation; nn.LeakyReLU(slope), nn.GELU(approximate='tanh')), got {text!r}")
    name = TORCH_ACTIVATIONS[m[1]]
    if m[1] == "LeakyReLU":
        try:
            return f"leaky:{float(args[0].split('=')[-1]) if args else 0.01}"
        except ValueError:
            raise fail("activation", f"nn.LeakyReLU's slope must be a number, got {text!r}") from None
    return "gelu:tanh" if args and "tanh" in args[0] else name


def _multiples(data: dict, scale: str | None, fail: Any, path: Path | None,
               stem: str) -> tuple[float, float, int | None]:
    """(depth_multiple, width_multiple, max_channels) from the chosen `scales:` entry or the plain keys."""
    scales = data.get("scales")
    if scales is None:
        if scale is not None:
            raise fail("name", f"the file has no 'scales:' for scale '{scale}'")
        for key in ("depth_multiple", "width_multiple"):
            value = data.get(key, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise fail(key, f"expected a positive number, got {value!r}")
        return float(data.get("depth_multiple", 1.0)), float(data.get("width_multiple", 1.0)), None
    if not isinstance(scales, dict) or not all(
            isinstance(v, list) and len(v) in (2, 3) and all(isinstance(x, (int, float)) for x in v)
            for v in scales.values()):
        raise fail("scales", "expected {scale: [depth_multiple, width_multiple(, max_channels)]}")
    for name, v in scales.items():  # a negative or infinite multiple would scale every row to nonsense
        if not all(not isinstance(x, bool) and 0 < x < float("inf") for x in v):
            raise fail("scales", f"scale {name}: {v}: expected positive numbers [depth_multiple, width_multiple(, "
                                 "max_channels)]")
    if "depth_multiple" in data or "width_multiple" in data:
        raise fail("scales", "give either 'scales:' or depth_multiple/width_multiple, not both")
    if scale is None and len(scales) == 1:  # one scale (Ultralytics' rtdetr-l.yaml): that one, as Ultralytics
        scale = next(iter(scales))
    if scale is None:
        names = _scaled_names(Path(str(data.get("name") or stem)).stem, list(scales))
        if path is None:
            raise fail("scales", f"this architecture is a family: name one of its scales ({', '.join(names)}), e.g. "
                                 f"parse_spec(text, {names[0]!r})")
        scaled = path.with_name(_scaled_names(stem, list(scales)[:1])[0] + path.suffix)
        own = scaled.parent.resolve() == _arch_dirs(own=True)[0].resolve()  # not to be written into: a copy
        other = _built_by(names[0]) if scaled != path else None  # what the name of its first scale builds
        if own or other is not None and other.resolve() == path.resolve():  # its scales' names build this file
            raise FamilyError(fail("scales", f"this file is a family: build one of its scales by name "
                                             f"({', '.join(names)}) or by a path with the scale in the file name "
                                             f"({f'a copy named {scaled.name}' if own else scaled} for {path.name})"
                                   ).message, scales=names)
        first = next(iter(scales))  # a copy (of yolov8.yaml, say), built by its path: its `scale:` or its name
        add = (f"this file is a family and its name ({path.name}) carries no scale: add `scale: {first}` (one of "
               f"{', '.join(map(str, scales))}) to it")
        if scaled == path:  # no digits in the file name to put a scale after (custom.yaml)
            raise fail("scales", f"{add}; Ultralytics takes the first of its `scales:`, {first}, for a file named "
                                 "without one")
        raise fail("scales", f"{add}, or name the file with the scale ({scaled.name}: the path {scaled} builds this "
                             f"file at scale {first} without a copy)" + (f"; the name {names[0]} builds {other}, not "
                                                                         "this file" if other else ""))
    if scale not in scales:
        raise fail("scales", f"no scale '{scale}' (this family has {', '.join(map(str, scales))})")
    entry = scales[scale]
    return float(entry[0]), float(entry[1]), (int(entry[2]) if len(entry) == 3 else None)


def _built_by(name: str) -> Path | None:
    """The YAML file architecture `name` resolves to, None where it names none."""
    try:
        return resolve_arch(name)[0]
    except NetdefError:
        return None


def unknown_blocks(raw_rows: list[Any]) -> dict[str, list[int]]:
    """The block names of rows (`[from, number, block, args, ...]`) that no module registers and netdef does not
    knowingly leave out, with their rows: an architecture of new blocks hears of all of them at once."""
    unknown: dict[str, list[int]] = {}
    for i, raw in enumerate(raw_rows):
        name = raw[2] if isinstance(raw, list) and len(raw) >= 4 else None
        if isinstance(name, str) and name not in UNBUILT:
            try:
                get_block(name)
            except KeyError:
                unknown.setdefault(name, []).append(i)
    return unknown


def rows_text(blocks: Mapping[str, list[int]]) -> str:
    """'C2fX (rows 2, 4), SPPX (row 9)': block names with the rows that use them."""
    return ", ".join(f"{b} (row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))})"
                     for b, rows in blocks.items())


def _prefix_text(node: Any) -> str | None:
    """The key prefix of a row as written: the text of its fifth element where YAML reads it as a number or a
    boolean (`1.10` is the float 1.1, `010` the octal 8, `on` true, which str() would make '1.1', '8', 'True');
    None where it is no such scalar."""
    if not isinstance(node, yaml.SequenceNode) or len(node.value) < 5:
        return None
    item = node.value[4]
    if not isinstance(item, yaml.ScalarNode) or item.style is not None:  # quoted: a string as it is
        return None
    return item.value if item.tag.endswith((":int", ":float", ":bool")) else None


def _takes_input_list(blk: Any) -> bool:
    """Whether the block's input parameter (its second, `x`) is annotated as a list of tensors (Add, Concat, the
    detection heads), which a row's single 'from' would not give it."""
    params = list(blk.signature.parameters.values())
    if len(params) < 2:
        return False
    ann = params[1].annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return text.split("[")[0].rsplit(".", 1)[-1] in ("list", "List", "Sequence")


def _parse_row(where: str, i: int, line: int, raw: Any, params: dict, gd: float,
               width: tuple[float, int | None, set[int]], key_prefix: str, used: set[str],
               all_rows: list[Any] | None = None, prefix_text: str | None = None) -> Row:
    def fail(msg: str) -> SpecError:
        return SpecError(f"{where}:{line}: row {i}: {msg}")

    options = raw[-1] if isinstance(raw, list) and len(raw) in (5, 6) and isinstance(raw[-1], dict) else None
    raw = raw[:-1] if options is not None else raw
    if not isinstance(raw, list) or len(raw) not in (4, 5):
        raise fail("expected [from, number, block, args], [from, number, block, args, key-prefix], "
                   "and optionally a mapping of row options last")
    options = options or {}
    bad = sorted(map(str, set(options) - set(ROW_OPTIONS)))
    if bad or not isinstance(options.get("scale", True), bool):
        problem = f"unknown row option '{bad[0]}'" if bad else f"row option 'scale' must be true or false, " \
            f"got {options['scale']!r}"
        raise fail(f"{problem} (row options: {'; '.join(f'{k}: {v}' for k, v in ROW_OPTIONS.items())})")
    scaled = options.get("scale", True)
    frm, number, name, args = raw[:4]
    # a number (`0`, `1.10`) is a key prefix too, as written (str() of YAML's float 1.1 would drop the 0)
    prefix = (prefix_text if isinstance(raw[4], (int, float)) and prefix_text is not None else str(raw[4])) \
        if len(raw) == 5 else f"{key_prefix}.{i}"
    multi = isinstance(frm, list)
    sources = []
    for f in (frm if multi else [frm]):
        if f == "input":  # the network input, whichever row asks
            sources.append(-1)
            continue
        if not isinstance(f, int) or isinstance(f, bool):
            raise fail(f"'from' must be an integer, 'input' or a list of them, got {f!r}")
        src = i + f if f < 0 else f
        if src >= i or src < -1 or (f < 0 and src < -1):
            raise fail(f"'from' index {f} does not refer to an earlier row (valid: -1..-{i + 1} or 0..{i - 1}, "
                       "or 'input' for the network input)")
        sources.append(src)
    if not isinstance(number, int) or number < 1:
        raise fail(f"'number' must be a positive integer, got {number!r}")
    if number > MAX_REPEATS:
        raise fail(f"'number' {number} is more repeats than any network has (at most {MAX_REPEATS}): a typo?")
    if not isinstance(name, str):
        raise fail(f"block must be a name, got {name!r}")
    try:
        blk = get_block(name)
    except KeyError:
        if name in UNBUILT:
            raise fail(f"block '{name}' is not built by netdef: {UNBUILT[name]}. A block of your own of that name "
                       f"is registered with @netdef.registry.block('{name}'): {HOW_TO_LOAD}") from None
        others = {b: rows for b, rows in unknown_blocks(all_rows or []).items() if b != name}
        also = f" (also unknown: {rows_text(others)})" if others else ""
        near = _near_block(name)
        also += f": did you mean '{near}'?" if near else ""
        raise fail(f"unknown block '{name}'{also}; known blocks: {', '.join(known_blocks())}. A block of your own is "
                   f"registered with @netdef.registry.block('{name}'): {HOW_TO_LOAD}") from None
    if not multi and _takes_input_list(blk):
        raise fail(f"{name} takes a list of inputs, and 'from' {frm!r} gives one tensor: list the rows it joins, "
                   "e.g. [-1, 4]")
    if isinstance(args, dict):
        named = [k for k in args if not isinstance(k, str)]
        if named:
            raise fail(f"args: a mapping's keys are the block's argument names, got {named[0]!r}: give its name "
                       "(e.g. {c2: 64}), or a list for arguments by position")
        pos, kw = [], {k: _substitute(v, params, used) for k, v in args.items()}
    elif isinstance(args, list):
        pos, kw = [_substitute(v, params, used) for v in args], {}
    else:
        raise fail(f"args must be a list or a mapping, got {args!r}")
    named: dict[int | str, str] = {k: v for k, v in (args.items() if isinstance(args, dict) else enumerate(args))
                                   if isinstance(v, str) and v in params}
    for key in HEAD_KEYS:  # Ultralytics' parse_model gives its heads the YAML's `reg_max:` and `end2end:`
        if key in params and key not in kw and _param_index(blk, key) >= len(pos):
            kw[key] = _substitute(key, params, used)
            named[key] = key

    for arg, box, at in _channel_slots(blk, pos, kw):  # a count < 1 or a boolean failed later as a weight's shape
        value = box[at]
        if value is None and blk.signature.parameters[arg].default is None:
            continue  # a block's own `c2=None` (its input's channels, say)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            given = f"{named[at]} = {value!r}" if at in named else repr(value)
            raise fail(f"{name}'s channel argument '{arg}' must be a positive integer, got {given}"
                       + (" (YAML reads yes/no/on/off as booleans)" if isinstance(value, bool) else ""))
    if number > 1 and scaled:
        number = max(round(number * gd), 1)
    n = number
    if scaled and (width[0] != 1.0 or width[1] is not None):
        _scale_width(blk, pos, kw, *width)
    if blk.repeat_arg:
        at = _insert_arg(blk, pos, kw, blk.repeat_arg, number, fail)
        named = {k + 1 if isinstance(k, int) and at is not None and k >= at else k: v for k, v in named.items()}
        number = 1
    bad = bad_arguments(name, blk.signature, prefix, pos, kw)
    if bad:
        raise fail(bad)
    return Row(i, line, sources, number, blk, pos, kw, prefix, multi, frm, n, named)


def _substitute(v: Any, params: dict, used: set[str]) -> Any:
    """An argument naming a top-level key becomes its value (the key is then `used`)."""
    if isinstance(v, str):
        if v in params:
            used.add(v)
            return params[v]
        if v == "None":
            return None
    return v


def _param_index(blk: Block, arg: str) -> int:
    names = list(blk.signature.parameters)[3:]
    return names.index(arg) if arg in names else -1


def _channel_slots(blk: Block, pos: list, kw: dict,
                   args: tuple[str, ...] | None = None) -> Iterator[tuple[str, list | dict, int | str]]:
    """(argument, `pos` or `kw`, its index or key) of each channel argument a row gives: `args`, by default the
    block's width_args and its `c2` (netdef's name for a block's output channels, Linear's too)."""
    c2 = ("c2",) if "c2" in blk.signature.parameters and "c2" not in blk.width_args else ()
    names = args if args is not None else (*blk.width_args, *c2)
    for arg in names:
        j = _param_index(blk, arg)
        if arg in kw:
            yield arg, kw, arg
        elif 0 <= j < len(pos):
            yield arg, pos, j


def _scale_width(blk: Block, pos: list, kw: dict, gw: float, max_ch: int | None, keep: set[int]) -> None:
    """Ultralytics' rule: c2 -> ceil(min(c2, max_channels) * width_multiple / 8) * 8, except the channel
    counts a width exemption keeps (registry.width_exemption)."""
    for _, box, at in _channel_slots(blk, pos, kw, blk.width_args):
        box[at] = _make_divisible(box[at], gw, max_ch, keep)


def _make_divisible(c: Any, gw: float, max_ch: int | None, keep: set[int]) -> Any:
    if not isinstance(c, int) or isinstance(c, bool) or c in keep:
        return c
    return int(math.ceil(min(c, max_ch or c) * gw / 8) * 8)


def _insert_arg(blk: Block, pos: list, kw: dict, arg: str, value: int, fail: Any) -> int | None:
    """The repeat count `value` as argument `arg`: inserted at its position (returned) or given by name (None)."""
    if arg in kw:
        if value != 1:
            raise fail(f"give the repeat count either as 'number' or as argument '{arg}', not both")
        return None
    j = _param_index(blk, arg)
    if 0 <= j <= len(pos):
        pos.insert(j, value)
        return j
    kw[arg] = value
    return None


RowObserver = Callable[[Network, "Row | None", Any], None]
_row_observer: ContextVar[RowObserver | None] = ContextVar("netdef_row_observer", default=None)


@contextmanager
def observing_rows(observer: RowObserver | None) -> Iterator[None]:
    """Within the block, `build_network` calls `observer(net, None, input)` once it made the input, then
    `observer(net, row, output)` after each row (how `netdef show` sees each row's keys and shapes); None: no
    observer (networks built on the side)."""
    token = _row_observer.set(observer)
    try:
        yield
    finally:
        _row_observer.reset(token)


# tensorrtx's config.h constants (kNumClass, CLASS_NUM, kConfThresh, ...: upper case, without k and _) -> netdef's
TENSORRTX_CONSTANTS = {
    "NUMCLASS": "the class count of the weights (`--set nc=N` only checks it)",
    "CLASSNUM": "the class count of the weights (`--set nc=N` only checks it)",
    "CONFTHRESH": "`netdef detect --conf` (a plugin head's: `--set conf_thres=` at build)",
    "NMSTHRESH": "`netdef detect --iou` (a plugin head's: `--set iou_thres=` at build)",
    "MAXNUMOUTPUTBBOX": "`--set max_det=` at build (a plugin head), `netdef detect --max-det`",
    "BATCHSIZE": "`--batch 1:N` (dynamic up to N; `--batch N` fixes it at N)",
    "MAXBATCHSIZE": "`--batch 1:N` (dynamic up to N; `--batch N` fixes it at N)",
    "INPUTH": "`--input-shape HxW`", "INPUTW": "`--input-shape HxW`",
}


def _near_block(name: str) -> str | None:
    """The known block `name` is a misspelling of: the same name in other letter case (`c2f`, `SPPF`'s `sppf`)
    first, else the closest by spelling, compared in lower case (`C2F` is C2f, not C2)."""
    known = known_blocks()
    by_case = {b.lower(): b for b in reversed(known)}  # the first of names equal but for case
    if name.lower() in by_case:
        return by_case[name.lower()]
    near = difflib.get_close_matches(name.lower(), list(by_case), n=1, cutoff=0.8)
    return by_case[near[0]] if near else None


def build_network(spec: Spec, net: Network, input_hw: tuple[int, int] | None = None) -> list[str]:
    """Add the spec's layers to `net`; marks and returns the output names. A NetdefError raised while a row is
    built gets the row's location; any other exception is a bug in the block (BlockError)."""
    observe = _row_observer.get() or (lambda *_: None)
    x = net.input(spec.input_name, (-1, *spec.input_shape_for(input_hw)))
    observe(net, None, x)
    outputs: list[Any] = []
    for row in spec.rows:
        inputs = [x if s == -1 else outputs[s] for s in row.sources]
        net.where, net.scope = spec.where(row), row.prefix
        net.blocks_built.append(row.block.name)
        y = inputs if row.multi_input else inputs[0]
        kept = [p for p in net.fp32_rows if fnmatch.fnmatchcase(row.prefix, p)]  # --fp32-rows: the row in float32
        net.fp32_matched.update(kept)
        try:
            with net.fp32(row.prefix) if kept else nullcontext():
                if row.number == 1:
                    y = row.block.fn(net, y, row.prefix, *row.args, **row.kwargs)
                else:
                    for j in range(row.number):
                        y = row.block.fn(net, y, f"{row.prefix}.{j}", *row.args, **row.kwargs)
                        if j < row.number - 1:  # each repeat's output is module prefix.j's (the last one: the row's)
                            _row_output(net, y, spec.where(row), f"{row.prefix}.{j}")
            net.check_layers()  # a layer TensorRT rejected is blamed on this row, not on the next one
        except NetdefError as e:
            more = _missing_row_hint(spec, row, net, e.key) if isinstance(e, WeightKeyError) and e.key else ""
            if more:
                raise e.with_hint(more, spec.where(row)) from None
            raise e.at(spec.where(row))
        except Exception as e:  # noqa: BLE001  anything else escaping a block: its arguments or its own bug
            try:  # a layer TensorRT rejected inside the block (the block then failed on its output): say which
                net.check_layers()
            except NetdefError as rejected:
                raise rejected.at(spec.where(row)) from e
            lines = str(e).strip().splitlines() or [""]
            given = ", ".join([*map(repr, row.args), *(f"{k}={v!r}" for k, v in row.kwargs.items())])
            raise BlockError(f"block {row.block.name} ({row.block.module}.{row.block.fn.__name__}) raised "
                             f"{type(e).__name__}: {lines[0]}{' ...' if len(lines) > 1 else ''}{raised_at(e)} (check "
                             f"the row's inputs and arguments ({given}) against its signature, which `netdef blocks` "
                             f"lists; if they are right, a bug in the block or a layer TensorRT rejected; --debug shows "
                             f"the traceback)",
                             where=spec.where(row)) from e
        if y is None:  # a block without `return`: the next row would fail on its input, blamed on that row
            raise BlockError(f"block {row.block.name} ({row.block.module}.{row.block.fn.__name__}) returned None: a "
                             f"block returns its output tensor (`return y`)", where=spec.where(row))
        if not returns_tensors(net, y):  # an array, a shape: an AttributeError in the next row or at the output
            raise BlockError(f"block {row.block.name} ({row.block.module}.{row.block.fn.__name__}) returned "
                             f"{type(y).__name__}, not a tensor: a block returns the tensor its last net.* call made "
                             f"(a list of them for several outputs; net.constant(array, name) makes one of an array)",
                             where=spec.where(row))
        outputs.append(y)
        _row_output(net, y, spec.where(row), row.prefix)
        observe(net, row, y)
    net.where, net.scope = "", ""
    return _mark_outputs(spec, net, outputs[-1])


def _row_output(net: Network, y: Any, where: str, prefix: str) -> None:
    """Record tensor `y` as the output of module `prefix`, made by the row at `where` (verify compares it with that
    module's output where no layer of the block claimed the module)."""
    if not hasattr(y, "name"):
        return
    net.row_ends.setdefault(y.name, (where, prefix))
    if prefix and prefix not in net.claimed:
        for earlier in [t for t, p in net.row_outputs.items() if p == prefix]:
            del net.row_outputs[earlier]  # rows sharing a prefix (a Sequential's parts): the last one ends it
        net.row_outputs.setdefault(y.name, prefix)


def _missing_row_hint(spec: Spec, row: Row, net: Network, key: str) -> str:
    """Where the weights show that the YAML lacks a row before `row`, whose weight `key` did not fit: the keys just
    before `key` in the file are read by no row before `row` and named by no row from it on (as a row's key prefix or
    a key an argument names), a line naming their modules; '' otherwise."""
    order = list(net.weights)
    if key not in net.weights:
        return ""
    run = []  # the keys right before `key` in the file that no row has read
    for k in reversed(order[:order.index(key)]):
        if k.endswith(IGNORED_KEY_SUFFIXES):
            continue
        if k in net.used or k in net.skipped:
            break
        run.append(k)
    names = {n for later in spec.rows[row.index:] for n in _row_key_names(later)}
    if not run or any(k == n or k.startswith(n + ".") for k in run for n in names):
        return ""
    modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in reversed(run)))
    named = ", ".join(modules[:4]) + (", ..." if len(modules) > 4 else "")
    return (f"\nThe weights' {named} ({len(run)} key(s) just before '{key}' in the file) are read by no row before "
            f"row {row.index} and named by none after it: is their row missing from the YAML before row {row.index}? "
            "(the rows after a missing one get its input, and their `from` indices shift)")


def _row_key_names(row: Row) -> set[str]:
    """The key prefixes `row` can read: its own prefix and the keys its arguments name (`conv: conv1`, '/abs')."""
    names = {row.prefix} if row.prefix else set()
    values = [*row.args, *row.kwargs.values()]
    for v in [*values, *(x for v in values if isinstance(v, list) for x in v)]:
        if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
            names.add(_key(row.prefix, v))  # as the blocks resolve their key arguments
    return names


def returns_tensors(net: Network, y: Any) -> bool:
    """Whether a block's result `y` is a TensorRT tensor, or a list, tuple or dict of them (a head's outputs)."""
    items = y.values() if isinstance(y, dict) else y if isinstance(y, (list, tuple)) else [y]
    return all(isinstance(t, net.trt.ITensor) for t in items)


def _mark_outputs(spec: Spec, net: Network, last: Any) -> list[str]:
    """Mark the last row's output(s) with the YAML's output names; errors name the file and the 'output' line."""
    where = f"{spec.source}:{spec.output_line}"
    if isinstance(last, dict):
        named = list(last.items())
    else:
        many = isinstance(last, (list, tuple))
        tensors = list(last) if many else [last]
        if len(tensors) != len(spec.output_names):
            raise SpecError(f"{where}: the last row gives {f'{len(tensors)} outputs' if many else 'one output'} but "
                            f"'output' names {len(spec.output_names)}: {spec.output_names}")
        named = list(zip(spec.output_names, tensors))
    try:
        return [net.output(t, n).name for n, t in named]
    except SpecError as e:
        raise e.at(f"{where}: 'output'") from None


def block_help(name: str, described: dict[str, str] | None = None) -> str:
    """A block's signature, module and docstring, and the build parameters it declares; a parameter in
    `described` (parameter -> the block described with it; this block's are added) is named, not described again
    (one declaration serves every block: `registry.block`)."""
    blk = get_block(name)
    args = ", ".join(str(p) for p in list(blk.signature.parameters.values())[3:])
    where = blk.module if blk.module.startswith("netdef.") else blk.origin
    doc = inspect.getdoc(blk.fn)
    text = f"{name}({args})  [{where}]" + (f"\n    {doc}" if doc else "")  # no blank line for a block without one
    described = {} if described is None else described
    for key, p in blk.params.items():
        if key in described:
            text += f"\n    --set {key}=... (as under {described[key]})"
            continue
        described[key] = name
        choices = f", one of {', '.join(map(str, p.choices))}" if p.choices else ""
        text += f"\n    --set {key}=... (default {p.default!r}{choices}) {p.help}".rstrip()
    return text
