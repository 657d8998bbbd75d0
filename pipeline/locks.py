"""A lock that works on object storage: conditional create of one small object.

S3 (and SeaweedFS) honour ``If-None-Match: *`` on PUT: of two clients creating the same key,
exactly one succeeds and the other gets 412 Precondition Failed. Local paths use ``link()``
of a fully written file. The lock object records its owner and an expiry, so a lock left by
a run that died is recognisable and may be broken after its TTL.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from operators.storage import filesystem, split_uri
from schemas.spec import StorageConfig


class LockHeld(RuntimeError):
    """Somebody else holds the lock."""

    def __init__(self, uri: str, owner: dict):
        self.owner = owner
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(owner.get("acquired_at", 0)))
        super().__init__(
            f"{uri} is held by run {owner.get('run_id')!r} (host {owner.get('host')}, pid {owner.get('pid')}) "
            f"since {since}; refusing to overlap it"
        )


def _precondition_failed(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is S3's 412 / 409 answer to a conditional create."""
    while exc is not None:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or "pre-conditions you specified" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _create_exclusive(uri: str, body: bytes, storage: StorageConfig) -> bool:
    """Create ``uri`` only if it does not exist; True if this call created it."""
    protocol, path = split_uri(uri)
    fs, _ = filesystem(uri, storage)
    if protocol == "file":
        # Write the whole body aside, then link it into place: link() fails if the name exists,
        # and a reader never sees a lock file without its owner in it.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(body)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    bucket, _, key = path.partition("/")
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
    except Exception as exc:  # noqa: BLE001 - s3fs wraps botocore's ClientError in OSError
        if _precondition_failed(exc):
            return False
        raise
    return True


class ObjectLock:
    """``with ObjectLock(uri, owner_run_id): ...`` holds the lock for the block.

    Raises:
        LockHeld: another live owner holds it.
    """

    def __init__(self, uri: str, run_id: str, storage: StorageConfig | None = None, ttl_s: int = 86_400):
        self.uri = uri
        self.run_id = run_id
        self.storage = storage or StorageConfig()
        self.ttl_s = ttl_s

    def _owner(self) -> dict:
        now = time.time()
        return {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "acquired_at": now,
                "expires_at": now + self.ttl_s}

    def read(self) -> dict | None:
        """The current holder, or None."""
        fs, path = filesystem(self.uri, self.storage)
        try:
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None

    def acquire(self) -> None:
        for _ in range(2):
            if _create_exclusive(self.uri, json.dumps(self._owner()).encode(), self.storage):
                return
            owner = self.read()
            if owner is None:
                continue  # released between our create and our read: try once more
            if owner.get("expires_at", 0) > time.time():
                raise LockHeld(self.uri, owner)
            # Expired: its run died. Breaking it races only with another breaker, and the
            # conditional create below still lets exactly one of us in.
            self.release()
        owner = self.read() or {}
        raise LockHeld(self.uri, owner)

    def release(self) -> None:
        fs, path = filesystem(self.uri, self.storage)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> ObjectLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
