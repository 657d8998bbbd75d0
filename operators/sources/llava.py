"""LLaVA / ShareGPT4V JSON and JSONL manifests: ``{id, image, conversations}`` entries, read in CPU tasks.

``image`` is relative to ``source.image_root`` (default: the manifest's folder). An existing
dataset can be recaptioned this way: its human turns become the image's ``questions``.

A run reads the manifest in tasks (:meth:`LlavaManifestSource.prepare`): a JSONL manifest in byte
ranges of :data:`RANGE_BYTES` (one task counts each range's entries, so every entry keeps its
position in the whole manifest; another parses it), a JSON manifest (one array) by one task
that decodes it entry by entry. The rows become listing parts under the run; an id that repeats
an earlier entry's is then found by tasks (``operators.idset.find_repeats``) and that entry
becomes an ``invalid_entry`` row. The driver holds part records, never entries.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import Expected, SourceOperator, Stage
from operators.idset import KeySet, digest_hex, find_repeats, key_digest
from operators.sources.entries import (
    ENTRY_SCHEMA,
    InvalidEntry,
    dedupe_ids,
    duplicate_message,
    entry_row,
    invalid_row,
    location_or_manifest_id,
    questions_of,
    resolve_image,
    to_table,
)
from operators.sources.listing import (
    ENTRY,
    Listing,
    Part,
    PartWriter,
    clear_listing,
    finish_listing,
    read_listed,
    read_listing,
    read_part,
    write_part,
)
from operators.sources.prefix import SourceError
from operators.storage import filesystem, join_uri, split_uri, to_uri
from operators.tasks import cpu_task
from schemas import columns as C
from schemas.spec import SourceConfig, StorageConfig

if TYPE_CHECKING:
    import ray.data

#: Bytes of a JSONL manifest per task (a 1 GB manifest is 32 tasks).
RANGE_BYTES = 32 * 2**20
PART_SCHEMA = ENTRY_SCHEMA.append(pa.field(ENTRY, pa.int64()))


def manifest_root(uri: str) -> str:
    """The folder of a manifest file, in the manifest's scheme."""
    protocol, path = split_uri(uri)
    return to_uri(protocol, posixpath.dirname(path))


class EntryRows:
    """Manifest entries -> listing rows (picklable; the same in tasks and in-process)."""

    def __init__(self, config: SourceConfig, image_root: str, namespace: str):
        self.config, self.image_root, self.namespace = config, image_root, namespace

    def row(self, n: int, entry: object) -> dict:
        """The row of entry ``n`` (its position among the manifest's entries)."""
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


def parse_lines(data: bytes, first_line: int) -> list[object]:
    """JSONL entries of ``data`` (blank lines skipped; a line that is not JSON is an :class:`InvalidEntry`)."""
    entries: list[object] = []
    for k, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # One bad line is one bad entry, not a failed job.
            entries.append(InvalidEntry(f"line {first_line + k + 1} is not JSON: {exc}"))
    return entries


def read_range(uri: str, storage: StorageConfig | None, start: int, end: int) -> bytes:
    """The lines that begin in ``[start, end)`` of a file (the last one read to its end)."""
    fs, path = filesystem(uri, storage)
    with fs.open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line under way at ``start`` belongs to the range before
        begin = f.tell()
        if begin >= end:
            return b""
        data = f.read(end - begin)
        if data and not data.endswith(b"\n"):
            data += f.readline()
    return data


def _count_range(uri: str, storage: StorageConfig | None, start: int, end: int) -> tuple[int, int]:
    """Task body: (lines, entries) that begin in the range."""
    data = read_range(uri, storage, start, end)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return len(lines), sum(1 for line in lines if line.strip())


def _list_range(rows: EntryRows, start: int, end: int, first_line: int, first_entry: int, run_root: str,
                storage: StorageConfig, skip: KeySet | None) -> dict:
    """Task body: parse one byte range of a JSONL manifest into listing parts."""
    data = read_range(rows.config.uri, rows.config.storage, start, end)
    writer = PartWriter(run_root, storage, PART_SCHEMA, f"jsonl:{rows.config.uri}:{start}", f"{start:016d}", C.ID,
                        skip)
    batch: list[dict] = []
    for k, entry in enumerate(parse_lines(data, first_line)):
        batch.append({**rows.row(first_entry + k, entry), ENTRY: first_entry + k})
        if len(batch) >= 8192:
            writer.add_rows(batch)
            batch = []
    writer.add_rows(batch)
    parts, skipped = writer.close()
    return {"parts": parts, "skipped": skipped, "error": None}


def iter_json_array(text: str):
    """The elements of a JSON array, decoded one at a time (the text is held, not a list of every entry).

    Raises:
        SourceError: the text is not a JSON array.
    """
    decoder = json.JSONDecoder()
    ws = " \t\n\r"
    i, n = 0, len(text)
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != "[":
        raise SourceError("expected a JSON list of entries")
    i += 1
    while True:
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == "]":
            return
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise SourceError(f"not JSON: {exc}") from None
        yield value
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] == "]":
            return
        else:
            raise SourceError(f"not JSON: expected ',' or ']' at character {i}")


def _list_json(rows: EntryRows, run_root: str, storage: StorageConfig, skip: KeySet | None) -> dict:
    """Task body: decode a JSON manifest entry by entry into listing parts."""
    fs, path = filesystem(rows.config.uri, rows.config.storage)
    writer = PartWriter(run_root, storage, PART_SCHEMA, f"json:{rows.config.uri}", "0", C.ID, skip)
    try:
        text = fs.cat_file(path).decode("utf-8")
        batch: list[dict] = []
        for n, entry in enumerate(iter_json_array(text)):
            batch.append({**rows.row(n, entry), ENTRY: n})
            if len(batch) >= 8192:
                writer.add_rows(batch)
                batch = []
        writer.add_rows(batch)
    except SourceError as exc:
        return {"parts": [], "skipped": 0, "error": f"manifest {rows.config.uri}: {exc}"}
    parts, skipped = writer.close()
    return {"parts": parts, "skipped": skipped, "error": None}


def _mark_repeats(run_root: str, part: Part, positions: list[int], namespace: str,
                  storage: StorageConfig) -> Part:
    """Task body: rewrite a part with the rows at ``positions`` as duplicate-id ``invalid_entry`` rows."""
    uri = join_uri(run_root, part.path)
    records = read_part(uri, storage).to_pylist()
    for r in positions:
        n = records[r][ENTRY]
        records[r] = {**invalid_row(namespace, f"dup{n}", records[r][C.SOURCE], duplicate_message(n),
                                  records[r].get(C.SOURCE_ID)), ENTRY: n}
    table = pa.Table.from_pylist(records, schema=PART_SCHEMA)
    write_part(uri, table, storage)
    return Part(part.path, part.rows, digest_hex(key_digest(table.column(C.ID).to_pylist())), part.rank)


class LlavaManifestSource(SourceOperator):
    """One row per manifest entry, in manifest order; bad entries are ``invalid_entry`` rows."""

    name = "llava-manifest"

    def __init__(self, config: SourceConfig, rows_per_block: int = 128):
        self.config = config
        self.rows_per_block = rows_per_block
        self.image_root = config.image_root or manifest_root(config.uri)
        self.namespace = config.namespace or config.uri
        self._listing: pa.Table | None = None
        self._prepared: tuple[str, StorageConfig, Listing] | None = None

    def produces(self) -> tuple[str, ...]:
        return tuple(ENTRY_SCHEMA.names)

    def check(self) -> None:
        if self.config.format not in ("llava_json", "llava_jsonl"):
            raise ValueError(f"source.format {self.config.format!r} is not a LLaVA manifest")

    def describe_source(self) -> dict:
        return {"format": self.config.format, "uri": self.config.uri, "image_root": self.image_root,
                "namespace": self.namespace, "id_column": self.config.id_column, "limit": self.config.limit}

    def _size(self) -> int:
        fs, path = filesystem(self.config.uri, self.config.storage)
        try:
            return fs.size(path)
        except FileNotFoundError:
            raise SourceError(f"manifest {self.config.uri} does not exist") from None
        except PermissionError as exc:
            raise SourceError(f"manifest {self.config.uri}: access denied ({exc})") from None

    def prepare(self, run_root: str, storage: StorageConfig, skip: KeySet | None = None) -> Expected:
        """Read the manifest in CPU tasks into the run's listing (or reuse a finished one); Ray must be up.

        Raises:
            SourceError: the manifest does not exist, cannot be read, is not JSON, or has no entries.
        """
        import ray

        listing = read_listing(run_root, storage, self.describe_source())
        if listing is None:
            clear_listing(run_root, storage)
            size = self._size()
            rows = EntryRows(self.config, self.image_root, self.namespace)
            if self.config.format == "llava_jsonl":
                bounds = [(s, min(s + RANGE_BYTES, size)) for s in range(0, size, RANGE_BYTES)]
                count = cpu_task(_count_range)
                # One range starts at entry 0: only several need their entries counted first.
                counts = ray.get([count.remote(self.config.uri, self.config.storage, s, e) for s, e in bounds]
                                 ) if len(bounds) > 1 else [(0, 0)]
                task = cpu_task(_list_range)
                refs, line, entry = [], 0, 0
                for (s, e), (lines, entries) in zip(bounds, counts, strict=True):
                    refs.append(task.remote(rows, s, e, line, entry, run_root, storage, skip))
                    line, entry = line + lines, entry + entries
                results = ray.get(refs)
            else:
                results = [ray.get(cpu_task(_list_json).remote(rows, run_root, storage, skip))]
            for result in results:
                if result["error"]:
                    raise SourceError(result["error"])
            parts = [p for r in results for p in r["parts"]]
            skipped = sum(r["skipped"] for r in results)
            if not parts and not skipped:
                raise SourceError(f"manifest {self.config.uri} has no entries")
            listing = finish_listing(run_root, storage, parts, C.ID, skipped, self.describe_source(),
                                     self.config.limit, repeats=lambda ps: self._settle_repeats(run_root, storage, ps))
        self._prepared = (run_root, storage, listing)
        return Expected(listing.rows, listing.digest, C.ID, skip_applied=True, skipped=listing.skipped)

    def _settle_repeats(self, run_root: str, storage: StorageConfig, parts: list[Part]) -> list[Part]:
        import ray

        total = sum(p.rows for p in parts)
        found = find_repeats([join_uri(run_root, p.path) for p in parts], C.ID, storage, rows=total)
        if not found.count:
            return parts
        mark = cpu_task(_mark_repeats)
        fixed = dict(zip(found.by_file, ray.get([
            mark.remote(run_root, parts[i], rows, self.namespace, storage) for i, rows in found.by_file.items()]),
            strict=True))
        return [fixed.get(i, p) for i, p in enumerate(parts)]

    def _entries(self) -> list:
        fs, path = filesystem(self.config.uri, self.config.storage)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise SourceError(f"manifest {self.config.uri} does not exist") from None
        except PermissionError as exc:
            raise SourceError(f"manifest {self.config.uri}: access denied ({exc})") from None
        if self.config.format == "llava_jsonl":
            return parse_lines(data, 0)
        try:
            return list(iter_json_array(data.decode("utf-8")))
        except SourceError as exc:
            raise SourceError(f"manifest {self.config.uri}: {exc}") from None

    def listing(self) -> pa.Table:
        """The manifest's rows, read in this process (tests and tools; a run reads in tasks)."""
        if self._listing is None:
            rows = EntryRows(self.config, self.image_root, self.namespace)
            listed = [rows.row(n, entry) for n, entry in enumerate(self._entries())]
            if self.config.limit:
                listed = listed[: self.config.limit]
            if not listed:
                raise SourceError(f"manifest {self.config.uri} has no entries")
            dedupe_ids(listed, self.namespace)
            self._listing = to_table(listed)
        return self._listing

    def count(self) -> int | None:
        if self._prepared is not None:
            return self._prepared[2].rows
        return self._listing.num_rows if self._listing is not None else None

    def read(self, first: Sequence[Stage] = ()) -> ray.data.Dataset:
        """The prepared listing's rows (see :meth:`prepare`); unprepared, an in-process listing (small ones)."""
        return read_listed(self._prepared, self.listing, self.rows_per_block, first)
