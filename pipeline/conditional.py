"""Conditional writes of one small object: create if absent, replace or delete only if unchanged.

S3 (and SeaweedFS) honour ``If-None-Match: *`` on PUT (of two clients creating one key exactly one
succeeds; the other gets 412 Precondition Failed) and ``If-Match: <etag>`` on PUT and DELETE (the
write happens only if the object is still the version that was read). That is enough for a lease:
create it, renew it only while it is still ours, break it only if it is still the dead holder's.

Local paths give the same answers with ``link()`` of a fully written file (fails if the name
exists) and a rename aside for replace and delete; their "etag" is a hash of the content.
"""

from __future__ import annotations

import hashlib
import os
import threading

from operators.storage import filesystem, split_uri
from operators.storage_errors import error_code
from schemas.spec import StorageConfig

#: Protocols with conditional writes here.
SUPPORTED = ("file", "s3", "s3a")


class Precondition(Exception):
    """The object is not the version the caller expected (someone else wrote or removed it)."""


def _precondition_failed(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is S3's 412 / 409 answer to a conditional write."""
    if error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
        return True
    while exc is not None:
        if "pre-conditions you specified" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class ConditionalObject:
    """One object at ``uri`` with compare-and-swap operations. Etags are opaque strings."""

    def __init__(self, uri: str, storage: StorageConfig | None = None):
        self.uri = uri
        self.protocol, self.path = split_uri(uri)
        if self.protocol not in SUPPORTED:
            raise NotImplementedError(f"{uri}: no conditional writes for {self.protocol}://")
        self.fs, _ = filesystem(uri, storage)
        self.bucket, _, self.key = self.path.partition("/")

    def create(self, body: bytes) -> str | None:
        """Create the object if it does not exist; its etag, or None if it existed."""
        if self.protocol == "file":
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self._aside()
            with open(tmp, "wb") as f:
                f.write(body)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return None
            finally:
                os.unlink(tmp)
            return _digest(body)
        try:
            out = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
        except Exception as exc:  # noqa: BLE001 - s3fs wraps botocore's ClientError in OSError
            if _precondition_failed(exc) or isinstance(exc, FileExistsError):
                return None
            raise
        return out["ETag"]

    def read(self) -> tuple[str, bytes] | None:
        """``(etag, body)`` of the object as one version, or None if it does not exist."""
        if self.protocol == "file":
            try:
                with open(self.path, "rb") as f:
                    body = f.read()
            except FileNotFoundError:
                return None
            return _digest(body), body
        from fsspec.asyn import sync

        async def get() -> tuple[str, bytes]:
            out = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            try:
                return out["ETag"], await out["Body"].read()
            finally:
                out["Body"].close()

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - NoSuchKey arrives untranslated from _call_s3
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def replace(self, body: bytes, etag: str) -> str:
        """Overwrite the object if it is still version ``etag``; the new etag.

        Raises:
            Precondition: it changed or is gone.
        """
        if self.protocol == "file":
            tmp = self._aside()
            with open(tmp, "wb") as f:
                f.write(body)
            current = self.read()
            if current is None or current[0] != etag:
                os.unlink(tmp)
                raise Precondition(self.uri)
            os.replace(tmp, self.path)
            return _digest(body)
        try:
            out = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body, IfMatch=etag)
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc) or isinstance(exc, FileNotFoundError) or error_code(exc) == "NoSuchKey":
                raise Precondition(self.uri) from None
            raise
        return out["ETag"]

    def delete(self, etag: str) -> bool:
        """Remove the object if it is still version ``etag``; False if it changed (it is then left alone)."""
        if self.protocol == "file":
            taken = self._aside()
            try:
                os.rename(self.path, taken)
            except FileNotFoundError:
                return True
            with open(taken, "rb") as f:
                body = f.read()
            if _digest(body) != etag:
                # Not the version we meant: put it back (link() keeps a newer one, if any).
                try:
                    os.link(taken, self.path)
                except FileExistsError:
                    pass
                os.unlink(taken)
                return False
            os.unlink(taken)
            return True
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc):
                return False
            if isinstance(exc, FileNotFoundError) or error_code(exc) == "NoSuchKey":
                return True
            raise
        return True

    def _aside(self) -> str:
        return f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
