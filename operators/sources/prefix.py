"""List an object-store or local prefix into rows: one per image, with a stable id, in parallel CPU tasks.

A run lists its prefix in tasks (:meth:`PrefixSource.prepare`), partitioned by folder: the first
levels are listed one level at a time (the store's delimiter listing) until there are enough
folders to keep the cluster busy, then each remaining folder's whole tree is listed by one task.
A prefix with no subfolders is therefore one sequential listing (1,000 keys per request on S3).
Every task writes its rows as listing parts under the run (``operators.sources.listing``) and
returns their counts and key digests; the driver holds folder names and part records, never rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import Expected, SourceOperator, Stage
from operators.ids import location_id
from operators.idset import KeySet
from operators.sources.folders import list_level, list_tree
from operators.sources.listing import (
    Listing,
    Part,
    PartWriter,
    clear_listing,
    finish_listing,
    read_listed,
    read_listing,
)
from operators.storage import split_uri, to_uri
from operators.tasks import cpu_task
from schemas import columns as C
from schemas.spec import SourceConfig, StorageConfig
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

LISTING_SCHEMA = pa.schema(list(C.types_of(C.ID, C.SOURCE, C.SOURCE_ID, C.NUM_BYTES, C.STATUS, C.ERROR).items()))
#: Folders to reach by level-at-a-time listing before the rest is listed a tree per task.
TARGET_FOLDERS = 64
#: Levels listed one at a time at most.
MAX_LEVELS = 3
#: A level with more subfolders than this is listed as a tree by the task that found it (the
#: driver never holds more than this many names from one folder).
MAX_FANOUT = 4096
#: Folders one tree task lists.
FOLDERS_PER_TASK = 16


class SourceError(RuntimeError):
    """The source cannot be listed (missing prefix, no access, nothing that looks like an image)."""


def relative_key(listed: str, path: str) -> str:
    """``path``'s key relative to the listed prefix ``listed`` (its base name when the prefix names the file)."""
    root = listed.rstrip("/") + "/"
    return path[len(root):] if path.startswith(root) else path.rsplit("/", 1)[-1]


def listing_rows(protocol: str, files: list[tuple[str, int | None]], suffixes: tuple[str, ...],
                 listed: str) -> pa.Table:
    """Listing rows of the image files among ``files`` (store paths with sizes) under the listed prefix ``listed``."""
    kept = [(p, s) for p, s in files if p.lower().endswith(suffixes)]
    sources = [to_uri(protocol, p) for p, _ in kept]
    n = len(sources)
    return pa.table({C.ID: [location_id(s) for s in sources], C.SOURCE: sources,
                     C.SOURCE_ID: [relative_key(listed, p) for p, _ in kept],
                     C.NUM_BYTES: [s for _, s in kept], C.STATUS: [Status.OK.value] * n,
                     C.ERROR: pa.nulls(n, pa.string())}, schema=LISTING_SCHEMA)


def _list_task(config: SourceConfig, folders: list[str], tree: bool, run_root: str, storage: StorageConfig,
               skip: KeySet | None, key: str) -> dict:
    """Task body: list ``folders`` (one level each, or their whole trees) into listing parts.

    Returns the parts, the rows skipped as done, the subfolders found (level listings), and an
    error message instead of raising (a missing prefix is the user's, not a task failure).
    """
    protocol, listed = split_uri(config.uri)
    suffixes = tuple(s.lower() for s in config.extensions)
    out: dict = {"parts": [], "skipped": 0, "folders": [], "error": None}
    for folder in folders:
        uri = to_uri(protocol, folder)
        writer = PartWriter(run_root, storage, LISTING_SCHEMA, f"{'tree' if tree else 'level'}:{uri}", folder,
                            key, skip)
        try:
            if tree:
                for files in list_tree(uri, storage):
                    writer.add(listing_rows(protocol, files, suffixes, listed))
            else:
                subfolders: list[str] = []
                for files, found in list_level(uri, storage):
                    writer.add(listing_rows(protocol, files, suffixes, listed))
                    subfolders.extend(found)
                if len(subfolders) > MAX_FANOUT:
                    for sub in subfolders:
                        for files in list_tree(to_uri(protocol, sub), storage):
                            writer.add(listing_rows(protocol, files, suffixes, listed))
                    subfolders = []
                out["folders"].extend(subfolders)
        except FileNotFoundError:
            out["error"] = f"source {config.uri} does not exist"
            return out
        except PermissionError as exc:
            out["error"] = f"source {config.uri}: access denied ({exc})"
            return out
        parts, skipped = writer.close()
        out["parts"].extend(parts)
        out["skipped"] += skipped
    return out


class PrefixSource(SourceOperator):
    """Every object under a prefix whose name ends in one of the image extensions.

    A row's ``source_id`` is its key relative to the listed prefix (``photos/cat.jpg``).
    Rows are in folder order, then name order within a folder; ``source.limit`` takes the first
    N in that order.
    """

    name = "list"

    def __init__(self, config: SourceConfig, rows_per_block: int = 128):
        self.config = config
        self.rows_per_block = rows_per_block
        # Content ids are only known once the bytes are fetched.
        self.ids_at_listing = config.id_mode == "location"
        self._prepared: tuple[str, StorageConfig, Listing] | None = None

    def produces(self) -> tuple[str, ...]:
        return tuple(LISTING_SCHEMA.names)

    def check(self) -> None:
        protocol, _ = split_uri(self.config.uri)
        if protocol not in ("file", "s3", "s3a", "gs", "gcs", "az", "abfs", "memory"):
            raise ValueError(f"source.uri {self.config.uri!r}: unsupported scheme {protocol!r}")

    def describe_source(self) -> dict:
        """What the listing depends on (a finished listing for other settings is not reused)."""
        return {"format": "prefix", "uri": self.config.uri, "extensions": list(self.config.extensions),
                "id_mode": self.config.id_mode, "limit": self.config.limit}

    def prepare(self, run_root: str, storage: StorageConfig, skip: KeySet | None = None) -> Expected:
        """List the prefix in CPU tasks into the run's listing (or reuse a finished one); Ray must be up.

        Raises:
            SourceError: the prefix does not exist, may not be listed, or holds no images.
        """
        import ray

        key = self.key
        # Ids from content are known only after the fetch: the run drops done ids there instead.
        applied = skip is None or self.ids_at_listing
        skip = skip if self.ids_at_listing else None
        listing = read_listing(run_root, storage, self.describe_source())
        if listing is None:
            clear_listing(run_root, storage)
            task = cpu_task(_list_task)
            parts: list[Part] = []
            skipped = 0
            _, root = split_uri(self.config.uri)
            frontier, level = [root.rstrip("/")], 0
            while frontier and len(frontier) < TARGET_FOLDERS and level < MAX_LEVELS:
                results = ray.get([task.remote(self.config, [f], False, run_root, storage, skip, key)
                                   for f in frontier])
                frontier = []
                for result in results:
                    self._raise(result)
                    parts.extend(result["parts"])
                    skipped += result["skipped"]
                    frontier.extend(result["folders"])
                frontier.sort()
                level += 1
            step = max(1, min(FOLDERS_PER_TASK, -(-len(frontier) // TARGET_FOLDERS)))
            refs = [task.remote(self.config, frontier[i:i + step], True, run_root, storage, skip, key)
                    for i in range(0, len(frontier), step)]
            for result in ray.get(refs):
                self._raise(result)
                parts.extend(result["parts"])
                skipped += result["skipped"]
            if not parts and not skipped:
                suffixes = ", ".join(s.lower() for s in self.config.extensions)
                raise SourceError(f"source {self.config.uri} lists no images (looked for {suffixes})")
            listing = finish_listing(run_root, storage, parts, key, skipped, self.describe_source(),
                                     self.config.limit)
            log.info("listed %s: %d images in %d parts (%d done earlier)", self.config.uri, listing.rows,
                     len(listing.parts), skipped)
        self._prepared = (run_root, storage, listing)
        rows = listing.rows if applied else None  # rows skipped after the fetch are not known here
        return Expected(rows, listing.digest if applied else None, key, skip_applied=applied, skipped=listing.skipped)

    @staticmethod
    def _raise(result: dict) -> None:
        if result["error"]:
            raise SourceError(result["error"])

    def listing(self) -> pa.Table:
        """The whole listing, in this process (tests and tools on small prefixes; a run lists in tasks)."""
        protocol, root = split_uri(self.config.uri)
        suffixes = tuple(s.lower() for s in self.config.extensions)
        try:
            tables = [listing_rows(protocol, files, suffixes, root)
                      for files in list_tree(self.config.uri, self.config.storage)]
        except FileNotFoundError:
            raise SourceError(f"source {self.config.uri} does not exist") from None
        except PermissionError as exc:
            raise SourceError(f"source {self.config.uri}: access denied ({exc})") from None
        table = pa.concat_tables(tables).sort_by(C.SOURCE)
        if self.config.limit:
            table = table.slice(0, self.config.limit)
        if not table.num_rows:
            raise SourceError(f"source {self.config.uri} lists no images (looked for {', '.join(suffixes)})")
        return table

    def count(self) -> int | None:
        return self._prepared[2].rows if self._prepared else None

    def read(self, first: Sequence[Stage] = ()) -> ray.data.Dataset:
        """The prepared listing's rows (see :meth:`prepare`); unprepared, an in-process listing (small ones)."""
        return read_listed(self._prepared, self.listing, self.rows_per_block, first)
