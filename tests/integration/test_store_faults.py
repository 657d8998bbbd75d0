"""The object store's side of a run, on real SeaweedFS servers: writes that fail publish nothing, a sink
this identity may not write is refused before anything starts, and two servers run side by side."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys

import pyarrow as pa
import pytest
import s3fs

from pipeline.shards import ShardWriter, write_atomic
from schemas import columns as C
from schemas.records import record_schema
from schemas.spec import StorageConfig
from tests.conftest import ROOT, free_port_block
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow
BUCKET = "stores"
SCRIPT = str(ROOT / "infra/local/s3.sh")


def identity(name: str, actions: list[str]) -> dict:
    key, secret = f"{name}-{secrets.token_hex(4)}", f"{name}secret-{secrets.token_hex(16)}"
    return {"name": name, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}


def hold_catalog_ports() -> list[socket.socket]:
    """Bind SeaweedFS's fixed Iceberg and Lance ports (8181, 9101), which s3.sh turns off: a server that
    still wanted them would not start. A port taken by something else already is just as good."""
    held = []
    for port in (8181, 9101):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            held.append(s)
        except OSError:
            s.close()
    return held


@pytest.fixture(scope="module")
def iam(s3_server, tmp_path_factory):
    """A second server beside the session's: an admin, a reader (no writes), a writer of one run's errors/ only."""
    tmp = tmp_path_factory.mktemp("iam")
    ids = {"admin": identity("admin", ["Admin", "Read", "Write", "List", "Tagging"]),
           "reader": identity("reader", [f"List:{BUCKET}", f"Read:{BUCKET}/*"]),
           "errors-only": identity("errorsonly", [f"List:{BUCKET}", f"Read:{BUCKET}/*",
                                                  f"Write:{BUCKET}/captions/w/errors/*"])}
    (tmp / "iam.json").write_text(json.dumps({"identities": list(ids.values())}))
    admin = ids["admin"]["credentials"][0]
    env = {**os.environ, "VLMBATCH_S3_PORT": str(free_port_block(13)), "VLMBATCH_S3_DIR": str(tmp / "s3"),
           "VLMBATCH_S3_CONFIG": str(tmp / "iam.json"), "AWS_ACCESS_KEY_ID": admin["accessKey"],
           "AWS_SECRET_ACCESS_KEY": admin["secretKey"]}
    held = hold_catalog_ports()
    try:
        started = subprocess.run([SCRIPT, "start"], env=env, capture_output=True, text=True)
    finally:
        for sock in held:
            sock.close()
    assert started.returncode == 0, started.stderr
    endpoint = started.stdout.strip()
    keys = {name: (i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"]) for name, i in ids.items()}
    s3fs.S3FileSystem(key=keys["admin"][0], secret=keys["admin"][1], client_kwargs={"endpoint_url": endpoint},
                      skip_instance_cache=True).mkdir(BUCKET)
    try:
        yield endpoint, keys
    finally:
        subprocess.run([SCRIPT, "stop"], env=env, check=False)


def as_identity(monkeypatch, keys: tuple[str, str]) -> None:
    """Credentials from the environment, as in production; cached clients of another identity dropped."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys[1])
    s3fs.S3FileSystem.clear_instance_cache()


def objects(fs: s3fs.S3FileSystem, prefix: str) -> list[str]:
    """Keys of the objects under ``prefix`` (``find`` would also name the server's directory entries)."""
    out = fs.call_s3("list_objects_v2", Bucket=BUCKET, Prefix=prefix)
    return [c["Key"] for c in out.get("Contents", [])]


def admin_fs(endpoint: str, keys: dict) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=keys["admin"][0], secret=keys["admin"][1], client_kwargs={"endpoint_url": endpoint},
                             skip_instance_cache=True, use_listings_cache=False)


@pytest.mark.parametrize("mib", [1, 60])  # one PUT; a multipart upload (s3fs's parts are 50 MiB)
def test_a_write_that_fails_mid_way_leaves_no_object(iam, monkeypatch, mib):
    endpoint, keys = iam
    as_identity(monkeypatch, keys["admin"])
    key = f"{BUCKET}/captions/f/errors/part-{mib}.parquet"

    def write(f):
        for _ in range(mib):
            f.write(os.urandom(2**20))
        raise RuntimeError("the writer failed mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        write_atomic(f"s3://{key}", write, StorageConfig(endpoint_url=endpoint))
    fs = admin_fs(endpoint, keys)
    assert not fs.exists(key), "a failed write published an object"
    uploads = fs.call_s3("list_multipart_uploads", Bucket=BUCKET).get("Uploads", [])
    assert not [u for u in uploads if u["Key"] == key.split("/", 1)[1]], "a failed write left its upload open"


def test_a_shard_whose_data_file_fails_publishes_neither_file(iam, monkeypatch):
    """The error rows are written first; when the data file is then refused, they are taken back."""
    endpoint, keys = iam
    as_identity(monkeypatch, keys["errors-only"])
    probe = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    probe.pipe_file(f"{BUCKET}/captions/w/errors/probe", b"")  # this identity may write (and remove) error files
    probe.rm_file(f"{BUCKET}/captions/w/errors/probe")
    columns = (C.ID, C.SOURCE, C.STATUS, C.ERROR)
    rows = pa.table({C.ID: ["a", "b"], C.SOURCE: ["s3://x/a.jpg", "s3://x/b.jpg"], C.STATUS: ["ok", "decode_error"],
                     C.ERROR: [None, "truncated"]})
    writer = ShardWriter(f"s3://{BUCKET}/captions/w", StorageConfig(endpoint_url=endpoint), "zstd",
                         record_schema(columns))
    with pytest.raises(PermissionError):
        writer(rows)
    fs = admin_fs(endpoint, keys)
    assert objects(fs, "captions/w/") == [], "a failed shard write left an object"
    # A codec the writer cannot use fails before a byte is written: no 0-byte object either.
    as_identity(monkeypatch, keys["admin"])
    with pytest.raises(Exception, match="(?i)zip|codec|compression"):
        ShardWriter(f"s3://{BUCKET}/captions/z", StorageConfig(endpoint_url=endpoint), "zip",
                    record_schema(columns))(rows)
    assert objects(fs, "captions/z/") == []


def test_a_sink_this_identity_may_not_write_is_refused_before_anything_starts(iam, tiny_models, tmp_path):
    endpoint, keys = iam
    fs = admin_fs(endpoint, keys)
    fs.pipe_file(f"{BUCKET}/corpus/one.jpg", b"not read: the run stops before")
    path = write_spec(tmp_path / "spec.yaml", fast_spec(endpoint, BUCKET, str(tiny_models["internvl"])))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": keys["reader"][0], "AWS_SECRET_ACCESS_KEY": keys["reader"][1],
           "RAY_TMPDIR": str(tmp_path / "ray"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", path, "--run-id", "denied"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: sink s3://{BUCKET}/captions/denied: access denied: this identity may not write objects there "
        "(AccessDenied"), proc.stderr
    assert not (tmp_path / "ray").exists(), "Ray started"
    assert objects(fs, "captions/") == []


def test_two_servers_run_side_by_side(iam, s3_server):
    """The session's server and this module's, both answering (the second started with 8181 / 9101 taken)."""
    endpoint, keys = iam
    for url, key in ((s3_server, None), (endpoint, keys["admin"])):
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, skip_instance_cache=True,
                               **({"key": key[0], "secret": key[1]} if key else {}))
        fs.pipe_file(f"{BUCKET}/side/{url.rsplit(':', 1)[1]}", b"here")
    for url, key in ((s3_server, None), (endpoint, keys["admin"])):
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, skip_instance_cache=True,
                               **({"key": key[0], "secret": key[1]} if key else {}))
        assert fs.ls(f"{BUCKET}/side/", refresh=True) == [f"{BUCKET}/side/{url.rsplit(':', 1)[1]}"]
