"""Bad input end to end: every case is a row with its own status and error, the job goes on,
failed rows are also under the run's errors prefix, and no credential leaks into anything a run
writes. The job runs under a read-limited identity of a real S3 server (SeaweedFS IAM)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.commit import read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig
from tests import corpus
from tests.conftest import ROOT, free_port_block
from tests.integration.faults import marked_env, reap
from tests.integration.helpers import demo_spec, write_spec

pytestmark = pytest.mark.slow

CASES = {
    "ok.jpg": (corpus.rgb(), "ok"),
    "ok.png": (corpus.gradient(), "ok"),
    "zero.jpg": (b"", "empty_file"),
    "text.jpg": (corpus.text_as_jpg(), "not_an_image"),
    "truncated.jpg": (corpus.truncated_jpeg(), "decode_error"),
    "truncated.png": (corpus.truncated_png(), "decode_error"),
    "bomb.png": (corpus.png_bomb(), "too_large"),
    "huge.jpg": (corpus.huge_jpeg(), "ok"),
    "cmyk.jpg": (corpus.cmyk_jpeg(), "ok"),
    "gray16.png": (corpus.gray16_png(), "ok"),
    "bilevel.png": (corpus.bilevel_png(), "ok"),
    "palette.png": (corpus.palette_transparent_png(), "ok"),
    "rgba.png": (corpus.rgba_transparent_png(), "ok"),
    "animated.gif": (corpus.animated_gif(), "ok"),
    "animated.webp": (corpus.animated_webp(), "ok"),
    "exif.jpg": (corpus.exif_rotated_jpeg(), "ok"),
    "vanishing.jpg": (corpus.rgb(), "not_found"),
}

# Lists the corpus, deletes one object, then runs: the object is missing between listing and fetch.
DRIVER = """
import os, sys, s3fs
from jobs.specfile import load_spec
from pipeline.runner import Run
run = Run(load_spec(sys.argv[1]), "bad-1")
run.prepare()  # the run lists its source into its listing (CPU tasks)
admin = s3fs.S3FileSystem(key=os.environ.pop("T_ADMIN_KEY"), secret=os.environ.pop("T_ADMIN_SECRET"),
                          client_kwargs={"endpoint_url": sys.argv[2]})
admin.rm_file(sys.argv[3])
run.execute()
"""


@pytest.fixture
def iam_server(tmp_path):
    """A real S3 server with two identities: admin, and a reader that may not read corpus/private/."""
    admin = ("admin-" + secrets.token_hex(4), "adminsecret-" + secrets.token_hex(16))
    reader = ("reader-" + secrets.token_hex(4), "readersecret-" + secrets.token_hex(16))
    bucket = "badinput"
    config = {"identities": [
        {"name": "admin", "credentials": [{"accessKey": admin[0], "secretKey": admin[1]}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": reader[0], "secretKey": reader[1]}],
         "actions": [f"List:{bucket}", f"Read:{bucket}/corpus/public/*", f"Read:{bucket}/captions/*",
                     f"Write:{bucket}/captions/*"]},
    ]}
    (tmp_path / "iam.json").write_text(json.dumps(config))
    env = {**os.environ, "VLMBATCH_S3_PORT": str(free_port_block(13)), "VLMBATCH_S3_DIR": str(tmp_path / "s3"),
           "VLMBATCH_S3_CONFIG": str(tmp_path / "iam.json"), "AWS_ACCESS_KEY_ID": admin[0],
           "AWS_SECRET_ACCESS_KEY": admin[1]}
    script = str(ROOT / "infra/local/s3.sh")
    endpoint = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield endpoint, bucket, admin, reader
    finally:
        subprocess.run([script, "stop"], env=env, check=False)


def test_every_bad_case_is_a_row_and_no_secret_leaks(iam_server, tiny_models, tmp_path, monkeypatch):
    endpoint, bucket, admin, reader = iam_server
    fs = s3fs.S3FileSystem(key=admin[0], secret=admin[1], client_kwargs={"endpoint_url": endpoint})
    fs.mkdir(bucket)
    for name, (data, _) in CASES.items():
        fs.pipe_file(f"{bucket}/corpus/public/{name}", data)
    fs.pipe_file(f"{bucket}/corpus/private/forbidden.jpg", corpus.rgb())

    spec = demo_spec(endpoint, bucket, "internvl", str(tiny_models["internvl"]), name="badinput")
    spec["decode"] = {"max_side": 2048, "max_source_pixels": 50_000_000}
    spec["postcheck"] = {"truncated": False, "repetition": False}
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    ray_tmp = f"/tmp/vrs-{secrets.token_hex(3)}"
    env, marker = marked_env({**os.environ, "AWS_ACCESS_KEY_ID": reader[0], "AWS_SECRET_ACCESS_KEY": reader[1],
                              "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0",
                              # the driver deletes one object as admin, then forgets these
                              "T_ADMIN_KEY": admin[0], "T_ADMIN_SECRET": admin[1]})
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run([sys.executable, "-c", DRIVER, spec_path, endpoint,
                               f"{bucket}/corpus/public/vanishing.jpg"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        reap(marker)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]

    # Read the results back as admin (credentials from the environment, as everywhere).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", admin[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", admin[1])
    storage = StorageConfig(endpoint_url=endpoint)
    root = f"s3://{bucket}/captions/bad-1"
    rows = {r[C.SOURCE].rsplit("/", 1)[1]: r for r in read_committed(root, storage).to_pylist()}
    assert len(rows) == len(CASES) + 1, "one row per listed object"
    assert rows["forbidden.jpg"][C.STATUS] == "forbidden"
    for name, (_, status) in CASES.items():
        row = rows[name]
        assert row[C.STATUS] == status, (name, row[C.STATUS], row[C.ERROR])
        if status == "ok":
            assert row[C.CAPTION].strip() and row[C.ERROR] is None
        else:
            assert row[C.ERROR] and row[C.CAPTION] is None, name
    assert (rows["huge.jpg"][C.ORIG_WIDTH], rows["huge.jpg"][C.ORIG_HEIGHT]) == (6000, 4000)
    assert max(rows["huge.jpg"][C.WIDTH], rows["huge.jpg"][C.HEIGHT]) <= 2048
    assert rows["animated.gif"][C.NUM_FRAMES] == 3 and rows["animated.webp"][C.NUM_FRAMES] == 4
    assert "100000x100000" in rows["bomb.png"][C.ERROR]

    # Failed rows are also under the errors prefix: id, source, status, error.
    manifest = read_manifest(root, storage)
    failed = {n for n, r in rows.items() if r[C.STATUS] != "ok"}
    error_rows = []
    for entry in manifest.error_files:
        with fs.open(f"{bucket}/captions/bad-1/{entry.path}", "rb") as f:
            error_rows += pq.read_table(f).to_pylist()
    assert {r[C.SOURCE].rsplit("/", 1)[1] for r in error_rows} == failed
    assert all(set(r) == {C.ID, C.SOURCE, C.STATUS, C.ERROR} and r[C.ERROR] for r in error_rows)

    # No secret in anything the run wrote: outputs, manifest, errors, its logs, Ray's logs.
    written = [log]
    for path in fs.find(f"{bucket}/captions/"):
        written.append(fs.cat_file(path).decode("latin-1"))
    for path in Path(ray_tmp).rglob("*"):
        if path.is_file():
            written.append(path.read_bytes().decode("latin-1"))
    for secret in (reader[1], admin[1]):
        assert not any(secret in text for text in written), "a secret key appears in what the run wrote"
    assert len(written) > 10, "the secret scan looked at the run's files"
