"""`vlmbatch status` and `vlmbatch report` read a run's state from the real S3 server (no Ray)."""

from __future__ import annotations

import json

from jobs.cli import main as cli_main
from pipeline.report import REPORT_JSON
from pipeline.shards import ShardWriter
from schemas.records import record_schema
from schemas.spec import StorageConfig
from tests.report_fixtures import make_committed_run, shard_rows


def _bucket(endpoint: str, name: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    if not fs.exists(name):
        fs.mkdir(name)
    return f"s3://{name}"


def test_status_and_report_of_a_committed_run(s3_server, tmp_path, capsys):
    root = _bucket(s3_server, "runinfo") + "/captions/run-ok"
    make_committed_run(root, StorageConfig(endpoint_url=s3_server), shards=3, rows=10)
    capsys.readouterr()
    assert cli_main(["status", root, "--endpoint-url", s3_server]) == 0
    out = capsys.readouterr().out
    assert "run run-ok: committed" in out and "rows in 30, rows out 30" in out and "not_an_image=3" in out
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    assert cli_main(["report", root, "--endpoint-url", s3_server, "--html", str(html), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "rows 30/30, failed 9" in out and "status: ok=21" in out and "generated length: mean" in out
    report = json.loads(js.read_text())
    assert report["run_id"] == "run-ok" and report["figures"]["status_breakdown"]["ok"] == 21
    assert '<figure id="lengths">' in html.read_text()


def test_report_is_rebuilt_from_the_manifest_when_the_run_left_none(s3_server, capsys):
    storage = StorageConfig(endpoint_url=s3_server)
    root = _bucket(s3_server, "runinfo") + "/captions/run-noreport"
    make_committed_run(root, storage, shards=2, rows=10, report=False)
    import s3fs

    assert not s3fs.S3FileSystem(endpoint_url=s3_server).exists(f"{root}/{REPORT_JSON}")
    capsys.readouterr()
    assert cli_main(["report", root, "--endpoint-url", s3_server]) == 0
    assert "rows 20/20, failed 6" in capsys.readouterr().out


def test_status_of_an_uncommitted_and_of_a_missing_run(s3_server, capsys):
    storage = StorageConfig(endpoint_url=s3_server)
    root = _bucket(s3_server, "runinfo") + "/captions/run-died"
    ShardWriter(root, storage, "zstd", record_schema(shard_rows(0, 1).column_names))(shard_rows(0, 10))
    capsys.readouterr()
    assert cli_main(["status", root, "--endpoint-url", s3_server]) == 3
    out = capsys.readouterr().out
    assert "NOT committed" in out and "1 shard files staged, 10 rows" in out and "same run id" in out
    assert cli_main(["report", root, "--endpoint-url", s3_server]) == 3
    assert "not committed" in capsys.readouterr().err
    assert cli_main(["status", root.replace("run-died", "nope"), "--endpoint-url", s3_server]) == 2
