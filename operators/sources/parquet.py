"""Parquet manifests: a URI / relative-path column, or Hugging Face ``Image`` structs with embedded bytes.

``source.uri`` names one Parquet file or a prefix of them. Files are listed and their row
counts read from the footers on the driver (one request per file, nothing per row); repeated
ids are found by CPU tasks that read only the id column; rows are read in one CPU task per
file, so image bytes never pass through the driver. A row with embedded bytes skips the fetch step; its
``source`` is ``<file>#row=<n>``, the address the exporters read it back from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from operators.base import Expected, Resources, SourceOperator, Stage, apply_stages
from operators.idset import find_repeats
from operators.sources.entries import (
    ENTRY_SCHEMA,
    InvalidEntry,
    entry_row,
    files_under,
    invalid_row,
    location_or_manifest_id,
    questions_of,
    resolve_image,
    to_table,
)
from operators.sources.llava import manifest_root
from operators.storage import filesystem
from schemas import columns as C
from schemas.spec import SourceConfig, StorageConfig

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

    def _footers(self) -> list[tuple[str, int]]:
        """``(file uri, rows to take)`` per file, from the footers, honouring ``source.limit`` (O(files))."""
        files, left = [], self.config.limit
        for uri in files_under(self.config, ".parquet", ".parquet files"):
            fs, p = filesystem(uri, self.config.storage)
            with fs.open(p, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            take = rows if left is None else min(rows, left)
            files.append((uri, take))
            if left is not None:
                left -= take
                if left <= 0:
                    break
        return files

    def files(self) -> list[tuple[str, int, list[int]]]:
        """``(file uri, rows to take, rows whose id repeats an earlier one)`` per file.

        A repeated id would fail the commit's exactly-once check, so repeats become invalid_entry
        rows. After :meth:`prepare` the repeats were found by tasks; before, they are found here,
        in this process (tests and tools).
        """
        if self._files is None:
            footers = self._footers()
            seen: set = set()
            files = []
            for uri, take in footers:
                fs, p = filesystem(uri, self.config.storage)
                dups = []
                with fs.open(p, "rb") as f:
                    pf = pq.ParquetFile(f)
                    if self.config.id_column in pf.schema_arrow.names:
                        ids = pf.read(columns=[self.config.id_column], use_threads=False).column(0).to_pylist()
                        for n, raw in enumerate(ids[:take]):
                            if raw not in (None, ""):
                                if raw in seen:
                                    dups.append(n)
                                seen.add(raw)
                files.append((uri, take, dups))
            self._files = files
        return self._files

    def prepare(self, run_root: str, storage: StorageConfig, skip=None) -> Expected:
        """Count the rows from the footers and find repeated ids in CPU tasks (the id column only); Ray is up."""
        footers = self._footers()
        with_ids = []
        for uri, _ in footers:
            fs, p = filesystem(uri, self.config.storage)
            with fs.open(p, "rb") as f:
                with_ids.append(self.config.id_column in pq.ParquetFile(f).schema_arrow.names)
        subset = [n for n, has in enumerate(with_ids) if has]
        found = find_repeats([footers[n][0] for n in subset], self.config.id_column, self.config.storage,
                             limits=[footers[n][1] for n in subset], rows=sum(footers[n][1] for n in subset))
        dups = {subset[i]: rows for i, rows in found.by_file.items()}
        self._files = [(uri, take, dups.get(n, [])) for n, (uri, take) in enumerate(footers)]
        return Expected(None if skip else self.count(), None, self.key)

    @property
    def image_root(self) -> str:
        """Root of relative paths: ``source.image_root`` or the folder of the manifest (file)."""
        if self.config.image_root:
            return self.config.image_root
        fs, path = filesystem(self.config.uri, self.config.storage)
        return manifest_root(self.config.uri) if fs.isfile(path) else self.config.uri.rstrip("/")

    def count(self) -> int:
        return sum(take for _, take, _ in self.files())

    def read(self, first: Sequence[Stage] = ()) -> ray.data.Dataset:
        import ray.data

        items = [{"file": f, "take": take, "duplicates": dups} for f, take, dups in self.files()]
        read = Stage("read-parquet", ReadParquetEntries,
                     dict(config=self.config, image_root=self.image_root, namespace=self.namespace),
                     resources=Resources(num_cpus=0.5), batch_size=1, keeps_rows=False)
        return apply_stages(read.apply(ray.data.from_items(items)), first)

