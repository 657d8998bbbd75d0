"""WebDataset tar shards: ``key.jpg`` beside ``key.json`` / ``key.txt``, read from object storage.

``source.uri`` names one ``.tar`` or a prefix of them. Shards are listed on the driver and
each is streamed in one CPU task (sequential reads, as object stores like), so image bytes
never pass through the driver and the fetch step is skipped. A sample's key is its member
name up to the first dot of the base name (the WebDataset convention); its ``source`` is the
fsspec URL ``tar://<member>::<shard>``, which the exporters open to read the image back. The
``.json`` may carry ``id`` and LLaVA ``conversations``; a sample with no image member is an
``invalid_entry`` row. A row's ``source_id`` is the ``.json``'s id, else the sample key (WebDataset's
``__key__``).

A tar holds no sample count. Local shards are counted on the driver from their headers (a seek
per member, no image data read); remote ones are counted only where a ``shardindex.json`` (the
``wids`` index: ``{"shardlist": [{"url": ..., "nsamples": N}]}``) lies beside them, and then only
for the progress line: the commit still checks every row once, without trusting the index.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import Resources, SourceOperator, Stage, apply_stages
from operators.sources.entries import (
    ENTRY_SCHEMA,
    entry_row,
    files_under,
    invalid_row,
    location_or_manifest_id,
    questions_of,
    to_table,
)
from operators.storage import filesystem, split_uri
from schemas.spec import SourceConfig

if TYPE_CHECKING:
    import ray.data


#: The ``wids`` shard index: ``{"shardlist": [{"url": "shard-000.tar", "nsamples": 1000}, ...]}``.
SHARD_INDEX = "shardindex.json"


def sample_key(member: str) -> tuple[str, str]:
    """``(key, extension)`` of a tar member: ``dir/abc.01.jpg`` -> (``dir/abc``, ``01.jpg``)."""
    folder, base = posixpath.split(member)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def member_url(shard_uri: str, member: str) -> str:
    """The fsspec URL of one member of a shard."""
    return f"tar://{member}::{shard_uri}"


class ReadShard:
    """CPU task body: one shard -> one listing row per sample, in tar order (picklable)."""

    def __init__(self, config: SourceConfig, namespace: str):
        self.config = config
        self.namespace = namespace
        self.image_exts = tuple(e.lower().lstrip(".") for e in config.extensions)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict] = []
        for shard in batch.column("shard").to_pylist():
            rows.extend(self._shard_rows(shard))
        return to_table(rows)

    def _shard_rows(self, shard: str) -> list[dict]:
        fs, path = filesystem(shard, self.config.storage)
        samples: dict[str, dict[str, bytes | str]] = {}
        try:
            with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = sample_key(member.name)
                    sample = samples.setdefault(key, {})
                    extracted = tar.extractfile(member)
                    sample[ext] = extracted.read() if extracted else b""
                    sample.setdefault("_members", {})[ext] = member.name  # type: ignore[index]
        except (tarfile.TarError, OSError, EOFError) as exc:
            # A broken shard is one invalid row (we cannot know its samples), never a failed job.
            return [invalid_row(self.namespace, shard, shard, f"shard cannot be read as tar: {exc}")]
        return [self._row(shard, key, sample) for key, sample in samples.items()]

    def _row(self, shard: str, key: str, sample: dict) -> dict:
        members: dict = sample.pop("_members")
        meta: dict = {}
        if "json" in sample:
            try:
                loaded = json.loads(sample["json"])
                meta = loaded if isinstance(loaded, dict) else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = {}
        image_ext = next((e for e in sample if e.rsplit(".", 1)[-1] in self.image_exts), None)
        raw_id = meta.get(self.config.id_column)
        own = raw_id if raw_id not in (None, "") else key
        if image_ext is None:
            return invalid_row(self.namespace, f"{shard}/{key}", member_url(shard, key),
                               f"sample {key!r} has no image member (looked for {', '.join(self.image_exts)})", own)
        url = member_url(shard, members[image_ext])
        shard_name = posixpath.basename(split_uri(shard)[1])
        shard_stem = shard_name[:-4] if shard_name.endswith(".tar") else shard_name
        return entry_row(
            id=location_or_manifest_id(self.namespace, raw_id, url),
            source=url, image=f"{shard_stem}/{members[image_ext]}",
            questions=questions_of(meta.get("conversations")), data=bytes(sample[image_ext]), source_id=own,
        )


def count_samples(fileobj) -> int:
    """Samples in one tar, as :class:`ReadShard` will list them, from its headers only (seeks over the data).

    A tar that cannot be read is one row (the ``invalid_entry`` row :class:`ReadShard` makes of it).
    """
    keys, end = set(), 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            for member in tar:
                end = max(end, member.offset_data + member.size)
                if member.isfile():
                    keys.add(sample_key(member.name)[0])
            # A member cut short fails the streaming read of the whole shard; headers alone would not show it.
            if tar.fileobj is fileobj and end > fileobj.seek(0, 2):
                return 1
    except (tarfile.TarError, OSError, EOFError):
        return 1
    return len(keys)


class WebDatasetSource(SourceOperator):
    """One row per sample of every shard; counted at listing for local shards, else once read."""

    name = "webdataset"

    def __init__(self, config: SourceConfig):
        self.config = config
        self.namespace = config.namespace or config.uri
        self._shards: list[str] | None = None

    def produces(self) -> tuple[str, ...]:
        return tuple(ENTRY_SCHEMA.names)

    def check(self) -> None:
        if self.config.format != "webdataset":
            raise ValueError(f"source.format {self.config.format!r} is not webdataset")
        if self.config.limit:
            raise ValueError("source.limit is not supported for webdataset sources (samples are counted in tasks)")

    def shards(self) -> list[str]:
        """Shard URIs, sorted."""
        if self._shards is None:
            self._shards = files_under(self.config, ".tar", ".tar shards")
        return self._shards

    def count(self) -> int | None:
        """Samples in every shard when the driver can count them cheaply (local shards); None otherwise."""
        shards = self.shards()
        if split_uri(shards[0])[0] != "file":
            return None
        total = 0
        for shard in shards:
            with open(split_uri(shard)[1], "rb") as f:
                total += count_samples(f)
        return total

    def progress_total(self) -> int | None:
        """:meth:`count`, else the ``nsamples`` of a ``shardindex.json`` covering every shard (progress only)."""
        exact = self.count()
        if exact is not None:
            return exact
        fs, path = filesystem(self.config.uri, self.config.storage)
        folder = path if not path.endswith(".tar") else posixpath.dirname(path)
        try:
            index = json.loads(fs.cat_file(posixpath.join(folder.rstrip("/"), SHARD_INDEX)))
            counts = {posixpath.basename(str(s["url"])): int(s["nsamples"]) for s in index["shardlist"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        names = [posixpath.basename(split_uri(s)[1]) for s in self.shards()]
        return sum(counts[n] for n in names) if all(n in counts for n in names) else None

    def read(self, first: Sequence[Stage] = ()) -> ray.data.Dataset:
        import ray.data

        read = Stage("read-shard", ReadShard, dict(config=self.config, namespace=self.namespace),
                     resources=Resources(num_cpus=0.5), batch_size=1, keeps_rows=False)
        return apply_stages(read.apply(ray.data.from_items([{"shard": s} for s in self.shards()])), first)
