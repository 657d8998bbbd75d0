"""Row-wise helpers shared by CPU operators: failed rows pass through, errors become statuses."""

from __future__ import annotations

import os
from collections.abc import Callable

import pyarrow as pa

from schemas import columns as C
from schemas.status import Status

_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
               "AZURE_STORAGE_KEY", "HF_TOKEN")


def redact(text: str) -> str:
    """``text`` with the values of credential variables of this process replaced by ``***``.

    Error messages of storage clients can quote request details; an error row or a log line
    must never carry a secret, whatever a library put in its message.
    """
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8 and value in text:
            text = text.replace(value, "***")
    return text


def error_text(exc: BaseException, limit: int = 500) -> str:
    """One-line, bounded, credential-free description of ``exc`` for an error column."""
    text = redact(f"{type(exc).__name__}: {exc}".replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RowFailure(Exception):
    """Raised by a row function to end the row with ``status`` and a message."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def map_rows(
    table: pa.Table,
    fn: Callable[[dict], dict],
    produces: tuple[str, ...],
    *,
    failure_status: Status,
    drop: tuple[str, ...] = (),
) -> pa.Table:
    """Apply ``fn`` to every row whose status is ``ok``.

    ``fn`` returns a dict of produced columns. A row whose status is already a failure passes
    through with nulls in the produced columns. An exception in ``fn`` ends that row with
    ``failure_status`` (or the status a :class:`RowFailure` carries) and never touches its
    neighbours.

    Returns:
        ``table`` minus ``drop`` with the ``produces`` columns set (catalogue types).
    """
    names = [n for n in produces if n not in (C.STATUS, C.ERROR)]
    produced: dict[str, list] = {n: [] for n in names}
    statuses = table.column(C.STATUS).to_pylist()
    errors = table.column(C.ERROR).to_pylist() if C.ERROR in table.column_names else [None] * table.num_rows
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        result: dict = {}
        if statuses[i] == Status.OK.value:
            try:
                result = fn(row)
            except RowFailure as failure:
                statuses[i], errors[i] = failure.status.value, failure.message
            except Exception as exc:  # noqa: BLE001 - a row's failure is data, not a crash
                statuses[i], errors[i] = failure_status.value, error_text(exc)
        for n in names:
            produced[n].append(result.get(n, row.get(n)))
    out = table.drop_columns([n for n in drop if n in table.column_names])
    return set_columns(out, {**produced, C.STATUS: statuses, C.ERROR: errors})


def set_columns(table: pa.Table, values: dict[str, list]) -> pa.Table:
    """Return ``table`` with ``values`` added or replacing columns of the same name (catalogue types)."""
    for name, data in values.items():
        array = pa.array(data, type=C.TYPES[name])
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table
