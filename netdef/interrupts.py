"""Ctrl-C, SIGTERM and SIGHUP around TensorRT.

TensorRT catches a Python exception raised inside one of its callbacks (the logger, a build's progress monitor, a
profiler) and only prints it, so a KeyboardInterrupt raised there is lost. Python runs a signal handler when the
main thread next runs Python code, and during a TensorRT call that is the entry of such a callback (before the
callback's own frame exists). So netdef's handler, `handler`, never raises while the main thread is inside a
TensorRT call (`tensorrt_call()`: netdef's long calls run in it: builds, deserialization, refits, profiled runs)
or inside a function marked `trt_callback`: it sets `CANCEL` (builds in progress stop at their next step, in any
thread), keeps the signal pending and raises it as KeyboardInterrupt or `Terminated` when the call returns;
elsewhere (a callback of a short, unwrapped call) it delivers the signal again shortly, until it lands in
netdef's own code. A second signal while one is pending ends the process at once (nothing of netdef's is
half-written then: TensorRT calls write no files). A TensorRT 8.6 build may not call back for minutes, so Python
would run no handler at all until it ends: around a build, `watched` reads the signals as they arrive.

netdef's commands install the handler for their whole run (`handled()`); `tensorrt_call()` installs it for the
call where SIGINT has Python's default handler (a library user's own handler, or an ignored signal, stays).
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import CodeType, FrameType
from typing import Any

from .errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))
RETRY_S = 0.05  # a pending signal is delivered again after this long (outside tensorrt_call)
CANCEL = threading.Event()  # set by a signal: every build in progress (any thread) stops at its next step
_CALLBACKS: set[CodeType] = set()
_lock = threading.Lock()
_pending = 0  # the signal kept for netdef's own code, 0 when none
_depth = 0  # how deep the main thread is in tensorrt_call (only the main thread changes it or runs handlers)
_blocks = 0  # how many `handled()` blocks the main thread is in
_written: list[str] = []  # files written completely in the outermost `handled()` block (`wrote`), oldest first


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
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def handler(signum: int, frame: FrameType | None) -> None:
    """netdef's SIGINT, SIGTERM and SIGHUP handler (see the module's docstring)."""
    global _pending
    CANCEL.set()
    inside = _depth > 0
    if not inside and not _in_trt_callback(frame):
        with _lock:
            _pending = 0
        _raise(signum)
    with _lock:
        if _pending:  # a second signal while the first waits: end now, as the signal's default would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _pending = signum
    if not inside:  # tensorrt_call raises it when the call returns
        threading.Timer(RETRY_S, _deliver_again).start()


def _deliver_again() -> None:
    global _pending
    with _lock:
        signum, _pending = _pending, 0
    if signum:
        os.kill(os.getpid(), signum)


def wrote(paths: Iterable[str | os.PathLike]) -> None:
    """Record files written completely (an atomic write's renames done) inside a `handled()` block: a signal that
    ends the command after that point does not undo them, and its message says so (`written`)."""
    if _blocks:
        _written.extend(map(os.fspath, paths))


def written() -> list[str]:
    """The files the last outermost `handled()` block wrote completely (`wrote`), oldest first, each once; kept
    after the block, for the message a signal ends a command with (`cli.guard`)."""
    return list(reversed(dict.fromkeys(reversed(_written))))


def check(cause: BaseException | None = None) -> None:
    """Raise the signal kept pending, if any (chained to `cause`, an exception it overrides: the user's Ctrl-C or
    SIGTERM decides the exit, the error stays in the traceback)."""
    global _pending
    with _lock:
        signum, _pending = _pending, 0
    if signum:
        try:
            _raise(signum)
        except BaseException as e:
            raise e from cause


@contextlib.contextmanager
def tensorrt_call() -> Iterator[None]:
    """Run a TensorRT call that may call back into Python (keep the block to that call): on the main thread a
    signal during it is kept and raised when it returns, a pending one before it starts. Elsewhere the block just
    runs (signals go to the main thread; CANCEL still stops a build)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with contextlib.ExitStack() as stack:
        if _depth == 0:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                stack.enter_context(handled((signal.SIGINT,)))
            check()
        _depth += 1
        try:
            yield
        except BaseException as e:
            _depth -= 1
            if _depth == 0:
                check(e)
            raise
        _depth -= 1
        if _depth == 0:
            check()


deferred = tensorrt_call  # any block a signal must not cut in two (renaming files that belong together)


@contextlib.contextmanager
def watched(say: Callable[[str], None], tag: str = "netdef") -> Iterator[None]:
    """Around a TensorRT call in `tensorrt_call` that may not call back into Python for minutes (a TensorRT 8.6
    build): Python runs netdef's handler only once the main thread runs Python code again, so a thread reads the
    signals from Python's wakeup fd as they arrive. The first sets CANCEL (a build stops at its next step where
    TensorRT can cancel one) and `say`s that another ends the process; a second ends it at once, by the signal,
    as `handler` does. Only on the main thread of a POSIX process whose wakeup fd is free (not asyncio's), for
    the signals netdef's `handler` takes; elsewhere the block just runs."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = 1 if _pending else 0  # read before the fd is set: a later signal is counted once, from the pipe
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        previous = None
    if previous != -1:  # another's wakeup fd stays
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)
        yield
        return
    try:
        stop = threading.Event()
        thread = threading.Thread(target=_watch, args=(r, stop, say, tag, kept), daemon=True, name="netdef-signals")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)


def _watch(fd: int, stop: threading.Event, say: Callable[[str], None], tag: str, seen: int) -> None:
    while not stop.is_set():
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        for signum in os.read(fd, 64):
            if signal.getsignal(signum) is not handler:
                continue
            CANCEL.set()
            seen += 1
            name = signal.Signals(signum).name
            try:
                say(f"[{tag}] {name} again: quitting at once (TensorRT's call is dropped, nothing of it written)"
                    if seen >= 2 else f"[{tag}] {name}: another one ends the process at once")
            except BaseException:  # (a reader gone away) the signal still decides
                pass
            if seen >= 2:
                _die(signum)


def _die(signum: int) -> None:
    """End the process by `signum` with its default action, from any thread (Python changes a handler on the main
    thread only: libc's signal() does it here); exit status 128 + signum where that fails."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal(signum, None)  # SIG_DFL
        os.kill(os.getpid(), signum)
        time.sleep(1)
    except BaseException:
        pass
    os._exit(128 + signum)


def exit_on_signal(status: int) -> None:
    """For the `netdef` process alone, after its command has finished (its files written, its status `status`):
    Ctrl-C, SIGTERM or SIGHUP during the interpreter's shutdown (PyTorch's and TensorRT's teardown take a second)
    ends the process at once with that status, not with 130 and no word about work that was complete. Ignored
    signals stay ignored; off the main thread nothing changes."""
    def finish(signum: int, frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, finish)


@contextlib.contextmanager
def handled(signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """`handler` for `signals` in the `with` block, the previous handlers after it; `CANCEL` and a pending signal
    cleared on entry and on exit (they belong to this block), a signal still pending at its end raised there.
    An ignored signal stays ignored (`nohup`, a script's background job). On the main thread only: elsewhere
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _blocks
    previous: dict[int, Any] = {}
    if _blocks == 0:  # a new command: what an earlier one wrote is not its own
        _written.clear()
    _blocks += 1
    try:
        for s in signals:
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, handler)
        _reset()
        try:
            yield
        except BaseException as e:
            check(e)  # a signal kept while the block failed still decides how it ends
            raise
        check()
    finally:
        _blocks -= 1
        for s, p in previous.items():
            signal.signal(s, p if p is not None else signal.SIG_DFL)
        _reset()


def _reset() -> None:
    global _pending
    with _lock:
        _pending = 0
    CANCEL.clear()
