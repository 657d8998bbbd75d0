"""A lease on object storage: one holder at a time, renewed while it lives, taken over once it is dead.

The lease is one small JSON object written with conditional requests (:mod:`pipeline.conditional`):
created only if absent (``If-None-Match: *``), renewed only while it is still the holder's own
version (``If-Match``), removed only by its holder or by a taker that saw that very version dead.
It records its holder (run id, host, pid, the process's start time and the host's boot id) and
its expiry. A holder is dead when

- its expiry has passed: it stopped renewing (its process, host or network died), or
- it ran on this host (same host name and boot id) and its process is gone, so the rerun of a
  killed driver on the same machine does not wait out the lifetime.

Used as a context manager, :class:`ObjectLock` renews itself every quarter of its lifetime from
a daemon thread; :meth:`ObjectLock.check` says, with one read, whether it is still held (a holder
that could not renew in time may have been taken over) before its holder publishes anything.
Run-id leases (:mod:`pipeline.identity`) and schedule locks (:mod:`pipeline.schedule`) are both this.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from pipeline.conditional import ConditionalObject, Precondition
from schemas.spec import StorageConfig

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Somebody else holds the lock, and is alive as far as can be told."""

    def __init__(self, uri: str, owner: dict):
        self.owner = owner
        now = time.time()
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(owner.get("acquired_at", 0)))
        renewed = owner.get("renewed_at", owner.get("acquired_at"))
        fresh = f", renewed {now - renewed:.0f} s ago" if renewed else ""
        expires = owner.get("expires_at")
        left = f"; it expires in {max(expires - now, 0):.0f} s unless renewed" if expires else ""
        super().__init__(
            f"{uri} is held by run {owner.get('run_id')!r} (host {owner.get('host')}, pid {owner.get('pid')}) "
            f"since {since}{fresh}{left}; refusing to overlap it"
        )


class LockLost(RuntimeError):
    """The lease was taken over while its holder ran (it was not renewed in time); nothing may be published."""


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if there is no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses, so split after its ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def holder_alive(owner: dict) -> bool | None:
    """Whether the holder's process lives: True / False on this host, None (cannot tell) elsewhere."""
    if owner.get("host") != socket.gethostname() or not owner.get("boot_id") or owner["boot_id"] != _boot_id():
        return None
    pid, start = owner.get("pid"), owner.get("pid_start")
    if not isinstance(pid, int):
        return None
    now_start = _start_time(pid)
    return now_start is not None and (start is None or now_start == start)


class ObjectLock:
    """``with ObjectLock(uri, run_id, storage, ttl_s): ...`` holds the lease for the block, renewing it.

    Raises:
        LockHeld: another live holder has it (on entry).
    """

    def __init__(self, uri: str, run_id: str, storage: StorageConfig | None = None, ttl_s: int = 60):
        self.uri = uri
        self.run_id = run_id
        self.storage = storage or StorageConfig()
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex
        self.lost = False
        self._object = ConditionalObject(uri, self.storage)
        self._etag: str | None = None
        self._acquired_at = 0.0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "pid_start": _start_time(os.getpid()), "boot_id": _boot_id(), "token": self.token,
                           "acquired_at": self._acquired_at or now, "renewed_at": now, "expires_at": now + self.ttl_s,
                           "ttl_s": self.ttl_s}).encode()

    def read(self) -> dict | None:
        """The current holder, or None."""
        current = self._object.read()
        return None if current is None else _parse(current[1])

    def acquire(self) -> None:
        self._acquired_at = time.time()
        for _ in range(3):
            etag = self._object.create(self._body())
            if etag is not None:
                self._etag = etag
                return
            current = self._object.read()
            if current is None:
                continue  # released between our create and our read: try again
            owner = _parse(current[1])
            reason = _dead(owner)
            if reason is None:
                raise LockHeld(self.uri, owner)
            log.warning("taking over %s from run %r (host %s, pid %s): %s", self.uri, owner.get("run_id"),
                        owner.get("host"), owner.get("pid"), reason)
            # Only the version seen dead is removed; if another taker replaced it first, theirs stays.
            self._object.delete(current[0])
        raise LockHeld(self.uri, self.read() or {})

    def renew(self) -> None:
        """Extend the lease by its lifetime, if it is still ours; else mark it lost."""
        with self._mutex:
            if self._etag is None or self.lost:
                return
            try:
                self._etag = self._object.replace(self._body(), self._etag)
            except Precondition:
                self.lost = True
                log.error("lost %s: another holder took it over (it was not renewed in time)", self.uri)

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lease is still this holder's (one read)."""
        with self._mutex:
            current = None if self.lost else self._object.read()
            if current is None or current[0] != self._etag:
                self.lost = True
                raise LockLost(f"{self.uri} was taken over by another run while this one ran; not publishing")

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours (a failure only leaves it to expire)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._mutex:
            if self._etag is None or self.lost:
                return
            try:
                self._object.delete(self._etag)
            except Exception as exc:  # noqa: BLE001 - it expires on its own
                log.warning("could not remove %s (%s); it expires in %d s", self.uri, exc, self.ttl_s)
            self._etag = None

    def _renew_forever(self) -> None:
        interval = max(self.ttl_s / 4, 1.0)
        while not self._stop.wait(interval) and not self.lost:
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the store may be briefly away; try at the next tick
                log.warning("could not renew %s: %s", self.uri, exc)

    def __enter__(self) -> ObjectLock:
        self.acquire()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_forever, name=f"lease-{self.run_id}", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(body: bytes) -> dict:
    try:
        owner = json.loads(body)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _dead(owner: dict) -> str | None:
    """Why the holder counts as dead, or None if it may be alive."""
    expires = owner.get("expires_at")
    if not isinstance(expires, (int, float)) or expires <= time.time():
        return "its lease expired"
    if holder_alive(owner) is False:
        return "its process is gone"
    return None
