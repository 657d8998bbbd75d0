"""Fetch image bytes on CPU tasks, with a status per row and retries of transient errors."""

from __future__ import annotations

import time

import pyarrow as pa

from operators.base import Resources, Stage
from operators.ids import content_id
from operators.rows import error_text, set_columns
from operators.storage import filesystem, split_uri
from schemas import columns as C
from schemas.spec import DecodeConfig, SourceConfig
from schemas.status import Status


def classify(exc: BaseException) -> Status | None:
    """Status of a permanent fetch error, or None when the error may be transient."""
    if isinstance(exc, FileNotFoundError):
        return Status.NOT_FOUND
    if isinstance(exc, PermissionError):
        return Status.FORBIDDEN
    return None


class FetchBatch:
    """The per-batch fetch function (picklable; filesystems are built lazily per worker)."""

    def __init__(self, source: SourceConfig, decode: DecodeConfig, backoff_s: float = 0.5):
        self.source = source
        self.decode = decode
        self.backoff_s = backoff_s

    def _paths(self, uris: list[str]) -> list[str]:
        return [split_uri(u)[1] for u in uris]

    def __call__(self, table: pa.Table) -> pa.Table:
        # Manifest images live under the image root, which may be another store than the manifest.
        fs, _ = filesystem(self.source.image_root or self.source.uri, self.source.storage)
        uris = table.column(C.SOURCE).to_pylist()
        sizes = table.column(C.NUM_BYTES).to_pylist()
        statuses = table.column(C.STATUS).to_pylist()
        errors = table.column(C.ERROR).to_pylist()
        ids = table.column(C.ID).to_pylist()
        # Sources that embed the image (Parquet Image structs, WebDataset shards) fill the bytes already.
        have = table.column(C.IMAGE_BYTES).to_pylist() if C.IMAGE_BYTES in table.column_names else None
        data: list[bytes | None] = have or [None] * len(uris)

        pending = []
        for i, size in enumerate(sizes):
            if statuses[i] != Status.OK.value:
                continue
            if data[i] is not None:
                sizes[i] = len(data[i])
                if sizes[i] > self.decode.max_bytes:
                    statuses[i] = Status.TOO_LARGE.value
                    errors[i] = f"image is {sizes[i]} bytes, over decode.max_bytes={self.decode.max_bytes}"
                    data[i] = None
                continue
            if size is not None and size > self.decode.max_bytes:
                statuses[i] = Status.TOO_LARGE.value
                errors[i] = f"object is {size} bytes, over decode.max_bytes={self.decode.max_bytes}"
            else:
                pending.append(i)

        paths = self._paths(uris)
        for attempt in range(self.decode.fetch_retries + 1):
            if not pending:
                break
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                results = fs.cat([paths[i] for i in pending], on_error="return")
            except Exception as exc:  # noqa: BLE001 - whole-call failure: retry every pending row
                results = {paths[i]: exc for i in pending}
            retry = []
            for i in pending:
                got = results.get(paths[i], FileNotFoundError(paths[i]))
                if isinstance(got, BaseException):
                    permanent = classify(got)
                    if permanent is None and attempt < self.decode.fetch_retries:
                        retry.append(i)
                        continue
                    statuses[i] = (permanent or Status.FETCH_ERROR).value
                    errors[i] = error_text(got)
                elif len(got) == 0:
                    statuses[i], errors[i] = Status.EMPTY_FILE.value, "object is empty (0 bytes)"
                else:
                    data[i] = got
                    sizes[i] = len(got)
            pending = retry

        if self.source.id_mode == "content":
            ids = [content_id(d) if d is not None else ids[i] for i, d in enumerate(data)]
        return set_columns(table, {C.ID: ids, C.IMAGE_BYTES: data, C.NUM_BYTES: sizes, C.STATUS: statuses,
                                   C.ERROR: errors})


def fetch_stage(source: SourceConfig, decode: DecodeConfig, batch_size: int = 32) -> Stage:
    """Read each row's object into ``image_bytes`` on CPU tasks.

    Missing objects end as ``not_found``, forbidden ones as ``forbidden``, objects over the
    size limit as ``too_large`` (unread), empty ones as ``empty_file``; other errors are
    retried with exponential backoff and end as ``fetch_error``. With content ids the id is
    known only here, so the stage produces it.
    """
    return Stage(
        "fetch", FetchBatch, dict(source=source, decode=decode),
        needs=(C.ID, C.SOURCE, C.NUM_BYTES, C.STATUS, C.ERROR),
        produces=(C.IMAGE_BYTES, C.ID) if source.id_mode == "content" else (C.IMAGE_BYTES,),
        resources=Resources(num_cpus=0.5), batch_size=batch_size, zero_copy=True,
    )
