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


_state = {"signalled": None}


def _handler(signum: int, frame) -> None:
    if _state["signalled"] is not None:
        print(f"interrupted again ({signal.Signals(signum).name}): exiting now", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _state["signalled"] = signum
    raise Interrupted(signum)


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
        _state["signalled"] = signal.SIGTERM  # a second one now exits at once
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
    _state["signalled"] = None
    install()
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """``exc`` as an :class:`Interrupted` (a plain ``KeyboardInterrupt`` is SIGINT's)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
