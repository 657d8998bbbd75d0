"""Code version and provenance, computed once on the driver."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

from schemas.provenance import Provenance
from schemas.spec import JobSpec, SamplingConfig

_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def code_version() -> str:
    """``vlmbatch <version>`` plus ``+g<commit>`` when running from a git checkout."""
    try:
        version = metadata.version("vlmbatch")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        sha = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"vlmbatch {version}" + (f"+g{sha}" if sha else "")


def provenance_for(spec: JobSpec, run_id: str, sampling: SamplingConfig | None = None) -> Provenance:
    """Provenance of a run of ``spec``; ``sampling``: the settings as run (the spec's, family defaults filled)."""
    return Provenance(
        model_id=spec.model.model_id,
        model_revision=spec.model.revision,
        sampling_hash=(sampling or spec.sampling).digest(),
        code_version=code_version(),
        run_id=run_id,
    )


def qa_provenance(spec: JobSpec, run_id: str, sampling: SamplingConfig | None = None) -> Provenance:
    """Provenance of the QA stage (its own model and sampling, as run when ``sampling`` is given)."""
    assert spec.qa is not None
    model = spec.qa.model or spec.model
    sampling = sampling or spec.qa.sampling or spec.sampling
    return Provenance(model_id=model.model_id, model_revision=model.revision, sampling_hash=sampling.digest(),
                      code_version=code_version(), run_id=run_id)
