"""Audio header reads over a whole corpus: a thread pool (the work is I/O bound) with progress.

Every loader fills `duration`, `sample_rate`, `num_samples` and `channels` from the headers read
here. A header that cannot be read is never dropped: the record keeps null audio fields and an
`audio_error` message, and `emoprobe.data.check` reports it. Later stages take these facts from
the manifest (`audio_identities`) and read a header only where a record lacks one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from emoprobe.data.audio import AudioInfo, audio_info
from emoprobe.data.manifest import split_tar_path
from emoprobe.errors import AudioError
from emoprobe.progress import progress_bar

MISSING = "missing file"
UNREADABLE = "unreadable audio"
AUDIO_FIELDS = ("duration", "sample_rate", "num_samples", "channels")
# The fields that identify a record's audio (and the order of a cache's `audio` columns).
IDENTITY_FIELDS = ("sample_rate", "num_samples", "channels")


@dataclass(frozen=True)
class HeaderError:
    """Why one header could not be read: `kind` is MISSING or UNREADABLE."""

    kind: str
    message: str


HeaderResult = AudioInfo | HeaderError


def read_header(path: str) -> HeaderResult:
    """The header of one file or tar member, or the reason it cannot be read."""
    file_part, member = split_tar_path(path)
    if not os.path.isfile(file_part):
        what = "no such file" if member is None else "no such tar archive"
        return HeaderError(MISSING, f"{file_part}: {what}")
    try:
        return audio_info(path)
    except AudioError as exc:
        message = str(exc)
        kind = MISSING if member is not None and "no such member" in message else UNREADABLE
        return HeaderError(kind, message)


def default_workers() -> int:
    """Threads for header reads: more than cores, since the reads wait on storage."""
    return min(32, 4 * (os.cpu_count() or 1))


def read_headers(
    paths: Sequence[str], *, workers: int | None = None, progress: bool = True
) -> list[HeaderResult]:
    """Read every header (order kept), in `workers` threads, with a progress bar."""
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = pool.map(read_header, paths)
        return list(
            progress_bar(results, total=len(paths), desc="audio headers", unit="file",
                         disable=not progress, leave=False)
        )


def apply_headers(
    records: Sequence[MutableMapping[str, Any]], results: Sequence[HeaderResult]
) -> int:
    """Copy header facts into the records; failures get null audio fields and `audio_error`.
    Returns the number of failures."""
    if len(records) != len(results):
        raise ValueError(f"{len(records)} records but {len(results)} header results")
    failures = 0
    for rec, res in zip(records, results):
        if isinstance(res, HeaderError):
            failures += 1
            rec.update(dict.fromkeys(AUDIO_FIELDS))
            rec["audio_error"] = res.message
        else:
            rec["duration"] = round(res.duration, 6)
            rec["sample_rate"] = res.sample_rate
            rec["num_samples"] = res.frames
            rec["channels"] = res.channels
            rec.pop("audio_error", None)
            rec.pop("audio_warning", None)
            if res.declared_frames is not None:
                rec["audio_warning"] = (f"truncated: the header declares {res.declared_frames} "
                                        f"samples, the file holds {res.frames}")
    return failures


def fill_audio_info(
    records: Sequence[MutableMapping[str, Any]],
    *,
    workers: int | None = None,
    progress: bool = True,
) -> list[HeaderResult]:
    """Read every record's header and fill its audio fields; returns the raw results."""
    results = read_headers([r["path"] for r in records], workers=workers, progress=progress)
    apply_headers(records, results)
    return results


def audio_identities(
    records: Sequence[Mapping[str, Any]],
    *,
    workers: int | None = None,
    progress: bool = True,
) -> list[HeaderResult]:
    """Each record's audio facts, from its own `sample_rate`, `num_samples` and `channels`
    fields (as `prepare` writes them); headers are read only for records that lack one."""
    out: list[HeaderResult | None] = []
    missing: list[int] = []
    for i, rec in enumerate(records):
        values = [rec.get(name) for name in IDENTITY_FIELDS]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out.append(AudioInfo(values[0], values[1], values[2]))
        else:
            out.append(None)
            missing.append(i)
    if missing:
        read = read_headers([str(records[i]["path"]) for i in missing], workers=workers,
                            progress=progress)
        for i, res in zip(missing, read):
            out[i] = res
    return [r for r in out if r is not None]
