"""The errors netdef raises. The CLI prints their message on one line and exits 1.

Callers can tell them apart:

- `SpecError`: a bad architecture YAML (names the file and line); `OptionError`: a bad option or argument.
- `WtsFormatError`: a malformed `.wts` file; `WeightKeyError`: weights that do not fit the architecture.
- `BlockError`: a block raised an unexpected exception (a bug in the block, not in the YAML).
- `TensorRTUnavailable`: no usable TensorRT, or a feature this TensorRT lacks;
  `TensorRTError`: TensorRT refused or failed a request (build, deserialization, execution, ONNX parse).
- `EngineFileError`: not a netdef engine or a damaged one; `EngineMismatchError`: built by another
  TensorRT or for another GPU.

Where an error happened (the YAML row a block was building) is added once, by `at()`.
"""
from __future__ import annotations

import errno
import os
import sysconfig
import traceback


class NetdefError(Exception):
    """Base class: a user-facing error whose message says what is wrong and what to do."""

    def __init__(self, message: str = "", *, where: str | None = None):
        super().__init__(message)
        self.message = str(message)
        self.where = where

    def at(self, where: str) -> "NetdefError":
        """Record where the error happened (kept when already set); returns the error itself."""
        if not self.where:
            self.where = where
        return self

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class WtsFormatError(NetdefError):
    """A malformed .wts file. Carries the file, 1-based line and key where known."""

    def __init__(self, path: str, message: str, line: int | None = None, key: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if key is not None:
            where += f" (key '{key}')"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.key = str(path), line, key


class WeightKeyError(NetdefError):
    """Weights missing from, unused in, or of the wrong size for a .wts file. `hint`: the end of the message that
    says what the mismatch looks like (a misspelt module, another architecture), for `netdef show` to print.
    `another_layout`: the hint explains the keys (saved fused or prefixed, another task's head), so no other scale
    of the architecture would fit them. `key`: the weight at fault (its size, or its values), where one was;
    `expected`: the shape the architecture wanted for it, where its size was at fault."""

    def __init__(self, message: str = "", *, where: str | None = None, hint: str = "", another_layout: bool = False,
                 key: str | None = None, expected: tuple[int, ...] | None = None):
        super().__init__(message + hint, where=where)
        self.hint = hint
        self.another_layout = another_layout
        self.key = key
        self.expected = expected

    def with_hint(self, more: str, where: str | None = None) -> "WeightKeyError":
        """The same error with `more` added to its hint (and `where`, where it has none yet)."""
        return WeightKeyError(self.message.removesuffix(self.hint), where=self.where or where, hint=self.hint + more,
                              another_layout=self.another_layout, key=self.key, expected=self.expected)


class SpecError(NetdefError):
    """A bad architecture YAML: names the file and the row (or key)."""


class FamilyError(SpecError):
    """A family's architecture (a `scales:` map) named without a scale. `scales`: the names that build them."""

    def __init__(self, message: str = "", *, where: str | None = None, scales: list[str] | None = None):
        super().__init__(message, where=where)
        self.scales = list(scales or [])


class OptionError(NetdefError):
    """A bad option or argument value (command line or Python API), named as the user gave it."""


class BlockError(NetdefError):
    """A block raised something other than a NetdefError: a bug in the block's code."""


class TensorRTUnavailable(NetdefError):
    """No usable TensorRT installation, or a feature this TensorRT lacks."""


class TensorRTError(NetdefError):
    """TensorRT refused or failed a request (build, deserialization, execution, parsing)."""


class EngineFileError(NetdefError):
    """A file that is not a netdef engine, or a damaged one."""


class EngineMismatchError(EngineFileError):
    """An engine file that does not fit this TensorRT, GPU or request."""


class NameTooLong(NetdefError, OSError):
    """A file name longer than its file system allows (NAME_MAX bytes: 255 on most), said before anything is
    written. An OSError too (errno ENAMETOOLONG, strerror 'File name too long'), as the file system's own error is."""

    def __init__(self, path: str | os.PathLike, reason: str):
        OSError.__init__(self, errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), os.fspath(path))
        self.message = f"cannot write {os.fspath(path)}: {reason}"
        self.where = None
        self.reason = reason

    def __reduce__(self) -> tuple:  # OSError's would call __init__ with (errno, strerror, path)
        return type(self), (self.filename, self.reason)


class WrittenMeanwhile(NetdefError):
    """A file netdef was to replace was written by another program since netdef read it (a concurrent build or
    refit): nothing was written, so what that program wrote is kept. `path`: that file."""

    def __init__(self, path: str | os.PathLike, message: str | None = None):
        super().__init__(message or f"{path} was written by another program while netdef was writing it: nothing "
                                    "written, so that what it wrote is kept; run the command again")
        self.path = os.fspath(path)


def raised_at(e: BaseException) -> str:
    """' at FILE:LINE' of a syntax error, or of the innermost frame outside netdef and importlib that raised `e`
    (the user's code: a block module, a model function); '' when there is none."""
    if isinstance(e, SyntaxError) and e.filename:
        return f" at {e.filename}:{e.lineno}"
    own = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(own)]
    # prefer the user's own files to the libraries it called (torch raising inside torch.load)
    libraries = tuple(os.path.abspath(p) + os.sep for p in {sysconfig.get_path(k) for k in ("stdlib", "purelib",
                                                                                           "platlib")} if p)
    frames = [f for f in frames if not os.path.abspath(f.filename).startswith(libraries)] or frames
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, a CI time limit) or SIGHUP (a closed terminal or ssh session) in a netdef
    command: unwinds like Ctrl-C, so temporary files are removed and nothing is left half-written; the command
    exits 128 + the signal's number (143, 129)."""

    def __init__(self, signum: int = 15):
        super().__init__(signum)
        self.signum = signum

