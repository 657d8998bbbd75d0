"""Parquet manifests: a URI / relative-path column, or Hugging Face ``Image`` structs with embedded bytes.

``source.uri`` names one Parquet file or a prefix of them. Files are listed and their row
counts read from the footers on the driver; rows are read in one CPU task per file, so image
bytes never pass through the driver. A row with embedded bytes skips the fetch step; its
``source`` is ``<file>#row=<n>``, the address the exporters read it back from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from operators.base import Resources, SourceOperator, Stage
from operators.sources.entries import (
    ENTRY_SCHEMA,
    InvalidEntry,
    entry_row,
    invalid_row,
    location_or_manifest_id,
    questions_of,
    resolve_image,
    to_table,
)
from operators.sources.llava import manifest_root
from operators.sources.prefix import SourceError
from operators.storage import filesystem, split_uri, to_uri
from schemas import columns as C
from schemas.spec import SourceConfig

if TYPE_CHECKING:
    import ray.data


def row_address(file_uri: str, row: int) -> str:
    """Where an embedded image lives: its file and row."""
    return f"{file_uri}#row={row}"


class ReadParquetEntries:
    """CPU task body: one manifest file (``file``, ``take`` rows) -> listing rows (picklable)."""

    def __init__(self, config: SourceConfig, image_root: str, namespace: str):
        self.config = config
        self.image_root = image_root
        self.namespace = namespace

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict] = []
        for item in batch.to_pylist():
            rows = self._file_rows(item["file"], item["take"])
            for n in item.get("duplicates") or []:
                rows[n] = invalid_row(self.namespace, f"{item['file']}#dup{n}", row_address(item["file"], n),
                                      f"duplicate id: row {n} of {item['file']} repeats an earlier row's id",
                                      rows[n][C.SOURCE_ID])
            out.extend(rows)
        return to_table(out)

    def _file_rows(self, file_uri: str, take: int) -> list[dict]:
        fs, path = filesystem(file_uri, self.config.storage)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            cols = [c for c in (self.config.image_column, self.config.id_column, "conversations") if c in names]
            table = pf.read(columns=cols, use_threads=False).slice(0, take)
        if self.config.image_column not in names:
            return [invalid_row(self.namespace, f"{file_uri}#{n}", row_address(file_uri, n),
                                f"{file_uri} has no column {self.config.image_column!r} (source.image_column)")
                    for n in range(table.num_rows)]
        out = []
        for n, rec in enumerate(table.to_pylist()):
            out.append(self._row(file_uri, n, rec))
        return out

    def _row(self, file_uri: str, n: int, rec: dict) -> dict:
        raw_id = rec.get(self.config.id_column)
        value = rec.get(self.config.image_column)
        questions = questions_of(rec.get("conversations"))
        where = row_address(file_uri, n)
        if isinstance(value, dict):
            data, rel = value.get("bytes"), value.get("path")
            if data:
                rel = rel if isinstance(rel, str) and rel and "://" not in rel and not rel.startswith("/") else None
                return entry_row(id=location_or_manifest_id(self.namespace, raw_id, where), source=where,
                                 image=rel, questions=questions, data=bytes(data), source_id=raw_id)
            value = rel
        try:
            if isinstance(value, str) and "://" in value:
                uri, rel = value, None
            else:
                uri, rel = resolve_image(self.image_root, value)
        except InvalidEntry as exc:
            return invalid_row(self.namespace, raw_id if raw_id is not None else where, where, f"row {n}: {exc}",
                               raw_id)
        return entry_row(id=location_or_manifest_id(self.namespace, raw_id, uri), source=uri, image=rel,
                         questions=questions, source_id=raw_id)


class ParquetManifestSource(SourceOperator):
    """One row per Parquet manifest row, files in sorted order."""

    name = "parquet-manifest"

    def __init__(self, config: SourceConfig):
        self.config = config
        self.namespace = config.namespace or config.uri
        self._files: list[tuple[str, int, list[int]]] | None = None

    def produces(self) -> tuple[str, ...]:
        return tuple(ENTRY_SCHEMA.names)

    def check(self) -> None:
        if self.config.format != "parquet":
            raise ValueError(f"source.format {self.config.format!r} is not parquet")

    def files(self) -> list[tuple[str, int, list[int]]]:
        """``(file uri, rows to take, rows whose id repeats an earlier one)`` per file, honouring ``source.limit``."""
        if self._files is None:
            protocol, path = split_uri(self.config.uri)
            fs, _ = filesystem(self.config.uri, self.config.storage)
            try:
                if fs.isfile(path):
                    paths = [path]
                else:
                    paths = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
            except PermissionError as exc:
                raise SourceError(f"source {self.config.uri}: access denied ({exc})") from None
            if not paths:
                raise SourceError(f"source {self.config.uri} holds no .parquet files")
            files, left = [], self.config.limit
            seen: set = set()
            for p in paths:
                with fs.open(p, "rb") as f:
                    pf = pq.ParquetFile(f)
                    rows = pf.metadata.num_rows
                    take = rows if left is None else min(rows, left)
                    # Only the id column is read here; a repeated id would otherwise fail the
                    # commit's exactly-once check, so repeats become invalid_entry rows instead.
                    dups = []
                    if self.config.id_column in pf.schema_arrow.names:
                        ids = pf.read(columns=[self.config.id_column], use_threads=False).column(0).to_pylist()[:take]
                        for n, raw in enumerate(ids):
                            if raw not in (None, ""):
                                if raw in seen:
                                    dups.append(n)
                                seen.add(raw)
                files.append((to_uri(protocol, p), take, dups))
                if left is not None:
                    left -= take
                    if left <= 0:
                        break
            self._files = files
        return self._files

    @property
    def image_root(self) -> str:
        """Root of relative paths: ``source.image_root`` or the folder of the manifest (file)."""
        if self.config.image_root:
            return self.config.image_root
        fs, path = filesystem(self.config.uri, self.config.storage)
        return manifest_root(self.config.uri) if fs.isfile(path) else self.config.uri.rstrip("/")

    def count(self) -> int:
        return sum(take for _, take, _ in self.files())

    def read(self) -> ray.data.Dataset:
        import ray.data

        items = [{"file": f, "take": take, "duplicates": dups} for f, take, dups in self.files()]
        read = Stage("read-parquet", ReadParquetEntries,
                     dict(config=self.config, image_root=self.image_root, namespace=self.namespace),
                     resources=Resources(num_cpus=0.5), batch_size=1, keeps_rows=False)
        return read.apply(ray.data.from_items(items))

