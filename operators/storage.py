"""Filesystems for object-store and local URIs, through fsspec (s3fs for ``s3://``).

Credentials are never passed here: s3fs/botocore read them from the standard chain
(environment, profile, instance or pod identity). Only the endpoint and region come from
the spec.
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING

from schemas.spec import StorageConfig

if TYPE_CHECKING:
    import fsspec


def split_uri(uri: str) -> tuple[str, str]:
    """Return ``(protocol, path)``; local paths become ``("file", absolute path)``."""
    if "://" in uri:
        protocol, _, path = uri.partition("://")
        if protocol == "file":
            return "file", os.path.abspath(path)
        return protocol, path
    return "file", os.path.abspath(os.path.expanduser(uri))


def join_uri(root: str, *parts: str) -> str:
    """Join path parts under ``root`` keeping its scheme."""
    protocol, path = split_uri(root)
    joined = posixpath.join(path, *parts)
    return joined if protocol == "file" else f"{protocol}://{joined}"


def to_uri(protocol: str, path: str) -> str:
    """Inverse of :func:`split_uri` for a path that a filesystem returned (``s3a`` is spelled ``s3``)."""
    if protocol == "file":
        return path
    return f"{'s3' if protocol == 's3a' else protocol}://{path}"


def storage_options(protocol: str, storage: StorageConfig) -> dict:
    """fsspec options for ``protocol`` from the spec's endpoint and region (no secrets)."""
    if protocol not in ("s3", "s3a"):
        return {}
    client_kwargs: dict = {}
    endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if storage.region:
        client_kwargs["region_name"] = storage.region
    # No listing cache: runs list prefixes that other processes are writing to (staging,
    # schedule state), and a cached listing makes a new object look missing.
    options: dict = {"client_kwargs": client_kwargs, "anon": storage.anon, "use_listings_cache": False}
    # Retries of throttling and connection errors happen inside botocore as well as ours.
    options["config_kwargs"] = {"retries": {"max_attempts": 5, "mode": "standard"}}
    return options


def filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for ``uri``.

    Instances are cached by fsspec per option set, so calling this per batch is cheap.
    """
    import fsspec

    protocol, path = split_uri(uri)
    fs = fsspec.filesystem(protocol, **storage_options(protocol, storage or StorageConfig()))
    return fs, path


def ensure_parent(uri: str, storage: StorageConfig | None = None) -> None:
    """Create the parent directory of ``uri`` on local disks; nothing on object stores.

    Object stores have no directories, and ``makedirs`` there means CreateBucket, which a
    job's identity is usually (and rightly) not allowed to do.
    """
    protocol, path = split_uri(uri)
    if protocol == "file":
        os.makedirs(posixpath.dirname(path), exist_ok=True)
