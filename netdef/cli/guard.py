"""The one error handler of netdef's commands (`netdef CMD`, `python -m netdef.examples.digits`)."""
from __future__ import annotations

import os
import sys
from typing import Callable

from .. import interrupts
from ..errors import NetdefError, Terminated

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away


def run_guarded(fn: Callable[[], int | None], *, prog: str, debug: bool = False) -> int:
    """Run a command and return its exit status. A NetdefError prints one line `PROG: error: MESSAGE` on
    stderr (exit 1), Ctrl-C prints `interrupted` (exit 130), a closed stdout (`netdef info --json x | head`)
    ends quietly; an OSError that reaches here (a folder that cannot be written, a full disk) is one line too;
    with `debug` these raise instead, traceback and all. SIGTERM and SIGHUP unwind like Ctrl-C (`Terminated`:
    temporary files removed) and print `terminated` (exit 143, 129); files the command had written completely
    before the signal (an atomic write's rename done: `interrupts.written`) are named as complete. Other
    exceptions are bugs and keep their traceback."""
    from .. import trt_api

    trt_api.use_stderr_logger()  # (a background job's ignored SIGINT must not make it TensorRT's stdout logger)
    try:
        with interrupts.handled():  # Ctrl-C, SIGTERM, SIGHUP: never lost inside a TensorRT callback
            status = int(fn() or 0)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except NetdefError as e:
        if debug:
            raise
        _say(f"{prog}: error: {e}")
        return 1
    except Terminated as e:
        if debug:
            raise
        _say(("terminated" if e.signum == 15 else f"terminated (signal {e.signum})") + _complete_note())
        return 128 + e.signum
    except KeyboardInterrupt:
        if debug:
            raise
        _say("interrupted" + _complete_note())
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return SIGPIPE_EXIT
    except OSError as e:
        if debug:
            raise
        _say(f"{prog}: error: {e} (--debug shows where)")
        return 1


def _complete_note() -> str:
    """For a command a signal ended: the files it had written completely before (renamed into place: the signal
    undid nothing of them), '' when there are none."""
    done = interrupts.written()
    if not done:
        return ""
    if len(done) > 3:
        return f": {len(done)} files were written completely before the signal (the last: {', '.join(done[-3:])})"
    return f": {', '.join(done)} {'was' if len(done) == 1 else 'were'} written completely before the signal"


def _say(message: str) -> None:
    """The one line on stderr, where it can still be written (after SIGHUP the terminal may be gone: the exit code
    still says what happened)."""
    try:
        print(message, file=sys.stderr)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is left does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (captured, closed): nothing will be flushed to it
        pass
