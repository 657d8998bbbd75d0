"""The run manifest: the commit record of a run. Readers trust nothing it does not list."""

from __future__ import annotations

import posixpath

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: 2: QA figures in the summary, QA provenance and the engines' start-up time (all optional, so version-1
#: manifests still read).
MANIFEST_VERSION = "2"


class FileEntry(BaseModel):
    """One committed data file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path relative to the run root (never absolute, never '..').")
    rows: int = Field(ge=0, description="Rows in the file.")

    @field_validator("path")
    @classmethod
    def _inside_root(cls, path: str) -> str:
        norm = posixpath.normpath(path)
        if path.startswith("/") or "://" in path or norm == ".." or norm.startswith("../") or "\\" in path:
            raise ValueError(f"manifest path {path!r} escapes the run root")
        return norm


class RunSummary(BaseModel):
    """What a run did, in figures."""

    model_config = ConfigDict(extra="forbid")

    rows_in: int = Field(description="Rows the source listed.")
    rows_out: int = Field(description="Rows committed.")
    rows_resumed: int = Field(0, description="Rows committed by earlier attempts of this run id (resume).")
    restreams: int = Field(0, description="Times this attempt's stream was lost to the cluster (a node took objects "
                           "beyond Ray's retries) and the rows not yet in staging were streamed again, in the run.")
    by_status: dict[str, int] = Field(description="Committed rows per status.")
    wall_s: float = Field(description="Seconds of this attempt, from plan start to commit.")
    images_per_s: float = Field(description="Rows this attempt processed per second of its wall time.")
    prompt_tokens: int = Field(description="Prompt tokens over all rows.")
    generated_tokens: int = Field(description="Generated tokens over all rows.")
    generated_tokens_per_s: float = Field(description="Generated tokens per second of wall time.")
    startup_s: float | None = Field(
        None, description="Seconds from the plan start until the first row's engines were all ready (Ray, actors, "
        "model load); None when this attempt ran no model stage.")
    qa_pairs: int = Field(0, description="Question-answer pairs committed, any status.")
    qa_by_status: dict[str, int] = Field(default_factory=dict, description="Committed QA pairs per status.")
    qa_prompt_tokens: int = Field(0, description="Prompt tokens of the QA pool (answers and question generation).")
    qa_generated_tokens: int = Field(0, description="Tokens the QA pool generated (answers and questions).")
    qa_generated_tokens_per_s: float = Field(0.0, description="QA generated tokens per second of wall time.")

    def render(self) -> str:
        """A few human-readable lines (a QA line when the run asked questions)."""
        statuses = ", ".join(f"{k}={v}" for k, v in sorted(self.by_status.items()))
        resumed = f", {self.rows_resumed} from earlier attempts" if self.rows_resumed else ""
        if self.restreams:
            resumed += f", streamed again {self.restreams}x after the cluster lost a stream"
        startup = f" (start-up {self.startup_s:.1f} s)" if self.startup_s is not None else ""
        lines = [
            f"rows in {self.rows_in}, rows out {self.rows_out} ({statuses}){resumed}",
            f"wall {self.wall_s:.1f} s{startup}, {self.images_per_s:.2f} images/s, "
            f"{self.generated_tokens} generated tokens ({self.generated_tokens_per_s:.1f} tokens/s), "
            f"{self.prompt_tokens} prompt tokens",
        ]
        if self.qa_pairs or self.qa_generated_tokens:
            qa = ", ".join(f"{k}={v}" for k, v in sorted(self.qa_by_status.items()))
            lines.append(f"qa {self.qa_pairs} pairs ({qa}), {self.qa_generated_tokens} generated tokens "
                         f"({self.qa_generated_tokens_per_s:.1f} tokens/s), {self.qa_prompt_tokens} prompt tokens")
        return "\n".join(lines)


class Manifest(BaseModel):
    """Written last, once, under the run root: ``<sink>/<run_id>/manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    manifest_version: str = MANIFEST_VERSION
    schema_version: str = Field(description="Version of the record schema of the files.")
    record: str = Field(description="Record kind of the files (e.g. 'caption').")
    run_id: str
    job: str = Field(description="Job name from the spec.")
    spec_hash: str = Field(description="Hash of the spec without run options.")
    spec: dict = Field(description="The spec as run (specs never hold credentials).")
    model_id: str
    model_revision: str | None
    engine: str | None = Field(description="Engine name and version that generated the rows.")
    sampling_hash: str
    qa_model_id: str | None = Field(None, description="Model that asked and answered the questions (QA runs).")
    qa_model_revision: str | None = Field(None, description="Pinned revision of the QA model.")
    qa_engine: str | None = Field(None, description="Engine name and version of the QA pool.")
    qa_sampling_hash: str | None = Field(None, description="Hash of the QA sampling settings.")
    code_version: str
    created_at: str = Field(description="UTC ISO-8601 time of the commit.")
    files: list[FileEntry] = Field(description="Data files, relative to the run root.")
    error_files: list[FileEntry] = Field(
        default_factory=list, description="Files with id, source, status and error of every failed row."
    )
    summary: RunSummary
