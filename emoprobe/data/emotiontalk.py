"""EmotionTalk (audio modality) -> manifest records, straight from its WebDataset tar shards.

The release ships `data/audio/*.tar`. In a WebDataset shard the files of one sample share a key
(the member path up to the first dot of its file name) and differ in extension:
`<key>.json` holds the annotation and `<key>.wav` the audio (any audio extension is accepted;
the JSON's `file_name` says `.mp4` even for WAV audio). Audio is addressed in place as
`shard.tar::member`, never extracted. An already-extracted tree (the same files on disk) is
read the same way. Labels are the audio-modality `emotion_result`; `continuous` is the mean of
the annotators' `Continuous_label` (null when none gives one).
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoprobe.data.corpora import EMOTIONTALK_LABELS
from emoprobe.data.headers import fill_audio_info
from emoprobe.data.manifest import TAR_SEPARATOR
from emoprobe.data.targets import mean_rating
from emoprobe.errors import ManifestError, UnknownLabelError
from emoprobe.progress import progress_bar

CORPUS = "emotiontalk"
LABEL_SOURCE = "audio-modality emotion_result"

# Official split by group (from the released baseline code).
SPLIT_GROUPS = {
    "train": (2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14),
    "validation": (1, 12),
    "test": (3, 15),
}
SPLIT_OF_GROUP = {g: split for split, groups in SPLIT_GROUPS.items() for g in groups}

# Accepted spellings (lower case) -> the canonical label stored in the manifest.
LABEL_SPELLINGS = {
    "neutral": "neutral",
    "happy": "happy",
    "happiness": "happy",
    "sad": "sad",
    "sadness": "sad",
    "angry": "angry",
    "anger": "angry",
    "surprised": "surprised",
    "surprise": "surprised",
    "disgusted": "disgusted",
    "disgust": "disgusted",
    "fearful": "fearful",
    "fear": "fearful",
    "fearfull": "fearful",
}

# Audio member extensions, most preferred first (a sample normally has exactly one).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "mp4", "m4a")
_UTTERANCE = re.compile(r"^G(?P<group>\d+)_(?P<dialogue>\d+)_(?P<speaker>\d+)_(?P<utt>\d+)$")


def normalise_label(raw: Any, where: str) -> str:
    """The canonical label for an accepted spelling; anything else is an UnknownLabelError."""
    label = LABEL_SPELLINGS.get(str(raw).strip().lower())
    if label is None:
        raise UnknownLabelError(
            f"{where}: unknown emotion_result {raw!r}; known labels: "
            f"{', '.join(EMOTIONTALK_LABELS)} (accepted spellings: "
            f"{', '.join(sorted(LABEL_SPELLINGS))}, any case)"
        )
    return label


def sample_key(name: str) -> tuple[str, str]:
    """WebDataset (key, extension) of a member name: the key is the path up to the first dot
    of the file name, the extension the rest (lower case)."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


@dataclass
class _Sample:
    """One WebDataset sample: where its JSON came from, the JSON text, its audio members."""

    where: str
    json_text: bytes | None = None
    audio: dict[str, str] = field(default_factory=dict)


def _tar_samples(archive: Path) -> Iterator[tuple[str, _Sample]]:
    samples: dict[str, _Sample] = {}
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if not member.isfile() or posixpath.basename(member.name).startswith("."):
                    continue
                key, ext = sample_key(member.name)
                where = f"{archive}{TAR_SEPARATOR}{member.name}"
                sample = samples.setdefault(key, _Sample(where))
                if ext == "json":
                    sample.where = where
                    fh = tf.extractfile(member)  # a regular file: never None
                    sample.json_text = fh.read() if fh is not None else None
                elif ext in AUDIO_EXTENSIONS:
                    sample.audio[ext] = where
    except (OSError, tarfile.TarError) as exc:
        raise ManifestError(f"{archive}: cannot read tar archive ({exc})") from None
    yield from samples.items()


def _tree_samples(base: Path) -> Iterator[tuple[str, _Sample]]:
    samples: dict[str, _Sample] = {}
    for path in sorted(base.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        key, ext = sample_key(path.relative_to(base).as_posix())
        sample = samples.setdefault(key, _Sample(str(path)))
        if ext == "json":
            sample.where = str(path)
            sample.json_text = path.read_bytes()
        elif ext in AUDIO_EXTENSIONS:
            sample.audio[ext] = str(path)
    yield from samples.items()


def _audio_base(root: Path) -> Path:
    for base in (root / "data" / "audio", root / "audio", root):
        if base.is_dir():
            return base
    raise ManifestError(f"{root}: not a folder (expected the EmotionTalk root with data/audio/)")


def _speaker(speaker_id: Any, group: int, fallback: str) -> str:
    """Speaker ids recur across groups for different people: qualify them with the group."""
    sid = str(speaker_id).strip() if speaker_id not in (None, "") else fallback
    if sid.isdigit():
        sid = f"S{int(sid):02d}"
    return f"G{group:02d}_{sid}"


def _record(key: str, sample: _Sample) -> dict[str, Any]:
    where = sample.where
    if sample.json_text is None:
        raise ManifestError(f"{where}: audio member of sample {key!r} has no JSON annotation")
    try:
        meta = json.loads(sample.json_text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "emotion_result" not in meta:
        raise ManifestError(f"{where}: the annotation has no 'emotion_result' field")
    file_name = str(meta.get("file_name") or key)
    utt_id = re.split(r"[\\/]", file_name)[-1].split(".", 1)[0]
    m = _UTTERANCE.match(utt_id)
    if m is None:
        raise ManifestError(
            f"{where}: file_name {file_name!r} does not end in G<group>_<dialogue>_<speaker>_"
            "<utterance>"
        )
    group = int(m["group"])
    if group not in SPLIT_OF_GROUP:
        raise ManifestError(
            f"{where}: utterance {utt_id!r} is in group {group}, which the official split "
            f"(groups {min(SPLIT_OF_GROUP)}-{max(SPLIT_OF_GROUP)}) does not place"
        )
    label = normalise_label(meta["emotion_result"], f"{where}: utterance {utt_id!r}")
    audio = next((sample.audio[e] for e in AUDIO_EXTENSIONS if e in sample.audio), None)
    if audio is None:  # a missing audio member is reported by the header read, not dropped
        archive, sep, member = where.partition(TAR_SEPARATOR)
        audio = f"{archive}{sep}{posixpath.splitext(member)[0]}.wav" if sep else (
            str(Path(where).with_suffix(".wav"))
        )
    return {
        "id": utt_id,
        "path": audio,
        "label": label,
        "sentence": meta.get("content"),
        "speaker": _speaker(meta.get("speaker_id"), group, m["speaker"]),
        "gender": None,
        "split": SPLIT_OF_GROUP[group],
        "corpus": CORPUS,
        "group": group,
        "dialogue": f"G{m['group']}_{m['dialogue']}",
        "speaker_id": meta.get("speaker_id"),
        "annotations": meta.get("data"),
        "continuous": mean_rating(
            [a.get("Continuous_label") for a in meta.get("data") or [] if isinstance(a, dict)]),
    }


def load_emotiontalk(
    root: str | Path,
    *,
    audio_info: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Manifest records of every audio-modality sample under an EmotionTalk root: the tar
    shards `data/audio/**/*.tar` when present (read in place), else an extracted tree there."""
    root = Path(root).expanduser().resolve()
    base = _audio_base(root)
    shards = sorted(base.rglob("*.tar"))
    if shards:
        sources = (s for shard in progress_bar(shards, desc="EmotionTalk shards", unit="tar",
                                               disable=not progress, leave=False)
                   for s in _tar_samples(shard))
    else:
        sources = _tree_samples(base)
    records = [_record(key, sample) for key, sample in sources]
    if not records:
        raise ManifestError(f"{base}: no EmotionTalk samples (no *.tar shards, no *.json files)")
    if audio_info:
        fill_audio_info(records, workers=workers, progress=progress)
    return records
