"""The pod of the nightly ``batch/v1`` CronJob: create tonight's RayJob, then wait for it to end.

    python -m jobs.k8s_schedule --template /etc/vlmbatch-schedule/rayjob.yaml \
        --namespace vlmbatch --name-prefix demo-caption-nightly

The RayJob is named after the UTC date (``<prefix>-YYYYMMDD``), so a second pod of the same
night finds it (HTTP 409) and waits on it instead of starting another run. Waiting keeps the
CronJob's Job alive for as long as the run lasts, which is what makes ``concurrencyPolicy:
Forbid`` keep two nights from overlapping. Talks to the API server with the pod's
ServiceAccount token through the standard library only (the image carries no kubectl).
Exit 0 when the RayJob completes, 1 when it fails or the wait runs out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DONE = {"Complete": 0, "Failed": 1}


class KubeClient:
    """Just enough of the Kubernetes API for RayJobs: create and get."""

    def __init__(self, server: str, token: str | None, ca_file: str | None):
        self.server = server.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file) if server.startswith("https") else None

    @classmethod
    def in_cluster(cls) -> KubeClient:
        """The client of a pod: API server from the environment, the ServiceAccount's token and CA."""
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        with open(f"{SA_DIR}/token") as f:
            token = f.read().strip()
        return cls(f"https://{host}:{port}", token, f"{SA_DIR}/ca.crt")

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def rayjobs_path(namespace: str, name: str = "") -> str:
    return f"/apis/ray.io/v1/namespaces/{namespace}/rayjobs" + (f"/{name}" if name else "")


def schedule_once(client: KubeClient, template: dict, namespace: str, name: str, wait_s: float,
                  poll_s: float = 30.0) -> int:
    """Create RayJob ``name`` from ``template`` (or find it) and wait until it ends; the exit code."""
    body = {**template, "metadata": {**template.get("metadata", {}), "name": name, "namespace": namespace}}
    code, answer = client.request("POST", rayjobs_path(namespace), body)
    if code == 409:
        print(f"rayjob {name} already exists; waiting on it", flush=True)
    elif code >= 300:
        print(f"cannot create rayjob {name}: HTTP {code} {answer.get('message', '')}", file=sys.stderr)
        return 1
    else:
        print(f"created rayjob {namespace}/{name}", flush=True)
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        code, job = client.request("GET", rayjobs_path(namespace, name))
        if code == 404:
            print(f"rayjob {name} was deleted before it finished", file=sys.stderr)
            return 1
        state = (job.get("status") or {}).get("jobDeploymentStatus")
        if state != last:
            print(f"rayjob {name}: {state or 'pending'}", flush=True)
            last = state
        if state in DONE:
            return DONE[state]
        if time.monotonic() >= deadline:
            print(f"rayjob {name} still {state} after {wait_s:.0f} s; giving up waiting", file=sys.stderr)
            return 1
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the CronJob's container."""
    p = argparse.ArgumentParser(prog="python -m jobs.k8s_schedule", description=__doc__.splitlines()[0])
    p.add_argument("--template", required=True, help="YAML file holding the RayJob to create")
    p.add_argument("--namespace", required=True, help="namespace of the RayJob")
    p.add_argument("--name-prefix", required=True, help="the RayJob is named <prefix>-YYYYMMDD (UTC)")
    p.add_argument("--wait-seconds", type=float, default=90000, help="longest wait for the RayJob to end")
    p.add_argument("--poll-seconds", type=float, default=30, help="seconds between status checks")
    args = p.parse_args(argv)
    with open(args.template) as f:
        template = yaml.safe_load(f)
    name = f"{args.name_prefix}-{dt.datetime.now(dt.timezone.utc):%Y%m%d}"
    return schedule_once(KubeClient.in_cluster(), template, args.namespace, name, args.wait_seconds,
                         args.poll_seconds)


if __name__ == "__main__":
    sys.exit(main())
