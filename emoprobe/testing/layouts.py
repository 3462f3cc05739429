"""Miniature copies of the supported corpora, in their exact on-disk layouts, for tests.

Each generator writes a small tree (a few sessions or groups, tiny synthetic audio) with the
real label formats, including the lines a loader must ignore (annotator and rater lines,
per-annotator sub-folders, other modalities), and returns a `FixtureCorpus` saying what it
wrote: for every utterance the fields a correct loader must produce.

`from emoprobe.testing.layouts import make_iemocap_tree`.
"""

from __future__ import annotations

import io
import json
import tarfile
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

LONG_SECONDS = 30.5


@dataclass
class FixtureCorpus:
    """A written fixture: its root, the expected record fields of every utterance by id,
    and the files written (audio, label files, decoys)."""

    root: Path
    utterances: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def ids(self, **where: Any) -> list[str]:
        """Ids of the utterances whose expected fields equal `where`."""
        return [u for u, f in self.utterances.items()
                if all(f.get(k) == v for k, v in where.items())]


def tone(seconds: float, sr: int, freq: float = 220.0) -> np.ndarray:
    """A quiet sine: cheap audio of an exact length."""
    t = np.arange(round(seconds * sr)) / sr
    return (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(seconds: float, sr: int, freq: float = 220.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, freq), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write(path: Path, text: str, corpus: FixtureCorpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    corpus.files.append(path)


def _write_wav(path: Path, seconds: float, sr: int, corpus: FixtureCorpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr), sr, subtype="PCM_16")
    corpus.files.append(path)


# ---------------------------------------------------------------------------------------------
# IEMOCAP

# Per session: (dialog suffix, utterance last field, code). Every session holds all four
# classes of the 4-class task; the extra codes differ per session.
_IEMOCAP_TURNS = (
    ("impro01", "F000", "neu"),
    ("impro01", "M000", "ang"),
    ("impro01", "F001", "exc"),
    ("impro01", "M001", "sad"),
    ("impro01", "F002", "xxx"),
    ("script01_1", "M000", "hap"),
    ("script01_1", "F000", "sad"),
    ("script01_1", "M001", "neu"),
    ("script01_1", "F001", "fru"),
)
_IEMOCAP_EXTRA = {1: "sur", 2: "fea", 3: "dis", 4: "oth", 5: "oth"}
_CATEGORY = {"neu": "Neutral state", "ang": "Anger", "exc": "Excited", "sad": "Sadness",
             "hap": "Happiness", "fru": "Frustration", "sur": "Surprise", "fea": "Fear",
             "dis": "Disgust", "oth": "Other", "xxx": "Other"}
_VAD = {"neu": (2.5, 2.5, 2.5), "ang": (1.5, 4.0, 4.0), "exc": (4.0, 4.0, 3.5),
        "sad": (1.5, 1.5, 2.0), "hap": (4.0, 3.5, 3.0), "fru": (2.0, 3.5, 3.0),
        "sur": (3.0, 4.0, 2.5), "fea": (2.0, 3.5, 1.5), "dis": (1.5, 3.0, 3.5),
        "oth": (3.0, 3.0, 3.0), "xxx": (2.5, 3.0, 3.0)}


def make_iemocap_tree(
    root: str | Path, *, sessions: tuple[int, ...] = (1, 2, 3, 4, 5), long_utterance: bool = True
) -> FixtureCorpus:
    """IEMOCAP_full_release in miniature: per session an improvised and a scripted dialog,
    both speakers, EmoEvaluation files with annotator lines, decoy Categorical/, Attribute/ and
    Self-evaluation/ files, transcriptions with noise lines, 16 kHz wavs. With
    `long_utterance`, Ses05F_impro01_F000 lasts 30.5 s. Ses02M_script01_1_F000 has no
    transcript line."""
    root = Path(root)
    corpus = FixtureCorpus(root)
    sr = 16000
    for s in sessions:
        session = root / f"Session{s}"
        turns = [*_IEMOCAP_TURNS, ("script01_1", "M002", _IEMOCAP_EXTRA[s])]
        dialogs: dict[str, list[tuple[str, str]]] = {}
        for suffix, last, code in turns:
            dialog = f"Ses{s:02d}{'F' if suffix.startswith('impro') else 'M'}_{suffix}"
            dialogs.setdefault(dialog, []).append((f"{dialog}_{last}", code))
        for dialog, utts in dialogs.items():
            label_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            text_lines = []
            cat_lines, attr_lines, self_lines = [], [], []
            clock = 5.0
            for k, (utt, code) in enumerate(utts):
                seconds = 0.2 + 0.01 * k + 0.002 * s
                if long_utterance and utt == "Ses05F_impro01_F000":
                    seconds = LONG_SECONDS
                start, end = clock, clock + seconds
                clock = end + 1.25
                v, a, d = _VAD[code]
                label_lines.append(
                    f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]"
                )
                label_lines += [
                    f"C-E2:\t{_CATEGORY[code]};\t()",
                    f"C-E3:\t{_CATEGORY[code] if code != 'xxx' else 'Frustration'};\t()",
                    f"C-F1:\t{_CATEGORY[code] if code != 'xxx' else 'Anger'};\t(upset)",
                    f"A-E3:\tval {round(v)}; act {round(a)}; dom  {round(d)};\t()",
                    f"A-F1:\tval {round(v)}; act {round(a)}; dom  {round(d)};\t()",
                    "",
                ]
                sentence = f"Line {k} of {dialog}, said plainly."
                if utt != "Ses02M_script01_1_F000":
                    text_lines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {sentence}")
                cat_lines.append(f"{utt} :{_CATEGORY[code]}; ()")
                attr_lines.append(f"{utt} :act 2; val 3; dom  2; ()")
                # A decoy in the label-line format with a wrong label: read it and tests fail.
                self_lines.append(f"[{start:.4f} - {end:.4f}]\t{utt}\tang\t[1.0, 5.0, 5.0]")
                wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
                _write_wav(wav, seconds, sr, corpus)
                corpus.utterances[utt] = {
                    "label": code,
                    "speaker": f"Ses{s:02d}{utt[-4]}",
                    "gender": utt[-4],
                    "session": s,
                    "sentence": None if utt == "Ses02M_script01_1_F000" else sentence,
                    "duration": seconds,
                    "sample_rate": sr,
                    "path": str(wav.resolve()),
                    "vad": (v, a, d),
                    "dialog": dialog,
                }
            text_lines.insert(2, "M: [BREATHING]")
            text_lines.append(f"{dialog}_MXX0 [099.0000-100.0000]: An unlabelled turn.")
            evaluation = session / "dialog" / "EmoEvaluation"
            _write(evaluation / f"{dialog}.txt", "\n".join(label_lines) + "\n", corpus)
            _write(evaluation / "Categorical" / f"{dialog}_e2_cat.txt",
                   "\n".join(cat_lines) + "\n", corpus)
            _write(evaluation / "Attribute" / f"{dialog}_e3_atr.txt",
                   "\n".join(attr_lines) + "\n", corpus)
            _write(evaluation / "Self-evaluation" / f"{dialog}.txt",
                   "\n".join(self_lines) + "\n", corpus)
            _write(session / "dialog" / "transcriptions" / f"{dialog}.txt",
                   "\n".join(text_lines) + "\n", corpus)
    return corpus


# ---------------------------------------------------------------------------------------------
# MSP-IMPROV

# Per session and speaker gender: (scenario, condition, turn, code, attributes A, V, D, N).
_MSP_TURNS = {
    "F": (("S01A", "S", "FM01", "N", ("3.000000", "3.500000", "3.000000", "3.500000")),
          ("S02H", "T", "FM02", "H", ("3.800000", "4.200000", "3.400000", "NaN")),
          ("S03S", "R", "FM01", "S", ("1.800000", "1.600000", "2.200000", "4.000000")),
          ("S04A", "P", "FM03", "O", ("NaN", "NaN", "NaN", "NaN"))),
    "M": (("S01A", "T", "MF01", "A", ("4.200000", "1.800000", "4.000000", "3.000000")),
          ("S05N", "S", "MF02", "N", ("2.600000", "3.000000", "2.800000", "3.600000")),
          ("S02H", "P", "MF03", "X", ("3.000000", "3.000000", "3.000000", "2.500000")),
          ("S03S", "R", "MF01", "H", ("3.500000", "4.000000", "3.000000", "4.500000"))),
}
_MSP_WORDS = {"A": "Angry", "H": "Happy", "S": "Sad", "N": "Neutral", "O": "Other",
              "X": "Neutral"}


def make_msp_improv_tree(
    root: str | Path,
    *,
    audio_level: bool = True,
    spelling: str = "Evalution.txt",
    sample_rates: tuple[int, ...] = (48000, 16000),
) -> FixtureCorpus:
    """MSP-IMPROV in miniature: 6 sessions x 2 speakers (F0s, M0s), each with four
    utterances over several scenarios and conditions, consensus lines (some NaN) each followed
    by rater lines (one duplicated), codes A H S N O X, audio under [Audio/]session{N}/ at
    `sample_rates` cycling over sessions. The label file is written as `spelling`."""
    root = Path(root)
    corpus = FixtureCorpus(root)
    audio_root = root / "Audio" if audio_level else root
    lines = []
    for s in range(1, 7):
        sr = sample_rates[(s - 1) % len(sample_rates)]
        for gender, turns in _MSP_TURNS.items():
            speaker = f"{gender}{s:02d}"
            for k, (scenario, condition, turn, code, (a, v, d, n)) in enumerate(turns):
                stem = f"{scenario}-{speaker}-{condition}-{turn}"
                lines.append(f"UTD-IMPROV-{stem}.avi; {code}; A:{a}; V:{v}; D:{d} ; N:{n};")
                rater = (f"rater{s}{k}; {_MSP_WORDS[code]}; Neutral; A:3.000000; "
                         "V:3.000000; D:3.000000; N:3.000000;")
                lines += [rater, rater if k == 1 else rater.replace("rater", "judge"), ""]
                utt = f"MSP-IMPROV-{stem}"
                seconds = 0.15 + 0.01 * k
                wav = audio_root / f"session{s}" / scenario / condition / f"{utt}.wav"
                _write_wav(wav, seconds, sr, corpus)
                corpus.utterances[utt] = {
                    "label": code,
                    "speaker": speaker,
                    "gender": gender,
                    "session": s,
                    "scenario": scenario,
                    "condition": condition,
                    "duration": seconds,
                    "sample_rate": sr,
                    "path": str(wav.resolve()),
                    "attributes": {
                        key: None if val == "NaN" else float(val)
                        for key, val in zip(("arousal", "valence", "dominance", "naturalness"),
                                            (a, v, d, n))
                    },
                }
    _write(root / spelling, "\n".join(lines) + "\n", corpus)
    return corpus


# ---------------------------------------------------------------------------------------------
# EmotionTalk

# Spellings as they may appear in `emotion_result`, and the canonical label of each.
ET_SPELLINGS = (
    ("Neutral", "neutral"), ("happy", "happy"), ("sad", "sad"), ("Anger", "angry"),
    ("surprise", "surprised"), ("disgust", "disgusted"), ("fear", "fearful"),
    ("neutral", "neutral"), ("Happiness", "happy"), ("sadness", "sad"), ("angry", "angry"),
    ("Surprised", "surprised"), ("Disgusted", "disgusted"), ("fearfull", "fearful"),
    ("FEARFUL", "fearful"),
)
ET_SPLIT = {1: "validation", 12: "validation", 3: "test", 15: "test"}


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tf.addfile(info, io.BytesIO(data))


def make_emotiontalk_tars(
    root: str | Path, *, audio_ext: str = "wav", shards: int = 2, sample_rate: int = 44100
) -> FixtureCorpus:
    """EmotionTalk in miniature as WebDataset shards under `data/audio/*.tar`: 15 groups x
    2 speakers x 2 utterances; each sample is `<key>.json` + `<key>.<audio_ext>` (WAV bytes
    whatever the extension), key = the file_name path without extension. Speaker ids recur
    across groups. Decoy shards of the other modalities (data/Text, data/Multimodal) carry
    different labels."""
    root = Path(root)
    corpus = FixtureCorpus(root)
    samples: list[tuple[str, dict[str, Any], bytes]] = []
    n = 0
    for group in range(1, 16):
        for slot, speaker in enumerate((group % 7 + 1, (group + 3) % 7 + 1)):
            for u in range(1, 3):
                raw, label = ET_SPELLINGS[n % len(ET_SPELLINGS)]
                n += 1
                utt = f"G{group:05d}_01_{speaker:02d}_{u:03d}"
                key = f"G{group:05d}/G{group:05d}_01/G{group:05d}_01_{speaker:02d}/{utt}"
                meta = {
                    "data": [
                        {"emotion": raw, "Confidence_degree": 4, "Continuous_label": 0.5},
                        {"emotion": "neutral", "Confidence_degree": 2, "Continuous_label": 0.1},
                        {"emotion": raw, "Confidence_degree": 5, "Continuous_label": 0.7},
                    ],
                    "emotion_result": raw,
                    "speaker_id": speaker,
                    "content": f"第{n}句话。",
                    "file_name": f"{key}.mp4",
                    "caption": "A person speaks.",
                }
                seconds = 0.1 + 0.01 * u + 0.005 * slot
                samples.append((key, meta, wav_bytes(seconds, sample_rate)))
                corpus.utterances[utt] = {
                    "label": label,
                    "raw_label": raw,
                    "speaker": f"G{group:02d}_S{speaker:02d}",
                    "speaker_id": speaker,
                    "group": group,
                    "split": ET_SPLIT.get(group, "train"),
                    "sentence": meta["content"],
                    "duration": seconds,
                    "sample_rate": sample_rate,
                }
    audio_dir = root / "data" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(samples) // shards)
    for i in range(shards):
        shard = audio_dir / f"audio-{i:06d}.tar"
        with tarfile.open(shard, "w") as tf:
            for key, meta, audio in samples[i * per_shard:(i + 1) * per_shard]:
                _tar_add(tf, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
                _tar_add(tf, f"{key}.{audio_ext}", audio)
                corpus.utterances[key.rsplit("/", 1)[1]]["path"] = (
                    f"{shard.resolve()}::{key}.{audio_ext}"
                )
        corpus.files.append(shard)
    for modality in ("Text", "Multimodal"):
        shard = root / "data" / modality / f"{modality.lower()}-000000.tar"
        shard.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(shard, "w") as tf:
            for key, meta, _ in samples:
                other = {**meta, "emotion_result": "angry", "Continuous label_result": 0.9}
                _tar_add(tf, f"{key}.json", json.dumps(other).encode())
        corpus.files.append(shard)
    return corpus


def extract_tars(corpus: FixtureCorpus, dest: str | Path) -> FixtureCorpus:
    """The same EmotionTalk fixture as an extracted tree `dest/data/audio/...` (what
    `tar -xf` of each audio shard gives); expected paths point at the extracted files."""
    dest = Path(dest)
    out = FixtureCorpus(dest, {u: dict(f) for u, f in corpus.utterances.items()})
    audio_dir = dest / "data" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for shard in sorted((corpus.root / "data" / "audio").glob("*.tar")):
        with tarfile.open(shard) as tf:
            tf.extractall(audio_dir, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                        else {}))
    for f in out.utterances.values():
        f["path"] = str((audio_dir / f["path"].split("::", 1)[1]).resolve())
    out.files = sorted(p for p in audio_dir.rglob("*") if p.is_file())
    return out


# ---------------------------------------------------------------------------------------------
# EmoBox

EMOBOX_TOY_MAP = {"ang": "Angry", "hap": "Happy", "exc": "Happy", "neu": "Neutral",
                  "sad": "Sad"}


def make_emobox_corpus(
    data_root: str | Path,
    audio_root: str | Path | None = None,
    *,
    name: str = "toy",
    speakers: int = 6,
    per_speaker: int = 5,
    folds: int = 3,
    sample_rate: int = 16000,
    declared_rate: int = 16000,
) -> FixtureCorpus:
    """An EmoBox corpus folder `data_root/<name>/` in EmoBox's layout: `<name>.jsonl`,
    `label_map.json` (exc and hap -> Happy), `data.seg.wrd.stm`, `corpus.cfg` declaring
    `declared_rate`, and `fold_<k>/` lists holding out speakers k, k+folds, ... With
    `audio_root`, distinct tones are written at `audio_root/downloads/<name>/<spk>/<id>.wav`
    (the `wav` of each record). Expected fields: label, class, speaker, fold, path."""
    root = Path(data_root) / name
    corpus = FixtureCorpus(root)
    codes = list(EMOBOX_TOY_MAP)
    lines, stm = [], []
    fold_of: dict[str, int] = {}
    n = 0
    for s in range(speakers):
        spk = f"S{s + 1:02d}"
        for u in range(per_speaker):
            code = codes[(s + u) % len(codes)]
            key = f"{name}-{spk}_{u:03d}_{code}"
            wav = f"downloads/{name}/{spk}/{key}.wav"
            seconds = 0.1 + 0.002 * u
            lines.append(json.dumps({
                "key": key, "dataset": name, "wav": wav, "type": "raw",
                "sample_rate": sample_rate, "num_frame": float(round(seconds * sample_rate)),
                "task": "category", "length": seconds, "emo": code, "channel": 1}))
            stm.append(f"{key} 1 {spk} 0 {seconds} <id={key},lang=en,spk={spk},emotion={code}> "
                       f"{code}")
            fold_of[key] = s % folds + 1
            corpus.utterances[key] = {"label": code, "class": EMOBOX_TOY_MAP[code],
                                      "speaker": spk, "fold": str(s % folds + 1), "wav": wav}
            if audio_root is not None:
                path = Path(audio_root) / wav
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone(seconds, sample_rate, 150.0 + 7.0 * n), sample_rate,
                         subtype="PCM_16")
                corpus.utterances[key]["path"] = str(path.resolve())
                corpus.files.append(path)
            n += 1
    _write(root / f"{name}.jsonl", "\n".join(lines) + "\n", corpus)
    _write(root / "label_map.json", json.dumps(EMOBOX_TOY_MAP, indent=4), corpus)
    _write(root / "data.seg.wrd.stm", "\n".join(stm) + "\n", corpus)
    _write(root / "corpus.cfg", f"[Corpus]\nname = {name}\n\n[AudioSpec]\nformat = wav\n"
           f"samplingrate = {declared_rate}\nbitspersample = 16\nnumchannels = 1\n", corpus)
    for k in range(1, folds + 1):
        for part in ("train", "test"):
            chosen = [ln for ln in lines
                      if (fold_of[json.loads(ln)["key"]] == k) == (part == "test")]
            _write(root / f"fold_{k}" / f"{name}_{part}_fold_{k}.jsonl",
                   "\n".join(chosen) + "\n", corpus)
    return corpus


def make_emobox_audio(corpus_dir: str | Path, audio_root: str | Path, *,
                      seconds: float = 0.02, sample_rate: int = 16000) -> int:
    """Tiny distinct tones at `audio_root/<wav>` for every record of an EmoBox corpus list
    (`corpus_dir/<name>.jsonl`), e.g. EmoBox's own IEMOCAP metadata; returns how many."""
    corpus_dir = Path(corpus_dir)
    n = 0
    made: set[Path] = set()
    with open(corpus_dir / f"{corpus_dir.name}.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            path = Path(audio_root) / json.loads(line)["wav"]
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            samples = np.round(tone(seconds, sample_rate, 100.0 + 0.5 * n) * 32767)
            with wave.open(str(path), "wb") as w:  # the stdlib writer: fast for many files
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(sample_rate)
                w.writeframes(samples.astype("<i2").tobytes())
            n += 1
    return n
