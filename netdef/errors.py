"""Exceptions raised by netdef. The CLI prints their message on one line and exits non-zero."""
from __future__ import annotations


class NetdefError(Exception):
    """Base class: a user-facing error whose message says what is wrong and what to do."""


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
    """Weights missing from, unused in, or of the wrong size for a .wts file."""


class SpecError(NetdefError):
    """A bad architecture YAML: names the file and the row (or key)."""


class TensorRTUnavailable(NetdefError):
    """No usable TensorRT installation, or a feature this TensorRT lacks."""


class EngineMismatchError(NetdefError):
    """An engine file that does not fit this TensorRT, GPU or request."""
