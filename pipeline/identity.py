"""A run's identity: its run id, the spec it runs, and the lease that makes it the only run of that id.

Spec identity. Every row a run commits depends on the spec's source, decode, model, sampling,
caption, post-check and QA settings; a resume that changed any of them would commit rows of two
specs under one manifest. So the first attempt of a run records its spec beside its staging
(``<run>/spec.json``), and every later attempt (and a rerun of a committed run id) compares
its own spec with the recorded (or committed) one: they must have the same :func:`identity_digest`,
else :class:`SpecMismatch` names both digests and the fields that differ. Settings that cannot
change what a row says are left out (:data:`NOT_IDENTITY`): how much of the cluster to use, batch
sizes, engine throughput knobs, how to reach the stores, shard size and compression, run options.
Resuming a run that ran out of memory with smaller batches is a resume, not a new spec.

Lease. ``<run>/lease.json`` (:class:`pipeline.locks.ObjectLock`) is held for the whole of a run:
a second run of the same id refuses, naming the holder; a dead holder's lease is taken over once
it expires (``run.lease_ttl_s``; at once when the holder ran on this host and its process is gone).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from contextlib import AbstractContextManager

from operators.storage import filesystem, join_uri, split_uri
from pipeline.conditional import SUPPORTED
from pipeline.locks import ObjectLock
from pipeline.shards import retry, write_bytes_atomic
from schemas.spec import JobSpec, StorageConfig

log = logging.getLogger(__name__)

# Beside staging/, not in it: staging/ holds shards only (resumes, tests and readers of the
# prefix take every file there for one).
SPEC_RECORD = "spec.json"
LEASE = "lease.json"

_ENGINE_KNOBS = ("max_num_seqs", "tensor_parallel_size", "gpu_memory_utilization", "enforce_eager",
                 "cpu_kvcache_gib")
#: Dotted fields that do not change what a committed row says (left out of the identity).
NOT_IDENTITY = (
    "name", "run", "resources", "qa.resources", "source.storage", "sink.storage", "sink.rows_per_file",
    "sink.compression", "schedule.lock_ttl_s",
    *(f"model.engine.{k}" for k in _ENGINE_KNOBS), *(f"qa.model.engine.{k}" for k in _ENGINE_KNOBS),
)


class SpecMismatch(RuntimeError):
    """The spec differs from the one the run id was started (or committed) with."""

    def __init__(self, run_id: str, committed: bool, recorded: str, current: str, fields: list[str]):
        self.run_id, self.committed, self.recorded, self.current, self.fields = (
            run_id, committed, recorded, current, fields)
        shown = ", ".join(fields[:8]) + (f" and {len(fields) - 8} more" if len(fields) > 8 else "")
        state = "is committed" if committed else "was started"
        super().__init__(f"run {run_id} {state} with spec {recorded}, this spec is {current} (differs in {shown}); "
                         "rerun it with its own spec, or give a new run id (--new-run-id-on-change)")


def _normalised(spec: JobSpec | dict) -> dict:
    """The spec as JSON data with every default filled in (a recorded spec is re-read by this code's schema)."""
    if isinstance(spec, JobSpec):
        return spec.model_dump(mode="json")
    try:
        return JobSpec.model_validate(spec).model_dump(mode="json")
    except ValueError:
        return spec  # written by a version whose schema this one no longer reads: compare as it is


def identity_view(spec: JobSpec | dict) -> dict:
    """The spec's fields that decide what its rows say (the spec minus :data:`NOT_IDENTITY`)."""
    data = json.loads(json.dumps(_normalised(spec)))
    for dotted in NOT_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def identity_digest(spec: JobSpec | dict) -> str:
    """Short stable hash of :func:`identity_view`."""
    return hashlib.sha256(json.dumps(identity_view(spec), sort_keys=True).encode()).hexdigest()[:16]


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two spec views (sorted)."""
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{name}.")
        elif x != y:
            out.append(name)
    return out


def compare(run_id: str, recorded: dict, spec: JobSpec, committed: bool) -> None:
    """Raise :class:`SpecMismatch` unless ``spec`` has the identity of the ``recorded`` spec."""
    theirs, ours = identity_view(recorded), identity_view(spec)
    if theirs != ours:
        raise SpecMismatch(run_id, committed, identity_digest(recorded), identity_digest(spec),
                           differences(theirs, ours))


def recorded_spec(run_root: str, storage: StorageConfig) -> dict | None:
    """The spec the run's first attempt recorded, or None."""
    fs, root = filesystem(run_root, storage)
    try:
        raw = retry(lambda: fs.cat_file(f"{root}/{SPEC_RECORD}"), f"read {run_root}/{SPEC_RECORD}")
    except FileNotFoundError:
        return None
    return json.loads(raw)["spec"]


def check_attempt(spec: JobSpec, run_id: str, run_root: str) -> None:
    """Compare with the spec an earlier attempt recorded, or record this one (the first attempt).

    Raises:
        SpecMismatch: an earlier attempt of ``run_id`` ran another spec.
    """
    storage = spec.sink.storage
    recorded = recorded_spec(run_root, storage)
    if recorded is not None:
        compare(run_id, recorded, spec, committed=False)
        return
    body = {"run_id": run_id, "identity": identity_digest(spec), "spec_hash": spec.digest(),
            "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.model_dump(mode="json")}
    write_bytes_atomic(join_uri(run_root, SPEC_RECORD), json.dumps(body, indent=2).encode(), storage)


def forget_attempt(run_root: str, storage: StorageConfig) -> None:
    """Remove the attempt's spec record (a run that found nothing to do leaves nothing behind)."""
    fs, root = filesystem(run_root, storage)
    try:
        fs.rm_file(f"{root}/{SPEC_RECORD}")
    except FileNotFoundError:
        pass


def mismatch(spec: JobSpec, run_id: str, committed_spec: dict | None) -> SpecMismatch | None:
    """What :func:`compare` would raise for ``run_id`` (committed spec, else the recorded one), read-only."""
    run_root = join_uri(spec.sink.uri, run_id)
    recorded = committed_spec if committed_spec is not None else recorded_spec(run_root, spec.sink.storage)
    if recorded is None:
        return None
    try:
        compare(run_id, recorded, spec, committed=committed_spec is not None)
    except SpecMismatch as exc:
        return exc
    return None


class _NoLease(AbstractContextManager):
    """Stand-in where the store has no conditional writes: nothing guards the run id."""

    def check(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        return None


def run_lease(run_root: str, run_id: str, storage: StorageConfig, ttl_s: int) -> AbstractContextManager:
    """The lease of ``run_id`` (enter it to hold it; ``check()`` before publishing)."""
    protocol, _ = split_uri(run_root)
    if protocol not in SUPPORTED:
        log.warning("%s:// has no conditional writes here: a second run of %s would not be refused", protocol, run_id)
        return _NoLease()
    return ObjectLock(join_uri(run_root, LEASE), run_id, storage, ttl_s)
