"""The spec reference, generated from the pydantic models' field descriptions."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from schemas.spec import JobSpec


def _model_type(annotation) -> type[BaseModel] | None:
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_type(field.annotation)
        if sub is not None:
            rows.append((key, "section", field.description or ""))
            rows.extend(_rows(sub, key + "."))
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((key, default, field.description or ""))
    return rows


def spec_reference() -> str:
    """A Markdown table of every spec field: key, default, description."""
    lines = ["| field | default | description |", "| --- | --- | --- |"]
    for key, default, desc in _rows(JobSpec):
        lines.append(f"| `{key}` | {default.replace('|', '/')} | {desc.replace('|', '/')} |")
    return "\n".join(lines)
