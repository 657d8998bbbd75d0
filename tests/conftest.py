"""Shared fixtures: tiny models built once per session, the real local S3 server."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The real S3 server (SeaweedFS) on loopback, via infra/local/s3.sh; yields its endpoint.

    Uses its own port range and data directory, so it never touches the demo's server.
    """
    port = int(os.environ.get("VLMBATCH_TEST_S3_PORT", "18333"))
    env = {
        **os.environ,
        "VLMBATCH_S3_PORT": str(port),
        "VLMBATCH_S3_DIR": str(tmp_path_factory.mktemp("s3")),
        "AWS_ACCESS_KEY_ID": os.environ.setdefault("AWS_ACCESS_KEY_ID", "vlmbatch-dev"),
        "AWS_SECRET_ACCESS_KEY": os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "vlmbatch-dev-secret"),
    }
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    script = str(ROOT / "infra/local/s3.sh")
    endpoint = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield endpoint
    finally:
        subprocess.run([script, "stop"], env=env, check=False)
