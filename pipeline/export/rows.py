"""Exportable rows of a committed run: ``ok`` rows as LLaVA conversations, for pretraining or fine-tuning.

A caption run and a dataset build export alike. ``stage``:

- ``pretrain``: two turns, the image with its caption instruction, then the caption (what LLaVA's
  and ShareGPT4V's ``--version plain`` loaders accept: ``assert len(source) == 2``);
- ``finetune``: the caption exchange, then the row's ``ok`` question-answer pairs.

A record's ``id`` is the source's own id (``source_id``: a manifest's, WebDataset's or Parquet
id, a prefix's relative key) where the source gives one that no other exported row repeats, else
the row's stable id; every record can be joined back to the run by either. Every row and QA pair
left out is counted with its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from pipeline.commit import CommitError, read_committed, read_manifest
from schemas import columns as C
from schemas.manifest import Manifest
from schemas.spec import StorageConfig
from schemas.status import Status

IMAGE_TOKEN = "<image>"
HUMAN, GPT = "human", "gpt"
STAGES = ("pretrain", "finetune")
DEFAULT_PROMPT = "Describe this image in detail."


class ExportError(RuntimeError):
    """The run cannot be exported as asked (not committed, nothing to export, an image that cannot be named)."""


@dataclass
class ExportSummary:
    """What an export wrote and what it left out; also written beside the export as its record."""

    format: str
    stage: str
    run: str
    rows_in: int = 0
    rows_out: int = 0
    qa_pairs_in: int = 0
    qa_pairs_out: int = 0
    image_root: str | None = None
    images_written: int = 0
    ids_from_source: int = 0
    files: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    qa_skipped: Counter = field(default_factory=Counter)

    def render(self) -> str:
        """Two lines: what was exported and left out, and where the image paths point."""
        left = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        qa_left = ", ".join(f"{k}={v}" for k, v in sorted(self.qa_skipped.items())) or "none"
        root = self.image_root or "(embedded in the files)"
        written = f", {self.images_written} written there" if self.images_written else ""
        qa = f"{self.qa_pairs_out} of {self.qa_pairs_in} QA pairs, " if self.qa_pairs_in else ""
        qa_left = f"; QA pairs left out: {qa_left}" if self.qa_pairs_in else ""
        return (f"exported {self.rows_out} of {self.rows_in} rows ({qa}{self.stage}) into {len(self.files)} file(s); "
                f"rows left out: {left}{qa_left}\nimage paths relative to {root}{written}; ids: "
                f"{self.ids_from_source} the source's own, {self.rows_out - self.ids_from_source} vlmbatch row ids")

    def record(self) -> bytes:
        """The export's own record (JSON): format, stage, run, image root, counts, files."""
        data = asdict(self)
        data["skipped"], data["qa_skipped"] = dict(self.skipped), dict(self.qa_skipped)
        return json.dumps(data, indent=1, sort_keys=True).encode()


def conversations(instruction: str, caption: str, qa: list[dict] | None, stage: str,
                  left_out: Counter) -> list[dict]:
    """LLaVA turns: the caption exchange (``<image>`` heading the first human turn), then, to fine-tune, ``ok`` pairs.

    Every pair not exported is counted in ``left_out`` by its reason.
    """
    turns = [{"from": HUMAN, "value": f"{IMAGE_TOKEN}\n{instruction}"}, {"from": GPT, "value": caption}]
    for pair in qa or []:
        if stage == "pretrain":
            left_out["stage pretrain (two turns)"] += 1
        elif pair[C.STATUS] != Status.OK.value:
            left_out[f"status {pair[C.STATUS]}"] += 1
        elif not (pair[C.QA_QUESTION] or "").strip() or not (pair[C.QA_ANSWER] or "").strip():
            left_out["empty question or answer"] += 1
        else:
            turns += [{"from": HUMAN, "value": pair[C.QA_QUESTION]}, {"from": GPT, "value": pair[C.QA_ANSWER]}]
    return turns


def exportable(run_root: str, storage: StorageConfig | None, stage: str,
               fmt: str) -> tuple[list[dict], ExportSummary, Manifest]:
    """``ok`` rows of a committed run, each with ``conversations`` and its export ``export_id``, sorted by source.

    Sorting by source keeps the members of one tar shard and the rows of one Parquet file together,
    so their images are read back in one pass.

    Raises:
        ExportError: the run is not committed, or ``stage`` is unknown.
    """
    if stage not in STAGES:
        raise ExportError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    manifest = read_manifest(run_root, storage)
    if manifest is None:
        raise ExportError(f"{run_root} is not committed (no manifest); only committed runs are exported")
    try:
        table = read_committed(run_root, storage)
    except CommitError as exc:
        raise ExportError(str(exc)) from None
    default_prompt = (manifest.spec.get("caption") or {}).get("prompt", DEFAULT_PROMPT)
    summary = ExportSummary(format=fmt, stage=stage, run=run_root, rows_in=table.num_rows)
    out = []
    for row in sorted(table.to_pylist(), key=lambda r: (r[C.SOURCE], r[C.ID])):
        pairs = row.get(C.QA) or []
        summary.qa_pairs_in += len(pairs)
        if row[C.STATUS] != Status.OK.value:
            summary.skipped[f"status {row[C.STATUS]}"] += 1
            if pairs:
                summary.qa_skipped["row left out"] += len(pairs)
            continue
        row["conversations"] = conversations(row.get(C.INSTRUCTION) or default_prompt, row[C.CAPTION], pairs, stage,
                                             summary.qa_skipped)
        out.append(row)
    _assign_ids(out)
    return out, summary, manifest


def _assign_ids(rows: list[dict]) -> None:
    """``export_id``: the source's own id where it has one no other row repeats, else the stable row id."""
    seen = Counter(r.get(C.SOURCE_ID) for r in rows if r.get(C.SOURCE_ID))
    for r in rows:
        own = r.get(C.SOURCE_ID)
        r["export_id"] = own if own and seen[own] == 1 else r[C.ID]


def finish(summary: ExportSummary, records: int, pairs: int) -> None:
    """Count what was exported; an export of nothing is an error, never an empty file.

    Raises:
        ExportError: no record to write (with what was left out, and why).
    """
    summary.rows_out, summary.qa_pairs_out = records, pairs
    if records == 0:
        left = ", ".join(f"{k}={v}" for k, v in sorted(summary.skipped.items())) or "nothing"
        raise ExportError(f"{summary.run}: no record to export ({summary.rows_in} rows; left out: {left})")


def pairs_of(record_turns: list[dict]) -> int:
    """QA pairs in a record's turns (every turn after the caption exchange is one half of a pair)."""
    return (len(record_turns) - 2) // 2
