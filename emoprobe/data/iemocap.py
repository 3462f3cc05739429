"""IEMOCAP (IEMOCAP_full_release) -> manifest records.

Labels come from the summary lines of `Session*/dialog/EmoEvaluation/<dialog>.txt` (the lines
that start with `[`); the per-annotator lines and the Categorical/, Attribute/ and
Self-evaluation/ sub-folders are not labels. Every raw code is kept; tasks select and merge.
The speaker is the session plus the gender letter of the id's LAST field: in
`Ses01F_impro01_M012` the `F` names the dialog, the speaker is `Ses01M`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from emoprobe.data.headers import fill_audio_info
from emoprobe.data.text import read_lines
from emoprobe.errors import ManifestError

CORPUS = "iemocap"

# [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
_LABEL_LINE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<id>\S+)\s+(?P<code>\S+)"
    r"\s+\[(?P<vad>[^\]]*)\]\s*$"
)
# Ses05F_script03_1_F033 [241.6700-243.4048]: You knew there was nothing.
_TRANSCRIPT_LINE = re.compile(r"^(?P<id>Ses\S+)\s*\[[^\]]*\]:\s?(?P<text>.*)$")
_ID = re.compile(r"^Ses(?P<session>\d{2})[FM]_\S+_(?P<gender>[FM])\d+$")


def parse_utterance_id(utt_id: str) -> dict[str, Any]:
    """Session, speaker, gender and dialog of an utterance id (see the module docstring)."""
    m = _ID.match(utt_id)
    if m is None:
        raise ManifestError(
            f"utterance id {utt_id!r} does not follow Ses{{SS}}{{G}}_<dialog>_{{g}}{{NNN}}"
        )
    session = int(m["session"])
    gender = m["gender"]
    return {
        "session": session,
        "speaker": f"Ses{session:02d}{gender}",
        "gender": gender,
        "dialog": utt_id.rsplit("_", 1)[0],
    }


def parse_emo_evaluation(path: str | Path) -> list[dict[str, Any]]:
    """The summary label lines of one EmoEvaluation file, in file order."""
    out = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.startswith("["):
            continue
        m = _LABEL_LINE.match(line)
        if m is None:
            raise ManifestError(
                f"{path}:{lineno}: label line is not "
                f"'[start - end]<TAB>id<TAB>code<TAB>[valence, arousal, dominance]': {line!r}"
            )
        try:
            start, end = float(m["start"]), float(m["end"])
            vad = [float(v) for v in m["vad"].split(",")]
            if len(vad) != 3:
                raise ValueError
        except ValueError:
            raise ManifestError(
                f"{path}:{lineno}: expected times and three numbers [valence, arousal, "
                f"dominance], found {line!r}"
            ) from None
        out.append(
            {
                "id": m["id"],
                "label": m["code"],
                "start": start,
                "end": end,
                "valence": vad[0],
                "arousal": vad[1],
                "dominance": vad[2],
            }
        )
    return out


def parse_transcription(path: str | Path) -> dict[str, str]:
    """Utterance id -> transcript; lines that are not utterances (`M: ...`) are skipped."""
    out = {}
    for line in read_lines(path):
        m = _TRANSCRIPT_LINE.match(line.strip())
        if m is not None:
            out[m["id"]] = m["text"].strip()
    return out


def load_iemocap(
    root: str | Path,
    *,
    audio_info: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Manifest records of every labelled utterance under an IEMOCAP_full_release root, with
    absolute wav paths. `audio_info` reads each header for duration/sample_rate/channels."""
    root = Path(root).expanduser().resolve()
    label_files = sorted(
        p for p in root.glob("Session*/dialog/EmoEvaluation/*.txt") if not p.name.startswith(".")
    )
    if not label_files:
        raise ManifestError(
            f"{root}: no Session*/dialog/EmoEvaluation/*.txt files; expected the "
            "IEMOCAP_full_release folder (Session1 ... Session5)"
        )
    records = []
    for label_file in label_files:
        transcript_file = label_file.parent.parent / "transcriptions" / label_file.name
        sentences = parse_transcription(transcript_file) if transcript_file.is_file() else {}
        for row in parse_emo_evaluation(label_file):
            try:
                facts = parse_utterance_id(row["id"])
            except ManifestError as exc:
                raise ManifestError(f"{label_file}: {exc}") from None
            wav = (
                root / f"Session{facts['session']}" / "sentences" / "wav" / facts["dialog"]
                / f"{row['id']}.wav"
            )
            records.append(
                {
                    "id": row["id"],
                    "path": str(wav),
                    "label": row["label"],
                    "sentence": sentences.get(row["id"]),
                    "speaker": facts["speaker"],
                    "gender": facts["gender"],
                    "session": facts["session"],
                    "corpus": CORPUS,
                    "dialog": facts["dialog"],
                    "start": row["start"],
                    "end": row["end"],
                    "valence": row["valence"],
                    "arousal": row["arousal"],
                    "dominance": row["dominance"],
                }
            )
    if audio_info:
        fill_audio_info(records, workers=workers, progress=progress)
    return records
