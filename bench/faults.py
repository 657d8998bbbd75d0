"""Faults against a run, as a user meets them: an edited spec resumed, a committed run id rerun with
another spec, two runs of one id at once, Ctrl-C and SIGTERM mid-run, a write that fails mid-way.

Same set-up as ``bench/preflight.py`` (real S3 server, demo corpus, tiny InternVL, transformers
engine, runs from ``--root``). Per fault: what each run printed and returned, its seconds (for a
signal: from the signal to the exit), and what the committed data holds afterwards (rows, distinct
ids, distinct prompts: one spec's rows are one prompt). The peer is the good spec's full run.

    python -m bench.faults [--root CHECKOUT --label before] [--only sigterm,concurrent]
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cli_runs import Run, bench_arguments, publish, run_cli
from bench.common import loadavg, ratio
from bench.preflight import Ctx, base_spec, prepare

EDITED_PROMPT = "Say what is in this picture, briefly."


def spec_file(ctx: Ctx, name: str, prompt: str | None = None) -> str:
    spec = copy.deepcopy(base_spec(ctx))
    if prompt:
        spec["caption"] = {"prompt": prompt}
    path = ctx.tmp / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    return str(path)


def committed(ctx: Ctx, run_id: str) -> dict:
    """What the run's manifest lists: rows, distinct ids, distinct prompts; None fields when not committed."""
    import pyarrow.parquet as pq

    fs = ctx.server.fs()
    root = f"{ctx.server.bucket}/captions/{run_id}"
    try:
        manifest = json.loads(fs.cat_file(f"{root}/manifest.json"))
    except FileNotFoundError:
        return {"committed": False}
    ids, prompts = [], set()
    for entry in manifest["files"]:
        with fs.open(f"{root}/{entry['path']}", "rb") as f:
            t = pq.read_table(f, columns=["id", "prompt"])
        ids += t.column("id").to_pylist()
        prompts |= {p for p in t.column("prompt").to_pylist() if p}
    return {"committed": True, "rows": len(ids), "distinct_ids": len(set(ids)), "distinct_prompts": len(prompts),
            "manifest_created_at": manifest["created_at"]}


def wait_for_shard(ctx: Ctx, run_id: str, run: Run, timeout: float = 300) -> None:
    fs = ctx.server.fs()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.proc.poll() is None:
        try:
            if fs.ls(f"{ctx.server.bucket}/captions/{run_id}/staging/"):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"run {run_id} wrote no shard (log {run.log_path})")


def edited_resume(ctx: Ctx, root: Path, timeout: float) -> dict:
    """A run dies after its first shard; the prompt is edited; the same run id is run again; then the original."""
    env = ctx.server.run_env(root)
    first = run_cli(root, ["run", spec_file(ctx, "orig"), "--run-id", "edited"],
                    {**env, "VLMBATCH_CRASH_AT": "after-shards:1"}, ctx.tmp, timeout)
    edited = run_cli(root, ["run", spec_file(ctx, "edit", EDITED_PROMPT), "--run-id", "edited"], env, ctx.tmp, timeout)
    out = {"crashed_attempt": first, "edited_resume": edited, "after_edited": committed(ctx, "edited")}
    if not out["after_edited"]["committed"]:
        out["original_resume"] = run_cli(root, ["run", spec_file(ctx, "orig"), "--run-id", "edited"], env, ctx.tmp,
                                         timeout)
    out["committed"] = committed(ctx, "edited")
    # The committed run id once more, with the edited spec.
    out["committed_other_spec"] = run_cli(root, ["run", spec_file(ctx, "edit", EDITED_PROMPT), "--run-id", "edited"],
                                          env, ctx.tmp, timeout)
    out["committed_after"] = committed(ctx, "edited")
    return out


def concurrent(ctx: Ctx, root: Path, timeout: float) -> dict:
    """Two runs of one run id started together."""
    env = ctx.server.run_env(root)
    path = spec_file(ctx, "orig")
    runs = [Run(root, ["run", path, "--run-id", "twice"], env, ctx.tmp) for _ in range(2)]
    results = [r.wait(timeout) for r in runs]
    return {"runs": results, "committed": committed(ctx, "twice")}


def interrupted(ctx: Ctx, root: Path, timeout: float, sig: int, run_id: str) -> dict:
    """``sig`` once the first shard is written; then the same command again."""
    env = ctx.server.run_env(root)
    path = spec_file(ctx, "orig")
    run = Run(root, ["run", path, "--run-id", run_id], env, ctx.tmp)
    wait_for_shard(ctx, run_id, run)
    sent = time.monotonic()
    run.proc.send_signal(sig)
    result = run.wait(timeout)
    result["seconds_after_signal"] = round(time.monotonic() - sent, 2)
    resumed = run_cli(root, ["run", path, "--run-id", run_id], env, ctx.tmp, timeout)
    return {"interrupted": result, "resumed": resumed, "committed": committed(ctx, run_id)}


FAILED_WRITE = """
import sys
from pipeline.shards import write_atomic
from schemas.spec import StorageConfig
uri, mib = sys.argv[1], int(sys.argv[2])
def write(f):
    for _ in range(mib):
        f.write(b"x" * 2**20)
    raise RuntimeError("the writer failed mid-way")
try:
    write_atomic(uri, write, StorageConfig(endpoint_url=sys.argv[3]))
except RuntimeError as exc:
    print("raised:", exc)
"""


def failed_write(ctx: Ctx, root: Path, timeout: float) -> dict:
    """``write_atomic`` whose writer fails after 1 MiB (one PUT) or 60 MiB (a multipart upload)."""
    fs = ctx.server.fs()
    out = {}
    for mib in (1, 60):
        key = f"{ctx.server.bucket}/captions/failed-write/errors/part-{mib}.parquet"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", FAILED_WRITE, f"s3://{key}", str(mib), ctx.server.endpoint],
                              cwd=root, env=ctx.server.run_env(root), capture_output=True, text=True, timeout=timeout)
        uploads = fs.call_s3("list_multipart_uploads", Bucket=ctx.server.bucket).get("Uploads", [])
        out[f"{mib}_mib"] = {"rc": proc.returncode, "seconds": round(time.monotonic() - t0, 2),
                             "said": (proc.stdout + proc.stderr).strip().splitlines()[-1:],
                             "object_exists": fs.exists(key), "size": fs.size(key) if fs.exists(key) else None,
                             "open_multipart_uploads": len([u for u in uploads if u["Key"] == key.split("/", 1)[1]])}
    return out


FAULTS = {
    "edited_resume": edited_resume,
    "concurrent": concurrent,
    "sigint": lambda ctx, root, timeout: interrupted(ctx, root, timeout, signal.SIGINT, "sigint"),
    "sigterm": lambda ctx, root, timeout: interrupted(ctx, root, timeout, signal.SIGTERM, "sigterm"),
    "failed_write": failed_write,
}


def main(argv: list[str] | None = None) -> int:
    _, args = bench_arguments("python -m bench.faults", __doc__, argv,
                              f"comma-separated faults (default: all of {', '.join(FAULTS)})", timeout=300)
    names = args.only or list(FAULTS)
    ctx = prepare(Path(tempfile.mkdtemp(prefix="vlmbatch-faults-")))
    try:
        good = run_cli(args.root, ["run", spec_file(ctx, "orig"), "--run-id", "good"], ctx.server.run_env(args.root),
                       ctx.tmp, args.timeout)
        results = {}
        for name in names:
            results[name] = FAULTS[name](ctx, args.root, args.timeout)
            print(f"{name}: {json.dumps(results[name])[:400]}", flush=True)
        for name in ("sigint", "sigterm"):
            if name in results:
                results[name]["ratio_to_peer"] = ratio(results[name]["interrupted"]["seconds_after_signal"],
                                                       good["seconds"])
        publish("faults", args, {"peers": {"good_run": good}, "faults": results, "load": loadavg()})
    finally:
        ctx.server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
