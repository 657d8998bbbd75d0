"""Scheduled, incremental runs: each run of a schedule captions only what no committed run of it has.

State of a schedule, under ``schedule.state_uri``::

    lock                                  held while a run of the schedule is in progress
    <version>/version.json                what the version covers (model, prompts, sampling)
    <version>/pending.json                the run id in progress (a crashed run is resumed, not redone)
    <version>/runs/<run_id>.json          a committed run: where it is, its summary
    <version>/ids/<run_id>.parquet        the ids that run committed (written by a task)

What is new is decided in tasks: the ids files become a key set in the object store
(:class:`operators.idset.KeySet`) that the run's listing tasks drop done rows with.

A dataset version is a hash of everything that changes what a row says (model, revision,
prompts, sampling, record schema): changing the model or the prompt starts a new version
that processes the whole corpus again, never a silent mix within one version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import ensure_parent, filesystem, join_uri
from operators.tasks import cpu_task
from pipeline.commit import read_committed
from pipeline.locks import ObjectLock
from pipeline.shards import retry, write_bytes_atomic
from schemas import columns as C
from schemas.manifest import Manifest
from schemas.records import SCHEMA_VERSION
from schemas.spec import JobSpec, StorageConfig

log = logging.getLogger(__name__)


def write_ids(files: list[str], out_uri: str, storage: StorageConfig) -> int:
    """Task body: the ``id`` column of ``files`` into one Parquet file at ``out_uri`` (a row group per file)."""
    schema = pa.schema([pa.field(C.ID, C.TYPES[C.ID])])
    fs, path = filesystem(out_uri, storage)
    ensure_parent(out_uri)
    rows = 0
    with fs.open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:
        for uri in files:
            src_fs, src = filesystem(uri, storage)
            with src_fs.open(src, "rb") as g:
                table = pq.read_table(g, columns=[C.ID]).cast(schema)
            writer.write_table(table)
            rows += table.num_rows
    return rows


def dataset_version(spec: JobSpec) -> tuple[str, dict]:
    """``(version, what it covers)``: a short hash of what a row says depends on, and those settings."""
    model = spec.model.model_dump(mode="json", include={"family", "model_id", "revision", "trust_remote_code"})
    model["dtype"] = spec.model.engine.dtype
    covered = {
        "model": model,
        "caption": spec.caption.model_dump(mode="json"),
        "sampling": spec.sampling.model_dump(mode="json"),
        "qa": spec.qa.model_dump(mode="json") if getattr(spec, "qa", None) else None,
        "schema": SCHEMA_VERSION,
    }
    # Curation (issue 17) changes which rows are captioned and what they hold; absent, a version's hash is as before.
    for key, skip in (("embedding", {"num_actors", "gpus_per_actor", "cpus_per_actor", "batch_size"}),
                      ("dedup", set()), ("alignment", set())):
        section = getattr(spec, key, None)
        if section is not None:
            covered[key] = section.model_dump(mode="json", exclude=skip)
    return "v-" + hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()[:12], covered


@dataclass
class ScheduleOutcome:
    """What one invocation of a schedule did."""

    version: str
    run_id: str | None
    manifest: Manifest | None
    new_rows: int
    earlier_runs: int


class Schedule:
    """The state of one schedule (spec + state location)."""

    def __init__(self, spec: JobSpec):
        if spec.schedule is None:
            raise ValueError("spec has no schedule section")
        self.spec = spec
        self.storage = spec.sink.storage
        self.root = spec.schedule.state_uri.rstrip("/")
        self.version, self.covered = dataset_version(spec)
        self.vroot = join_uri(self.root, self.version)

    def _read_json(self, uri: str) -> dict | None:
        fs, path = filesystem(uri, self.storage)
        try:
            return json.loads(retry(lambda: fs.cat_file(path), f"read {uri}"))
        except FileNotFoundError:
            return None

    def runs(self) -> list[dict]:
        """Committed runs of this version, oldest first."""
        fs, path = filesystem(join_uri(self.vroot, "runs"), self.storage)
        try:
            names = sorted(fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
        return sorted((json.loads(fs.cat_file(n)) for n in names if n.endswith(".json")),
                      key=lambda r: r["committed_at"])

    def done_files(self) -> list[str]:
        """The id files of every committed run of this version (one per run; their ids are read by tasks)."""
        return [join_uri(self.vroot, run["ids_path"]) for run in self.runs()]

    def dataset(self) -> pa.Table:
        """The committed dataset of this version: the union of its runs (no id twice)."""
        tables = [read_committed(r["run_root"], self.storage) for r in self.runs()]
        return pa.concat_tables(tables) if tables else None

    def _record(self, run_id: str, run_root: str, manifest: Manifest) -> None:
        import ray

        ids_rel = f"ids/{run_id}.parquet"
        files = [join_uri(run_root, f.path) for f in manifest.files]
        # The run's ids are copied by a CPU task, file by file: the driver never holds them.
        rows = ray.get(cpu_task(write_ids).remote(files, join_uri(self.vroot, ids_rel),
                                                                  self.storage))
        record = {"run_id": run_id, "run_root": run_root, "ids_path": ids_rel, "rows": rows,
                  "committed_at": manifest.created_at, "summary": manifest.summary.model_dump()}
        write_bytes_atomic(join_uri(self.vroot, "runs", f"{run_id}.json"), json.dumps(record, indent=2).encode(),
                           self.storage)

    def run_once(self, run_id: str | None = None, new_run_on_change: bool = False) -> ScheduleOutcome:
        """Take the lock, run what is new (or finish the run a crash left pending), record it.

        Args:
            new_run_on_change: when the pending run was started with another spec, abandon it (its
                staged rows are not committed) and start a new run instead of refusing.

        Raises:
            pipeline.locks.LockHeld: another run of this schedule is in progress.
            pipeline.identity.SpecMismatch: the pending run was started with another spec.
        """
        from pipeline.identity import SpecMismatch
        from pipeline.plan import new_run_id
        from pipeline.runner import run_job

        pending_uri = join_uri(self.vroot, "pending.json")
        candidate = run_id or new_run_id(self.spec.name)
        with ObjectLock(join_uri(self.root, "lock"), candidate, self.storage, self.spec.schedule.lock_ttl_s):
            if self._read_json(join_uri(self.vroot, "version.json")) is None:
                others = self._other_versions()
                if others:
                    log.warning("spec changed what rows say: new dataset version %s (earlier: %s)",
                                self.version, ", ".join(others))
                write_bytes_atomic(join_uri(self.vroot, "version.json"),
                                   json.dumps(self.covered, indent=2).encode(), self.storage)
            earlier = self.runs()
            done = self.done_files()
            pending = self._read_json(pending_uri)
            run_id = pending["run_id"] if pending else candidate
            if pending:
                log.info("resuming run %s of the schedule that did not finish", run_id)
            else:
                write_bytes_atomic(pending_uri, json.dumps({"run_id": run_id}).encode(), self.storage)
            try:
                manifest = run_job(self.spec, run_id, skip_files=done, allow_empty=True)
            except SpecMismatch:
                if not (pending and new_run_on_change):
                    raise
                log.warning("pending run %s was started with another spec: abandoned for run %s", run_id, candidate)
                run_id = candidate
                write_bytes_atomic(pending_uri, json.dumps({"run_id": run_id}).encode(), self.storage)
                manifest = run_job(self.spec, run_id, skip_files=done, allow_empty=True)
            if manifest is not None:
                self._record(run_id, join_uri(self.spec.sink.uri, run_id), manifest)
            fs, path = filesystem(pending_uri, self.storage)
            fs.rm_file(path)
            new_rows = manifest.summary.rows_out if manifest else 0
            return ScheduleOutcome(self.version, run_id if manifest else None, manifest, new_rows, len(earlier))

    def _other_versions(self) -> list[str]:
        fs, path = filesystem(self.root, self.storage)
        try:
            return sorted(p.rsplit("/", 1)[1] for p in fs.ls(path, detail=False)
                          if p.rsplit("/", 1)[1].startswith("v-") and p.rsplit("/", 1)[1] != self.version)
        except FileNotFoundError:
            return []
