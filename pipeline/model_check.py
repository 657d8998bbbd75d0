"""Pre-flight of the models: each ``model_id`` resolves to a readable config.json of its family's architecture.

``model_id`` names a local directory when one exists there, or when it reads as a path (absolute,
``./``, ``../``, ``~``, more than one ``/``): a missing one is said to be a missing directory, never
an invalid hub id. Anything else is a hub id (``org/name``), found in the local Hugging Face cache
or, failing that, asked of the hub once with a short timeout (no retries: an unreachable hub stays
unreachable for the length of a pre-flight). The config must parse as JSON and name one of the
family's architectures; the message then names the family the checkpoint does belong to, if any.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from operators.vlm.registry import families, get_family
from pipeline.preflight import MODEL, PreflightError
from schemas.spec import ModelConfig

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?$")


class ModelError(PreflightError):
    """A model cannot be found or is not what the spec says (exit 6)."""

    exit_code = MODEL


def check_model(model: ModelConfig, where: str = "model") -> None:
    """One model: located, config.json read, architecture matched against ``model.family``."""
    config_path = _config_file(model, where)
    try:
        config = json.loads(Path(config_path).read_text())
    except UnicodeDecodeError:
        raise ModelError(f"{where}.model_id: {config_path} is not text") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{where}.model_id: {config_path} is not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}); the checkpoint is damaged or incomplete") from None
    except OSError as exc:
        raise ModelError(f"{where}.model_id: cannot read {config_path}: {exc.strerror}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{where}.model_id: {config_path} is not a JSON object")
    family = get_family(model.family)
    archs = config.get("architectures") or []
    if not archs or set(archs) & set(family.architectures):
        return  # a config without architectures is left to the engine to judge
    fits = sorted(name for name, fam in families().items() if set(archs) & set(fam.architectures))
    hint = f"; set {where}.family to {fits[0]!r}" if fits else "; no registered family serves it"
    raise ModelError(f"{where}.model_id {model.model_id!r} is a checkpoint of {' / '.join(archs)}, which family "
                     f"{family.name!r} does not serve ({', '.join(family.architectures)}){hint}")


def looks_like_path(model_id: str) -> bool:
    """Whether ``model_id`` can only be a local path (it need not exist)."""
    return (model_id.startswith(("/", "./", "../", "~", ".")) or model_id.count("/") > 1 or "\\" in model_id
            or not _HUB_ID.match(model_id))


def _config_file(model: ModelConfig, where: str) -> str:
    model_id = model.model_id
    local = Path(os.path.expanduser(model_id))
    if local.exists() or looks_like_path(model_id):
        if not local.exists():
            raise ModelError(f"{where}.model_id: model directory {model_id} does not exist")
        if not local.is_dir():
            raise ModelError(f"{where}.model_id: {model_id} is a file, not a model directory")
        if not (local / "config.json").is_file():
            raise ModelError(f"{where}.model_id: model directory {model_id} has no config.json")
        return str(local / "config.json")
    return _hub_config(model_id, model.revision, where)


def _hub_config(repo_id: str, revision: str | None, where: str) -> str:
    """Path of the hub model's config.json in the local cache, fetched once if missing."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return cached
    not_here = (f"{where}.model_id {repo_id!r}: no local directory of that name and not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE})")
    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"{not_here}, and HF_HUB_OFFLINE is set")
    url = f"{constants.ENDPOINT}/{repo_id}/resolve/{revision or 'main'}/config.json"
    request = urllib.request.Request(url, method="HEAD")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 404):
            raise ModelError(f"{where}.model_id {repo_id!r}: no such model on the hub at revision "
                             f"{revision or 'main'} (or it is private: set HF_TOKEN)") from None
        if exc.code == 403:
            raise ModelError(f"{where}.model_id {repo_id!r}: the hub refuses access (a gated model: accept its "
                             "terms and set HF_TOKEN)") from None
        raise ModelError(f"{not_here}, and the hub answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(f"{not_here}, and the hub ({constants.ENDPOINT}) cannot be reached: {reason}") from None
    try:
        return hf_hub_download(repo_id, "config.json", revision=revision)
    except Exception as exc:  # noqa: BLE001 - reachable a moment ago; say what it said now
        raise ModelError(f"{where}.model_id {repo_id!r}: config.json could not be fetched: {exc}") from None
