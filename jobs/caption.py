"""The captioning job entrypoint, for ``ray job submit`` and local runs.

    ray job submit --working-dir . -- python -m jobs.caption --spec jobs/specs/demo.yaml

Exit codes (``vlmbatch run`` returns the same):

===  ==========================================================================================
0    committed, or nothing to do (a run id already committed with this spec, a schedule with
     nothing new)
1    the run failed (rows lost or duplicated, its lease taken over while it ran)
2    the spec or the pipeline is invalid (nothing started)
3    another run of this run id (or of this schedule) is live: refused, naming it
4    the spec differs from the one this run id was started or committed with: refused, naming
     both digests and the fields (``--new-run-id-on-change`` starts a new run id instead)
5    a store: unreachable, credentials rejected or missing, no such bucket, access denied, the
     sink not writable; or a source that does not exist, lists no images or cannot be read
6    a model: no such directory, no such hub id, config.json unreadable or of another family
7    resources: the cluster (or its autoscaler) cannot hold the actor pools
130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: rerun with the same run id to resume
===  ==========================================================================================

Codes 2 to 7 are answered on the driver before Ray or any engine starts.
"""

from __future__ import annotations

import argparse
import logging
import sys

#: The exit-code table of the module docstring, for ``--help``.
EXIT_CODES = __doc__[__doc__.index("Exit codes"):].strip()


def main(argv: list[str] | None = None) -> int:
    """Run a caption job; exit codes as in the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m jobs.caption", description=__doc__.splitlines()[0],
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="YAML job spec")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return run_spec_file(args.spec, args.run_id, args.new_run_id_on_change)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--run-id`` and ``--new-run-id-on-change`` (shared with ``vlmbatch run``)."""
    parser.add_argument("--run-id", help="run id (reuse to resume); overrides run.run_id")
    parser.add_argument("--new-run-id-on-change", action="store_true",
                        help="when the spec differs from the one the run id was started or committed with, "
                             "start a new run id instead of refusing")


def run_spec_file(path: str, run_id: str | None = None, new_run_id_on_change: bool = False) -> int:
    """Load and run (the run prints its summary); the shared body of ``jobs.caption`` and ``vlmbatch run``."""
    from pipeline.interrupt import as_interrupted, interruptible

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("aiobotocore.credentials", "botocore.credentials"):  # "Found credentials in ..." per client
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if run_id is not None and not run_id.strip():
        print("error: --run-id is empty; give a run id, or leave the option out for a new one", file=sys.stderr)
        return 2
    current = {"run_id": None}  # the run id an interruption names (a schedule picks its own)
    try:
        with interruptible():
            from jobs.specfile import load_spec

            spec = load_spec(path, {"run.run_id": run_id} if run_id else None)
            if spec.schedule is None:
                from pipeline.plan import new_run_id

                current["run_id"] = run_id or spec.run.run_id or new_run_id(spec.name)
            return _run(spec, current, new_run_id_on_change)
    except KeyboardInterrupt as exc:
        resume = f"rerun with --run-id {current['run_id']}" if current["run_id"] else "rerun the same command"
        print(f"interrupted: {resume} to resume", file=sys.stderr, flush=True)
        return as_interrupted(exc).exit_code
    except Exception as exc:  # noqa: BLE001 - the known failures become one line and their code
        code, line = outcome(exc)
        if code is None:
            raise
        print(line, file=sys.stderr, flush=True)
        return code


def _run(spec, current: dict, new_run_id_on_change: bool) -> int:
    from pipeline.identity import SpecMismatch
    from pipeline.plan import new_run_id
    from pipeline.runner import run_job
    from pipeline.schedule import Schedule

    run_id = current["run_id"]
    if spec.schedule is not None:
        done = Schedule(spec).run_once(spec.run.run_id, new_run_on_change=new_run_id_on_change)
        print(f"schedule {spec.schedule.state_uri} dataset version {done.version}: "
              f"{done.earlier_runs} earlier runs, {done.new_rows} new rows")
        if done.manifest is None:
            print("nothing new to process")
        return 0
    try:
        run_job(spec, run_id)
    except SpecMismatch as exc:
        if not new_run_id_on_change:
            raise
        current["run_id"] = new_run_id(spec.name)
        print(f"spec {exc.current} differs from run {run_id}'s ({exc.recorded}) in {', '.join(exc.fields)}: "
              f"starting run {current['run_id']}", file=sys.stderr, flush=True)
        run_job(spec, current["run_id"])
    return 0


def outcome(exc: BaseException) -> tuple[int | None, str]:
    """Exit code and one line for an exception a run may end with; ``(None, '')`` for an unexpected one."""
    from jobs.specfile import SpecError
    from operators.sources.prefix import SourceError
    from pipeline.commit import CommitError
    from pipeline.dag import PipelineError
    from pipeline.identity import SpecMismatch
    from pipeline.locks import LockHeld, LockLost
    from pipeline.preflight import STORAGE, PreflightError

    for kinds, code, prefix in (((SpecError, PipelineError), 2, "error"), ((LockHeld,), 3, "refused"),
                                ((SpecMismatch,), 4, "refused"), ((SourceError,), STORAGE, "error"),
                                ((CommitError, LockLost), 1, "run failed")):
        if isinstance(exc, kinds):
            return code, f"{prefix}: {exc}"
    if isinstance(exc, PreflightError):
        return exc.exit_code, f"error: {exc}"
    return None, ""


if __name__ == "__main__":
    sys.exit(main())
