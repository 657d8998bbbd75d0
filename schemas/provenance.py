"""Provenance stamped on every output row."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Provenance(BaseModel):
    """Where a row's generation came from. The engine name is filled in by the actor that ran it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str = Field(description="Model id or directory as named in the spec.")
    model_revision: str | None = Field(None, description="Pinned checkpoint revision.")
    sampling_hash: str = Field(description="Hash of the sampling settings.")
    code_version: str = Field(description="vlmbatch version (and commit where known).")
    run_id: str = Field(description="Run id.")
