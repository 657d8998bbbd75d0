"""``vlmbatch export RUN --format ... OUT``: a committed run (caption run or dataset build) into training-ready files.

    vlmbatch export s3://bucket/datasets/run-1 --format sharegpt4v --image-root s3://bucket/images/ out.json
    vlmbatch export s3://bucket/datasets/run-1 --format llava-json --stage pretrain --images-to out/images out.json
    vlmbatch export s3://bucket/datasets/run-1 --format hf-parquet out/hf/      # out/hf/data/train-*.parquet
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("sharegpt4v", "llava-json", "llava-jsonl", "hf-parquet")


def add_export_parser(sub) -> None:
    """Register the ``export`` sub-command on ``vlmbatch``'s sub-parsers."""
    p = sub.add_parser("export", help="export a committed run (ok rows only) for training code")
    p.add_argument("run", help="run root: <sink.uri>/<run_id> (only its committed manifest is trusted)")
    p.add_argument("out", help="output file (sharegpt4v, llava-json, llava-jsonl) or folder (hf-parquet: <out>/data/)")
    p.add_argument("--format", required=True, choices=FORMATS, help="sharegpt4v, llava-json: JSON list; llava-jsonl: "
                   "JSON lines; hf-parquet: Hugging Face datasets Parquet with an Image column")
    p.add_argument("--stage", choices=("pretrain", "finetune"), default="finetune",
                   help="pretrain: two turns (image + caption instruction, caption), as --version plain loaders "
                   "need; finetune: the caption exchange, then the ok QA pairs (default)")
    p.add_argument("--image-root", help="make image paths relative to this root (default: the source's own)")
    p.add_argument("--images-to", help="JSON formats: write every image here (tar members and Parquet-embedded "
                   "images extracted, files copied) and name them relative to it")
    p.add_argument("--rows-per-shard", type=int, default=1000, help="hf-parquet rows per file")
    p.add_argument("--endpoint-url", help="S3 endpoint of the run and images (credentials: environment)")
    p.set_defaults(fn=cmd_export)


def add_demo_manifest_parser(sub) -> None:
    """Register ``demo-manifest``: the LLaVA manifest over the demo corpus that sharegpt4v.yaml reads."""
    p = sub.add_parser("demo-manifest", help="write a LLaVA/ShareGPT4V JSON manifest over the demo corpus")
    p.add_argument("dest", help="manifest file, e.g. s3://vlmbatch-demo/sharegpt4v/manifest.json")
    p.add_argument("--limit", type=int, help="only the first N demo images")
    p.add_argument("--jsonl", action="store_true", help="JSON lines instead of a JSON list")
    p.add_argument("--endpoint-url", help="S3 endpoint (credentials come from the environment)")
    p.set_defaults(fn=cmd_demo_manifest)


def cmd_demo_manifest(args: argparse.Namespace) -> int:
    """Write the demo manifest."""
    from jobs.demo_dataset import write_demo_manifest
    from schemas.spec import StorageConfig

    n = write_demo_manifest(args.dest, StorageConfig(endpoint_url=args.endpoint_url), args.limit, args.jsonl)
    print(f"wrote a manifest of {n} entries to {args.dest}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Run one export; exit 0 on success, 1 when the run cannot be exported as asked (the reason on stderr)."""
    from pipeline.export.hf_parquet import export_hf_parquet
    from pipeline.export.llava import export_llava
    from pipeline.export.rows import ExportError
    from schemas.spec import StorageConfig

    storage = StorageConfig(endpoint_url=args.endpoint_url)
    try:
        if args.format == "hf-parquet":
            if args.images_to:
                raise ExportError("hf-parquet embeds every image in its files; --images-to is for the JSON formats")
            summary = export_hf_parquet(args.run, args.out, stage=args.stage, image_root=args.image_root,
                                        rows_per_shard=args.rows_per_shard, storage=storage, out_storage=storage)
        else:
            summary = export_llava(args.run, args.out, stage=args.stage, image_root=args.image_root,
                                   images_to=args.images_to, fmt=args.format, storage=storage, out_storage=storage)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(summary.render())
    for f in summary.files:
        print(f"  {f}")
    return 0
