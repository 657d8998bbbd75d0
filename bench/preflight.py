"""How fast and how plainly ``vlmbatch run`` answers each user mistake, vs the same command on a good spec.

Each mistake is one change to a good spec (or to the environment, or to the command line), run as a
user runs it: ``python -m jobs.cli run SPEC --run-id ID`` in a fresh process against a real S3 server
(SeaweedFS, with an admin and a read-only identity) and the tiny InternVL on the transformers engine.
Per mistake: exit code, the first and last line it printed, its output's length, whether it printed
a traceback, whether a Ray node or an engine actor started, and its seconds as a ratio to the good
spec's full run (the peer, measured in the same invocation). A run still going after ``--timeout``
counts as hung and is killed.

    python -m bench.preflight                               # this checkout
    python -m bench.preflight --root /tmp/before --label before   # a clone of an older commit
    python -m bench.preflight --only wrong_endpoint,gpu_request

Results: ``bench/results/preflight-<label>-<date>.json``.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.cli_runs import Server, bench_arguments, publish, run_cli
from bench.common import loadavg, ratio, tiny_model
from tests.procs import free_port_block


@dataclass
class Ctx:
    """What the cases share: the server, the model directories, a scratch folder."""

    server: Server
    model: str
    corrupt_model: str
    tmp: Path


def base_spec(ctx: Ctx) -> dict:
    """A good spec: the demo corpus on the server, tiny InternVL, transformers engine, 6 tokens per image."""
    storage = {"endpoint_url": ctx.server.endpoint}
    b = ctx.server.bucket
    return {
        "name": "preflight",
        "source": {"uri": f"s3://{b}/corpus/", "storage": storage},
        "model": {"family": "internvl", "model_id": ctx.model,
                  "engine": {"kind": "transformers", "dtype": "float32", "max_model_len": 1024, "max_num_seqs": 16}},
        "sampling": {"max_tokens": 6, "min_tokens": 6},
        # Shards of one engine batch: they land as the run goes (a crash or a signal mid-run leaves work to resume).
        "sink": {"uri": f"s3://{b}/captions/", "storage": storage, "rows_per_file": 4},
        "postcheck": {"truncated": False, "repetition": False},
        "resources": {"num_engines": 1, "batch_size": 4, "batches_in_flight": 2, "cpu_batch_size": 8},
        "run": {"num_cpus": 2, "progress_bars": False},
    }


def _set(path: str, value) -> Callable[[dict, Ctx], None]:
    def change(spec: dict, ctx: Ctx) -> None:
        node = spec
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value(ctx) if callable(value) else value
    return change


def _both_endpoints(value: Callable[[Ctx], str]) -> Callable[[dict, Ctx], None]:
    def change(spec: dict, ctx: Ctx) -> None:
        spec["source"]["storage"]["endpoint_url"] = spec["sink"]["storage"]["endpoint_url"] = value(ctx)
    return change


@dataclass
class Case:
    """One mistake: a spec change, environment changes, or other arguments."""

    name: str
    what: str
    spec: Callable[[dict, Ctx], None] | None = None
    env: Callable[[Ctx], dict] = lambda ctx: {}
    args: Callable[[str, Ctx], list[str]] | None = None  # (spec path, ctx) -> argv; default: run SPEC --run-id
    peer: str = "good_run"
    tags: tuple[str, ...] = field(default_factory=tuple)


NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config"}

CASES = (
    Case("wrong_endpoint", "endpoint_url names a port nothing listens on",
         _both_endpoints(lambda ctx: f"http://127.0.0.1:{free_port_block(1)}")),
    Case("endpoint_no_scheme", "endpoint_url without http://",
         _both_endpoints(lambda ctx: ctx.server.endpoint.removeprefix("http://"))),
    Case("wrong_secret", "AWS_SECRET_ACCESS_KEY is wrong", env=lambda ctx: {"AWS_SECRET_ACCESS_KEY": "wrong-secret"}),
    Case("missing_credentials", "no credentials anywhere in the chain", env=lambda ctx: NO_CREDENTIALS),
    Case("source_no_bucket", "source.uri names a bucket that does not exist",
         _set("source.uri", "s3://no-such-bucket-pf/corpus/")),
    Case("sink_access_denied", "the identity may read the corpus but not write the sink",
         env=lambda ctx: {"AWS_ACCESS_KEY_ID": ctx.server.reader[0], "AWS_SECRET_ACCESS_KEY": ctx.server.reader[1]}),
    Case("source_local_missing", "source.uri is a local directory that does not exist",
         _set("source.uri", "/nonexistent/vlmbatch-corpus/")),
    Case("model_dir_missing", "model.model_id is a local directory that does not exist",
         _set("model.model_id", "/nonexistent/tiny-internvl")),
    Case("model_config_corrupt", "the model directory's config.json is not JSON",
         _set("model.model_id", lambda ctx: ctx.corrupt_model)),
    Case("model_family_mismatch", "model.family llava for an InternVL checkpoint", _set("model.family", "llava")),
    Case("model_hub_unreachable", "a hub id with no hub reachable and nothing cached",
         _set("model.model_id", "OpenGVLab/InternVL3-1B-hf")),
    Case("gpu_request", "one GPU per engine on a machine without a GPU", _set("resources.gpus_per_engine", 1)),
    Case("cpu_request", "4 CPUs per engine on a 2-CPU instance", _set("resources.cpus_per_engine", 4)),
    Case("compression_zip", "sink.compression: zip", _set("sink.compression", "zip")),
    Case("dtype_float33", "model.engine.dtype: float33", _set("model.engine.dtype", "float33")),
    Case("min_tokens_over_max", "sampling.min_tokens 20 > max_tokens 10",
         _set("sampling", {"max_tokens": 10, "min_tokens": 20})),
    Case("empty_run_id", "--run-id ''", args=lambda spec, ctx: ["run", spec, "--run-id", ""]),
    Case("status_no_endpoint", "vlmbatch status of an s3:// run without --endpoint-url",
         args=lambda spec, ctx: ["status", f"s3://{ctx.server.bucket}/captions/good"], peer="good_status"),
)


def prepare(tmp: Path) -> Ctx:
    """Start the server, write the demo corpus, build the model and its corrupt copy."""
    from jobs.demo_corpus import write_demo_corpus

    server = Server(tmp / "server")
    server.start()
    fs = server.fs()
    fs.mkdir(server.bucket)
    import os

    os.environ.update(AWS_ACCESS_KEY_ID=server.admin[0], AWS_SECRET_ACCESS_KEY=server.admin[1])
    from schemas.spec import StorageConfig

    write_demo_corpus(f"s3://{server.bucket}/corpus/", StorageConfig(endpoint_url=server.endpoint))
    model = tiny_model("internvl")
    corrupt = tmp / "corrupt-model"
    shutil.copytree(model, corrupt)
    text = (corrupt / "config.json").read_text()
    (corrupt / "config.json").write_text(text[: len(text) // 2])  # cut mid-way, as an interrupted copy leaves it
    return Ctx(server, str(model), str(corrupt), tmp)


def run_case(case: Case | None, ctx: Ctx, root: Path, timeout: float, run_id: str) -> dict:
    """Run one case (None: the good spec) from ``root``."""
    spec = copy.deepcopy(base_spec(ctx))
    if case is not None and case.spec is not None:
        case.spec(spec, ctx)
    path = ctx.tmp / f"{run_id}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    args = case.args(str(path), ctx) if case is not None and case.args else ["run", str(path), "--run-id", run_id]
    env = ctx.server.run_env(root, **(case.env(ctx) if case is not None else {}))
    return run_cli(root, args, env, ctx.tmp, timeout)


def main(argv: list[str] | None = None) -> int:
    parser, args = bench_arguments("python -m bench.preflight", __doc__, argv, "comma-separated case names "
                                   "(default: all)", timeout=240)
    only = set(args.only)
    unknown = only - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    cases = [c for c in CASES if not only or c.name in only]
    tmp = Path(tempfile.mkdtemp(prefix="vlmbatch-preflight-"))
    ctx = prepare(tmp)
    try:
        load = [loadavg()]
        good = run_case(None, ctx, args.root, args.timeout, "good")
        peers = {"good_run": good, "good_status": run_cli(
            args.root, ["status", f"s3://{ctx.server.bucket}/captions/good", "--endpoint-url", ctx.server.endpoint],
            ctx.server.run_env(args.root), tmp, args.timeout)}
        results = {}
        for case in cases:
            result = run_case(case, ctx, args.root, args.timeout, case.name.replace("_", "-"))
            result["what"] = case.what
            result["peer"] = case.peer
            result["ratio_to_peer"] = ratio(result["seconds"], peers[case.peer]["seconds"])
            results[case.name] = result
            load.append(loadavg())
            print(f"{case.name:24s} rc={result['rc']} {result['seconds']:7.1f} s  {result['first_line'][:100]}",
                  flush=True)
        publish("preflight", args, {"timeout_s": args.timeout, "peers": peers, "cases": results, "load": load})
    finally:
        ctx.server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
