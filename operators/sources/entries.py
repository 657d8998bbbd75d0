"""Shared pieces of manifest-like sources: the listing schema, namespaced ids, safe image paths.

Every manifest source yields the listing columns of :class:`~operators.sources.prefix.PrefixSource`
(id, source, num_bytes, status, error) plus the relative ``image`` path, the ``questions`` its
conversations carry and, for formats that embed the image, ``image_bytes`` (the fetch step
passes rows that already hold bytes).
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa

from operators.ids import location_id, normalise_location
from operators.sources.prefix import LISTING_SCHEMA, SourceError
from operators.storage import filesystem, join_uri, split_uri, to_uri
from schemas import columns as C
from schemas.spec import SourceConfig
from schemas.status import Status

ENTRY_SCHEMA = pa.schema(list(C.types_of(*LISTING_SCHEMA.names, C.IMAGE, C.QUESTIONS, C.IMAGE_BYTES).items()))

_HUMAN_ROLES = {"human", "user"}


class InvalidEntry(ValueError):
    """A manifest entry that names no usable image; becomes an ``invalid_entry`` row."""


def manifest_id(namespace: str, raw_id: object) -> str:
    """Stable id of a manifest entry: its own id inside the manifest's namespace.

    Two manifests that both number their entries from 1 get different ids, and a rerun of the
    same manifest gets the same ids.
    """
    blob = f"manifest\0{normalise_location(namespace)}\0{raw_id}".encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def resolve_image(root: str, rel: object) -> tuple[str, str]:
    """``(uri, relative path)`` of a manifest image path under ``root``.

    Raises:
        InvalidEntry: the path is missing, absolute, carries a scheme, or escapes ``root``.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise InvalidEntry(f"entry has no image path (got {rel!r})")
    if "://" in rel or rel.startswith(("/", "\\")) or "\\" in rel:
        raise InvalidEntry(f"image path {rel!r} is absolute; manifest paths are relative to the image root")
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../"):
        raise InvalidEntry(f"image path {rel!r} escapes the image root")
    return join_uri(root, norm), norm


def questions_of(conversations: object) -> list[str]:
    """The human turns of a LLaVA conversation, without the ``<image>`` marker."""
    if not isinstance(conversations, list):
        return []
    out = []
    for turn in conversations:
        if isinstance(turn, dict) and str(turn.get("from", turn.get("role", ""))).lower() in _HUMAN_ROLES:
            text = str(turn.get("value", turn.get("content", ""))).replace("<image>", "").strip()
            if text:
                out.append(text)
    return out


def entry_row(*, id: str, source: str, image: str | None, questions: list[str] | None = None,
              data: bytes | None = None, status: Status = Status.OK, error: str | None = None,
              source_id: object = None) -> dict:
    """One listing row as a dict of :data:`ENTRY_SCHEMA` columns; ``source_id`` is the source's own id, if any."""
    return {C.ID: id, C.SOURCE: source, C.SOURCE_ID: own_id(source_id),
            C.NUM_BYTES: len(data) if data is not None else None,
            C.STATUS: status.value, C.ERROR: error, C.IMAGE: image, C.QUESTIONS: questions or [],
            C.IMAGE_BYTES: data}


def own_id(raw_id: object) -> str | None:
    """The source's own id as text (``7`` -> ``"7"``), None when it gives none."""
    return None if raw_id in (None, "") else str(raw_id)


def invalid_row(namespace: str, key: object, source: str, error: str, source_id: object = None) -> dict:
    """An ``invalid_entry`` row; its id comes from where it sits in the manifest, so it is stable too."""
    return entry_row(id=manifest_id(namespace, f"#invalid:{key}"), source=source, image=None,
                     status=Status.INVALID_ENTRY, error=error, source_id=source_id)


def duplicate_message(n: int) -> str:
    """The error of entry ``n`` whose id an earlier entry already has."""
    return f"duplicate id: entry {n} repeats an earlier entry's id; only the first is processed"


def dedupe_ids(rows: list[dict], namespace: str) -> None:
    """Turn every repeat of an id into an ``invalid_entry`` row with its own id (in place; in-process listings)."""
    seen: set[str] = set()
    for n, row in enumerate(rows):
        if row[C.ID] in seen:
            rows[n] = invalid_row(namespace, f"dup{n}", row[C.SOURCE], duplicate_message(n), row[C.SOURCE_ID])
        seen.add(rows[n][C.ID])


def to_table(rows: list[dict]) -> pa.Table:
    """Rows as an Arrow table of :data:`ENTRY_SCHEMA`."""
    return pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA)


def location_or_manifest_id(namespace: str, raw_id: object, uri: str) -> str:
    """The manifest's id when it gives one, else the image location's id."""
    return manifest_id(namespace, raw_id) if raw_id not in (None, "") else location_id(uri)


def files_under(config: SourceConfig, suffix: str, what: str) -> list[str]:
    """URIs of ``source.uri`` itself when it is a file, else of every file under it ending in ``suffix``, sorted.

    Raises:
        SourceError: access is denied, or there is no such file (``what`` names them: "Parquet files").
    """
    protocol, path = split_uri(config.uri)
    fs, _ = filesystem(config.uri, config.storage)
    try:
        paths = [path] if fs.isfile(path) else sorted(p for p in fs.find(path) if p.endswith(suffix))
    except PermissionError as exc:
        raise SourceError(f"source {config.uri}: access denied ({exc})") from None
    if not paths:
        raise SourceError(f"source {config.uri} holds no {what}")
    return [to_uri(protocol, p) for p in paths]
