"""List an object-store or local prefix into rows: one per image, with a stable id."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import SourceOperator
from operators.ids import location_id
from operators.storage import filesystem, split_uri, to_uri
from schemas import columns as C
from schemas.spec import SourceConfig
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

LISTING_SCHEMA = pa.schema(list(C.types_of(C.ID, C.SOURCE, C.SOURCE_ID, C.NUM_BYTES, C.STATUS, C.ERROR).items()))


class SourceError(RuntimeError):
    """The source cannot be listed (missing prefix, no access, nothing that looks like an image)."""


def relative_key(listed: str, path: str) -> str:
    """``path``'s key relative to the listed prefix ``listed`` (its base name when the prefix names the file)."""
    root = listed.rstrip("/") + "/"
    return path[len(root):] if path.startswith(root) else path.rsplit("/", 1)[-1]


class PrefixSource(SourceOperator):
    """Every object under a prefix whose name ends in one of the image extensions.

    A row's ``source_id`` is its key relative to the listed prefix (``photos/cat.jpg``).

    Listing happens once, on the driver, into an Arrow table (about 150 bytes per image);
    rows are sorted by location so block boundaries, and therefore output files, are the
    same on every run.
    """

    name = "list"

    def __init__(self, config: SourceConfig, rows_per_block: int = 128):
        self.config = config
        self.rows_per_block = rows_per_block
        self._listing: pa.Table | None = None
        # Content ids are only known once the bytes are fetched.
        self.ids_at_listing = config.id_mode == "location"

    def produces(self) -> tuple[str, ...]:
        return tuple(LISTING_SCHEMA.names)

    def check(self) -> None:
        protocol, _ = split_uri(self.config.uri)
        if protocol not in ("file", "s3", "s3a", "gs", "gcs", "az", "abfs", "memory"):
            raise ValueError(f"source.uri {self.config.uri!r}: unsupported scheme {protocol!r}")

    def listing(self) -> pa.Table:
        """The listed rows (computed once)."""
        if self._listing is None:
            self._listing = self._list()
        return self._listing

    def _list(self) -> pa.Table:
        protocol, path = split_uri(self.config.uri)
        fs, _ = filesystem(self.config.uri, self.config.storage)
        suffixes = tuple(s.lower() for s in self.config.extensions)
        try:
            found = fs.find(path, detail=True)
        except FileNotFoundError:
            raise SourceError(f"source {self.config.uri} does not exist") from None
        except PermissionError as exc:
            raise SourceError(f"source {self.config.uri}: access denied ({exc})") from None
        entries = sorted(
            (p, info.get("size")) for p, info in found.items() if info.get("type", "file") != "directory"
            and p.lower().endswith(suffixes)
        )
        if self.config.limit:
            entries = entries[: self.config.limit]
        if not entries:
            raise SourceError(f"source {self.config.uri} lists no images (looked for {', '.join(suffixes)})")
        sources = [to_uri(protocol, p) for p, _ in entries]
        return pa.table(
            {
                C.ID: [location_id(s) for s in sources],
                C.SOURCE: sources,
                C.SOURCE_ID: [relative_key(path, p) for p, _ in entries],
                C.NUM_BYTES: [size for _, size in entries],
                C.STATUS: [Status.OK.value] * len(sources),
                C.ERROR: pa.nulls(len(sources), pa.string()),
            },
            schema=LISTING_SCHEMA,
        )

    def count(self) -> int:
        return self.listing().num_rows

    def ids(self) -> list[str] | None:
        return self.listing().column(C.ID).to_pylist() if self.ids_at_listing else None

    def read(self) -> ray.data.Dataset:
        import ray.data

        table = self.listing()
        step = self.rows_per_block
        blocks = [table.slice(i, step) for i in range(0, table.num_rows, step)]
        return ray.data.from_arrow(blocks)
