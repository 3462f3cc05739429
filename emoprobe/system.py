"""Process-level facts and file primitives shared by every stage: usable CPU cores, the
versions that can change the numbers, and the one atomic write (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from emoprobe import __version__

# Distributions whose versions can change cached or probed numbers.
NUMERIC_PACKAGES = ("numpy", "torch", "transformers", "scipy", "scikit-learn", "h5py",
                    "soundfile", "joblib", "opensmile")


def available_cpus() -> int:
    """CPU cores this process may use (affinity-aware; at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def versions(packages: tuple[str, ...] = NUMERIC_PACKAGES) -> dict[str, str]:
    """emoprobe, Python and every installed package of `packages`, without importing them."""
    out = {"emoprobe": __version__, "python": platform.python_version()}
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file (or a directory entry) that was written through another handle to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry (after a rename); some filesystems refuse, which is harmless."""
    with contextlib.suppress(OSError):
        fsync_path(path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it is flushed, fsynced and
    renamed over `path`, on failure removed, so readers see the old file or the whole new one."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files (mode 'w' or 'wb'), got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno is not None and str(exc.filename) in ("None", str(tmp)):
            # name the file the caller asked for, not the temporary one (or none at all)
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: str | bytes | Callable[[IO], None]) -> Path:
    """Write text, bytes, or whatever `data(fh)` writes, to `path` atomically."""
    mode = "wb" if isinstance(data, bytes) else "w"
    kwargs = {"newline": ""} if mode == "w" and callable(data) else {}
    with atomic_open(path, mode, **kwargs) as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data)
    return Path(path)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (schedulers' pre-emption, `kill`) like Ctrl-C within the block, so the
    cleanup that runs on KeyboardInterrupt (closing a cache, removing temporary files) runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
