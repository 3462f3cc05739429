"""MSP-IMPROV -> manifest records.

Labels come from the consensus lines of `Evaluation.txt` (some copies spell it
`Evalution.txt`): `UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.0; V:3.5; D:3.0 ; N:3.5;`. The
per-rater lines after each are not labels. Audio lives at
`[Audio/]session{N}/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.wav`. The speaker is the `F01` field and
the session its two digits; `S01A` is the target sentence and scenario, not a session.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from emoprobe.data.headers import fill_audio_info
from emoprobe.data.text import read_lines
from emoprobe.errors import ManifestError

CORPUS = "msp_improv"
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
_ATTRIBUTES = {"A": "arousal", "V": "valence", "D": "dominance", "N": "naturalness"}
_NAME = re.compile(
    r"^UTD-IMPROV-(?P<scenario>S\d{2}[A-Z])-(?P<speaker>(?P<gender>[FM])(?P<session>\d{2}))"
    r"-(?P<condition>[PRST])-(?P<turn>\w+)\.avi$"
)


def find_label_file(root: str | Path) -> Path:
    """The evaluation file under `root`, in either spelling."""
    for name in LABEL_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    raise ManifestError(f"{root}: no {' or '.join(LABEL_FILES)} (the MSP-IMPROV label file)")


def find_audio_root(root: str | Path) -> Path:
    """`root/Audio` when the copy has that level, else `root`; it must hold session folders."""
    for base in (Path(root) / "Audio", Path(root)):
        if any(base.glob("session[0-9]*")):
            return base
    raise ManifestError(f"{root}: no session1 ... session6 folders, in Audio/ or beside it")


def _attribute(value: str, where: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        raise ManifestError(f"{where}: attribute value {value!r} is not a number") from None
    return None if math.isnan(x) else x


def parse_evaluation(path: str | Path) -> list[dict[str, Any]]:
    """The consensus lines of an evaluation file, in file order (rater lines skipped), as
    dicts of id (the audio's `MSP-IMPROV-...` name), label, speaker, gender, session,
    scenario, condition and the attributes (null where NaN)."""
    out = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.startswith("UTD-IMPROV-"):
            continue
        where = f"{path}:{lineno}"
        parts = [p.strip() for p in line.split(";")]
        m = _NAME.match(parts[0])
        if m is None or len(parts) < 2 or not parts[1]:
            raise ManifestError(
                f"{where}: consensus line is not 'UTD-IMPROV-S01A-F01-S-FM01.avi; <code>; "
                f"A:..; V:..; D:..; N:..;': {line!r}"
            )
        row: dict[str, Any] = {
            "id": "MSP-IMPROV-" + parts[0][len("UTD-IMPROV-"):-len(".avi")],
            "label": parts[1],
            "speaker": m["speaker"],
            "gender": m["gender"],
            "session": int(m["session"]),
            "scenario": m["scenario"],
            "condition": m["condition"],
            **dict.fromkeys(_ATTRIBUTES.values()),
        }
        for part in filter(None, parts[2:]):
            key, sep, value = part.partition(":")
            if not sep or key.strip() not in _ATTRIBUTES:
                raise ManifestError(f"{where}: unexpected field {part!r} (expected A:, V:, D:, N:)")
            row[_ATTRIBUTES[key.strip()]] = _attribute(value.strip(), where)
        out.append(row)
    return out


def load_msp_improv(
    root: str | Path,
    *,
    audio_info: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Manifest records of every utterance with a consensus line, with absolute wav paths."""
    root = Path(root).expanduser().resolve()
    label_file = find_label_file(root)
    audio_root = find_audio_root(root)
    records = []
    for row in parse_evaluation(label_file):
        wav = (
            audio_root / f"session{row['session']}" / row["scenario"] / row["condition"]
            / f"{row['id']}.wav"
        )
        records.append({"id": row["id"], "path": str(wav), **row, "corpus": CORPUS})
    if audio_info:
        fill_audio_info(records, workers=workers, progress=progress)
    return records
