"""Plumbing of the pre-flight and fault benchmarks: a real S3 server with two identities, runs of the
``vlmbatch`` command from any checkout, and what each run showed its user.

A run is ``python -m jobs.cli ARGS`` started in ``--root`` (this checkout by default, or a clone of
an older commit, so the same mistake is timed before and after a change). Every run carries a
marker in its environment: a watcher polls the processes that carry it (did a Ray node start? an
engine actor?) and everything left is killed when the run ends.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT
from tests.procs import free_port_block, pids_with_env

#: A line of the run's own logging (``jobs.caption``'s format), Ray's and vLLM's INFO / WARNING records,
#: an actor's prefixed output, a Python warning, the progress line: the noise around what the run says to
#: its user.
_NOISE = re.compile("|".join((
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING)\s",  # ours and Ray's Python records
    r"^(INFO|WARNING) \d\d-\d\d \d\d:\d\d:\d\d \[",  # vLLM's
    r"^\[\d{4}-\d\d-\d\d [\d:,]+ ([IW]|E \d+ \d+\] core_worker\.cc:\d+: Actor with) ",  # Ray's C++ chatter
    r"^(\x1b\[\d+m)?\(.* pid=\d+[,)]",  # an actor's output
    r"^\S+:\d+: \w*Warning: ", r"^  return ds\.map_batches",  # a deprecation warning and its source line
    r"^\[vlmbatch\] \d+", r"^\s*$")))


@dataclass
class Server:
    """The local S3 server (infra/local/s3.sh) with an admin and a reader that may not write captions/."""

    directory: Path
    bucket: str = "bench-pf"
    port: int = field(default_factory=lambda: free_port_block(13))
    admin: tuple[str, str] = field(default_factory=lambda: ("admin-" + secrets.token_hex(4),
                                                             "adminsecret-" + secrets.token_hex(16)))
    reader: tuple[str, str] = field(default_factory=lambda: ("reader-" + secrets.token_hex(4),
                                                              "readersecret-" + secrets.token_hex(16)))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict:
        return {**os.environ, "VLMBATCH_S3_PORT": str(self.port), "VLMBATCH_S3_DIR": str(self.directory / "s3"),
                "VLMBATCH_S3_CONFIG": str(self.directory / "iam.json"), "AWS_ACCESS_KEY_ID": self.admin[0],
                "AWS_SECRET_ACCESS_KEY": self.admin[1]}

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        b = self.bucket
        config = {"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.admin[0], "secretKey": self.admin[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": self.reader[0], "secretKey": self.reader[1]}],
             "actions": [f"List:{b}", f"Read:{b}/corpus/*", f"Read:{b}/captions/*"]},
        ]}
        (self.directory / "iam.json").write_text(json.dumps(config))
        subprocess.run([str(ROOT / "infra/local/s3.sh"), "start"], env=self._env(), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([str(ROOT / "infra/local/s3.sh"), "stop"], env=self._env(), check=False)

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key=self.admin[0], secret=self.admin[1], skip_instance_cache=True,
                                 use_listings_cache=False, client_kwargs={"endpoint_url": self.endpoint})

    def run_env(self, root: Path, **changes: str | None) -> dict:
        """Environment of a run from ``root`` as the admin; ``NAME=None`` removes a variable."""
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.admin[0], "AWS_SECRET_ACCESS_KEY": self.admin[1],
               "AWS_DEFAULT_REGION": "us-east-1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(root),
               "TOKENIZERS_PARALLELISM": "false"}
        for name in ("RAY_ADDRESS", "AWS_ENDPOINT_URL", "VLMBATCH_CRASH_AT"):
            env.pop(name, None)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env


def _marked(marker: str, cmdline_contains: str | None = None) -> list[int]:
    return pids_with_env(f"VLMBATCH_BENCH_MARKER={marker}", cmdline_contains)


def reap(marker: str, timeout: float = 20.0) -> None:
    """Kill every process that carries ``marker`` (a killed driver leaves its local Ray behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _marked(marker)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)


class Run:
    """One ``vlmbatch`` invocation in a child process, watched until it ends."""

    def __init__(self, root: Path, args: list[str], env: dict, log_dir: Path):
        self.marker = uuid.uuid4().hex
        self.log_path = log_dir / f"run-{self.marker[:8]}.log"
        self.ray_started = self.engine_started = False
        self._stop = threading.Event()
        self.started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=root, stdout=log,
                                         stderr=subprocess.STDOUT, text=True,
                                         env={**env, "VLMBATCH_BENCH_MARKER": self.marker})
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.ray_started |= bool(_marked(self.marker, "raylet") or _marked(self.marker, "gcs_server"))
            self.engine_started |= bool(_marked(self.marker, "CaptionActor"))
            self._stop.wait(0.2)

    def wait(self, timeout: float) -> dict:
        """Wait (killing it past ``timeout``: a hang) and return what the user saw."""
        timed_out = False
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.proc.kill()
            self.proc.wait()
        seconds = time.monotonic() - self.started
        self._stop.set()
        self._watcher.join()
        reap(self.marker)
        return {**describe_output(self.log_path.read_text(errors="replace")), "rc": None if timed_out else
                self.proc.returncode, "seconds": round(seconds, 2), "hung": timed_out,
                "ray_started": self.ray_started, "engine_started": self.engine_started, "log": str(self.log_path)}


def describe_output(text: str) -> dict:
    """First and last line of what the run printed (its own log records and blank lines left out)."""
    lines = text.splitlines()
    message = [line for line in lines if not _NOISE.match(line)]
    return {"first_line": message[0][:300] if message else "", "last_line": message[-1][:300] if message else "",
            "lines": len(lines), "traceback": "Traceback (most recent call last)" in text}


def bench_arguments(prog: str, doc: str, argv: list[str] | None, only_help: str, timeout: float):
    """The options both CLI benchmarks take: --root, --label, --only, --timeout, --results-dir."""
    import argparse

    from bench.common import RESULTS

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose vlmbatch runs (default: this one)")
    parser.add_argument("--label", default="after", help="name part of the result file (before / after)")
    parser.add_argument("--only", default="", help=only_help)
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds after which a run counts as hung")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.only = [n for n in args.only.split(",") if n]
    return parser, args


def run_cli(root: Path, args: list[str], env: dict, log_dir: Path, timeout: float) -> dict:
    """Run ``vlmbatch ARGS`` to its end (or ``timeout``) and describe it."""
    return Run(root, args, env, log_dir).wait(timeout)


def publish(name: str, args, payload: dict) -> None:
    """Write ``bench/results/<name>-<label>-<date>.json`` (the checkout and its commit recorded) and say where."""
    from bench.common import write_result

    path = write_result(f"{name}-{args.label}", {"root": str(args.root), "commit": commit_of(args.root), **payload},
                        args.results_dir)
    print(f"wrote {path}")


def commit_of(root: Path) -> str:
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip()
