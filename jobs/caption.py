"""The captioning job entrypoint, for ``ray job submit`` and local runs.

    ray job submit --working-dir . -- python -m jobs.caption --spec jobs/specs/demo.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Run a caption job; exit 0 when committed (or nothing to do), 2 on a bad spec or pipeline, 1 on a failed
    run, 3 when another run of the same schedule holds its lock."""
    parser = argparse.ArgumentParser(prog="python -m jobs.caption", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="YAML job spec")
    parser.add_argument("--run-id", help="run id (reuse to resume); overrides run.run_id")
    args = parser.parse_args(argv)
    return run_spec_file(args.spec, args.run_id)


def run_spec_file(path: str, run_id: str | None = None) -> int:
    """Load and run (the run prints its summary); the shared body of ``jobs.caption`` and ``vlmbatch run``."""
    from jobs.specfile import SpecError, load_spec
    from operators.sources.prefix import SourceError
    from pipeline.commit import CommitError
    from pipeline.dag import PipelineError
    from pipeline.runner import run_job

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.locks import LockHeld
    from pipeline.schedule import Schedule

    try:
        spec = load_spec(path, {"run.run_id": run_id} if run_id else None)
        if spec.schedule is not None:
            outcome = Schedule(spec).run_once(run_id)
            print(f"schedule {spec.schedule.state_uri} dataset version {outcome.version}: "
                  f"{outcome.earlier_runs} earlier runs, {outcome.new_rows} new rows")
            if outcome.manifest is None:
                print("nothing new to process")
        else:
            run_job(spec)
    except (SpecError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LockHeld as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except (SourceError, CommitError) as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
