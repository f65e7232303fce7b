"""How an engine is built (`BuildOptions`) and the parsing of the profile syntax (`--batch 1:8:32,33:64:64`,
`--input-shape 320x320:640x640:1280x1280`).

Every value is checked where it enters: `BuildOptions.validate()` names the option and the bad value.
A dynamic input size (`input_range`, min/opt/max (H, W)) applies to every batch profile: profile i covers
batches profiles[i] at any H, W within the one range. A static build leaves `input_range` None and its
options (metadata, build key: `options_dict`) stay exactly as they were before dynamic sizes existed.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptionError
from .fileio import not_a_file

PRECISIONS = ("fp32", "fp16", "int8")
FP16_MAX = 65504.0  # the largest finite float16
FLOAT32_MAX = float(np.finfo(np.float32).max)
INPUT_DTYPES = ("float32", "float16", "uint8")  # the network input's type (uint8: images, normalized inside)
MAX_DIM = 2**31 - 1  # TensorRT's dimensions (batch sizes, heights, widths) are int32
MAX_WORKSPACE_MIB = 2**43 - 1  # the workspace limit in bytes must fit int64
Profile = tuple[int, int, int]
HW = tuple[int, int]
HWRange = tuple[HW, HW, HW]  # (min, opt, max) (H, W) of a dynamic input size


@dataclass
class BuildOptions:
    """How to build. `batch` is the optimization profile's (min, opt, max) batch size; with several
    `profiles` (each tuned for its own opt batch; the runtime picks one per batch) it is their overall range."""

    precision: str = "fp32"
    batch: Profile = (1, 1, 1)
    profiles: tuple[Profile, ...] = ()
    input_hw: tuple[int, int] | None = None
    input_range: HWRange | None = None  # dynamic H, W: ((minH, minW), (optH, optW), (maxH, maxW)), every profile
    workspace_mib: int | None = None
    opt_level: int | None = None
    tf32: bool = True
    strict: bool = True
    timing_cache: str | Path | None = None  # a Path is kept as its string
    compute_capability: str | None = None  # TensorRT-RTX without a GPU: the target (default 8.6)
    calibration: str | Path | None = None  # int8: calibration table (JSON)
    int8_exclude: tuple[str, ...] = ()  # int8: layer-name patterns (fnmatch) left unquantized (fp16/fp32)
    fp32_rows: tuple[str, ...] = ()  # fp16/int8: YAML rows (key-prefix fnmatch patterns) built in float32
    detailed: bool = False  # keep layer types, tactics and formats in the engine (netdef profile shows them)
    refittable: bool = False  # weights can be replaced later without a rebuild (`netdef refit`, Engine.refit)
    params: dict[str, Any] = field(default_factory=dict)  # block build parameters (`--set`, e.g. NMS thresholds)
    # the network input's type; uint8: 0..255 images, scaled to [0, 1] and normalized per channel inside the network,
    # (x / 255 - mean) / std with `input_mean` and `input_std` (default 0 and 1: x / 255)
    input_dtype: str = "float32"
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    @classmethod
    def from_meta(cls, options: dict[str, Any]) -> "BuildOptions":
        """The options an engine was built with, from its metadata (JSON lists back to tuples)."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in options.items() if k in known}
        for key in ("batch", "input_hw"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        if kw.get("input_range") is not None:
            kw["input_range"] = tuple(tuple(hw) for hw in kw["input_range"])
        kw["profiles"] = tuple(tuple(p) for p in kw.get("profiles") or ())
        kw["int8_exclude"] = tuple(kw.get("int8_exclude") or ())
        kw["fp32_rows"] = tuple(kw.get("fp32_rows") or ())
        return cls(**kw)  # (input_mean and input_std: tuples of floats in __post_init__)

    @property
    def all_profiles(self) -> tuple[Profile, ...]:
        """The engine's optimization profiles: `profiles`, or the single `batch` profile."""
        return self.profiles or (self.batch,)

    @property
    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) a uint8 input is normalized with inside the network, (x / 255 - mean) / std: the options',
        default (0,) and (1,) (x / 255)."""
        return (tuple(self.input_mean) if self.input_mean is not None else (0.0,),
                tuple(self.input_std) if self.input_std is not None else (1.0,))

    @property
    def dynamic_hw(self) -> bool:
        """Whether the input height and width are chosen at run time (`input_range`)."""
        return self.input_range is not None

    def __post_init__(self) -> None:
        for name in ("timing_cache", "calibration"):  # a Path is a path (the engine's header records a string)
            if isinstance(getattr(self, name), Path):
                setattr(self, name, str(getattr(self, name)))
        for name in ("input_mean", "input_std"):  # numpy's numbers as floats: the header is JSON
            values = getattr(self, name)
            if isinstance(values, numbers.Real) and not isinstance(values, bool):
                values = (values,)  # one for all channels
            elif isinstance(values, np.ndarray) and values.ndim <= 1:
                values = tuple(values.reshape(-1).tolist())
            if isinstance(values, (tuple, list)) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                         for v in values):
                setattr(self, name, tuple(float(v) for v in values))
        if isinstance(self.compute_capability, str):  # 89, sm89, SM_89: 8.9, as a GPU's is recorded and compared
            self.compute_capability = normalize_compute_capability(self.compute_capability)
        self.batch, self.input_hw = _ints(self.batch), _ints(self.input_hw)  # numpy's integers as ints: JSON
        for name in ("int8_exclude", "fp32_rows"):  # a set of patterns: order and repeats don't change the engine
            patterns = getattr(self, name)
            if isinstance(patterns, (tuple, list)) and all(isinstance(p, str) for p in patterns):
                setattr(self, name, tuple(sorted(set(patterns))))
        if isinstance(self.input_range, (tuple, list)):
            self.input_range = tuple(map(_ints, self.input_range))
        if isinstance(self.profiles, (tuple, list)):
            self.profiles = tuple(map(_ints, self.profiles))
        if isinstance(self.profiles, (tuple, list)) and self.profiles and all(map(_is_triple, self.profiles)) \
                and isinstance(self.batch, (tuple, list)) and tuple(self.batch) == (1, 1, 1):
            self.batch = overall_range(self.profiles)  # batch left out: the profiles' overall range

    def validate(self) -> None:
        """Raise OptionError for any value that cannot build (types included: this is also a Python API)."""
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise OptionError(f"unknown precision {self.precision!r}: use fp32, fp16 or int8")
        if not isinstance(self.profiles, (tuple, list)):
            raise OptionError(f"profiles {self.profiles!r}: expected a list of (min, opt, max) batch profiles")
        for name in ("tf32", "strict", "detailed", "refittable"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} {getattr(self, name)!r}: expected True or False")
        for name in ("timing_cache", "compute_capability", "calibration"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, Path)):
                raise OptionError(f"{name} {getattr(self, name)!r}: expected a string")
        cc = self.compute_capability
        if isinstance(cc, str) and not re.fullmatch(r"\d+\.\d|current", normalize_compute_capability(cc)):
            raise OptionError(f"--compute-capability {cc!r}: expected MAJOR.MINOR, e.g. 8.6 or 12.0 (also 86, sm86)")
        for name in ("int8_exclude", "fp32_rows"):
            patterns = getattr(self, name)
            if not isinstance(patterns, (tuple, list)) or not all(isinstance(p, str) and p for p in patterns):
                raise OptionError(f"{name} {patterns!r}: expected layer-name patterns (non-empty strings)")
        for p in (self.batch, *self.profiles):
            if not _is_triple(p):
                raise OptionError(f"batch profile {p!r}: expected (min, opt, max) integers, e.g. batch=(1, 8, 32); "
                                  f"from the command line's text: batch=parse_batch('1:8:32') (several profiles: "
                                  f"batch, profiles = parse_profiles('1:1:8,9:64:256'))")
            lo, opt, hi = p
            if not 1 <= lo <= opt <= hi <= MAX_DIM:
                raise OptionError(f"batch profile {lo}:{opt}:{hi} must satisfy 1 <= min <= opt <= max <= {MAX_DIM} "
                                  "(TensorRT's dimensions are int32)")
        if self.profiles:
            check_profiles(self.profiles)
            if tuple(self.batch) != overall_range(self.profiles):
                raise OptionError(f"batch {format_profiles([self.batch])} must be the profiles' overall range "
                                  f"{format_profiles([overall_range(self.profiles)])} (or leave it out)")
        if self.input_hw is not None and not (
                isinstance(self.input_hw, (tuple, list)) and len(self.input_hw) == 2
                and all(_is_int(v) and 0 < v <= MAX_DIM for v in self.input_hw)):
            raise OptionError(f"input shape {self.input_hw!r}: expected (H, W), two positive integers (int32)")
        if self.input_range is not None:
            check_hw_range(self.input_range)
            if self.input_hw is not None:
                raise OptionError(f"input_hw {tuple(self.input_hw)} and input_range {format_hw_range(self.input_range)}: "
                                  "give one (a static size or a dynamic range)")
        if self.workspace_mib is not None and not (_is_int(self.workspace_mib)
                                                   and 0 < self.workspace_mib <= MAX_WORKSPACE_MIB):
            raise OptionError(f"workspace {self.workspace_mib!r} MiB: expected a positive integer up to "
                              f"{MAX_WORKSPACE_MIB} (a limit in bytes TensorRT can hold)")
        if self.opt_level is not None and not (_is_int(self.opt_level) and 0 <= self.opt_level <= 5):
            raise OptionError(f"builder optimization level {self.opt_level!r} must be an integer 0..5")
        if not isinstance(self.params, dict):
            raise OptionError(f"params {self.params!r}: expected a dict of build parameters")
        self._validate_input()
        if self.calibration and self.precision != "int8":
            raise OptionError("--calibration is for --precision int8 only")
        if self.int8_exclude and self.precision != "int8":
            raise OptionError("--int8-exclude is for --precision int8 only")
        if self.fp32_rows and self.precision == "fp32":
            raise OptionError("--fp32-rows keeps rows in float32 in an fp16 or int8 build; an fp32 build computes "
                              "every layer in float32 already: leave it out")
        kind = not_a_file(self.calibration) if self.calibration else None
        if kind:
            raise OptionError(f"calibration table {self.calibration} is {kind}, not a file: "
                              "give the JSON table `netdef calibrate` wrote")
        if self.calibration and not Path(self.calibration).is_file():
            raise OptionError(f"calibration table {self.calibration} not found: make it with `netdef calibrate "
                              "ARCH --weights W --data DATA -o TABLE.json` and pass --calibration TABLE.json")

    def _check_normalized_range(self) -> None:
        """A uint8 input's normalized values, (x / 255 - mean) / std, must fit the type the network computes them
        in: float16 in an fp16 build, float32 otherwise (a tiny std overflows them to inf)."""
        if self.input_dtype != "uint8" or self.input_std is None:
            return
        std = self.input_std
        top = 1.0 / min(std)  # x / 255 / std at x = 255, before the mean's shift
        limit, kind = (FP16_MAX, "float16") if self.precision == "fp16" else (FLOAT32_MAX, "float32")
        if not top <= limit:
            raise OptionError(f"--input-std {','.join(map(str, std))}: the normalization reaches {top:.3g}, beyond "
                              f"{kind}'s range ({limit:.6g}) in an {self.precision} build: check the values "
                              "(ImageNet's: 0.229,0.224,0.225)")

    def _validate_input(self) -> None:
        """The input's type, and the normalization of a uint8 input."""
        if not isinstance(self.input_dtype, str) or self.input_dtype not in INPUT_DTYPES:
            raise OptionError(f"--input-dtype {self.input_dtype!r}: use {', '.join(INPUT_DTYPES)}")
        for name in ("input_mean", "input_std"):
            values = getattr(self, name)
            if values is None:
                continue
            option = "--" + name.replace("_", "-")
            if self.input_dtype != "uint8":
                raise OptionError(f"{option} normalizes a uint8 input inside the network: it goes with "
                                  "--input-dtype uint8 (a float input comes normalized)")
            shown = ",".join(map(str, values)) if isinstance(values, (tuple, list)) else str(values)
            if not isinstance(values, (tuple, list)) or not values or \
                    not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                            for v in values):
                raise OptionError(f"{option} {shown!r}: expected one number per input channel (or one for all), "
                                  "of images scaled to [0, 1], e.g. 0.485,0.456,0.406")
            if name == "input_std" and min(values) <= 0:
                raise OptionError(f"{option} {shown}: standard deviations must be > 0")
            if min(values) < 0 or max(values) > 1:  # mean and std of values in [0, 1] lie in [0, 1]
                what, example = ("means", "123.675,116.28,103.53 -> 0.485,0.456,0.406") if name == "input_mean" else \
                    ("standard deviations", "58.395,57.12,57.375 -> 0.229,0.224,0.225")
                raise OptionError(f"{option} {shown}: the images are scaled to [0, 1] before they are normalized, so "
                                  f"{what} lie in [0, 1]; for values of the 0..255 scale divide them by 255 "
                                  f"({example})")
        self._check_normalized_range()
        if self.input_dtype != "float32" and self.precision == "int8":  # calibration records float32 inputs
            raise OptionError(f"--input-dtype {self.input_dtype} with --precision int8 is not supported: build int8 "
                              "engines with a float32 input")


_CC = re.compile(r"(?:sm_?)?(\d+)\.(\d)|(?:sm_?)?(\d+)(\d)", re.IGNORECASE)


def normalize_compute_capability(text: str) -> str:
    """A compute capability as a GPU reports it, MAJOR.MINOR ('8.9' for '8.9', '89', 'sm89', 'SM_89'; '12.0' for
    '120'); 'current' for 'current' in any case; any other text as it is (`BuildOptions.validate` refuses it)."""
    m = _CC.fullmatch(text.strip())
    if m is None:
        return "current" if text.strip().lower() == "current" else text
    major, minor = (m[1], m[2]) if m[1] is not None else (m[3], m[4])
    return f"{int(major)}.{minor}"


def options_dict(opts: BuildOptions) -> dict[str, Any]:
    """`opts` as the engine metadata and the build key record them; `input_range` only when dynamic, the input's
    type and normalization only where not float32, `fp32_rows` only where given (a static float32 build's
    options are those of netdef before dynamic sizes, input types and --fp32-rows, so its engines stay up to date)."""
    d = asdict(opts)
    if d["input_dtype"] == "float32":  # as before input types existed: engines built then stay up to date
        del d["input_dtype"]
    for key in ("input_range", "input_mean", "input_std"):
        if d[key] is None:
            del d[key]
    if not d["fp32_rows"]:  # as before --fp32-rows existed
        del d["fp32_rows"]
    return d


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def unmatched_patterns(option: str, unmatched: Sequence[str], matches: str, names: Sequence[str]) -> OptionError:
    """The OptionError for patterns of a repeatable `option` that matched nothing (a typo would leave what they
    meant as it was): `matches` says what they name ('no layer of resnet18 that int8 quantizes'), `names` the
    names there are (the first 10 shown); a comma in a pattern is told to repeat the option."""
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    comma = f"; give each pattern its own {option}" if any("," in p for p in unmatched) else ""
    return OptionError(f"{option} {', '.join(map(repr, unmatched))} matches {matches}{comma}: {shown or 'none'}")


def _ints(p: Any) -> Any:
    """A list, tuple or 1-D array of integers of any kind (numpy's) as a tuple of ints; anything else as it is
    (`validate` names it)."""
    if isinstance(p, np.ndarray) and p.ndim == 1:
        p = p.tolist()
    if isinstance(p, (tuple, list)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in p):
        return tuple(int(v) for v in p)
    return p


def _is_triple(p: Any) -> bool:
    return isinstance(p, (tuple, list)) and len(p) == 3 and all(_is_int(v) for v in p)


def parse_profiles(text: str, what: str = "--batch") -> tuple[Profile, tuple[Profile, ...]]:
    """(batch, profiles) for BuildOptions: '1:8:32' -> one profile; '1:1:8,9:64:256' -> two profiles, each
    tuned for its opt batch, and their overall range (1, 64, 256) as the batch."""
    pieces = str(text).split(",")
    if len(pieces) == 1:
        return parse_batch(text, what), ()
    parts = [parse_batch(p, f"{what} '{text}': profile") for p in pieces]  # '1:8:32,' names its empty profile in it
    check_profiles(parts)
    return overall_range(parts), tuple(parts)


def overall_range(profiles: Sequence[Sequence[int]]) -> Profile:
    """(smallest min, opt of the last profile, largest max)."""
    return min(p[0] for p in profiles), int(profiles[-1][1]), max(p[2] for p in profiles)


def check_profiles(profiles: Sequence[Sequence[int]]) -> None:
    """Profiles listed by increasing min that leave no batch size uncovered between them (overlaps are fine)."""
    covered = profiles[0][2]
    for a, b in zip(profiles, profiles[1:]):
        text = format_profiles([a, b])
        if b[0] == a[0]:
            raise OptionError(f"batch profiles {text}: both start at batch {b[0]}; start the later one above it "
                              "(ranges may overlap)")
        if b[0] < a[0]:
            raise OptionError(f"batch profiles {text}: list the profiles by increasing min batch")
        if b[0] > covered + 1:
            raise OptionError(f"batch profiles {text}: batches {covered + 1}..{b[0] - 1} are in no profile; "
                              f"start the next one at {covered + 1} or lower")
        covered = max(covered, b[2])


def parse_batch(text: str, what: str = "--batch") -> Profile:
    """'8' -> (8, 8, 8); '1:8:32' -> (1, 8, 32); '1:32' -> (1, 32, 32). `what` names the option in errors."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        raise OptionError(f"{what} '{text}': expected N or MIN:OPT:MAX with integers") from None
    if len(parts) == 1:
        return parts[0], parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise OptionError(f"{what} '{text}': expected N or MIN:OPT:MAX")


def format_profiles(profiles: Sequence[Sequence[int]], between: str = ",", within: str = ":") -> str:
    """[(1, 1, 4), (5, 32, 32)] -> '1:1:4,5:32:32' (the --batch form); with '_' and '-': a file-name tag."""
    return between.join(within.join(map(str, p)) for p in profiles)


def check_hw_range(r: Any, what: str = "input_range") -> None:
    """OptionError unless `r` is ((minH, minW), (optH, optW), (maxH, maxW)), positive, min <= opt <= max."""
    ok = isinstance(r, (tuple, list)) and len(r) == 3 and all(
        isinstance(hw, (tuple, list)) and len(hw) == 2 and all(_is_int(v) and 0 < v <= MAX_DIM for v in hw)
        for hw in r)
    if not ok:
        raise OptionError(f"{what} {r!r}: expected ((minH, minW), (optH, optW), (maxH, maxW)), positive integers "
                          "up to 2**31 - 1; from the command line's text: input_range=parse_input_shape("
                          "'320x320:640x640:1280x1280')[1] (netdef.options)")
    for d, side in enumerate(("height", "width")):
        if not r[0][d] <= r[1][d] <= r[2][d]:
            raise OptionError(f"{what} {format_hw_range(r)}: the {side} must satisfy min <= opt <= max")


def parse_input_shape(text: str, what: str = "--input-shape") -> tuple[HW | None, HWRange | None]:
    """(input_hw, input_range) for BuildOptions: '480x640' or '480,640' -> a static size ('640': 640x640, as
    Ultralytics' imgsz); 'MIN:OPT:MAX' of such sizes ('320x320:640x640:1280x1280') -> a dynamic range; 'MIN:MAX'
    -> opt = max (as for --batch)."""
    parts = [_parse_hw(p, text, what) for p in str(text).split(":")]
    if len(parts) == 1:
        return parts[0], None
    if len(parts) > 3:
        raise OptionError(f"{what} '{text}': expected H,W or HxW, or MIN:OPT:MAX of HxW sizes "
                          "(e.g. 320x320:640x640:1280x1280)")
    r = (parts[0], parts[1], parts[-1])
    check_hw_range(r, what if len(parts) == 3 else f"{what} '{text}' (MIN:MAX, so OPT = MAX):")
    return None, r


def _parse_hw(part: str, text: str, what: str) -> HW:
    try:
        hw = tuple(int(v) for v in part.replace(",", "x").split("x"))
    except ValueError:
        hw = ()
    hw = hw * 2 if len(hw) == 1 else hw  # one number: a square, as Ultralytics' imgsz
    if len(hw) != 2 or min(hw) < 1:
        raise OptionError(f"{what} '{text}': expected H,W or HxW (two positive integers, e.g. 480x640, or one for "
                          "a square), or "
                          "MIN:OPT:MAX of HxW sizes for a dynamic input size (e.g. 320x320:640x640:1280x1280)")
    return hw  # type: ignore[return-value]


def format_hw_range(r: Any) -> str:
    """((320, 320), (640, 640), (1280, 1280)) -> '320x320:640x640:1280x1280' (the --input-shape form)."""
    return ":".join(f"{hw[0]}x{hw[1]}" for hw in r)


def checked_options(opts: "BuildOptions | None") -> "BuildOptions":
    """`opts` (default `BuildOptions()`) checked: an OptionError for another type or a value that cannot build."""
    opts = opts or BuildOptions()
    if not isinstance(opts, BuildOptions):
        raise OptionError(f"opts {opts!r}: expected a netdef.options.BuildOptions (e.g. BuildOptions(precision="
                          "'fp16'))")
    opts.validate()
    return opts
