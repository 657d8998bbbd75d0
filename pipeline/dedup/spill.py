"""Partitioned spill files on the local disk: append Arrow rows per partition, read one partition back.

The barrier streams the committed index shard by shard and spills each row to its partitions
(its hash bucket; its k-means cell and guest cells), so what it holds in memory is one shard on
the way in and one partition on the way out, whatever the corpus size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc


class Spill:
    """Append-only partitions of Arrow tables with one schema, under a temporary directory.

    Rows wait in memory until all partitions' buffers together pass ``budget_bytes``; then the
    largest buffer is written out as one Arrow IPC file.
    """

    def __init__(self, schema: pa.Schema, budget_bytes: int = 64 << 20, root: str | None = None):
        self.schema = schema
        # One budget for all partitions' buffers: memory stays flat however many partitions there are.
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

    def add_grouped(self, parts, table: pa.Table) -> None:
        """Append row ``i`` of ``table`` to partition ``parts[i]``."""
        import numpy as np

        parts = np.asarray(parts)
        order = np.argsort(parts, kind="stable")
        sorted_parts = parts[order]
        bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
        for chunk in np.split(np.arange(len(order)), bounds):
            if len(chunk):
                self.add(int(sorted_parts[chunk[0]]), table.take(pa.array(order[chunk])))

    def _flush(self, part: int) -> None:
        tables = self._buffers.pop(part, [])
        self._buffered_bytes -= self._buffered.pop(part, 0)
        if not tables:
            return
        path = self.dir / f"p{part}-{self._files[part]}.arrow"
        self._files[part] += 1
        with ipc.new_file(str(path), self.schema) as writer:
            writer.write_table(pa.concat_tables(tables).cast(self.schema))

    def parts(self) -> list[int]:
        """Partitions that hold rows, in order."""
        return sorted(p for p, n in self.rows.items() if n)

    def read(self, part: int) -> pa.Table:
        """Every row spilled to ``part`` (flushed files, then what is still buffered), in arrival order."""
        tables = []
        for k in range(self._files.get(part, 0)):
            with ipc.open_file(str(self.dir / f"p{part}-{k}.arrow")) as reader:
                tables.append(reader.read_all())
        tables += [t.cast(self.schema) for t in self._buffers.get(part, [])]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
