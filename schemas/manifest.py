"""The run manifest: the commit record of a run. Readers trust nothing it does not list."""

from __future__ import annotations

import posixpath

from pydantic import BaseModel, ConfigDict, Field, field_validator

MANIFEST_VERSION = "1"


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
    by_status: dict[str, int] = Field(description="Committed rows per status.")
    wall_s: float = Field(description="Seconds of this attempt, from plan start to commit.")
    images_per_s: float = Field(description="Rows this attempt processed per second of its wall time.")
    prompt_tokens: int = Field(description="Prompt tokens over all rows.")
    generated_tokens: int = Field(description="Generated tokens over all rows.")
    generated_tokens_per_s: float = Field(description="Generated tokens per second of wall time.")

    def render(self) -> str:
        """A few human-readable lines."""
        statuses = ", ".join(f"{k}={v}" for k, v in sorted(self.by_status.items()))
        resumed = f", {self.rows_resumed} from earlier attempts" if self.rows_resumed else ""
        return (
            f"rows in {self.rows_in}, rows out {self.rows_out} ({statuses}){resumed}\n"
            f"wall {self.wall_s:.1f} s, {self.images_per_s:.2f} images/s, "
            f"{self.generated_tokens} generated tokens ({self.generated_tokens_per_s:.1f} tokens/s), "
            f"{self.prompt_tokens} prompt tokens"
        )


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
    code_version: str
    created_at: str = Field(description="UTC ISO-8601 time of the commit.")
    files: list[FileEntry] = Field(description="Data files, relative to the run root.")
    error_files: list[FileEntry] = Field(
        default_factory=list, description="Files with id, source, status and error of every failed row."
    )
    summary: RunSummary
