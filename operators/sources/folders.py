"""Listing one folder of an object store or a local disk, page by page, in constant memory.

Two ways to list a folder: one level (its files and its subfolders, through the store's
delimiter listing), or the whole tree under it (every file at any depth). S3 is paged with
``ListObjectsV2`` directly (1,000 keys a page; fsspec's ``ls``/``find`` would hold the whole
answer), local disks with ``os.scandir``; other stores through fsspec's ``ls``/``find``.
Files come with their size; pages are in the store's order (lexical on S3, sorted locally).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from operators.storage import filesystem, split_uri
from schemas.spec import StorageConfig

#: Files per page yielded by the local and fsspec listers.
PAGE = 10_000

Page = tuple[list[tuple[str, int | None]], list[str]]


def list_level(uri: str, storage: StorageConfig | None) -> Iterator[Page]:
    """Pages of ``(files [(path, size)], subfolders [path])`` directly under ``uri``.

    Raises:
        FileNotFoundError: the folder does not exist (local disks).
        PermissionError: the store refused.
    """
    protocol, path = split_uri(uri)
    if protocol in ("s3", "s3a"):
        yield from _s3_pages(uri, storage, delimiter=True)
    elif protocol == "file":
        files, folders = [], []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir():
                    folders.append(entry.path)
                elif entry.is_file():
                    files.append((entry.path, entry.stat().st_size))
        files.sort()
        for i in range(0, max(len(files), 1), PAGE):
            yield files[i:i + PAGE], sorted(folders) if i == 0 else []
    else:
        fs, _ = filesystem(uri, storage)
        found = fs.ls(path, detail=True)
        files = sorted((i["name"], i.get("size")) for i in found if i.get("type") != "directory")
        folders = sorted(i["name"] for i in found if i.get("type") == "directory")
        for i in range(0, max(len(files), 1), PAGE):
            yield files[i:i + PAGE], folders if i == 0 else []


def list_tree(uri: str, storage: StorageConfig | None) -> Iterator[list[tuple[str, int | None]]]:
    """Pages of ``[(path, size)]`` of every file under ``uri``, at any depth."""
    protocol, path = split_uri(uri)
    if protocol in ("s3", "s3a"):
        for files, _ in _s3_pages(uri, storage, delimiter=False):
            yield files
    elif protocol == "file":
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        page: list[tuple[str, int | None]] = []
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(folder, name)
                try:
                    page.append((full, os.stat(full).st_size))
                except FileNotFoundError:  # removed while listing
                    continue
                if len(page) >= PAGE:
                    yield page
                    page = []
        yield page
    else:
        fs, _ = filesystem(uri, storage)
        found = fs.find(path, detail=True)
        files = sorted((p, i.get("size")) for p, i in found.items() if i.get("type", "file") != "directory")
        for i in range(0, max(len(files), 1), PAGE):
            yield files[i:i + PAGE]


def _s3_pages(uri: str, storage: StorageConfig | None, delimiter: bool) -> Iterator[Page]:
    """``ListObjectsV2`` pages under ``uri``: keys as ``bucket/key`` paths, common prefixes without the slash."""
    fs, path = filesystem(uri, storage)
    bucket, _, prefix = path.partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    kwargs: dict = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
    if delimiter:
        kwargs["Delimiter"] = "/"
    while True:
        page = fs.call_s3("list_objects_v2", **kwargs)
        files = [(f"{bucket}/{c['Key']}", c.get("Size")) for c in page.get("Contents", [])
                 if not c["Key"].endswith("/")]
        folders = [f"{bucket}/{c['Prefix'].rstrip('/')}" for c in page.get("CommonPrefixes", [])]
        yield files, folders
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token
