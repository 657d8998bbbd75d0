"""Hugging Face ``datasets`` Parquet: ``data/train-00000-of-000NN.parquet`` with an ``Image`` column.

The files carry the ``huggingface`` schema metadata that ``datasets`` reads, so
``load_dataset("parquet", data_files=...)`` (or a Hub repo holding ``data/``) yields PIL images
in ``image`` and the texts, with no loading script. Image bytes are read back from where the
run's rows came from (object, Parquet manifest row, or tar member) and embedded as they are.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri, split_uri, storage_options
from pipeline.export.rows import ExportSummary, exportable
from schemas import columns as C
from schemas.spec import StorageConfig

if TYPE_CHECKING:
    from collections.abc import Iterable

_STRING = {"dtype": "string", "_type": "Value"}
#: The ``datasets`` features of an exported file (``Features.to_dict()`` of datasets 5.x).
HF_FEATURES = {
    "id": _STRING,
    "image": {"_type": "Image"},
    "caption": _STRING,
    "conversations": {"feature": {"from": _STRING, "value": _STRING}, "_type": "List"},
    "source": _STRING,
    "model_id": _STRING,
}
HF_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("caption", pa.string()),
        pa.field("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        pa.field("source", pa.string()),
        pa.field("model_id", pa.string()),
    ],
    metadata={b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()},
)


class ImageReader:
    """Reads a row's original image bytes back from its ``source`` address."""

    def __init__(self, storage: StorageConfig | None, image_column: str = "image"):
        self.storage = storage or StorageConfig()
        self.image_column = image_column
        self._parquet: dict[str, list] = {}

    def read(self, source: str) -> bytes:
        if "::" in source and source.startswith("tar://"):
            import fsspec

            outer = source.split("::", 1)[1]
            proto, _ = split_uri(outer)
            with fsspec.open(source, "rb", **{proto: storage_options(proto, self.storage)}) as f:
                return f.read()
        if "#row=" in source:
            file_uri, _, row = source.rpartition("#row=")
            if file_uri not in self._parquet:
                fs, path = filesystem(file_uri, self.storage)
                with fs.open(path, "rb") as f:
                    table = pq.read_table(f, columns=[self.image_column], use_threads=False)
                self._parquet[file_uri] = table.column(0).to_pylist()
            value = self._parquet[file_uri][int(row)]
            return bytes(value["bytes"] if isinstance(value, dict) else value)
        fs, path = filesystem(source, self.storage)
        return fs.cat_file(path)


def _shards(rows: list[dict], per_shard: int) -> Iterable[list[dict]]:
    for i in range(0, len(rows), per_shard):
        yield rows[i: i + per_shard]


def export_hf_parquet(run_root: str, out_dir: str, *, image_root: str | None = None, rows_per_shard: int = 1000,
                      storage: StorageConfig | None = None, out_storage: StorageConfig | None = None,
                      split: str = "train") -> ExportSummary:
    """Write the run's ``ok`` rows under ``out_dir/data/`` as ``datasets``-typed Parquet shards.

    ``image.path`` is the image path relative to ``image_root`` (or as recorded); the bytes are
    embedded. A row whose image can no longer be read is left out and counted.
    """
    rows, summary = exportable(run_root, storage, image_root, need_path=False)
    reader = ImageReader(storage, (_spec_source(run_root, storage) or {}).get("image_column", "image"))
    # Shards are planned from the exportable rows and filled one at a time, so only one shard's
    # image bytes are in memory; a row whose image cannot be read back is left out and counted.
    n = max(1, -(-len(rows) // rows_per_shard))
    fs, root = filesystem(out_dir, out_storage or StorageConfig())
    fs.makedirs(f"{root}/data", exist_ok=True)
    summary.rows_out = summary.qa_pairs_out = 0
    for k, shard in enumerate(_shards(rows, rows_per_shard) if rows else [[]]):
        records = []
        for r in shard:
            try:
                data = reader.read(r[C.SOURCE])
            except (OSError, ValueError, KeyError) as exc:
                summary.skipped[f"image unreadable ({type(exc).__name__})"] += 1
                continue
            records.append({"id": r[C.ID], "image": {"bytes": data, "path": r["image_rel"]}, "caption": r[C.CAPTION],
                            "conversations": r["conversations"], "source": r[C.SOURCE], "model_id": r[C.MODEL_ID]})
            summary.qa_pairs_out += (len(r["conversations"]) - 2) // 2
        summary.rows_out += len(records)
        name = f"data/{split}-{k:05d}-of-{n:05d}.parquet"
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records, schema=HF_SCHEMA), buf, compression="zstd")
        with fs.open(f"{root}/{name}", "wb") as f:
            f.write(buf.getvalue())
        summary.files.append(join_uri(out_dir, name))
    return summary


def _spec_source(run_root: str, storage: StorageConfig | None) -> dict | None:
    from pipeline.commit import read_manifest

    manifest = read_manifest(run_root, storage)
    return manifest.spec.get("source") if manifest else None
