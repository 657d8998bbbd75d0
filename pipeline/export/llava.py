"""ShareGPT4V / LLaVA JSON and JSONL: ``{id, image, conversations}`` with ``image`` relative to a root."""

from __future__ import annotations

import json

from pipeline.export.rows import ExportSummary, exportable
from pipeline.shards import write_bytes_atomic
from schemas import columns as C
from schemas.spec import StorageConfig


def export_llava(run_root: str, out: str, *, image_root: str | None = None, jsonl: bool = False,
                 storage: StorageConfig | None = None, out_storage: StorageConfig | None = None) -> ExportSummary:
    """Write the run's ``ok`` rows to ``out`` as a JSON list (ShareGPT4V) or JSON lines.

    ``image`` is relative to ``image_root`` when given (rows whose image is not under it are left
    out and counted), else the path the source recorded. Ids are the run's stable row ids.
    """
    rows, summary = exportable(run_root, storage, image_root)
    records = [{"id": r[C.ID], "image": r["image_rel"], "conversations": r["conversations"]} for r in rows]
    if jsonl:
        data = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    else:
        data = json.dumps(records, ensure_ascii=False, indent=1)
    write_bytes_atomic(out, data.encode("utf-8"), out_storage or StorageConfig())
    summary.files.append(out)
    return summary
