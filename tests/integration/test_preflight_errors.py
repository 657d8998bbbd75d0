"""Each storage, model and resource mistake: one line and its exit code, before Ray or any engine starts.

Every case is ``vlmbatch run`` (or ``vlmbatch status``) in a child process against the real S3
server, with a fresh ``RAY_TMPDIR``: no Ray session directory afterwards means no Ray node and no
engine ever started. How fast each is answered is measured in ``bench/preflight.py``, not here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobs.demo_corpus import write_demo_corpus
from schemas.spec import StorageConfig
from tests.conftest import ROOT, free_port
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow
BUCKET = "preflight"
_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def vlmbatch(args: list[str], env: dict, tmp: Path) -> tuple[int, list[str], bool]:
    """Exit code, the lines printed (log records left out), and whether Ray started."""
    ray_tmp = tmp / f"ray-{os.urandom(4).hex()}"
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "RAY_TMPDIR": str(ray_tmp)}, timeout=120)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip() and not _LOG.match(line)]
    return proc.returncode, lines, ray_tmp.exists() and any(ray_tmp.rglob("session_*"))


@pytest.fixture(scope="module")
def setup(s3_server, tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preflight")
    write_demo_corpus(f"s3://{BUCKET}/corpus/", StorageConfig(endpoint_url=s3_server))
    corrupt = tmp / "corrupt-model"
    shutil.copytree(tiny_models["internvl"], corrupt)
    text = (corrupt / "config.json").read_text()
    (corrupt / "config.json").write_text(text[: len(text) // 2])
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    for name in ("RAY_ADDRESS", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return tmp, env, fast_spec(s3_server, BUCKET, str(tiny_models["internvl"])), str(corrupt)


def _set(*paths_then_value):
    """A spec change setting every dotted path given to the last argument."""
    *paths, value = paths_then_value

    def change(spec):
        for path in paths:
            node = spec
            *parents, leaf = path.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
    return change


NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config"}


def cases(corrupt: str) -> dict:
    """name -> (spec change, environment change, exit code, the line it must print)."""
    return {
        "wrong endpoint": (_set("source.storage.endpoint_url", "sink.storage.endpoint_url",
                                f"http://127.0.0.1:{free_port()}"), {}, 5,
                           r"^error: source s3://preflight/corpus/: cannot reach the object store at "
                           r"http://127\.0\.0\.1:\d+: cannot connect: Connection refused$"),
        "wrong secret": (None, {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, 5,
                         r"rejected the credentials \(SignatureDoesNotMatch: the secret key does not match"),
        "unknown access key": (None, {"AWS_ACCESS_KEY_ID": "nobody"}, 5,
                               r"rejected the credentials \(InvalidAccessKeyId: the store does not know"),
        "no credentials": (None, NO_CREDENTIALS, 5, r"^error: source s3://preflight/corpus/: no credentials found"),
        "no such bucket": (_set("source.uri", "s3://no-such-bucket-here/corpus/"), {}, 5,
                           r"^error: source s3://no-such-bucket-here/corpus/: bucket 'no-such-bucket-here' does "
                           r"not exist at http://127\.0\.0\.1:\d+$"),
        "no such prefix": (_set("source.uri", f"s3://{BUCKET}/typo/"), {}, 5,
                           rf"^error: source s3://{BUCKET}/typo/ does not exist: no such prefix"),
        "missing local source": (_set("source.uri", "/nonexistent/vlmbatch-corpus/"), {}, 5,
                                 r"^error: source /nonexistent/vlmbatch-corpus/ does not exist"),
        "missing model directory": (_set("model.model_id", "/nonexistent/tiny-internvl"), {}, 6,
                                    r"^error: model.model_id: model directory /nonexistent/tiny-internvl does not "
                                    r"exist$"),
        "corrupt config.json": (_set("model.model_id", corrupt), {}, 6,
                                rf"^error: model.model_id: {re.escape(corrupt)}/config.json is not valid JSON"),
        "model of another family": (_set("model.family", "llava"), {}, 6,
                                    r"which family 'llava' does not serve .*; set model.family to 'internvl'$"),
        "hub id not found": (_set("model.model_id", "vlmbatch-tests/no-such-model"), {}, 6,
                             r"^error: model.model_id 'vlmbatch-tests/no-such-model': no local directory of that "
                             r"name and not in the Hugging Face cache"),
        "a GPU per engine": (_set("resources.gpus_per_engine", 1), {}, 7,
                             r"^error: the caption pool asks for 1 CPU and 1 GPU per actor; no node of this "
                             r"machine's local Ray instance \(2 CPU, 0 GPU\)"),
        "more CPUs than the machine": (_set("resources.cpus_per_engine", 2), {}, 7,
                                       r"^error: the actor pools need 3 CPU \(caption 1 x 2 \+ 1 CPU task 1\)"),
    }


def test_each_mistake_is_one_line_and_its_exit_code_and_nothing_starts(setup):
    tmp, env, good, corrupt = setup
    jobs = {}
    for name, (change, env_change, code, said) in cases(corrupt).items():
        spec = {**good, "source": dict(good["source"], storage=dict(good["source"]["storage"])),
                "sink": dict(good["sink"], storage=dict(good["sink"]["storage"])), "model": dict(good["model"]),
                "resources": dict(good["resources"])}
        if change:
            change(spec)
        path = write_spec(tmp / f"{name.replace(' ', '-')}.yaml", spec)
        run_env = {k: v for k, v in {**env, **env_change}.items() if v is not None}
        jobs[name] = (["run", path, "--run-id", name.replace(" ", "-").replace(".", "")], run_env, code, said)
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(jobs, pool.map(lambda job: vlmbatch(job[0], job[1], tmp), jobs.values()), strict=True))
    for name, (rc, lines, ray_started) in results.items():
        _, _, code, said = jobs[name]
        assert (rc, len(lines)) == (code, 1), (name, rc, lines)
        assert re.search(said, lines[0]), (name, lines[0])
        assert not ray_started, f"{name}: Ray (and so an engine) started"


def test_status_without_endpoint_and_an_empty_run_id_are_one_line(setup, s3_server):
    tmp, env, good, _ = setup
    # No --endpoint-url and no AWS_ENDPOINT_URL: the client goes to AWS, which this machine cannot reach
    # (or, with a network, does not know the bucket): one line either way.
    rc, lines, _ = vlmbatch(["status", f"s3://{BUCKET}/captions/r"], env, tmp)
    assert rc == 5 and len(lines) == 1 and lines[0].startswith(f"error: run s3://{BUCKET}/captions/r: "), lines
    assert "--endpoint-url" in lines[0]
    rc, lines, _ = vlmbatch(["status", f"s3://{BUCKET}/captions/r", "--endpoint-url", s3_server], env, tmp)
    assert rc == 2 and "nothing staged" in lines[0], lines
    path = write_spec(tmp / "good.yaml", good)
    rc, lines, ray_started = vlmbatch(["run", path, "--run-id", ""], env, tmp)
    assert (rc, lines) == (2, ["error: --run-id is empty; give a run id, or leave the option out for a new one"])
    assert not ray_started
