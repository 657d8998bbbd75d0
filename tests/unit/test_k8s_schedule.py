"""The CronJob's scheduler pod against a stand-in Kubernetes API (plumbing): create, dedupe, wait."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs.k8s_schedule import KubeClient, rayjobs_path, schedule_once


class FakeAPI:
    """RayJobs in memory; each GET advances a job through the given deployment states."""

    def __init__(self, states: list[str]):
        self.jobs: dict[str, dict] = {}
        self.states = states
        self.posts = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                assert self.headers["Authorization"] == "Bearer t0k"
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.posts += 1
                name = body["metadata"]["name"]
                if name in api.jobs:
                    return self._send(409, {"message": "already exists"})
                api.jobs[name] = {**body, "_reads": 0}
                return self._send(201, body)

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                job = api.jobs.get(name)
                if job is None:
                    return self._send(404, {"message": "not found"})
                state = api.states[min(job["_reads"], len(api.states) - 1)]
                job["_reads"] += 1
                return self._send(200, {**job, "status": {"jobDeploymentStatus": state} if state else {}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = KubeClient(f"http://127.0.0.1:{self.server.server_port}", "t0k", None)

    def close(self):
        self.server.shutdown()


TEMPLATE = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"labels": {"a": "b"}},
            "spec": {"entrypoint": "python -m jobs.caption"}}


@pytest.fixture
def api_factory():
    made = []

    def make(states):
        api = FakeAPI(states)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def test_creates_the_nights_rayjob_and_waits_for_completion(api_factory, capsys):
    api = api_factory(["", "Initializing", "Running", "Running", "Complete"])
    assert schedule_once(api.client, TEMPLATE, "ns", "job-nightly-20261122", wait_s=60, poll_s=0) == 0
    job = api.jobs["job-nightly-20261122"]
    assert job["metadata"] == {"labels": {"a": "b"}, "name": "job-nightly-20261122", "namespace": "ns"}
    out = capsys.readouterr().out
    assert "created rayjob ns/job-nightly-20261122" in out and "Complete" in out


def test_a_second_pod_the_same_night_waits_on_the_same_rayjob(api_factory, capsys):
    api = api_factory(["Running", "Failed"])
    api.jobs["j-20261122"] = {**TEMPLATE, "_reads": 0}
    assert schedule_once(api.client, TEMPLATE, "ns", "j-20261122", wait_s=60, poll_s=0) == 1
    assert api.posts == 1 and len(api.jobs) == 1
    assert "already exists; waiting" in capsys.readouterr().out


def test_gives_up_after_the_wait(api_factory, capsys):
    api = api_factory(["Running"])
    assert schedule_once(api.client, TEMPLATE, "ns", "j", wait_s=0, poll_s=0) == 1
    assert "giving up" in capsys.readouterr().err


def test_paths():
    assert rayjobs_path("ns") == "/apis/ray.io/v1/namespaces/ns/rayjobs"
    assert rayjobs_path("ns", "x") == "/apis/ray.io/v1/namespaces/ns/rayjobs/x"
