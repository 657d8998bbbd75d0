"""Style is part of the build: ruff over the whole tree (line length 119)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (it is in requirements/lock-cpu.txt)")
    proc = subprocess.run([ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nothing_reads_beside_the_checkout():
    """A fresh clone has nothing beside it: no project file may reach into ``../shared`` (or any sibling)."""
    import re

    pattern = re.compile(r"\.\./shared|parent\s*/\s*[\"']shared[\"']|[\"']shared[\"']\s*/")
    offenders = []
    for folder in ("schemas", "operators", "pipeline", "jobs", "bench", "tests", "infra"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh", ".yaml", ".toml") and path != Path(__file__):
                if pattern.search(path.read_text(errors="replace")):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"files read outside the checkout: {offenders}"
