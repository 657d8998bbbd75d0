"""Shared fixtures: tiny models built once per session, the real local S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import free_port, free_port_block  # noqa: F401 - tests import them from here

ROOT = Path(__file__).resolve().parent.parent


#: Tests that start a ``ray start`` cluster (they share ``~/.ray``'s token and the node agents' start-up):
#: one xdist worker runs them one after another.
RAY_CLUSTER_GROUP = "ray-start-cluster"


def pytest_configure(config):
    """Before any worker starts: the machine's Ray token (``~/.ray/auth_token``), made once.

    The first Ray instance on a fresh machine writes it; two starting at once on parallel workers
    would each write their own, and a node or client of one would then present the other's.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") or (Path.home() / ".ray" / "auth_token").exists():
        return
    from ray._private.authentication.authentication_token_setup import generate_and_save_token

    generate_and_save_token()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into scheduling scopes
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (``VLMBATCH_TEST_WORKERS=N infra/local/test.sh``), ask xdist to keep a
    file's tests on one worker, so that a module's engine starts once; a test marked ``xdist_group`` keeps its own
    group (``RAY_CLUSTER_GROUP``). Not relied on by CI (one process): in one full two-worker run xdist still split
    some files' tests across workers, not yet explained.
    """
    for item in items:
        if not any(m.name == "xdist_group" for m in item.iter_markers()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def _worker_index() -> int:
    """0, 1, ... for xdist workers gw0, gw1, ...; 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """family -> directory of its tiny model, built on first use in this session."""
    from operators.vlm.registry import families

    base = tmp_path_factory.mktemp("models")
    built: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, family: str) -> Path:
            directory = base / f"tiny-{family}"
            families()[family].make_tiny(directory)
            built[family] = directory
            self[family] = directory
            return directory

    return Lazy()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The real S3 server (SeaweedFS) on loopback, via infra/local/s3.sh; yields its endpoint.

    Uses a free block of ports and its own data directory, so it never touches the demo's server
    or another test session's.
    """
    fixed = int(os.environ.get("VLMBATCH_TEST_S3_PORT", "0"))
    # A fixed port is the first worker's; each xdist worker's server takes the next block of 16.
    port = fixed + 16 * _worker_index() if fixed else free_port_block(13)
    env = {
        **os.environ,
        "VLMBATCH_S3_PORT": str(port),
        "VLMBATCH_S3_DIR": str(tmp_path_factory.mktemp("s3")),
        "AWS_ACCESS_KEY_ID": os.environ.setdefault("AWS_ACCESS_KEY_ID", "vlmbatch-dev"),
        "AWS_SECRET_ACCESS_KEY": os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "vlmbatch-dev-secret"),
    }
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    script = str(ROOT / "infra/local/s3.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"the S3 server did not start: {started.stderr[-2000:]}", pytrace=False)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "stop"], env=env, check=False)


class LocalRayCluster:
    """A ``ray start`` cluster on loopback (a head, and worker nodes on demand) that stops only its own processes.

    (``ray stop`` would also kill every other Ray instance on the machine.) Every process of the
    cluster inherits ``VLMBATCH_TEST_CLUSTER=<gcs port>``; every process of one node also inherits
    ``VLMBATCH_TEST_NODE=<gcs port>-<node name>`` (the head is ``head``), so a test can kill one node
    (its raylet, object store and every worker under it) the way a preempted machine disappears.
    Each node has its own raylet, object store, temp dir and agent ports.

    Args:
        num_cpus: the head's CPUs (0 keeps tasks and actors off it).
        extra_args: more ``ray start --head`` flags, e.g. ``--metrics-export-port=N``.
        resources: the head's custom resources.
        system_config: Ray system settings of the head (GCS), e.g. a shorter node health check.
    """

    def __init__(self, ray_bin: str, env: dict, num_cpus: int = 2, extra_args: tuple[str, ...] = (),
                 resources: dict[str, float] | None = None, system_config: dict | None = None):
        self.ray_bin = ray_bin
        self.num_cpus = num_cpus
        self.extra_args = tuple(extra_args)
        self.resources = resources
        self.system_config = system_config
        self.gcs_port, self.dashboard_port, self.client_port = free_port(), free_port(), free_port()
        self.temp_dir = f"/tmp/vr-{self.gcs_port}"
        # Every process of the cluster inherits this marker; stop() finds them by it.
        self.marker = f"VLMBATCH_TEST_CLUSTER={self.gcs_port}"
        self.env = {**env, "VLMBATCH_TEST_CLUSTER": str(self.gcs_port)}
        self.nodes: list[str] = []

    @property
    def address(self) -> str:
        """The GCS address drivers and nodes join (``ray.init(address=...)``, ``RAY_ADDRESS``)."""
        return f"127.0.0.1:{self.gcs_port}"

    def _node_env(self, name: str) -> dict:
        return {**self.env, "VLMBATCH_TEST_NODE": f"{self.gcs_port}-{name}"}

    @staticmethod
    def _node_args(num_cpus: int, resources: dict[str, float] | None) -> list[str]:
        args = [f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                # Agent ports default to fixed numbers: two nodes on one machine would collide.
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        return args

    def start(self) -> subprocess.CompletedProcess:
        """Start the head node."""
        extra = list(self.extra_args)
        if self.system_config:
            extra.append(f"--system-config={json.dumps(self.system_config)}")
        args = self._node_args(self.num_cpus, self.resources)
        if any(a.startswith("--metrics-export-port") for a in extra):
            args = [a for a in args if not a.startswith("--metrics-export-port")]
        proc = subprocess.run(
            [self.ray_bin, "start", "--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
             f"--ray-client-server-port={self.client_port}", f"--temp-dir={self.temp_dir}", *args, *extra],
            env=self._node_env("head"), capture_output=True, text=True, timeout=180,
        )
        if proc.returncode == 0:
            self.nodes.append("head")
        return proc

    def add_node(self, name: str, num_cpus: int, resources: dict[str, float] | None = None) -> None:
        """Start a worker node ``name`` that joins the head (its own raylet and object store).

        Raises:
            RuntimeError: ``ray start`` failed (with its output).
        """
        proc = subprocess.run(
            [self.ray_bin, "start", f"--address={self.address}", f"--temp-dir={self.temp_dir}-{name}",
             *self._node_args(num_cpus, resources)],
            # Clusters use token authentication by default: a joining node presents the local token.
            env={**self._node_env(name), "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=180,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"node {name} did not start: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        self.nodes.append(name)

    def node_pids(self, name: str) -> list[int]:
        """Processes of node ``name`` (raylet, object store, agents, workers)."""
        from tests.procs import pids_with_env

        return pids_with_env(f"VLMBATCH_TEST_NODE={self.gcs_port}-{name}")

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of node ``name`` at once, as a lost machine; returns their pids."""
        pids = self.node_pids(name)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.node_pids(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids

    def submit(self, entrypoint: list[str], cwd, env: dict, timeout: float = 600) -> tuple[int, str]:
        """``ray job submit --working-dir . -- ENTRYPOINT``; returns (exit code, output).

        A loaded machine may answer before the node's job agent is up ("No available agent to
        submit job"); nothing was submitted then, so that answer is retried for up to three minutes.
        """
        import time as _time

        for _ in range(36):
            proc = subprocess.run(
                [self.ray_bin, "job", "submit", f"--address=http://127.0.0.1:{self.dashboard_port}",
                 "--working-dir", ".", "--", *entrypoint],
                # Clusters use token authentication by default; the local token file is the client's key.
                cwd=cwd, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=timeout,
            )
            log = proc.stdout + proc.stderr
            if "No available agent to submit job" not in log:
                break
            _time.sleep(5)
        return proc.returncode, log

    def _pids(self) -> list[int]:
        from tests.procs import pids_with_env

        return pids_with_env(self.marker)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
            for pid in self._pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self._pids() and time.monotonic() < deadline:
                time.sleep(0.2)
