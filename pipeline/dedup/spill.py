"""Partitioned spill files on the local disk: append Arrow rows per partition, read one partition back.

The barrier streams the committed index shard by shard and spills each row to its partitions
(its hash bucket; its k-means cell and guest cells), so what it holds in memory is one shard on
the way in and, on the way out, one partition (:meth:`Spill.read`) or one bounded batch of it
(:meth:`Spill.batches`), whatever the corpus size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

#: Rows per record batch in a spill file, so a partition can be read back a batch at a time.
FILE_BATCH_ROWS = 4096


class Spill:
    """Append-only partitions (int keys) of Arrow tables with one schema, under a temporary directory.

    Rows wait in memory until all partitions' buffers together pass ``budget_bytes``; then the
    largest buffer is written out as one Arrow IPC file (batches of :data:`FILE_BATCH_ROWS` rows).
    The budget is for the whole object, however many partitions it holds: one Spill per barrier
    keeps the barrier's buffered bytes under one budget.
    """

    def __init__(self, schema: pa.Schema, budget_bytes: int = 64 << 20, root: str | None = None):
        self.schema = schema
        self.budget_bytes = budget_bytes
        self._buffered_bytes = 0
        self.dir = Path(tempfile.mkdtemp(prefix="vlmbatch-spill-", dir=root))
        self._buffers: dict[int, list[pa.Table]] = defaultdict(list)
        self._buffered: dict[int, int] = defaultdict(int)
        self._files: dict[int, int] = defaultdict(int)
        self.rows: dict[int, int] = defaultdict(int)

    def add(self, part: int, table: pa.Table) -> None:
        """Append ``table``'s rows to partition ``part``."""
        if not table.num_rows:
            return
        self._buffers[part].append(table)
        self._buffered[part] += table.nbytes
        self._buffered_bytes += table.nbytes
        self.rows[part] += table.num_rows
        while self._buffered_bytes > self.budget_bytes and self._buffered:
            self._flush(max(self._buffered, key=self._buffered.get))

    def add_grouped(self, parts, table: pa.Table, rows=None) -> None:
        """Append row ``rows[i]`` of ``table`` (row ``i`` when ``rows`` is None) to partition ``parts[i]``.

        A row may go to several partitions (``rows`` repeats it); only one partition's rows are
        taken out of ``table`` at a time, so the copies are never all in memory outside the budget.
        """
        parts = np.asarray(parts, dtype=np.int64)
        rows = np.arange(len(parts)) if rows is None else np.asarray(rows, dtype=np.int64)
        order = np.argsort(parts, kind="stable")
        bounds = np.flatnonzero(np.diff(parts[order])) + 1
        for chunk in np.split(order, bounds):
            if len(chunk):
                self.add(int(parts[chunk[0]]), table.take(pa.array(rows[chunk])))

    def _path(self, part: int, k: int) -> Path:
        return self.dir / f"p{part}-{k}.arrow"

    def _flush(self, part: int) -> None:
        tables = self._buffers.pop(part, [])
        self._buffered_bytes -= self._buffered.pop(part, 0)
        if not tables:
            return
        path = self._path(part, self._files[part])
        self._files[part] += 1
        with ipc.new_file(str(path), self.schema) as writer:
            writer.write_table(pa.concat_tables(tables).cast(self.schema), max_chunksize=FILE_BATCH_ROWS)

    def parts(self) -> list[int]:
        """Partitions that hold rows, in order."""
        return sorted(p for p, n in self.rows.items() if n)

    def read(self, part: int) -> pa.Table:
        """Every row spilled to ``part`` (flushed files, then what is still buffered), in arrival order."""
        tables = []
        for k in range(self._files.get(part, 0)):
            with ipc.open_file(pa.OSFile(str(self._path(part, k)))) as reader:
                tables.append(reader.read_all())
        tables += [t.cast(self.schema) for t in self._buffers.get(part, [])]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def batches(self, part: int, rows: int | None = None) -> Iterator[pa.Table]:
        """``part``'s rows in arrival order, as tables of about ``rows`` rows (:data:`FILE_BATCH_ROWS`): one file
        batch read at a time."""
        rows = FILE_BATCH_ROWS if rows is None else rows
        pending: list = []
        n = 0
        for k in range(self._files.get(part, 0)):
            with ipc.open_file(pa.OSFile(str(self._path(part, k)))) as reader:
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    pending.append(pa.Table.from_batches([batch], self.schema))
                    n += batch.num_rows
                    if n >= rows:
                        yield pa.concat_tables(pending)
                        pending, n = [], 0
        for t in self._buffers.get(part, []):
            pending.append(t.cast(self.schema))
            n += t.num_rows
            if n >= rows:
                yield pa.concat_tables(pending)
                pending, n = [], 0
        if pending:
            yield pa.concat_tables(pending)

    def drop(self, part: int) -> None:
        """Forget ``part`` (its files are deleted, its buffer freed): a searched cell's disk and memory back."""
        for k in range(self._files.pop(part, 0)):
            self._path(part, k).unlink(missing_ok=True)
        self._buffers.pop(part, None)
        self._buffered_bytes -= self._buffered.pop(part, 0)
        self.rows.pop(part, None)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
