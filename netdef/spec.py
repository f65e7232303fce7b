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
"""
from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import NetdefError, SpecError
from .network import Network
from .registry import Block, get_block, known_blocks

ARCH_DIRS = (Path("architectures"), Path(__file__).resolve().parent / "architectures")
RESERVED = {"name", "description", "source", "input", "output", "layers", "backbone", "head",
            "depth_multiple", "width_multiple", "key_prefix"}


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


@dataclass
class Spec:
    path: Path
    text: str
    name: str
    input_name: str
    input_shape: tuple[int, ...]  # without the batch
    output_names: list[str]
    rows: list[Row] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def where(self, row: Row) -> str:
        return f"{self.path}:{row.line}: row {row.index} ({row.block.name})"


def resolve_arch(name_or_path: str | Path) -> Path:
    """A YAML path, or an architecture name looked up in ./architectures and netdef's own folder."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise SpecError(f"architecture file not found: {p}")
        return p
    for d in ARCH_DIRS:
        cand = d / f"{p}.yaml"
        if cand.is_file():
            return cand
    available = sorted({q.stem for d in ARCH_DIRS if d.is_dir() for q in d.glob("*.yaml")})
    raise SpecError(f"no architecture '{name_or_path}' (a .yaml path or one of: {', '.join(available)})")


def load_spec(path: str | Path) -> Spec:
    """Parse and validate an architecture YAML; errors name the file and line."""
    path = resolve_arch(path)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SpecError(f"{path}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping with 'input' and 'layers'")
    key_lines = {k.value: k.start_mark.line + 1 for k, _ in root.value}

    def fail(key: str, msg: str) -> SpecError:
        return SpecError(f"{path}:{key_lines.get(key, 1)}: '{key}': {msg}")

    inp = data.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("shape"), list) or len(inp["shape"]) < 1 \
            or not all(isinstance(s, int) and s > 0 for s in inp["shape"]):
        raise fail("input", "expected {name: ..., shape: [C, H, W]} with positive integers")
    out = data.get("output", "output")
    out_names = [out] if isinstance(out, str) else list(out)

    row_nodes = []
    for section in ("layers", "backbone", "head"):
        for k, v in root.value:
            if k.value == section:
                if not isinstance(v, yaml.SequenceNode):
                    raise fail(section, "must be a list of rows")
                row_nodes.extend(v.value)
    raw_rows = (data.get("layers") or []) + (data.get("backbone") or []) + (data.get("head") or [])
    if not raw_rows:
        raise SpecError(f"{path}: no rows: give 'layers' (or 'backbone' and 'head')")

    gd = float(data.get("depth_multiple", 1.0))
    gw = float(data.get("width_multiple", 1.0))
    params = {k: v for k, v in data.items() if k not in RESERVED}
    spec = Spec(path, text, str(data.get("name", path.stem)), str(inp.get("name", "input")),
                tuple(inp["shape"]), out_names, params=params)
    key_prefix = str(data.get("key_prefix", "model"))
    keep = _head_channels(params)
    used: set[str] = set()
    for i, (raw, node) in enumerate(zip(raw_rows, row_nodes)):
        spec.rows.append(_parse_row(path, i, node.start_mark.line + 1, raw, params, gd, gw, key_prefix, keep, used))
    unused = [k for k in params if k not in used]  # a typo, or an Ultralytics option netdef ignores
    if unused:
        raise fail(unused[0], f"unknown top-level key: no row uses it (netdef reads {', '.join(sorted(RESERVED))} "
                        f"and keys that rows name in their args, such as nc and anchors)")
    return spec


def _head_channels(params: dict) -> int | None:
    """YOLOv5's `no = na * (nc + 5)`: the one channel count width_multiple leaves alone."""
    nc, anchors = params.get("nc"), params.get("anchors")
    if not isinstance(nc, int):
        return None
    if isinstance(anchors, list) and anchors and isinstance(anchors[0], list):
        return len(anchors[0]) // 2 * (nc + 5)
    if isinstance(anchors, int):
        return anchors * (nc + 5)
    return None


def _parse_row(path: Path, i: int, line: int, raw: Any, params: dict, gd: float, gw: float, key_prefix: str,
               keep: int | None, used: set[str]) -> Row:
    def fail(msg: str) -> SpecError:
        return SpecError(f"{path}:{line}: row {i}: {msg}")

    if not isinstance(raw, list) or len(raw) not in (4, 5):
        raise fail("expected [from, number, block, args] or [from, number, block, args, key-prefix]")
    frm, number, name, args = raw[:4]
    prefix = str(raw[4]) if len(raw) == 5 else f"{key_prefix}.{i}"
    multi = isinstance(frm, list)
    sources = []
    for f in (frm if multi else [frm]):
        if not isinstance(f, int):
            raise fail(f"'from' must be an integer or a list of integers, got {f!r}")
        src = i + f if f < 0 else f
        if src >= i or src < -1 or (f < 0 and src < -1):
            raise fail(f"'from' index {f} does not refer to an earlier row (valid: -1..-{i + 1} or 0..{i - 1})")
        sources.append(src)
    if not isinstance(number, int) or number < 1:
        raise fail(f"'number' must be a positive integer, got {number!r}")
    if not isinstance(name, str):
        raise fail(f"block must be a name, got {name!r}")
    try:
        blk = get_block(name)
    except KeyError:
        raise fail(f"unknown block '{name}'; known blocks: {', '.join(known_blocks())}") from None
    if isinstance(args, dict):
        pos, kw = [], {k: _substitute(v, params, used) for k, v in args.items()}
    elif isinstance(args, list):
        pos, kw = [_substitute(v, params, used) for v in args], {}
    else:
        raise fail(f"args must be a list or a mapping, got {args!r}")

    if number > 1:
        number = max(round(number * gd), 1)
    if gw != 1.0:
        _scale_width(blk, pos, kw, gw, keep)
    if blk.repeat_arg:
        _insert_arg(blk, pos, kw, blk.repeat_arg, number, fail)
        number = 1
    try:
        blk.signature.bind(None, None, prefix, *pos, **kw)
    except TypeError as e:
        params_doc = ", ".join(str(p) for p in list(blk.signature.parameters.values())[3:])
        raise fail(f"bad arguments for {name}: {e}; {name} takes ({params_doc})") from None
    return Row(i, line, sources, number, blk, pos, kw, prefix, multi)


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


def _scale_width(blk: Block, pos: list, kw: dict, gw: float, keep: int | None) -> None:
    """YOLOv5 rule: c2 -> ceil(c2 * width_multiple / 8) * 8, except the head's na * (nc + 5) channels."""
    for arg in blk.width_args:
        j = _param_index(blk, arg)
        if arg in kw:
            kw[arg] = _make_divisible(kw[arg], gw, keep)
        elif 0 <= j < len(pos):
            pos[j] = _make_divisible(pos[j], gw, keep)


def _make_divisible(c: Any, gw: float, keep: int | None) -> Any:
    if not isinstance(c, int) or c == keep:
        return c
    return int(math.ceil(c * gw / 8) * 8)


def _insert_arg(blk: Block, pos: list, kw: dict, arg: str, value: int, fail: Any) -> None:
    if arg in kw:
        if value != 1:
            raise fail(f"give the repeat count either as 'number' or as argument '{arg}', not both")
        return
    j = _param_index(blk, arg)
    if 0 <= j <= len(pos):
        pos.insert(j, value)
    else:
        kw[arg] = value


def build_network(spec: Spec, net: Network, input_hw: tuple[int, int] | None = None) -> list[str]:
    """Add the spec's layers to `net`; marks and returns the output names."""
    shape = list(spec.input_shape)
    if input_hw is not None:
        if len(shape) != 3:
            raise SpecError(f"{spec.path}: --input-shape H,W needs a [C, H, W] input")
        shape[1:] = input_hw
    x = net.input(spec.input_name, (-1, *shape))
    outputs: list[Any] = []
    for row in spec.rows:
        inputs = [x if s == -1 else outputs[s] for s in row.sources]
        net.context = spec.where(row)
        y = inputs if row.multi_input else inputs[0]
        try:
            if row.number == 1:
                y = row.block.fn(net, y, row.prefix, *row.args, **row.kwargs)
            else:
                for j in range(row.number):
                    y = row.block.fn(net, y, f"{row.prefix}.{j}", *row.args, **row.kwargs)
        except NetdefError as e:
            if spec.where(row) in str(e):
                raise
            raise type(e)(f"{spec.where(row)}: {e}") from None
        except (TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise SpecError(f"{spec.where(row)}: {type(e).__name__}: {e}") from e
        outputs.append(y)
    net.context = ""
    return _mark_outputs(spec, net, outputs[-1])


def _mark_outputs(spec: Spec, net: Network, last: Any) -> list[str]:
    if isinstance(last, dict):
        return [net.output(t, n).name for n, t in last.items()]
    if isinstance(last, (list, tuple)):
        if len(last) != len(spec.output_names):
            raise SpecError(f"{spec.path}: the last row gives {len(last)} outputs but 'output' names "
                            f"{len(spec.output_names)}: {spec.output_names}")
        return [net.output(t, n).name for t, n in zip(last, spec.output_names)]
    return [net.output(last, spec.output_names[0]).name]


def block_help(name: str) -> str:
    blk = get_block(name)
    params = ", ".join(str(p) for p in list(blk.signature.parameters.values())[3:])
    return f"{name}({params})\n    {inspect.getdoc(blk.fn) or ''}"
