"""Audit speed: the cheap checks on a 50,000-utterance manifest, and audio hashing's reads.

Cases:

- manifest: a synthetic 50,000-utterance manifest (500 speakers, 4 classes, 5 speaker folds
  with a planted leak: one speaker in two folds, and one fold without a class; transcripts
  from 2,000 sentences) audited with every cheap check, no audio hashing, timed end to end
  (reading and validating the JSONL included). Target: under 10 s.
- hashing: 2,000 short WAV files hashed by `emoprobe audit`'s hashing; the bytes the process
  read (`rchar` of /proc/self/io, which counts reads served from the page cache too) are
  compared with the files' total size, to show each file is read once.

    python benchmarks/bench_audit.py --out benchmarks/results/audit.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_S = 10.0
LABELS = ("ang", "hap", "neu", "sad")


def _manifest(path: Path, n: int, speakers: int, folds: int) -> None:
    from emoprobe.data.manifest import write_manifest

    rng = np.random.default_rng(0)
    spk = rng.integers(0, speakers, n)
    labels = rng.integers(0, len(LABELS), n)
    records = []
    for i in range(n):
        fold = int(spk[i]) % folds + 1
        label = LABELS[labels[i]]
        if fold == 2 and label == "sad":
            label = "hap"  # fold 2 has no sad utterance
        if spk[i] == 7 and i % 2:
            fold = 1  # speaker 7 (fold 3) leaks into fold 1
        records.append({"id": f"utt{i:06d}", "path": f"/data/corpus/{i:06d}.wav",
                        "label": label, "speaker": f"spk{int(spk[i]):04d}", "fold": str(fold),
                        "sentence": f"Sentence number {int(rng.integers(0, 2000))}.",
                        "duration": 3.0, "sample_rate": 16000, "channels": 1,
                        "corpus": "synthetic"})
    write_manifest(records, path)


def bench_manifest(work: Path, n: int) -> dict[str, Any]:
    from emoprobe.data.audit import audit_manifest

    path = work / "big.jsonl"
    _manifest(path, n, speakers=500, folds=5)
    start = time.perf_counter()
    report = audit_manifest(path, hash_audio_files=False, progress=False)
    wall = time.perf_counter() - start
    kinds: dict[str, int] = {}
    for f in report.findings:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    return {"utterances": n, "wall_s": round(wall, 3), "target_s": TARGET_S,
            "met": wall < TARGET_S, "findings_by_kind": kinds,
            "severities": report.severity_counts()}


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def bench_hashing(work: Path, files: int) -> dict[str, Any]:
    import soundfile as sf

    from emoprobe.data.audit import hash_audio
    from emoprobe.testing.layouts import tone

    paths = []
    for i in range(files):
        p = work / "wav" / f"{i:05d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, tone(1.0, 16000, 100.0 + i), 16000, subtype="PCM_16")
        paths.append(str(p))
    size = sum(os.path.getsize(p) for p in paths)
    before = _rchar()
    start = time.perf_counter()
    digests, failures = hash_audio(paths, progress=False)
    wall = time.perf_counter() - start
    read = _rchar() - before
    return {"files": files, "bytes_on_disk": size, "bytes_read": read,
            "reads_per_byte": round(read / size, 3), "wall_s": round(wall, 3),
            "files_per_s": round(files / wall, 1), "distinct_digests": len(set(digests)),
            "failures": len(failures)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/audit.json")
    ap.add_argument("--utterances", type=int, default=50_000)
    ap.add_argument("--files", type=int, default=2_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "load_avg_start": list(os.getloadavg())},
            "manifest": bench_manifest(work, args.utterances),
            "hashing": bench_hashing(work, args.files),
        }
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["manifest"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
