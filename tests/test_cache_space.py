"""Disk space: a cache is never started without room for all of it. Under a file-size limit
(`ulimit -f`, standing in for a full disk without root) extraction refuses with the numbers,
leaves no temporary file, keeps every row already cached, and resumes once there is room."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.extract.runner import run_extraction
from emoprobe.testing.models import write_corpus

LIMIT = 1024 * 1024  # bytes a file may grow to in the limited child


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _extract(manifest: Path, out: Path, *, limited: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "emoprobe", "extract", "--manifest", str(manifest),
            "--model", "fbank", "--out", str(out), "--frames", "0", "--no-progress"]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=_limited if limited else None)


@pytest.mark.slow
def test_file_size_limit_refused_with_numbers_then_resumed(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path / "c", [0.5] * 4 + [2.0] * 40)
    records = read_manifest(manifest)
    small = write_manifest(records[:4], tmp_path / "small.jsonl")
    out = tmp_path / "f"
    first = _extract(small, out, limited=True)  # a small cache fits under the limit
    assert first.returncode == 0, first.stderr
    cache = out / "fbank.h5"
    before = hashlib.sha256(cache.read_bytes()).hexdigest()
    grown = _extract(manifest, out, limited=True)  # 40 more utterances with frames do not
    assert grown.returncode != 0
    assert "Traceback" not in grown.stderr
    assert "ulimit -f" in grown.stderr and "1.0 MiB" in grown.stderr and "bytes" in grown.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fbank.h5"]  # no temporary file left
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == before  # cached rows kept
    resumed = run_extraction(manifest, "fbank", out, frames="0", progress=False).summary
    assert (resumed.extracted, resumed.reused) == (40, 4)
