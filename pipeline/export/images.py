"""Where an exported record's image is, and getting its bytes: files under a root, or written out by the export.

A row's image is a file (``source`` names an object: prefix and manifest sources) or lives inside
a container (``tar://<member>::<shard>`` for WebDataset, ``<file>#row=<n>`` for Parquet ``Image``
structs). A JSON export names a file relative to an image root:

- without ``images_to``: the image root is ``--image-root`` or the source's own (a prefix's URI, a
  manifest's image root); a file not under it is left out and counted; an image inside a
  container cannot be named (the export fails, saying to pass ``--images-to``);
- with ``images_to``: every image is written there (container members extracted, files copied)
  and named relative to it, keeping the source's relative layout where it has one.

Either way every named file is checked: an export never names a file that does not exist.
"""

from __future__ import annotations

import io
import mimetypes
import posixpath
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri, split_uri
from pipeline.export.rows import ExportError
from schemas import columns as C
from schemas.spec import StorageConfig

THREADS = 16


def container(source: str) -> tuple[str, str, str] | None:
    """``(kind, container uri, member)`` of an image inside a tar shard (``tar``) or a Parquet row (``parquet``);
    None for a file."""
    if source.startswith("tar://") and "::" in source:
        member, _, shard = source[len("tar://"):].partition("::")
        return "tar", shard, member
    if "#row=" in source:
        file_uri, _, row = source.rpartition("#row=")
        return "parquet", file_uri, row
    return None


def source_root(spec_source: dict) -> str | None:
    """The root the source's own relative paths are under (None for WebDataset: its images live in tars)."""
    fmt, uri, root = spec_source.get("format", "prefix"), spec_source.get("uri"), spec_source.get("image_root")
    if fmt == "prefix":
        return uri
    if fmt == "webdataset" or uri is None:
        return None
    if root:
        return root
    return posixpath.dirname(uri.rstrip("/")) if fmt != "parquet" or uri.endswith(".parquet") else uri


def relative_to(source: str, root: str) -> str | None:
    """``source``'s path relative to ``root``; None when it is not under it (or is inside a container)."""
    if container(source) is not None:
        return None
    proto, path = split_uri(source)
    root_proto, root_path = split_uri(root)
    root_path = root_path.rstrip("/")
    if proto != root_proto or not path.startswith(root_path + "/"):
        return None
    return posixpath.relpath(path, root_path)


class ImageReader:
    """Reads rows' original image bytes back from their ``source`` addresses, one pass per container."""

    def __init__(self, storage: StorageConfig | None, image_column: str = "image"):
        self.storage = storage or StorageConfig()
        self.image_column = image_column

    def read(self, source: str) -> bytes:
        """One image's bytes (``read_many`` of one)."""
        data = self.read_many([source])[source]
        if isinstance(data, Exception):
            raise data
        return data

    def read_many(self, sources: list[str]) -> dict[str, bytes | Exception]:
        """Bytes (or the exception reading failed with) of every source; each tar / Parquet file is opened once."""
        out: dict[str, bytes | Exception] = {}
        groups: dict[tuple[str, str], dict[str, str]] = {}
        files = []
        for s in sources:
            inside = container(s)
            if inside is None:
                files.append(s)
            else:
                groups.setdefault(inside[:2], {})[inside[2]] = s
        for (kind, uri), members in groups.items():
            try:
                out.update(self._tar(uri, members) if kind == "tar" else self._parquet(uri, members))
            except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
                out.update({s: exc for s in members.values()})
        with ThreadPoolExecutor(THREADS) as pool:
            out.update(zip(files, pool.map(self._file, files), strict=True))
        return out

    def _file(self, source: str) -> bytes | Exception:
        fs, path = filesystem(source, self.storage)
        try:
            return fs.cat_file(path)
        except (OSError, ValueError) as exc:
            return exc

    def _tar(self, shard: str, members: dict[str, str]) -> dict[str, bytes | Exception]:
        fs, path = filesystem(shard, self.storage)
        found: dict[str, bytes | Exception] = {}
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if member.name in members and member.isfile():
                    extracted = tar.extractfile(member)
                    found[members[member.name]] = extracted.read() if extracted else b""
                    if len(found) == len(members):
                        break
        for name, s in members.items():
            found.setdefault(s, KeyError(f"{name} is not in {shard}"))
        return found

    def _parquet(self, file_uri: str, rows: dict[str, str]) -> dict[str, bytes | Exception]:
        fs, path = filesystem(file_uri, self.storage)
        with fs.open(path, "rb") as f:
            column = pq.read_table(f, columns=[self.image_column], use_threads=False).column(0)
        found: dict[str, bytes | Exception] = {}
        for row, s in rows.items():
            value = column[int(row)].as_py()
            data = value.get("bytes") if isinstance(value, dict) else value
            found[s] = bytes(data) if data else KeyError(f"row {row} of {file_uri} holds no image bytes")
        return found


def _safe(rel: str | None) -> str | None:
    if not rel or "://" in rel or rel.startswith(("/", "\\")) or "\\" in rel:
        return None
    norm = posixpath.normpath(rel)
    return None if norm == ".." or norm.startswith("../") else norm


def _extension(rel: str | None, data: bytes | None) -> str:
    ext = posixpath.splitext(rel or "")[1]
    if ext:
        return ext
    if data:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                return mimetypes.guess_extension(Image.MIME.get(im.format, "")) or ".img"
        except Exception:  # noqa: BLE001 - an unknown format still gets a file, without a telling suffix
            return ".img"
    return ".img"


class ImagePlacer:
    """Names every exported row's image (``row["image_rel"]``) and makes sure the file is there.

    Args:
        spec_source: the run's ``source`` spec section (its own image root).
        image_root: the root JSON paths are relative to (None: the source's).
        images_to: write every image here and name it relative to this instead.
        storage: reaches the run's images; ``out_storage`` reaches ``images_to``.
    """

    def __init__(self, spec_source: dict, storage: StorageConfig | None, image_root: str | None = None,
                 images_to: str | None = None, out_storage: StorageConfig | None = None):
        self.storage = storage or StorageConfig()
        self.out_storage = out_storage or self.storage
        self.images_to = images_to
        self.default_root = source_root(spec_source)
        self.root = images_to or image_root or self.default_root
        self.reader = ImageReader(self.storage, spec_source.get("image_column", "image"))
        self._used: set[str] = set()

    def name(self, row: dict, data: bytes | None = None) -> str:
        """A file name for ``row``'s image under ``images_to`` (or inside an hf-parquet file): the source's relative
        path (its layout kept), else the row id; unique within the export."""
        rel = _safe(row.get(C.IMAGE))
        if rel is None and self.default_root and container(row[C.SOURCE]) is None:
            rel = _safe(relative_to(row[C.SOURCE], self.default_root))
        if rel is None or rel in self._used:
            rel = f"{row[C.ID]}{_extension(rel or row[C.SOURCE].rsplit('#', 1)[0], data)}"
        self._used.add(rel)
        return rel

    def place(self, rows: list[dict], skipped) -> list[dict]:
        """The rows whose image could be named, each with ``image_rel``; the others counted in ``skipped``.

        Raises:
            ExportError: an image lives in a container and there is no ``images_to``; a named file is
                missing; an image could not be read back to be written out.
        """
        if self.images_to is None:
            return self._under_root(rows, skipped)
        placed = []
        for chunk in _chunks(rows, 256):
            data = self.reader.read_many([r[C.SOURCE] for r in chunk])
            failed = [(r, data[r[C.SOURCE]]) for r in chunk if isinstance(data[r[C.SOURCE]], Exception)]
            if failed:
                raise ExportError(f"{len(failed)} image(s) cannot be read back to write them out, e.g. "
                                  f"{failed[0][0][C.SOURCE]}: {failed[0][1]}")
            for r in chunk:
                r["image_rel"] = self.name(r, data[r[C.SOURCE]])
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(self._write, [(r["image_rel"], data[r[C.SOURCE]]) for r in chunk]))
            placed += chunk
        self._check_present(placed)
        return placed

    def _write(self, item: tuple[str, bytes]) -> None:
        rel, data = item
        fs, root = filesystem(self.images_to, self.out_storage)
        path = f"{root.rstrip('/')}/{rel}"
        if split_uri(self.images_to)[0] == "file":
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, data)

    def _under_root(self, rows: list[dict], skipped) -> list[dict]:
        inside = [r for r in rows if container(r[C.SOURCE]) is not None]
        if inside:
            raise ExportError(f"{len(inside)} image(s) live inside tar shards or Parquet rows (e.g. "
                              f"{container(inside[0][C.SOURCE])[1]}) and exist as no file; export with --images-to "
                              "DIR to write them out")
        if self.root is None:
            raise ExportError("no image root to make paths relative to; pass --image-root or --images-to")
        placed = []
        for r in rows:
            rel = relative_to(r[C.SOURCE], self.root)
            if rel is None:
                skipped["image not under the image root"] += 1
                continue
            r["image_rel"] = rel
            placed.append(r)
        self._check_present(placed)
        return placed

    def _check_present(self, rows: list[dict]) -> None:
        if not rows:
            return
        fs, root = filesystem(self.root, self.out_storage if self.images_to else self.storage)
        paths = [f"{root.rstrip('/')}/{r['image_rel']}" for r in rows]
        with ThreadPoolExecutor(THREADS) as pool:
            present = list(pool.map(fs.exists, paths))
        missing = [join_uri(self.root, r["image_rel"]) for r, ok in zip(rows, present, strict=True) if not ok]
        if missing:
            raise ExportError(f"{len(missing)} named image file(s) do not exist, e.g. {missing[0]}; "
                              "the export was not written")


def _chunks(rows: list[dict], n: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), n):
        yield rows[i: i + n]
