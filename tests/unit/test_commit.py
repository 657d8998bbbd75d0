"""The commit protocol without Ray: shard files, manifest last, readers trust only the manifest."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pydantic import ValidationError

from operators.idset import add_digests, digest_hex, key_digest
from pipeline.commit import MANIFEST, CommitError, read_committed, read_manifest
from pipeline.shards import ShardWriter, scan_staging, write_atomic
from schemas import columns as C
from schemas.manifest import FileEntry
from schemas.records import conform, record_schema
from schemas.spec import StorageConfig

SCHEMA = record_schema([C.ID, C.SOURCE, C.STATUS, C.ERROR, C.CAPTION, C.NUM_GENERATED_TOKENS, C.PIXELS])


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({
        C.ID: [f"id{i}" for i in range(start, start + n)],
        C.SOURCE: [f"s3://b/{i}.jpg" for i in range(start, start + n)],
        C.STATUS: ["ok"] * n,
        C.CAPTION: ["a cat"] * n,
        C.NUM_GENERATED_TOKENS: [3] * n,
        C.PIXELS: [b"xx"] * n,  # transient: must not reach the file
    })


def test_conform_fixes_types_and_drops_transients():
    t = conform(rows(2), SCHEMA)
    assert t.schema.equals(SCHEMA, check_metadata=True)
    assert C.PIXELS not in t.column_names and t.schema.field(C.NUM_GENERATED_TOKENS).type == pa.int32()
    with pytest.raises(KeyError, match="source"):
        conform(pa.table({C.ID: ["x"], C.STATUS: ["ok"]}), SCHEMA)


def test_shard_writer_is_idempotent_per_content(tmp_path):
    writer = ShardWriter(str(tmp_path / "run"), StorageConfig(), "zstd", SCHEMA)
    a = writer(rows(3)).to_pylist()[0]
    b = writer(rows(3)).to_pylist()[0]
    c = writer(rows(3, start=3)).to_pylist()[0]
    assert a["path"] == b["path"] != c["path"]
    assert a["rows"] == 3 and json.loads(a["by_status"]) == {"ok": 3} and a["generated_tokens"] == 9
    assert len(list((tmp_path / "run" / "staging").iterdir())) == 2
    state = scan_staging(str(tmp_path / "run"), StorageConfig())
    assert state.rows == 6 and state.repeats == 0
    assert state.digest_hex == digest_hex(key_digest([f"id{i}" for i in range(6)])), "digests add up across shards"
    assert add_digests(a["digest"], c["digest"]) == state.digest_hex, "the writer's digest is the file's"
    assert state.by_status == {"ok": 6} and state.generated_tokens == 18


def test_failed_rows_also_go_to_the_errors_prefix(tmp_path):
    import pyarrow.parquet as pq

    t = rows(3).set_column(2, C.STATUS, pa.array(["ok", "decode_error", "not_found"]))
    t = t.append_column(C.ERROR, pa.array([None, "truncated", "gone"]))
    meta = ShardWriter(str(tmp_path / "run"), StorageConfig(), "zstd", SCHEMA)(t).to_pylist()[0]
    assert meta["error_rows"] == 2 and meta["error_path"].startswith("errors/")
    errors = pq.read_table(tmp_path / "run" / meta["error_path"]).to_pylist()
    assert errors == [
        {C.ID: "id1", C.SOURCE: "s3://b/1.jpg", C.STATUS: "decode_error", C.ERROR: "truncated"},
        {C.ID: "id2", C.SOURCE: "s3://b/2.jpg", C.STATUS: "not_found", C.ERROR: "gone"},
    ]
    state = scan_staging(str(tmp_path / "run"), StorageConfig())
    assert list(state.error_files) == [meta["error_path"]]


def test_unreadable_staging_leftover_is_redone_not_trusted(tmp_path):
    (tmp_path / "run" / "staging").mkdir(parents=True)
    (tmp_path / "run" / "staging" / "part-broken.parquet").write_bytes(b"PAR1 half a file")
    assert scan_staging(str(tmp_path / "run"), StorageConfig()).files == {}


def test_uncommitted_run_is_unreadable(tmp_path):
    ShardWriter(str(tmp_path / "run"), StorageConfig(), "zstd", SCHEMA)(rows(2))
    assert read_manifest(str(tmp_path / "run")) is None
    with pytest.raises(CommitError, match="not committed"):
        read_committed(str(tmp_path / "run"))


def test_manifest_paths_cannot_escape_the_run_root():
    for bad in ("../other/part.parquet", "/etc/passwd", "s3://x/y", "staging/../../z"):
        with pytest.raises(ValidationError):
            FileEntry(path=bad, rows=1)
    assert FileEntry(path="staging/./part-1.parquet", rows=1).path == "staging/part-1.parquet"


def test_read_committed_checks_row_counts(tmp_path):
    run = tmp_path / "run"
    meta = ShardWriter(str(run), StorageConfig(), "zstd", SCHEMA)(rows(4)).to_pylist()[0]
    manifest = {
        "schema_version": "1", "record": "caption", "run_id": "r", "job": "j", "spec_hash": "h", "spec": {},
        "model_id": "m", "model_revision": None, "engine": "e", "sampling_hash": "s", "code_version": "c",
        "created_at": "now", "files": [{"path": meta["path"], "rows": 5}],
        "summary": {"rows_in": 5, "rows_out": 5, "by_status": {"ok": 5}, "wall_s": 1, "images_per_s": 5,
                    "prompt_tokens": 0, "generated_tokens": 0, "generated_tokens_per_s": 0},
    }
    (run / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CommitError, match="4 rows on disk, manifest says 5"):
        read_committed(str(run))
    manifest["files"][0]["rows"] = 4
    (run / MANIFEST).write_text(json.dumps(manifest))
    assert read_committed(str(run)).num_rows == 4


def test_a_failed_write_publishes_nothing(tmp_path):
    def half(f):
        f.write(b"PAR1 half")
        raise OSError("disk went away")

    with pytest.raises(OSError, match="went away"):
        write_atomic(str(tmp_path / "out" / "part-x.parquet"), half)
    assert list((tmp_path / "out").iterdir()) == []
