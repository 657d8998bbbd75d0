"""ShareGPT4V / LLaVA JSON and JSONL: ``{id, image, conversations}`` with ``image`` relative to a root.

Beside the output the export writes its own record, ``<out stem>.export.json``: format, stage,
run, the image root every ``image`` is relative to, and what was left out (see
:class:`~pipeline.export.rows.ExportSummary`).
"""

from __future__ import annotations

import json
import posixpath

from pipeline.export.images import ImagePlacer
from pipeline.export.rows import ExportError, ExportSummary, exportable, finish, pairs_of
from pipeline.shards import write_bytes_atomic
from schemas.spec import StorageConfig

#: The same records as a JSON list (ShareGPT4V's and LLaVA's ``--data_path``) or as JSON lines.
JSON_FORMATS = ("sharegpt4v", "llava-json", "llava-jsonl")


def record_path(out: str) -> str:
    """Where the export's own record goes: ``data.json`` -> ``data.export.json``."""
    stem, ext = posixpath.splitext(out)
    return f"{stem if ext in ('.json', '.jsonl') else out}.export.json"


def export_llava(run_root: str, out: str, *, stage: str = "finetune", image_root: str | None = None,
                 images_to: str | None = None, fmt: str = "sharegpt4v",
                 storage: StorageConfig | None = None, out_storage: StorageConfig | None = None) -> ExportSummary:
    """Write the run's ``ok`` rows to ``out`` as a JSON list (``sharegpt4v``, ``llava-json``) or JSON lines
    (``llava-jsonl``).

    ``image`` is relative to ``images_to`` (every image written there), else to ``image_root`` (or
    the source's own root; rows whose image is not under it are left out and counted).

    Raises:
        pipeline.export.rows.ExportError: nothing to export, an image that cannot be named or is
            missing, or a run that is not committed. Nothing is written then (images_to may hold
            the images written before the failure).
    """
    if fmt not in JSON_FORMATS:
        raise ExportError(f"format {fmt!r}: expected one of {', '.join(JSON_FORMATS)}")
    rows, summary, manifest = exportable(run_root, storage, stage, fmt)
    placer = ImagePlacer(manifest.spec.get("source") or {}, storage, image_root, images_to, out_storage)
    rows = placer.place(rows, summary.skipped)
    records = [{"id": r["export_id"], "image": r["image_rel"], "conversations": r["conversations"]} for r in rows]
    finish(summary, len(records), sum(pairs_of(r["conversations"]) for r in records))
    summary.image_root = placer.root
    summary.images_written = len(records) if images_to else 0
    summary.ids_from_source = sum(r["export_id"] != r["id"] for r in rows)
    if fmt == "llava-jsonl":
        data = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    else:
        data = json.dumps(records, ensure_ascii=False, indent=1)
    out_storage = out_storage or StorageConfig()
    write_bytes_atomic(out, data.encode("utf-8"), out_storage)
    summary.files.append(out)
    write_bytes_atomic(record_path(out), summary.record(), out_storage)
    return summary
