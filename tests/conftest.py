"""Shared fixtures: tiny models built once per session, the real local S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import free_port, free_port_block  # noqa: F401 - tests import them from here

ROOT = Path(__file__).resolve().parent.parent


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
    port = int(os.environ.get("VLMBATCH_TEST_S3_PORT", "0")) or free_port_block(13)
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
    """A ``ray start --head`` cluster on loopback that stops only its own processes.

    (``ray stop`` would also kill every other Ray instance on the machine.)
    """

    def __init__(self, ray_bin: str, env: dict, num_cpus: int = 2, extra_args: tuple[str, ...] = ()):
        self.ray_bin = ray_bin
        self.num_cpus = num_cpus
        self.extra_args = tuple(extra_args)  # more `ray start` flags, e.g. --metrics-export-port=N
        self.gcs_port, self.dashboard_port, self.client_port = free_port(), free_port(), free_port()
        self.temp_dir = f"/tmp/vr-{self.gcs_port}"
        # Every process of the cluster inherits this marker; stop() finds them by it.
        self.marker = f"VLMBATCH_TEST_CLUSTER={self.gcs_port}"
        self.env = {**env, "VLMBATCH_TEST_CLUSTER": str(self.gcs_port)}

    def start(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.ray_bin, "start", "--head", f"--num-cpus={self.num_cpus}", "--node-ip-address=127.0.0.1",
             f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
             f"--ray-client-server-port={self.client_port}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
             *self.extra_args],
            env=self.env, capture_output=True, text=True, timeout=180,
        )

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
