"""LLaVA / ShareGPT4V JSON and JSONL manifests: ``{id, image, conversations}`` entries.

``image`` is relative to ``source.image_root`` (default: the manifest's folder). An existing
dataset can be recaptioned this way: its human turns become the image's ``questions``. The
manifest is read once on the driver (the ShareGPT4V 1.2M-entry JSON is about 1 GB of text).
"""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import SourceOperator
from operators.sources.entries import (
    ENTRY_SCHEMA,
    InvalidEntry,
    dedupe_ids,
    entry_row,
    invalid_row,
    location_or_manifest_id,
    questions_of,
    resolve_image,
    to_table,
)
from operators.sources.prefix import SourceError
from operators.storage import filesystem, split_uri, to_uri
from schemas import columns as C
from schemas.spec import SourceConfig

if TYPE_CHECKING:
    import ray.data


def manifest_root(uri: str) -> str:
    """The folder of a manifest file, in the manifest's scheme."""
    protocol, path = split_uri(uri)
    return to_uri(protocol, posixpath.dirname(path))


class LlavaManifestSource(SourceOperator):
    """One row per manifest entry, in manifest order; bad entries are ``invalid_entry`` rows."""

    name = "llava-manifest"

    def __init__(self, config: SourceConfig, rows_per_block: int = 128):
        self.config = config
        self.rows_per_block = rows_per_block
        self.image_root = config.image_root or manifest_root(config.uri)
        self.namespace = config.namespace or config.uri
        self._listing: pa.Table | None = None

    def produces(self) -> tuple[str, ...]:
        return tuple(ENTRY_SCHEMA.names)

    def check(self) -> None:
        if self.config.format not in ("llava_json", "llava_jsonl"):
            raise ValueError(f"source.format {self.config.format!r} is not a LLaVA manifest")

    def _entries(self) -> list:
        fs, path = filesystem(self.config.uri, self.config.storage)
        try:
            text = fs.cat_file(path).decode("utf-8")
        except FileNotFoundError:
            raise SourceError(f"manifest {self.config.uri} does not exist") from None
        except PermissionError as exc:
            raise SourceError(f"manifest {self.config.uri}: access denied ({exc})") from None
        if self.config.format == "llava_json":
            try:
                entries = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SourceError(f"manifest {self.config.uri} is not JSON: {exc}") from None
            if not isinstance(entries, list):
                raise SourceError(f"manifest {self.config.uri}: expected a JSON list of entries")
            return entries
        entries = []
        for n, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                # One bad line is one bad entry, not a failed job.
                entries.append(InvalidEntry(f"line {n + 1} is not JSON: {exc}"))
        return entries

    def listing(self) -> pa.Table:
        """The manifest's rows (read once)."""
        if self._listing is None:
            rows = []
            for n, entry in enumerate(self._entries()):
                rows.append(self._row(n, entry))
            if self.config.limit:
                rows = rows[: self.config.limit]
            if not rows:
                raise SourceError(f"manifest {self.config.uri} has no entries")
            dedupe_ids(rows, self.namespace)
            self._listing = to_table(rows)
        return self._listing

    def _row(self, n: int, entry: object) -> dict:
        where = f"{self.config.uri}#{n}"
        if isinstance(entry, InvalidEntry):
            return invalid_row(self.namespace, n, where, str(entry))
        if not isinstance(entry, dict):
            return invalid_row(self.namespace, n, where, f"entry {n} is a {type(entry).__name__}, not an object")
        raw_id = entry.get(self.config.id_column)
        try:
            uri, rel = resolve_image(self.image_root, entry.get("image"))
        except InvalidEntry as exc:
            return invalid_row(self.namespace, raw_id if raw_id is not None else n, where, f"entry {n}: {exc}",
                               raw_id)
        return entry_row(id=location_or_manifest_id(self.namespace, raw_id, uri), source=uri, image=rel,
                         questions=questions_of(entry.get("conversations")), source_id=raw_id)

    def count(self) -> int:
        return self.listing().num_rows

    def ids(self) -> list[str]:
        return self.listing().column(C.ID).to_pylist()

    def read(self) -> ray.data.Dataset:
        import ray.data

        table = self.listing()
        step = self.rows_per_block
        return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
