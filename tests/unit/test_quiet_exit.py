"""An unregister sent to a resource tracker that died is dropped (no relaunched tracker, no KeyError traceback)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import os, signal, sys, time
from multiprocessing import resource_tracker, shared_memory
if sys.argv[1] == "patched":
    from operators.vlm.quiet_exit import install
    install()
shm = shared_memory.SharedMemory(create=True, size=64)   # starts the tracker, registers the segment
pid = resource_tracker._resource_tracker._pid
os.kill(pid, signal.SIGKILL)                             # Ray ending the actor's children
os.waitpid(pid, 0)
shm.close()
shm.unlink()                                             # unregisters: the dead tracker knew the name
time.sleep(0.5)
print("relaunched" if resource_tracker._resource_tracker._pid != pid else "kept")
"""


def run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_unregister_after_the_tracker_died_is_quiet():
    plain = run("plain")
    assert plain.stdout.strip() == "relaunched" and "KeyError" in plain.stderr, "the failure this guards against"
    patched = run("patched")
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout.strip() == "kept"
    assert "Traceback" not in patched.stderr and "relaunching" not in patched.stderr, patched.stderr
