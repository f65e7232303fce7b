"""Ctrl-C and SIGTERM around TensorRT.

TensorRT catches a Python exception raised inside one of its callbacks (the logger, a build's progress monitor, a
profiler) and only prints it, so a KeyboardInterrupt that lands there is lost. `handler`, netdef's handler for both
signals (its commands install it for their whole run, `BuildProgress` in place of Python's default one for a
build), never raises inside such a callback: it sets `CANCEL` (builds in progress stop at their next step),
keeps the signal pending and delivers it again shortly, until it lands in netdef's own code, where it raises
KeyboardInterrupt or `Terminated`; `check()` raises a pending one at once (after a TensorRT call returns). A second
signal while one is pending ends the process at once (nothing of netdef's is half-written then: TensorRT calls
write no files).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

from .errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_S = 0.05  # a pending signal is delivered again after this long
CANCEL = threading.Event()  # set by a signal: every build in progress (any thread) stops at its next step
_CALLBACKS: set[CodeType] = set()
_lock = threading.Lock()
_pending = 0  # the signal kept for netdef's own code, 0 when none


def trt_callback(fn: Callable) -> Callable:
    """Mark `fn` as a function TensorRT calls (a logger's `log`, a monitor's or profiler's method)."""
    _CALLBACKS.add(fn.__code__)
    return fn


def _in_trt_callback(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _CALLBACKS:
            return True
        frame = frame.f_back
    return False


def _raise(signum: int) -> None:
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def handler(signum: int, frame: FrameType | None) -> None:
    """netdef's SIGINT and SIGTERM handler (see the module's docstring)."""
    global _pending
    CANCEL.set()
    if not _in_trt_callback(frame):
        with _lock:
            _pending = 0
        _raise(signum)
    with _lock:
        if _pending:  # a second signal while the first waits: end now, as the signal's default would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _pending = signum
    threading.Timer(RETRY_S, _deliver_again).start()


def _deliver_again() -> None:
    global _pending
    with _lock:
        signum, _pending = _pending, 0
    if signum:
        os.kill(os.getpid(), signum)


def check() -> None:
    """Raise the signal kept pending, if any (call it after a TensorRT call returns)."""
    global _pending
    with _lock:
        signum, _pending = _pending, 0
    if signum:
        _raise(signum)


@contextlib.contextmanager
def handled(signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """`handler` for `signals` in the `with` block (main thread only; elsewhere nothing changes), the previous
    handlers after it; `CANCEL` and a pending signal cleared on entry and on exit (they belong to this block)."""
    previous: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for s in signals:
                previous[s] = signal.signal(s, handler)
        _reset()
        yield
    finally:
        for s, p in previous.items():
            signal.signal(s, p if p is not None else signal.SIG_DFL)
        _reset()


def _reset() -> None:
    global _pending
    with _lock:
        _pending = 0
    CANCEL.clear()
