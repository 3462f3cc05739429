"""One writer at a time: an exclusive `flock` on `<cache>.lock` (and on a probe results
folder's `.lock`).

The kernel drops a flock when its process dies, so a lock left by a killed run is never
stale. The lock file holds the owner's pid and host for the error message only.

Some network filesystems (NFS without lockd, Lustre mounted without `flock`) refuse flock with
ENOLCK, ENOSYS or EOPNOTSUPP: that is a LockUnsupportedError naming the file, unless
EMOPROBE_NO_LOCK=1 is set, which runs without the lock (the user then keeps to one writer).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from emoprobe.errors import CacheError, LockUnsupportedError

log = logging.getLogger(__name__)

NO_LOCK_ENV = "EMOPROBE_NO_LOCK"
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


def lock_path(cache_path: str | os.PathLike[str]) -> Path:
    p = Path(cache_path)
    return p.with_name(p.name + ".lock")


class ExclusiveLock:
    """An exclusive `flock` on the file `path`, held by one process at a time; a second
    `acquire` raises `busy(owner)` (owner: the holder's pid and host)."""

    def __init__(self, path: str | os.PathLike[str],
                 busy: Callable[[str], Exception]) -> None:
        self.path = Path(path)
        self._busy = busy
        self._fd: int | None = None

    def acquire(self) -> ExclusiveLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    owner = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise self._busy(owner) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _UNSUPPORTED:
                    raise
                return self._without_lock(exc)
            # The file may have been unlinked by a finishing owner between open and flock:
            # only a lock on the inode that the path names now counts.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _without_lock(self, exc: OSError) -> ExclusiveLock:
        """flock is refused by this filesystem: stop, or go on unlocked when the user said so."""
        if os.environ.get(NO_LOCK_ENV) == "1":
            log.warning("%s: file locks unsupported here (%s); running without the lock as "
                        "%s=1 asks: start no second run on this output", self.path,
                        exc.strerror, NO_LOCK_ENV)
            return self
        raise LockUnsupportedError(
            exc.errno, f"{self.path}: this filesystem does not support file locks (flock: "
            f"{exc.strerror}; common on NFS and Lustre). Write the output to a local or "
            f"lock-capable filesystem, or set {NO_LOCK_ENV}=1 to run without the lock (then "
            "never start two runs on the same output); see docs/troubleshooting.md",
            str(self.path)) from None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class CacheLock(ExclusiveLock):
    """The write lock of one cache (`<cache>.lock`); refuses a second writer."""

    def __init__(self, cache_path: str | os.PathLike[str]) -> None:
        self.cache_path = Path(cache_path)
        lock = lock_path(cache_path)
        super().__init__(lock, lambda owner: CacheError(
            f"{self.cache_path}: another extraction is writing this cache "
            f"(lock {lock} held by {owner}); wait for it to finish or stop it"))
