"""Fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest

from tests.integration.faults import marked_env, reap


@pytest.fixture
def run_env(s3_server):
    """Environment for child runs: the test S3 endpoint, and a marker to reap every process they leave."""
    env = {**os.environ, "VLMBATCH_S3_ENDPOINT": s3_server, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env, marker = marked_env(env)
    yield env, marker
    reap(marker)
