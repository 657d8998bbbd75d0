"""YAML job specs become typed :class:`schemas.spec.JobSpec` objects here, at the edge."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from schemas.spec import JobSpec

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SpecError(ValueError):
    """A spec file is missing, not YAML, or does not validate; the message says where."""


def expand(text: str, env: dict[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""
    env = os.environ if env is None else env

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise SpecError(f"spec uses ${{{name}}} but it is not set (use ${{{name}:-default}} for a default)")

    return _VAR.sub(sub, text)


def _expand_paths(data: dict) -> dict:
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("model_id"), str) and model["model_id"].startswith("~"):
        model["model_id"] = os.path.expanduser(model["model_id"])
    return data


def load_spec(path: str | Path, overrides: dict | None = None) -> JobSpec:
    """Read, expand and validate a spec file.

    Args:
        path: YAML file.
        overrides: dotted keys to set after loading, e.g. ``{"run.run_id": "r1"}``.

    Raises:
        SpecError: with the file and the offending fields.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(expand(text))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping of sections (source, model, sink, ...)")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_spec(_expand_paths(data), str(path))


def parse_spec(data: dict, where: str = "spec") -> JobSpec:
    """Validate a spec mapping; raise :class:`SpecError` listing every bad field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"{where} is invalid:"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']}")
        raise SpecError("\n".join(lines)) from None
