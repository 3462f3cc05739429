"""Audio reading: files and tar members, mono downmix, anti-aliased resampling, float32.

A path of the form `archive.tar::member/name.wav` reads a member straight out of a tar file
(WebDataset shards), without extracting it. Every failure raises `AudioError` naming the path.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import threading
from dataclasses import dataclass
from math import gcd
from typing import IO

import numpy as np
import soundfile as sf

from emoprobe.data.manifest import TAR_SEPARATOR, split_tar_path
from emoprobe.errors import AudioError


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one audio item. `declared_frames` is set when a WAV header declares
    more frames than the file holds (a truncated file, which decodes to `frames`)."""

    sample_rate: int
    frames: int
    channels: int
    declared_frames: int | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


class _TarIndex:
    """Per-thread open tar files with a name -> member index (tarfile is not thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def open(self, archive: str, member: str) -> IO[bytes]:
        """A seekable reader of one member; reads lazily from the archive."""
        cache: dict[str, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]]
        cache = self._local.__dict__.setdefault("cache", {})
        if archive not in cache:
            try:
                tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - kept open per thread
                index = {m.name: m for m in tf.getmembers() if m.isfile()}
            except (OSError, tarfile.TarError) as exc:
                raise AudioError(f"{archive}: cannot open tar archive ({exc})") from None
            cache[archive] = (tf, index)
        tf, index = cache[archive]
        info = index.get(member) or index.get(member.lstrip("./"))
        if info is None:
            raise AudioError(f"{archive}{TAR_SEPARATOR}{member}: no such member in the archive")
        fh = tf.extractfile(info)
        if fh is None:
            raise AudioError(f"{archive}{TAR_SEPARATOR}{member}: member is not a regular file")
        return fh

    def read(self, archive: str, member: str) -> bytes:
        return self.open(archive, member).read()

    def close(self) -> None:
        for tf, _ in self._local.__dict__.get("cache", {}).values():
            tf.close()
        self._local.__dict__["cache"] = {}


_TARS = _TarIndex()


def _source(path: str, *, lazy: bool = False) -> str | IO[bytes]:
    """A file path, or a tar member as bytes in memory (lazy: a reader over the archive)."""
    archive, member = split_tar_path(path)
    if member is None:
        return archive
    if lazy:
        return _TARS.open(archive, member)
    return io.BytesIO(_TARS.read(archive, member))


def audio_info(path: str) -> AudioInfo:
    """Read only the header of a file or tar member (a member's samples are not read)."""
    try:
        info = sf.info(_source(path, lazy=True))
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types for corrupt headers
        raise AudioError(f"{path}: unreadable audio ({exc})") from None
    declared = wav_declared_frames(path) if split_tar_path(path)[1] is None else None
    if declared is not None and declared <= int(info.frames):
        declared = None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels), declared)


def wav_declared_frames(path: str) -> int | None:
    """The frames a RIFF/WAVE file's header declares for its data chunk; None for other
    formats or a size left open (streamed WAV). libsndfile reports the frames the file
    actually holds, so a difference means the file was cut short."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = struct.unpack_from("<H", head, pos + 20)[0]
        elif chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling with scipy's Kaiser-windowed anti-aliasing filter."""
    if orig_sr == target_sr:
        return wave
    from scipy.signal import resample_poly  # here: scipy.signal costs 0.4 s to import

    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(wave, target_sr // g, orig_sr // g, axis=-1).astype(np.float32)


def _read(path: str, dtype: str) -> tuple[np.ndarray, int]:
    """All samples of a file or tar member as (frames, channels) of `dtype`, and the rate."""
    try:
        data, sr = sf.read(_source(path), dtype=dtype, always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({exc})") from None
    return data, int(sr)


def load_audio(path: str, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Return (mono float32 samples in [-1, 1], sample rate), resampled to `target_sr` if given.

    Raises AudioError naming `path` for missing, unreadable, corrupt or zero-length audio.
    """
    data, sr = _read(path, "float32")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio")
    if not np.isfinite(data).all():  # before clipping, which would turn Inf into 1.0
        raise AudioError(f"{path}: audio holds NaN or Inf samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if target_sr is not None and sr != target_sr:
        wave = resample(wave, sr, target_sr)
        sr = target_sr
    wave = np.clip(wave, -1.0, 1.0, out=np.ascontiguousarray(wave, dtype=np.float32))
    return wave, int(sr)


def decoded_digest(path: str) -> str:
    """A hash of the decoded samples (with the sample rate and channel count), read in one
    pass. Samples are decoded to float64 in [-1, 1], which holds 16-bit, 24-bit, 32-bit and
    float samples exactly, so the same audio stored as WAV or FLAC, at any of those sample
    widths, hashes the same."""
    data, sr = _read(path, "float64")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{sr}:{data.shape[1]}:".encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()
