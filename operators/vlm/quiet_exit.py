"""No ``resource_tracker`` tracebacks when an engine's processes outlive the actor that started them.

An engine actor starts vLLM's processes; the first of them to use shared memory starts Python's
``multiprocessing`` resource tracker as a child of the actor, and every later process shares it.
When Ray retires the actor it ends the actor's child processes, the tracker among them, while
vLLM's worker processes may still be releasing their shared-memory segments. A release then finds
the tracker gone, starts a fresh one, and tells it to forget segments it never heard of: the fresh
tracker prints a ``KeyError`` traceback per segment at the end of a run that succeeded.

:func:`install` (called by the vLLM plugin in every vLLM process) makes an *unregister* sent to a
tracker that has died a no-op: the tracker that knew the name is gone, so there is nothing to tell,
and a new one would only complain. Registrations, and unregisters while the tracker lives, are
unchanged, so segments of a crashed process are still cleaned up by the tracker that knew them.
"""

from __future__ import annotations

_installed = {"done": False}


def install() -> None:
    """Patch ``multiprocessing.resource_tracker.unregister`` as described above (idempotent)."""
    if _installed["done"]:
        return
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    original = resource_tracker.unregister

    def unregister(name: str, rtype: str) -> None:
        fd = getattr(tracker, "_fd", None)
        if fd is not None and not tracker._check_alive():
            return  # the tracker that registered ``name`` died with the actor: nothing to tell
        original(name, rtype)

    resource_tracker.unregister = unregister
    _installed["done"] = True
