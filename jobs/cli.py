"""The ``vlmbatch`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from jobs.caption import run_spec_file

    return run_spec_file(args.spec, args.run_id, args.new_run_id_on_change)


def _cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from operators.embed.tiny import BUILDERS
    from operators.vlm.registry import get_family

    build, name = BUILDERS.get(args.family), args.family
    if build is None:
        try:
            family = get_family(args.family)
        except KeyError as exc:
            print(f"error: {exc.args[0]} (embedding models: {', '.join(sorted(BUILDERS))})", file=sys.stderr)
            return 2
        build, name = family.make_tiny, family.name
    directory = Path(args.directory).expanduser()
    if (directory / "config.json").exists() and not args.force:
        print(f"{directory} already holds a model (use --force to rebuild)")
        return 0
    build(directory)
    print(f"tiny {name} model written to {directory}")
    return 0


def _cmd_demo_corpus(args: argparse.Namespace) -> int:
    from jobs.demo_corpus import write_demo_corpus
    from schemas.spec import StorageConfig

    n = write_demo_corpus(args.dest, StorageConfig(endpoint_url=args.endpoint_url), planted=args.planted_duplicates)
    print(f"wrote {n} demo objects under {args.dest}")
    return 0


def _cmd_spec_reference(args: argparse.Namespace) -> int:
    from schemas.reference import spec_reference, write_readme

    if args.readme:
        changed = write_readme(args.readme)
        print(f"{args.readme}: spec reference {'rewritten' if changed else 'already current'}")
        return 0
    print(spec_reference())
    return 0


def _cmd_families(args: argparse.Namespace) -> int:
    from operators.vlm.registry import families

    for name, fam in sorted(families().items()):
        print(f"{name:12s} {', '.join(fam.architectures):40s} {fam.model_card}")
    return 0


def _cmd_render_k8s(args: argparse.Namespace) -> int:
    from jobs.k8s_cli import render_k8s

    return render_k8s(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from jobs.runinfo import status_command

    return status_command(args.run, args.endpoint_url)


def _cmd_report(args: argparse.Namespace) -> int:
    from jobs.runinfo import report_command

    return report_command(args.run, args.endpoint_url, args.html, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vlmbatch``."""
    parser = argparse.ArgumentParser(prog="vlmbatch", description="Batch vision-language captioning on Ray + vLLM.")
    sub = parser.add_subparsers(dest="command", required=True)

    from jobs.caption import EXIT_CODES, add_run_arguments

    p = sub.add_parser("run", help="run a job spec on the local or configured Ray cluster", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="YAML job spec")
    add_run_arguments(p)
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("make-tiny-model", help="build a deterministic tiny random-weight model of a family")
    p.add_argument("family", help="model family (see 'vlmbatch families') or embedding model (clip, internvl-c)")
    p.add_argument("directory", help="output directory")
    p.add_argument("--force", action="store_true", help="rebuild even if the directory holds a model")
    p.set_defaults(fn=_cmd_make_tiny_model)

    p = sub.add_parser("demo-corpus", help="write the demo image corpus to a local or s3:// prefix")
    p.add_argument("dest", help="destination prefix")
    p.add_argument("--endpoint-url", help="S3 endpoint (credentials come from the environment)")
    p.add_argument("--planted-duplicates", action="store_true",
                   help="the photographs with exact and near duplicates planted, and unrelated images (curation)")
    p.set_defaults(fn=_cmd_demo_corpus)

    p = sub.add_parser("spec-reference", help="print every job spec field with its description")
    p.add_argument("--readme", help="rewrite the table between this README's spec-reference markers instead")
    p.set_defaults(fn=_cmd_spec_reference)

    p = sub.add_parser("families", help="list registered model families")
    p.set_defaults(fn=_cmd_families)

    from jobs.export_cli import add_demo_manifest_parser, add_export_parser

    add_export_parser(sub)
    add_demo_manifest_parser(sub)

    from jobs.k8s_cli import add_render_k8s_arguments

    p = sub.add_parser("render-k8s", help="render KubeRay/Kubernetes manifests of a job spec into a directory")
    add_render_k8s_arguments(p)
    p.set_defaults(fn=_cmd_render_k8s)

    for name, text in (("status", "show a run's committed state (manifest) from object storage"),
                       ("report", "show a committed run's report; --html/--json save the report files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run root: <sink.uri>/<run_id>, e.g. s3://bucket/captions/run-1")
        p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
        if name == "report":
            p.add_argument("--html", help="save report.html here")
            p.add_argument("--json", help="save report.json here")
        p.set_defaults(fn=_cmd_status if name == "status" else _cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vlmbatch`` console script."""
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
