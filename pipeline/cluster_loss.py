"""Which failures of a stream are the cluster's (a lost node took what the stream needed), not the rows'.

Ray retries what it can of a lost node: tasks, actor restarts, objects rebuilt from lineage. What
it cannot rebuild (an actor task's output still on the lost node, an owner gone with it, a block
whose lineage was evicted) fails the stream with one of the errors below, wrapped by Ray Data or
by the task that needed it. Such a failure says nothing about the rows: the run streams again from
staging (:mod:`pipeline.runner`), as a resume would, inside the same run. A failure of the rows or
of the code (a UDF's exception, an actor whose constructor raised, memory) is never retried here.
"""

from __future__ import annotations

#: Streams one run makes at most when the cluster fails them (the first included).
STREAM_ATTEMPTS = 3


def _chain(exc: BaseException):
    """``exc`` and what it wraps: ``__cause__``, ``__context__``, a RayTaskError's ``cause`` (cycle-safe)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        cause = getattr(e, "cause", None)  # RayTaskError keeps the remote exception here
        todo += [e.__cause__, e.__context__, cause if isinstance(cause, BaseException) else None]


def lost_to_the_cluster(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a lost node's objects, actor or worker process.

    Not: an actor whose constructor failed (the code's fault), Ray's own assertions on freed or
    miscounted objects, the driver's own raylet (the head) gone, memory exhaustion.
    """
    import ray.exceptions as rx

    for e in _chain(exc):
        if isinstance(e, (rx.ObjectFreedError, rx.ReferenceCountingAssertionError)):
            return False
        if isinstance(e, rx.RayActorError) and getattr(e, "actor_init_failed", False):
            return False
        if isinstance(e, (rx.ObjectLostError, rx.NodeDiedError, rx.RayActorError, rx.WorkerCrashedError)):
            return True
    return False
