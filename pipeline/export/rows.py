"""Exportable rows of a committed dataset run: ``ok`` rows as LLaVA conversations."""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass, field

from operators.storage import split_uri
from pipeline.commit import CommitError, read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig
from schemas.status import Status

IMAGE_TOKEN = "<image>"
HUMAN, GPT = "human", "gpt"


class ExportError(RuntimeError):
    """The run cannot be exported (not committed, not a dataset run, bad image root)."""


@dataclass
class ExportSummary:
    """What an export wrote and what it left out."""

    rows_in: int = 0
    rows_out: int = 0
    qa_pairs_out: int = 0
    files: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def render(self) -> str:
        left = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"exported {self.rows_out} of {self.rows_in} rows ({self.qa_pairs_out} QA pairs) "
                f"into {len(self.files)} file(s); left out: {left}")


def conversations(instruction: str, caption: str, qa: list[dict] | None) -> list[dict]:
    """LLaVA turns: the caption exchange first (``<image>`` in the first human turn), then ``ok`` QA pairs."""
    turns = [{"from": HUMAN, "value": f"{IMAGE_TOKEN}\n{instruction}"}, {"from": GPT, "value": caption}]
    for pair in qa or []:
        if pair[C.STATUS] == Status.OK.value and pair[C.QA_QUESTION] and pair[C.QA_ANSWER]:
            turns += [{"from": HUMAN, "value": pair[C.QA_QUESTION]}, {"from": GPT, "value": pair[C.QA_ANSWER]}]
    return turns


def relative_image(row: dict, image_root: str | None) -> str | None:
    """The row's image path relative to ``image_root`` (or as the source recorded it when None)."""
    if image_root is None:
        return row.get(C.IMAGE)
    root_proto, root_path = split_uri(image_root)
    src = row[C.SOURCE]
    if "#" in src or "::" in src:
        return None  # embedded images (Parquet rows, tar members) have no file under any root
    proto, path = split_uri(src)
    root_path = root_path.rstrip("/")
    if proto != root_proto or not path.startswith(root_path + "/"):
        return None
    return posixpath.relpath(path, root_path)


def exportable(run_root: str, storage: StorageConfig | None = None, image_root: str | None = None,
               need_path: bool = True) -> tuple[list[dict], ExportSummary]:
    """``ok`` rows of a committed dataset run, each with ``conversations`` and its relative ``image``.

    Raises:
        ExportError: the run is not committed or holds no dataset records.
    """
    manifest = read_manifest(run_root, storage)
    if manifest is None:
        raise ExportError(f"{run_root} is not committed (no manifest); only committed runs are exported")
    if manifest.record != "dataset":
        raise ExportError(f"{run_root} holds {manifest.record!r} records; export needs a dataset build")
    try:
        table = read_committed(run_root, storage)
    except CommitError as exc:
        raise ExportError(str(exc)) from None
    default_prompt = (manifest.spec.get("caption") or {}).get("prompt", "Describe this image in detail.")
    source_spec = manifest.spec.get("source") or {}
    # A prefix source records no relative path; the listed prefix is its natural image root.
    prefix_root = source_spec.get("uri") if source_spec.get("format", "prefix") == "prefix" else None
    summary = ExportSummary(rows_in=table.num_rows)
    out = []
    for row in sorted(table.to_pylist(), key=lambda r: r[C.ID]):
        if row[C.STATUS] != Status.OK.value:
            summary.skipped[f"status {row[C.STATUS]}"] += 1
            continue
        rel = relative_image(row, image_root)
        if rel is None and image_root is None and prefix_root:
            rel = relative_image(row, prefix_root)
        if rel is None and need_path:
            summary.skipped["image not under the image root" if image_root else "no image path"] += 1
            continue
        row["image_rel"] = rel
        row["conversations"] = conversations(row[C.INSTRUCTION] or default_prompt, row[C.CAPTION], row.get(C.QA))
        summary.qa_pairs_out += (len(row["conversations"]) - 2) // 2
        out.append(row)
    summary.rows_out = len(out)
    return out, summary
