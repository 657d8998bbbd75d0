"""SIGINT and SIGTERM end a run the same way: an exception in the driver's main thread, then a clean exit.

A pod eviction sends SIGTERM, Ctrl-C sends SIGINT; both should stop the run within seconds and
leave it resumable: the exception unwinds through the run (Ray Data stops its executor, the lease
is released so the rerun need not wait for it to expire), and the command prints one line saying
how to resume. Ray installs its own SIGTERM handlers when the driver starts or joins it (``sys.exit``
from wherever the main thread is), so ``ray.init`` runs inside :func:`ray_starting`, which puts ours
back after it.

A second signal while the first is being handled exits at once (the user insists).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (a ``KeyboardInterrupt``, so code that cleans up after Ctrl-C does)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it."""
        return 128 + self.signum


#: ``signalled``: the first signal's number; ``raised``: its :class:`Interrupted` was raised (else it waits for
#: :func:`check`, because the signal came while a finalizer ran).
_state = {"signalled": None, "raised": False}


def _handler(signum: int, frame) -> None:
    if _state["signalled"] is not None:
        print(f"interrupted again ({signal.Signals(signum).name}): exiting now", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _state["signalled"] = signum
    if _in_finalizer(frame):
        return  # an exception here would be printed and dropped: the run's next check() raises it
    _state["raised"] = True
    raise Interrupted(signum)


def _in_finalizer(frame) -> bool:
    """The main thread was stopped inside a ``__del__`` or a ``weakref.finalize`` callback."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "__call__" and code.co_filename.endswith("weakref.py")):
            return True
        frame = frame.f_back
    return False


def check() -> None:
    """Raise :class:`Interrupted` for a signal whose handler could not raise it.

    A signal handler's exception is raised wherever the main thread is; inside a finalizer or a
    ``__del__`` Python would print it ("Exception ignored in ...") and carry on, so there the handler
    only records the signal. The run calls this between its steps and before it commits, and
    :func:`interruptible` at its end, so such an interrupt still stops the run.
    """
    if _state["signalled"] is not None and not _state["raised"]:
        _state["raised"] = True
        raise Interrupted(_state["signalled"])


def install() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (no-op in other threads)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


@contextmanager
def ray_starting() -> Iterator[None]:
    """Around ``ray.init``: a SIGTERM meanwhile is an :class:`Interrupted` too, and ours are the handlers after it.

    ``ray.init`` installs its own SIGTERM handlers before it starts the local node: one that stops
    the node's processes and calls ``sys.exit(1)``, one that calls ``sys.exit(15)``. A SIGTERM
    during the start therefore ends ``ray.init`` with ``SystemExit`` (Ray has cleaned up); nothing
    else in it exits the process.
    """
    try:
        yield
    except SystemExit:
        _state.update(signalled=signal.SIGTERM, raised=True)  # a second one now exits at once
        raise Interrupted(signal.SIGTERM) from None
    finally:
        install()


@contextmanager
def interruptible() -> Iterator[None]:
    """Install the handlers for the block; the ones before it are put back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _state.update(signalled=None, raised=False)
    install()
    try:
        yield
        check()  # a signal whose exception was swallowed on the way
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """``exc`` as an :class:`Interrupted` (a plain ``KeyboardInterrupt`` is SIGINT's)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
