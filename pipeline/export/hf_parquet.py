"""Hugging Face ``datasets`` Parquet: ``data/train-00000-of-000NN.parquet`` with an ``Image`` column.

The files carry the ``huggingface`` schema metadata that ``datasets`` reads, so
``load_dataset("parquet", data_files=...)`` (or a Hub repo holding ``data/``) yields PIL images
in ``image`` and the texts, with no loading script. The features are written in the portable
form every supported ``datasets`` reads (2.14.7 to 5.x): ``conversations`` as a plain list
``[{"from": ..., "value": ...}]``, not the ``List`` feature type, which ``datasets`` before 4.0
does not know. Image bytes are read back from where the run's rows came from (object, Parquet
manifest row, or tar member) and embedded as they are; ``image.path`` is the image's path
relative to the export's image root (recorded in ``<out>/export.json``), or a name of its own for
an image that lives in a container.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri
from pipeline.export.images import ImagePlacer, relative_to
from pipeline.export.rows import ExportError, ExportSummary, exportable, finish, pairs_of
from pipeline.shards import write_bytes_atomic
from schemas import columns as C
from schemas.spec import StorageConfig

_STRING = {"dtype": "string", "_type": "Value"}
#: The ``datasets`` features of an exported file, in the form ``datasets`` 2.x, 3.x, 4.x and 5.x all read.
HF_FEATURES = {
    "id": _STRING,
    "image": {"_type": "Image"},
    "caption": _STRING,
    "conversations": [{"from": _STRING, "value": _STRING}],
    "source": _STRING,
    "row_id": _STRING,
    "model_id": _STRING,
}
HF_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("caption", pa.string()),
        pa.field("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        pa.field("source", pa.string()),
        pa.field("row_id", pa.string()),
        pa.field("model_id", pa.string()),
    ],
    metadata={b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()},
)
RECORD = "export.json"


def _shards(rows: list[dict], per_shard: int) -> Iterable[list[dict]]:
    for i in range(0, len(rows), per_shard):
        yield rows[i: i + per_shard]


def export_hf_parquet(run_root: str, out_dir: str, *, stage: str = "finetune", image_root: str | None = None,
                      rows_per_shard: int = 1000, storage: StorageConfig | None = None,
                      out_storage: StorageConfig | None = None, split: str = "train") -> ExportSummary:
    """Write the run's ``ok`` rows under ``out_dir/data/`` as ``datasets``-typed Parquet shards.

    Raises:
        pipeline.export.rows.ExportError: nothing to export, an image that cannot be read back, or
            a run that is not committed; no shard is written then.
    """
    rows, summary, manifest = exportable(run_root, storage, stage, "hf-parquet")
    placer = ImagePlacer(manifest.spec.get("source") or {}, storage, image_root)
    finish(summary, len(rows), sum(pairs_of(r["conversations"]) for r in rows))
    summary.image_root = placer.root
    summary.ids_from_source = sum(r["export_id"] != r[C.ID] for r in rows)
    # Shards are planned from the exportable rows and filled one at a time (their images read in one
    # pass per tar or Parquet file), so only one shard's image bytes are in memory. A failure removes
    # the shards already written: an export is whole or absent.
    n = -(-len(rows) // rows_per_shard)
    fs, root = filesystem(out_dir, out_storage or StorageConfig())
    fs.makedirs(f"{root}/data", exist_ok=True)
    for k, shard in enumerate(_shards(rows, rows_per_shard)):
        data = placer.reader.read_many([r[C.SOURCE] for r in shard])
        failed = [r for r in shard if isinstance(data[r[C.SOURCE]], Exception)]
        if failed:
            for written in summary.files:
                fs.rm(f"{root}/data/{written.rsplit('/', 1)[1]}")
            raise ExportError(f"{len(failed)} image(s) cannot be read back, e.g. {failed[0][C.SOURCE]}: "
                              f"{data[failed[0][C.SOURCE]]}; the export was not written")
        records = [{"id": r["export_id"],
                    "image": {"bytes": data[r[C.SOURCE]], "path": _path(placer, r, data[r[C.SOURCE]])},
                    "caption": r[C.CAPTION], "conversations": r["conversations"], "source": r[C.SOURCE],
                    "row_id": r[C.ID], "model_id": r.get(C.MODEL_ID)} for r in shard]
        name = f"data/{split}-{k:05d}-of-{n:05d}.parquet"
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records, schema=HF_SCHEMA), buf, compression="zstd")
        write_bytes_atomic(join_uri(out_dir, name), buf.getvalue(), out_storage)
        summary.files.append(join_uri(out_dir, name))
    write_bytes_atomic(join_uri(out_dir, RECORD), summary.record(), out_storage)
    return summary


def _path(placer: ImagePlacer, row: dict, data: bytes) -> str:
    rel = relative_to(row[C.SOURCE], placer.root) if placer.root else None
    return rel or placer.name(row, data)
