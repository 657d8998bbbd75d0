"""Headless Chromium for tests: dump a page's DOM after layout, or take a screenshot.

Debian's ``chromium`` package (``infra/local/install.sh`` installs it when missing). Every run
gets a new empty profile and no background network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str:
    """Path of the browser; a test without one fails in CI and is skipped elsewhere."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (infra/local/install.sh installs it)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def dump_dom(path: str) -> str:
    """The page's DOM as Chromium serialises it after loading ``path``."""
    proc = _run(["--dump-dom", f"file://{os.path.abspath(path)}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(path: str, png: str, size: str = "1280,1400") -> None:
    """A PNG of the page as a person sees it."""
    proc = _run([f"--screenshot={os.path.abspath(png)}", f"--window-size={size}", f"file://{os.path.abspath(path)}"])
    assert proc.returncode == 0 and os.path.getsize(png) > 0, proc.stderr[-2000:]
