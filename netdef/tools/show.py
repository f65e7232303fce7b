"""`netdef show`: an architecture expanded row by row, as Ultralytics' parse_model prints a model — a dry run
before a build.

Each YAML row gives one line: index, from, n (after depth scaling), parameters, block, arguments (after width
scaling), the row's weight-key prefix and its output shape. The network is defined with `define_network` (no
engine is built, so TensorRT-RTX does it on a CPU); with weights, each row also lists the keys it read with the
shapes the architecture asked for, and the strict key report (missing / unused keys) ends the listing. Without
weights the architecture asks for every key anyway: the shapes and parameter counts are those it expects (a key
whose presence the weights decide, such as a convolution's optional bias, is then left out).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..define import IN_MEMORY, Weights, check_stride, define_network, spec_for_weights
from ..errors import NetdefError, OptionError, WeightKeyError
from ..network import Network
from ..options import BuildOptions, format_hw_range
from ..spec import Row, Spec, observing_rows

# keys named as PyTorch buffers, not parameters (a .wts does not say which is which: known names only)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "anchors", "anchor_grid",
                   "relative_position_index")


@dataclass
class RowView:
    """What one YAML row became: its block, arguments, keys (key -> the shape the architecture asked for)."""

    row: Row
    keys: dict[str, tuple[int, ...]]
    outputs: list[tuple[int, ...]]

    @property
    def params(self) -> int:
        """Parameters (weights and biases), as PyTorch's `model.parameters()` counts them where the buffers' keys
        have known names (`BUFFER_SUFFIXES`: BatchNorm statistics and counter, anchors, Swin's position index)."""
        return sum(math.prod(s) for k, s in self.keys.items() if not k.endswith(BUFFER_SUFFIXES))

    @property
    def values(self) -> int:
        """Every value the row reads: its parameters and its buffers (BatchNorm statistics, anchors)."""
        return sum(math.prod(s) for s in self.keys.values())

    def cells(self, built: Mapping[str, Any] | None = None) -> list[str]:
        """index, from, n, params, block, prefix, output, arguments (Ultralytics' columns, then netdef's); an
        argument naming a top-level key (`[nc]`) shows the value the build used where the head recorded it
        (`built`: nc from the weights or --set, not the YAML's)."""
        r, built = self.row, built or {}

        def shown(at: int | str, value: Any) -> Any:
            if at not in r.named or r.named[at] not in built:
                return value
            got = built[r.named[at]]
            return list(got) if isinstance(got, tuple) else got  # as the YAML writes it: [5, 3]

        args = ", ".join([*(repr(shown(i, v)) for i, v in enumerate(r.args)),
                          *(f"{k}={shown(k, v)!r}" for k, v in r.kwargs.items())])
        return [str(r.index), str(r.frm), str(r.n), str(self.params), r.block.name, r.prefix or repr(""),
                " ".join(_shape(s) for s in self.outputs), f"[{args}]"]


@dataclass
class ShowReport:
    spec: Spec
    input_shape: tuple[int, ...]
    rows: list[RowView] = field(default_factory=list)
    weights: str | None = None
    missing: dict[str, str] = field(default_factory=dict)  # key -> where it was asked for (with weights)
    unused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why its block leaves it out (Network.skip)
    supplied: dict[str, str] = field(default_factory=dict)  # fixed key the weights lack -> its values (fixed_weight)
    model: dict = field(default_factory=dict)  # what the head recorded (Network.record_model): nc etc. as built
    input_sizes: str = ""  # a dynamic input size's MIN:OPT:MAX (H, W then show as -1)
    hint: str = ""  # what a build's key error says the mismatch looks like (a misspelt module, another task)
    failed: bool = False  # the rows before the one whose build failed (`NetdefError.shown` holds this listing)
    built_values: dict = field(default_factory=dict)  # top-level values as the weights gave them (anchors)

    @property
    def ok(self) -> bool:
        """Whether a strict build with these weights would find every key and use every key."""
        return not self.missing and not self.unused

    def __str__(self) -> str:
        """What `netdef show` prints: `format()`."""
        return self.format()

    def format(self, keys: bool | None = None) -> str:
        """The listing; `keys` (default: when weights were given) adds each row's keys and shapes."""
        keys = self.weights is not None if keys is None else keys
        s = self.spec
        sizes = f" at HxW {self.input_sizes} (MIN:OPT:MAX)" if self.input_sizes else ""
        lines = [f"{s.name} ({s.source}): input '{s.input_name}' {_shape(self.input_shape)}{sizes}"
                 + (f", weights {self.weights}" if self.weights else ", no weights (keys and shapes as expected)"),
                 ""]
        built = {} if self.missing else self.built_values | self.model  # keys missing: another head's, read wrong
        table = [["", "from", "n", "params", "block", "prefix", "output", "arguments"]] + [
            v.cells(built) for v in self.rows]
        widths = [max(len(c[i]) for c in table) for i in range(len(table[0]))]
        for i, cells in enumerate(table):
            lines.append("  ".join(c.rjust(w) if j < 4 else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths)))
                         .rstrip())
            if keys and i > 0:
                lines += [f"{'':{sum(widths[:4]) + 8}}{k} {list(shape)}{self._mark(k)}"
                          for k, shape in self.rows[i - 1].keys.items()]
        if self.failed:
            lines.append(f"{s.name}: rows 0..{len(self.rows) - 1} of {len(s.rows)} built; " + (
                f"row {len(self.rows)} failed (the error below)" if len(self.rows) < len(s.rows) else
                "the error below came after them"))
            return "\n".join(lines)
        lines.append(f"{s.name}: {len(self.rows)} rows, {sum(v.params for v in self.rows):,} parameters (weights and "
                     f"biases, as PyTorch's parameters() counts: keys named as known buffers left out), "
                     f"{sum(len(v.keys) for v in self.rows)} weight keys of {sum(v.values for v in self.rows):,} "
                     "values (with the buffers)")
        if self.weights is not None and self.model and not self.missing:  # the head as built from these weights
            # (with keys missing, another head's weights: its class count would be read wrong)
            lines.append("head: " + ", ".join(f"{k} {v}" for k, v in self.model.items() if k != "stride"))
        if self.weights is not None:
            lines.append(self.key_report())
        return "\n".join(lines)

    def _mark(self, key: str) -> str:
        return "  MISSING" if key in self.missing else "  SUPPLIED (not in the weights)" if key in self.supplied else ""

    def key_report(self) -> str:
        """The strict key report: missing keys (with the row that asked) and unused keys, or that all fit; the
        keys left out knowingly and the fixed keys built without the weights (`Network.fixed_weight`) first; then
        what a build's error would say the mismatch looks like."""
        where = "the in-memory weights" if self.weights == IN_MEMORY else self.weights
        out = [f"skipped: {len(self.skipped)} key(s) in {where} left out knowingly:"] if self.skipped else []
        out += [f"  {k}   ({why})" for k, why in self.skipped.items()]
        if self.supplied:
            out.append(f"supplied: {len(self.supplied)} fixed key(s) not in {where}, built from known values:")
            out += [f"  {k}   ({why})" for k, why in self.supplied.items()]
        if self.ok:
            asked = "every key the architecture asks for" + (f" but the {len(self.supplied)} supplied above"
                                                             if self.supplied else "")
            out.append(f"keys: {asked} is in {where}, and every key there but the {len(self.skipped)} "
                       f"skipped above is used" if self.skipped else
                       f"keys: {asked} is in {where}, and every key there is used")
            return "\n".join(out)
        if self.missing:
            out.append(f"missing: {len(self.missing)} key(s) the architecture needs are not in {where}:")
            out += [f"  {k}   (asked for by {asker})" for k, asker in self.missing.items()]
        if self.unused:
            out.append(f"unused: {len(self.unused)} key(s) in {where} no row uses:")
            out += [f"  {k}" for k in self.unused]
        return "\n".join(out) + self.hint


class _Recorder:
    """The row observer: wraps the network's `weight` to learn the shape asked for each key, and splits the
    keys read and the output shapes by row."""

    def __init__(self) -> None:
        self.asked: dict[str, tuple[int, ...]] = {}
        self.rows: list[RowView] = []
        self.net: Network | None = None
        self._done = 0  # the keys of `asked` already given to a row (every read goes through `weight` below)

    def __call__(self, net: Network, row: Row | None, output: Any) -> None:
        if row is None:
            self.net = net
            read = net.weight

            def weight(key: str, shape: Any) -> Any:
                self.asked.setdefault(key, tuple(int(v) for v in shape))
                return read(key, shape)

            net.weight = weight  # type: ignore[method-assign]  # this network only
            fixed = net.fixed_weight

            def fixed_weight(key: str, values: Any, why: str) -> Any:  # asked for too where the weights lack it
                self.asked.setdefault(key, tuple(int(v) for v in values.shape))
                return fixed(key, values, why)

            net.fixed_weight = fixed_weight  # type: ignore[method-assign]
            return
        keys = dict(list(self.asked.items())[self._done:])
        self._done = len(self.asked)
        self.rows.append(RowView(row, keys, [tuple(t.shape) for t in _tensors(output)]))


def show(arch: str | Path | Spec, weights: Weights | None = None, opts: BuildOptions | None = None) -> ShowReport:
    """Define `arch` with `weights` (a .wts path or a mapping of arrays, a state_dict; or none: every key is then
    expected, not read) and report each row."""
    opts = opts or BuildOptions()
    spec = spec_for_weights(arch, weights)
    rec = _Recorder()
    hint = ""
    shown = None if weights is None else IN_MEMORY if isinstance(weights, Mapping) else str(weights)
    try:
        with observing_rows(rec):
            define_network(spec, {} if weights is None else weights, opts, log=lambda _: None)
    except NetdefError as e:
        if not isinstance(e, WeightKeyError) or len(rec.rows) < len(spec.rows) or rec.net is None:
            if rec.rows and rec.net is not None and not isinstance(e, OptionError):  # a row failed: the rows
                # before it, for the command to print
                e.shown = ShowReport(spec, tuple(rec.net.definition.raw.get_input(0).shape), rec.rows, shown,
                                     failed=True).format()
            raise  # (a row's weight of the wrong size: not the key report of a finished definition)
        hint = e.hint
    assert rec.net is not None
    if opts.input_range and (rec.net.model or {}).get("stride"):  # what build refuses, show refuses
        check_stride(opts.input_range, int(rec.net.model["stride"]), spec.name)
    shape = tuple(rec.net.definition.raw.get_input(0).shape) if rec.net.definition.raw.num_inputs else ()
    report = ShowReport(spec, shape or (-1, *spec.input_shape_for(opts.input_hw)), rec.rows, shown,
                        input_sizes=format_hw_range(opts.input_range) if opts.input_range else "", hint=hint)
    report.model = dict(rec.net.model or {})  # (its head line is printed with weights only)
    report.built_values = dict(rec.net.built_values)
    if weights is not None:
        report.missing, report.unused = rec.net.key_report()
        report.skipped = dict(rec.net.skipped)
        report.supplied = dict(rec.net.supplied)
    return report


def _tensors(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _shape(shape: tuple[int, ...]) -> str:
    """(B, 64, 56, 56): the dynamic batch as B."""
    return "(" + ", ".join("B" if i == 0 and s == -1 else str(s) for i, s in enumerate(shape)) + ")"
