"""Layer-by-layer comparison of netdef's tensors with PyTorch's module outputs, and its report."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tools.verify import max_rel_error
from ..trt_api import LayerDescription
from .reference import ModuleOutputs

OUTPUT_MODULE = "(model output)"
NOT_RUN = "module not run by forward()"  # the model has it, but uses its weights in a function
NOT_FINITE = "values not finite"
# On the CPU a layer also passes within this many times PyTorch's own error at that module in the network's
# precision, float32 for fp32 and float16 for fp16 (a network cannot be closer to the float64 model than that
# arithmetic is; random weights and BatchNorm statistics amplify its error through deep networks beyond the plain
# tolerance).
FLOOR_FACTOR = 2.0
FLOOR_CAPS = {"float32": 100.0, "float16": 5.0}  # ... but never beyond this many times the tolerance (ties in a
# top-k, say, make float32's error large: the row is then not compared at all)
FP16_TINY = 2.0 ** -14  # float16's smallest normal value


ROUNDING_NOTE = "this row cannot tell a mistake from rounding"  # a failing row PyTorch's own rounding moves as far


@dataclass
class Row:
    """One compared layer: its name, the PyTorch module it is compared with, its output shape, error and verdict."""

    layer: str
    module: str
    shape: tuple[int, ...]
    error: float | None  # max relative error; None when not compared
    status: str  # "pass", "FAIL" or "skip"
    note: str = ""
    why: str = ""  # the explanation behind the note, the same for many rows: the table prints it once, as a footnote
    where: str = ""  # the YAML row that made the layer, "file:line: row N (Block)" ('' where none did)


@dataclass
class Report:
    """The rows in network order; `first_failure` is where the network first diverges from PyTorch."""

    arch: str
    mode: str
    tol: float
    rows: list[Row]
    unmatched: int  # layers with no PyTorch module of their name
    uncompared: list[str] = field(default_factory=list)  # modules whose weights are read but whose output no row compared
    floor: str = ""  # layers may also pass within FLOOR_FACTOR x PyTorch's own error in this type ('': not)
    # YAML rows whose output no row compared, between the last passing row and the first failure ("where (layer)"):
    # a mistake there (a ConvBnAct without its activation, in a row named after its convolution) shows first at
    # the failure
    unchecked_before: list[str] = field(default_factory=list)
    # the first failure's input against its module's input (max relative error; None: not compared): a layer with
    # weights whose input matches made the difference itself
    input_error: float | None = None
    # where that input differs: the layers since the last passing one that no module checks (a block's inner mean,
    # max and concatenation)
    unchecked_layers: list[str] = field(default_factory=list)
    shared: dict[str, int] = field(default_factory=dict)  # uncompared modules the model ran several times: their calls

    def __post_init__(self) -> None:
        if isinstance(self.floor, bool):  # as it was recorded before fp16 networks had a floor: float32's
            self.floor = "float32" if self.floor else ""

    @property
    def input_differs(self) -> bool:
        """Whether the first failure's input differs from its module's beyond any bound a layer passes within
        (the tolerance, widened by PyTorch's own error where `floor`): the divergence began before it."""
        bound = self.tol * FLOOR_CAPS.get(self.floor, 1.0)
        return self.input_error is not None and self.input_error > bound

    @property
    def input_matches(self) -> bool:
        """Whether the first failure's input is within the tolerance of its module's: the layer itself differs."""
        return self.input_error is not None and self.input_error <= self.tol

    @property
    def first_failure(self) -> Row | None:
        """The first row, in network order, above the tolerance (None when every compared row passed)."""
        return next((r for r in self.rows if r.status == "FAIL"), None)

    @property
    def ok(self) -> bool:
        """True when no compared layer failed and at least one was compared (what `netdef verify` exits 0 on)."""
        return self.first_failure is None and any(r.status == "pass" for r in self.rows)

    def table(self) -> str:
        """The rows as a text table: layer, module, shape, max relative error, result; each explanation once, as a
        numbered footnote under the table."""
        whys = list(dict.fromkeys(r.why for r in self.rows if r.why))
        head = ("layer", "module", "shape", "max rel err", "result")
        body = [(r.layer, r.module, "x".join(map(str, r.shape)), "-" if r.error is None else f"{r.error:.2e}",
                 f"{r.status} {r.note}{f' [{whys.index(r.why) + 1}]' if r.why else ''}".strip()) for r in self.rows]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(4)]
        return "\n".join(["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4]
                          for row in [head, *body]] + [f"[{i}] {why}" for i, why in enumerate(whys, 1)])

    def summary(self) -> str:
        """One line: the verdict, counts, the first divergent layer (or the largest errors) and modules never
        compared."""
        status: dict[str, str] = {}  # layer -> its verdict (a layer compared with several modules fails if one fails)
        for r in self.rows:
            if status.get(r.layer) != "FAIL":
                status[r.layer] = r.status
        counts = {s: sum(v == s for v in status.values()) for s in ("pass", "FAIL", "skip")}
        compared = counts["pass"] + counts["FAIL"]
        first = self.first_failure
        verdict = "PASS" if self.ok else "FAIL"
        within = f"{self.tol:g}" + (f" (or {FLOOR_FACTOR:g}x PyTorch's own {self.floor} error, where larger, up to "
                                    f"{FLOOR_CAPS[self.floor] * self.tol:g})" if self.floor else "")
        layers = f"{self.unmatched} layer{'' if self.unmatched == 1 else 's'}"
        text = (f"verify {self.arch} ({self.mode}): {verdict}: {counts['pass']} of {compared} matched layers within "
                f"{within}, {counts['skip']} skipped, {layers} without a PyTorch module")
        if first is not None:
            text += f"; first divergent layer: {first.layer} ({first.module}){_err_text(first)}"
        elif compared:
            text += _largest_errors(self.rows)
        if compared == 0:
            text += "; no layer could be compared (do the layer names follow the model's module names?)"
        if self.uncompared:
            few = ", ".join(self.uncompared[:6]) + (", ..." if len(self.uncompared) > 6 else "")
            text += (f"; {len(self.uncompared)} module(s) whose weights are read were never compared ({few}): a "
                     "mistake there shows only through later layers (not at all behind a small layer scale)")
            not_run = {r.module for r in self.rows if r.note == NOT_RUN}
            unrun = [m for m in self.uncompared if m in not_run]
            shared = [m for m in self.uncompared if m in self.shared and m not in not_run]
            if len(unrun) + len(shared) < len(self.uncompared):
                text += "; a block author names a layer after " + \
                        ("each" if not unrun and not shared else "each of the others") + " to have it compared"
            if shared:  # one module run on several inputs (CBAM's MLP on the avg- and max-pooled features)
                text += (f"; {'all' if len(shared) == len(self.uncompared) else len(shared)} of them "
                         f"({', '.join(f'{m} ({self.shared[m]} calls)' for m in shared[:6])}"
                         f"{', ...' if len(shared) > 6 else ''}) cannot be: the model runs each several times, so no "
                         "one output of theirs stands for the module")
            if unrun:  # torchvision's Swin passes qkv.weight to F.linear: a layer named after qkv cannot help
                text += (f"; {'all' if len(unrun) == len(self.uncompared) else len(unrun)} of them "
                         f"({', '.join(unrun[:6])}{', ...' if len(unrun) > 6 else ''}) cannot be: the model never runs "
                         "their forward() (it passes their weights to a function), so no output of theirs exists")
        return text

    def __str__(self) -> str:
        """What `netdef verify` prints: the table, then the summary line."""
        return f"{self.table()}\n{self.summary()}"


def _largest_errors(rows: list[Row]) -> str:
    """'; max rel error E at LAYER, the output's E2': the worst compared layer, and the model output's error."""
    compared = [r for r in rows if r.error is not None and r.status != "skip"]
    worst = max(compared, key=lambda r: r.error or 0.0)
    outs = [r.error for r in compared if r.module == OUTPUT_MODULE]
    out = f", the output's {max(outs):.3g}" if outs else ""
    return f"; max rel error {worst.error:.3g} at {worst.layer}{out}"


def _err_text(row: Row) -> str:
    return f": {row.note}" if row.error is None else f": max rel error {row.error:.3g}"


def module_matcher(matches: Mapping[str, str], modules: set[str],
                   claimed: Iterable[str]) -> Callable[[str], str | None]:
    """layer name -> the PyTorch module whose output that layer's output equals, or None: `Network.matches`
    first, then the layer's own name (`layer1.0.conv1`), then its name with '/' read as '.' (`layer1.0/relu`
    -> `layer1.0.relu`). A module in `claimed` (`Network.claimed`: every module `match` ever named, also those
    a later match of the same tensor took it from) is only the matched layer's: the matrix multiply `fc` before
    the bias add `fc/add_bias` is not compared with module `fc`, even with `fc/add_bias` matched again with the
    Sequential around `fc`."""
    claimed = set(claimed)

    def match(layer: str) -> str | None:
        if layer in matches:
            return matches[layer]
        return next((n for n in (layer, layer.replace("/", ".")) if n in modules and n not in claimed), None)

    return match


def compare(arch: str, mode: str, tol: float, layers: list[LayerDescription], values: Mapping[str, Any],
            refs: ModuleOutputs, matched: Mapping[str, str], outputs: list[str],
            floor: ModuleOutputs | None = None, modules: set[str] | None = None,
            channels: Mapping[str, np.ndarray] | None = None, half: bool = False,
            also: Mapping[str, Mapping[str, np.ndarray | None]] | None = None,
            parts: Mapping[str, list[tuple[str, int, int]]] | None = None) -> Report:
    """Compare each layer that has a module (`matched`: layer name -> module, see `module_matcher`) with that
    module's output, then the network's output with the model's. `floor`: the same modules run by PyTorch on the
    CPU in the network's precision (float32; float16 where `half`), whose distance from `refs` widens each bound
    to FLOOR_FACTOR times it where that is larger (up to FLOOR_CAPS times the tolerance).
    `modules`: the model's module names, to tell a module forward() did not run from one the model lacks.
    `channels`: tensor -> the channels of its module's output it holds (`Network.match_channels`). `half`: an
    fp16 network (values beyond float16's range are then named as an overflow). `also`: layer -> the other modules
    its output was matched with (`Network.matched_modules`), with their channels: each compared too, in a row
    before the layer's own, except one forward() never runs (a Linear whose weights a function uses)."""
    rows: list[Row] = []
    unmatched = 0
    for layer in layers:
        module = matched.get(layer.name)  # single-output layers only (verify matched those)
        if module is None:
            unmatched += 1
            continue
        out = values.get(layer.outputs[0])
        shape = tuple(out.shape) if out is not None else layer.output_shapes[0]
        others = {m: c for m, c in (also or {}).get(layer.name, {}).items()
                  if m in refs.outputs or m in refs.skipped or modules is not None and m not in modules}
        for m, part in [*others.items(), (module, (channels or {}).get(layer.outputs[0]))]:
            if m in refs.skipped:
                rows.append(Row(layer.name, m, shape, None, "skip", refs.skipped[m]))
            elif m not in refs.outputs:
                why = "the model has no module of this name" if modules is not None and m not in modules else NOT_RUN
                rows.append(Row(layer.name, m, shape, None, "skip", why))
            else:
                pick = (lambda a: a) if part is None else (lambda a, part=part: None if a is None else a[:, part])
                rows.append(_compare_row(layer.name, m, out, pick(refs.outputs[m]), tol,
                                         None if floor is None else pick(floor.outputs.get(m)), half))
    rows += _output_rows(values, refs.finals, outputs, tol, None if floor is None else floor.finals, half, parts)
    _name_first_nonfinite(rows, layers, values)
    return Report(arch, mode, tol, rows, unmatched, floor="" if floor is None else _own_type(half))


def _name_first_nonfinite(rows: list[Row], layers: list[LayerDescription], values: Mapping[str, Any]) -> None:
    """Rows failed on values that are not finite also name the first layer of the network whose output is not
    (an fp16 overflow often starts in a layer no module is compared with: attention scores)."""
    if not any(r.status == "FAIL" and r.note.startswith(NOT_FINITE) for r in rows):
        return
    for layer in layers:
        out = values.get(layer.outputs[0]) if layer.outputs else None
        if out is not None and not np.isfinite(_as_float64(out)).all():
            for r in rows:
                if r.status == "FAIL" and r.note.startswith(NOT_FINITE) and r.layer != layer.name:
                    r.note += f" (the first layer whose output is not finite: {layer.name})"
            return


def _as_float64(out: Any) -> np.ndarray:
    """A layer's value (a torch tensor, or an array) as a float64 numpy array."""
    return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float64)


def _own_type(half: bool) -> str:
    """The type PyTorch's own run of the floor is in: float16 for an fp16 network, float32 otherwise."""
    return "float16" if half else "float32"


def _output_rows(values: Mapping[str, Any], finals: list[np.ndarray], outputs: list[str], tol: float,
                 floors: list[np.ndarray] | None, half: bool = False,
                 parts: Mapping[str, list[tuple[str, int, int]]] | None = None) -> list[Row]:
    """The network's outputs against the model's: each (a segmentation head's predictions and prototypes, say)
    with the model's first unused output tensor of its shape; a single output without one with the model's first
    (the row then reports the shapes). An output of `parts` (name, start, stop along dimension 1: a YOLO head's
    boxes and scores) is compared part by part, each relative to its own values."""
    rows, unused = [], list(range(len(finals)))
    for name in outputs:
        out = values.get(name)
        shape = None if out is None else tuple(np.shape(out))
        pick = next((i for i in unused if shape is not None and finals[i].size == int(np.prod(shape))
                     and finals[i].squeeze().shape == tuple(d for d in shape if d != 1)), None)
        if pick is None and len(outputs) == 1 and unused:  # one output: the model's first, its shape reported
            pick = unused[0]
        if pick is None:
            rows.append(Row(f"(output) {name}", OUTPUT_MODULE, shape or (), None, "skip",
                            "tensor not available" if out is None else "no output of the model has its shape"))
            continue
        unused.remove(pick)
        ref, floor = finals[pick], None if floors is None else floors[pick]
        split = (parts or {}).get(name)
        if not split or shape != ref.shape or len(shape) < 2 or split[-1][2] != shape[1]:
            rows.append(_compare_row(f"(output) {name}", OUTPUT_MODULE, out, ref, tol, floor, half))
            continue
        for part, a, b in split:
            rows.append(_compare_row(f"(output) {name}[{part}]", OUTPUT_MODULE, _as_float64(out)[:, a:b], ref[:, a:b],
                                     tol, None if floor is None or floor.shape != ref.shape else floor[:, a:b], half))
    return rows


def _compare_row(layer: str, module: str, out: Any, ref: np.ndarray, tol: float,
                 floor: np.ndarray | None = None, half: bool = False) -> Row:
    if out is None:
        return Row(layer, module, tuple(ref.shape), None, "skip", "tensor not available")
    out = _as_float64(out)
    shape = tuple(out.shape)
    if shape != ref.shape:
        if out.size != ref.size or out.squeeze().shape != ref.squeeze().shape:
            return Row(layer, module, shape, None, "FAIL", f"shape {shape} != PyTorch's {tuple(ref.shape)}")
        out = out.reshape(ref.shape)  # e.g. a Linear run as a 1x1 convolution: (B, C, 1, 1) vs (B, C)
    err = max_rel_error(out, ref)
    if not np.isfinite(out).all():
        peak = float(np.abs(ref).max()) if ref.size else 0.0
        why = (f" (PyTorch's values reach {peak:.6g}, beyond float16's 65504: an fp16 overflow; smaller values there, "
               "e.g. trained weights or tamer BatchNorm statistics, or that part kept in fp32)") \
            if half and peak > 65504 else ""
        return Row(layer, module, shape, err, "FAIL", f"{NOT_FINITE}{why}")
    if err <= tol:
        return Row(layer, module, shape, err, "pass")
    own = None if floor is None or floor.shape != ref.shape else max_rel_error(floor, ref)
    kind = _own_type(half)
    if own is not None and err <= min(FLOOR_FACTOR * own, FLOOR_CAPS[kind] * tol):
        return Row(layer, module, shape, err, "pass", f"(PyTorch in {kind}: {own:.2e})")
    rounding = own is not None and own > FLOOR_CAPS[kind] * tol
    note = "" if own is None else f"(PyTorch in {kind}: {own:.2e}" + (
        f": {ROUNDING_NOTE})" if rounding else ")")
    why = (f"{kind} rounding alone moves the model's own output that much there (random weights amplify it; tied "
           "scores ahead of a top-k swap)") if rounding else ""
    peak = float(np.abs(ref).max()) if half and ref.size else 0.0
    if 0 < peak < FP16_TINY:  # float16 keeps only a few bits of such values (MNASNet's random init: 2e-6)
        note = (f"{note} " if note else "") + (
            f"(PyTorch's values peak at {peak:.3g}, below float16's smallest normal {FP16_TINY:.2g}: an fp16 "
            "underflow)")
        why = ("float16 keeps only a few bits of values below its smallest normal. Randomly initialised deep models "
               "shrink their activations that far; trained weights, random BatchNorm statistics (`netdef export "
               "SOURCE --randomize-bn` for a model source) or that part kept in fp32 give larger ones")
    return Row(layer, module, shape, err, "FAIL", note, why)
