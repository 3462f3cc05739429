"""EmoBox's corpora (`data/<corpus>/` of the EmoBox repository) -> manifest records.

EmoBox publishes, for each of its 32 corpora, `<corpus>.jsonl` (one record per utterance:
`key`, `wav`, `emo`, `sample_rate`, `length`, `channel`), `label_map.json` (raw code ->
class), `data.seg.wrd.stm` (NIST STM: the speaker of each key), `corpus.cfg` (a declared audio
spec) and `fold_<k>/<corpus>_{train,test}_fold_<k>.jsonl` (and sometimes `_valid_`). One
reader serves all of them: no per-corpus code.

Records: `id` = key, `label` = emo, `class` = the label map's class, `speaker` from the STM,
`corpus` = `emobox-<corpus>`, and EmoBox's folds, written as the simplest field that holds them
exactly: a single fold whose lists cover the corpus is a `split` (train/validation/test); K
folds whose test lists partition the corpus, each train list being the rest, are `fold`
(leave-one-fold-out); anything else keeps the explicit lists in `folds`
(`{"1": "train", "2": "test"}`), and a record is used in a fold only where listed.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emoprobe.data.corpora import CorpusSpec, Expected, corpus_for_records
from emoprobe.data.counts import count_records
from emoprobe.data.folds import _sort_key
from emoprobe.data.manifest import iter_jsonl
from emoprobe.errors import ManifestError

log = logging.getLogger(__name__)

PREFIX = "emobox-"
STM_NAME = "data.seg.wrd.stm"
LABEL_MAP_NAME = "label_map.json"
CFG_NAME = "corpus.cfg"
PARTS = {"train": "train", "valid": "validation", "test": "test"}
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
_SHOWN = 10


@dataclass(frozen=True)
class PathRule:
    """One way of turning EmoBox's `wav` into a file under the user's audio folder."""

    name: str
    apply: Callable[[str], str | None]


def _strip(prefix_parts: int) -> Callable[[str], str | None]:
    def rule(wav: str) -> str | None:
        parts = Path(wav).parts
        if len(parts) <= prefix_parts or parts[0] != "downloads":
            return None
        return str(Path(*parts[prefix_parts:]))
    return rule


PATH_RULES = (
    PathRule("DIR/<wav>", lambda wav: wav),
    PathRule("DIR/<wav without downloads/>", _strip(1)),
    PathRule("DIR/<wav without downloads/<corpus>/>", _strip(2)),
)


@dataclass
class EmoboxCorpus:
    """One EmoBox corpus folder as read: its utterances (EmoBox's records with their line
    numbers), label map, speakers, fold lists and declared audio spec."""

    name: str
    root: Path
    entries: dict[str, tuple[int, dict[str, Any]]]
    label_map: dict[str, str]
    speakers: dict[str, str]
    folds: dict[str, dict[str, list[str]]]  # fold -> part (train/validation/test) -> keys
    declared: dict[str, int] = field(default_factory=dict)
    stm_extra: int = 0  # STM keys that are not in the corpus list

    @property
    def jsonl(self) -> Path:
        return self.root / f"{self.name}.jsonl"


def find_corpora(data_root: str | Path) -> list[Path]:
    """The EmoBox corpus folders under `data_root` (EmoBox's `data/`): those holding
    `<name>/<name>.jsonl`."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise ManifestError(f"{root}: no such folder (expected EmoBox's data/ folder)")
    found = sorted(p for p in root.iterdir() if (p / f"{p.name}.jsonl").is_file())
    if not found:
        raise ManifestError(
            f"{root}: holds no EmoBox corpus (a folder <corpus>/ with <corpus>.jsonl); "
            "expected EmoBox's data/ folder"
        )
    return found


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ManifestError(f"{path}: no such file ({what})")
    return path


def read_emobox_label_map(path: Path) -> dict[str, str]:
    """label_map.json: an object of raw code -> class name."""
    try:
        data = json.loads(_need_file(path, "EmoBox's raw code -> class map").read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not data or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ManifestError(f"{path}: expected a non-empty JSON object of code -> class name")
    return data


def read_stm(path: Path) -> dict[str, str]:
    """Speaker of every key in a NIST STM file (`key channel speaker start end ...`)."""
    speakers: dict[str, str] = {}
    _need_file(path, "NIST STM file giving each key's speaker")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(";;"):
                continue
            fields = line.split()
            where = f"{path}:{lineno}"
            if len(fields) < 5:
                raise ManifestError(
                    f"{where}: malformed STM line ({len(fields)} fields); expected "
                    "`key channel speaker start end [<attributes>] [label]`"
                )
            key, speaker = fields[0], fields[2]
            try:
                float(fields[3]), float(fields[4])
            except ValueError:
                raise ManifestError(
                    f"{where}: malformed STM line: start {fields[3]!r} and end {fields[4]!r} "
                    "must be numbers"
                ) from None
            if speakers.setdefault(key, speaker) != speaker:
                raise ManifestError(
                    f"{where}: key {key!r} has speaker {speaker!r} here and "
                    f"{speakers[key]!r} on an earlier line"
                )
    return speakers


def read_declared_spec(path: Path) -> dict[str, int]:
    """corpus.cfg's [AudioSpec]: samplingrate, numchannels, bitspersample (those present)."""
    if not path.is_file():
        return {}
    cfg = configparser.ConfigParser(interpolation=None)
    try:
        cfg.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise ManifestError(f"{path}: malformed corpus.cfg ({exc})") from None
    if not cfg.has_section("AudioSpec"):
        return {}
    out = {}
    for key, name in (("samplingrate", "sample_rate"), ("numchannels", "channels"),
                      ("bitspersample", "bits")):
        value = cfg.get("AudioSpec", key, fallback="").strip()
        if value.isdigit():
            out[name] = int(value)
    return out


def _read_entries(path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    entries: dict[str, tuple[int, dict[str, Any]]] = {}
    _need_file(path, "EmoBox's list of the corpus's utterances")
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected a JSON object, found {type(obj).__name__}")
        missing = [k for k in ("key", "wav", "emo") if not isinstance(obj.get(k), str)
                   or not obj[k]]
        if missing:
            raise ManifestError(
                f"{where}: record lacks {', '.join(missing)} (expected strings key, wav, emo)"
            )
        if "start_time" in obj or "end_time" in obj:
            raise ManifestError(
                f"{where}: key {obj['key']!r} is a segment (start_time/end_time) of a longer "
                "file; segments are not supported, expected one audio file per utterance"
            )
        if obj["key"] in entries:
            raise ManifestError(
                f"{where}: duplicate key {obj['key']!r} (first on line {entries[obj['key']][0]})"
            )
        entries[obj["key"]] = (lineno, obj)
    if not entries:
        raise ManifestError(f"{path}: the corpus list holds no records")
    return entries


def _read_fold_lists(root: Path, name: str, entries: Mapping[str, Any]
                     ) -> dict[str, dict[str, list[str]]]:
    dirs = sorted((p for p in root.iterdir() if p.is_dir() and _FOLD_DIR.match(p.name)),
                  key=lambda p: int(_FOLD_DIR.match(p.name).group(1)))  # type: ignore[union-attr]
    if not dirs:
        raise ManifestError(f"{root}: no fold_<k>/ folder (expected EmoBox's fold lists)")
    folds: dict[str, dict[str, list[str]]] = {}
    for d in dirs:
        k = _FOLD_DIR.match(d.name).group(1)  # type: ignore[union-attr]
        parts: dict[str, list[str]] = {}
        for part, ours in PARTS.items():
            path = d / f"{name}_{part}_fold_{k}.jsonl"
            if part == "valid" and not path.is_file():
                continue
            _need_file(path, f"EmoBox's {part} list of fold {k}")
            keys: list[str] = []
            for lineno, obj in iter_jsonl(path):
                key = obj.get("key") if isinstance(obj, dict) else None
                if not isinstance(key, str):
                    raise ManifestError(f"{path}:{lineno}: expected an object with a `key`")
                if key not in entries:
                    raise ManifestError(
                        f"{path}:{lineno}: key {key!r} is not in the corpus list {name}.jsonl"
                    )
                keys.append(key)
            parts[ours] = keys
        folds[k] = parts
    return folds


def read_emobox(root: str | Path) -> EmoboxCorpus:
    """Read one EmoBox corpus folder (`data/<corpus>`), checking every file it uses; each
    error names the file and line."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ManifestError(f"{root}: no such folder (expected EmoBox's data/<corpus>)")
    name = root.name
    entries = _read_entries(root / f"{name}.jsonl")
    label_map = read_emobox_label_map(root / LABEL_MAP_NAME)
    for key, (lineno, obj) in entries.items():
        if obj["emo"] not in label_map:
            raise ManifestError(
                f"{root / f'{name}.jsonl'}:{lineno}: key {key!r} has emo {obj['emo']!r}, which "
                f"{root / LABEL_MAP_NAME} does not map (it maps: {', '.join(label_map)})"
            )
    speakers = read_stm(root / STM_NAME)
    folds = _read_fold_lists(root, name, entries)
    return EmoboxCorpus(
        name=name, root=root, entries=entries, label_map=label_map,
        speakers={k: v for k, v in speakers.items() if k in entries},
        folds=folds, declared=read_declared_spec(root / CFG_NAME),
        stm_extra=sum(k not in entries for k in speakers),
    )


def fold_fields(corpus: EmoboxCorpus) -> tuple[str, dict[str, Any]]:
    """How EmoBox's folds are written into records: (field, value of each key). `split` for
    one fold covering the corpus, `fold` for test lists that partition it with each train list
    the rest, else `folds` with the explicit lists."""
    keys = list(corpus.entries)
    everything = set(keys)
    tested: dict[str, list[str]] = {}
    complement = True
    for k, parts in corpus.folds.items():
        listed = [key for part in parts.values() for key in part]
        if len(listed) != len(set(listed)) or set(listed) != everything:
            complement = False
        for key in parts["test"]:
            tested.setdefault(key, []).append(k)
    if complement and len(corpus.folds) == 1:
        (parts,) = corpus.folds.values()
        return "split", {key: part for part, ks in parts.items() for key in ks}
    partition = all(len(tested.get(key, [])) == 1 for key in keys)
    if complement and partition and not any("validation" in p for p in corpus.folds.values()):
        return "fold", {key: tested[key][0] for key in keys}
    explicit: dict[str, dict[str, str]] = {key: {} for key in keys}
    for k, parts in corpus.folds.items():
        for part, ks in parts.items():
            for key in ks:
                if explicit[key].setdefault(k, part) != part:
                    raise ManifestError(
                        f"{corpus.root}/fold_{k}: key {key!r} is in both the "
                        f"{explicit[key][k]} and the {part} list"
                    )
    return "folds", explicit


def describe_folds(corpus: EmoboxCorpus, fold_field: str) -> str:
    """One line on EmoBox's folds and how they were written."""
    sizes = "; ".join(
        f"fold {k}: " + ", ".join(f"{part} {len(ks)}" for part, ks in parts.items())
        for k, parts in sorted(corpus.folds.items(), key=lambda kv: _sort_key(kv[0]))
    )
    how = {
        "split": "one fold covering the corpus -> `split`",
        "fold": "test lists partition the corpus, train lists are the rest -> `fold`",
        "folds": "train lists are not the rest of their test lists -> explicit lists in `folds`",
    }[fold_field]
    return f"folds: {len(corpus.folds)} from EmoBox ({how}); {sizes}"


@dataclass
class ResolvedAudio:
    """Where each key's audio was found (None: nowhere) and how many paths each rule gave."""

    paths: dict[str, str | None]
    rules: Counter[str]

    @property
    def unresolved(self) -> list[str]:
        return [k for k, p in self.paths.items() if p is None]


def resolve_audio(corpus: EmoboxCorpus, audio_root: str | Path) -> ResolvedAudio:
    """Find every `wav` under `audio_root`: DIR/<wav>, else without a leading `downloads/`,
    else without `downloads/<corpus>/`; the first rule that names an existing file wins."""
    base = Path(audio_root).expanduser().resolve()
    if not base.is_dir():
        raise ManifestError(f"{base}: no such audio folder (--audio-root)")
    paths: dict[str, str | None] = {}
    rules: Counter[str] = Counter()
    for key, (_, obj) in corpus.entries.items():
        paths[key] = None
        for rule in PATH_RULES:
            rel = rule.apply(obj["wav"])
            if rel is not None and os.path.isfile(base / rel):
                paths[key] = os.path.abspath(base / rel)
                rules[rule.name] += 1
                break
    return ResolvedAudio(paths, rules)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def emobox_records(corpus: EmoboxCorpus, paths: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """Manifest records of every key of the corpus list (in its order); keys without a path
    get `path` None (the caller drops or rejects them)."""
    fold_field, value_of = fold_fields(corpus)
    records = []
    for key, (_, obj) in corpus.entries.items():
        sr, length, channels = (_number(obj.get(k)) for k in ("sample_rate", "length", "channel"))
        rec: dict[str, Any] = {
            "id": key,
            "path": paths.get(key),
            "label": obj["emo"],
            "class": corpus.label_map[obj["emo"]],
            "speaker": corpus.speakers.get(key),
            "corpus": PREFIX + corpus.name,
            fold_field: value_of[key],
            "emobox_wav": obj["wav"],
            "declared_sample_rate": None if sr is None else int(sr),
            "declared_channels": None if channels is None else int(channels),
            "declared_duration": length,
        }
        records.append(rec)
    return records


def expected_counts(records: Sequence[Mapping[str, Any]], spec: CorpusSpec) -> dict[str, Expected]:
    """EmoBox's own counts (from its lists, before any audio is looked for), per task."""
    counts = count_records(records, spec)
    return {
        name: Expected(total=tc.total, labels=tc.labels, folds=tc.folds,
                       fold_labels=tc.fold_labels, raw_labels=tc.raw_labels)
        for name, tc in counts.tasks.items()
    }


@dataclass
class EmoboxLoad:
    """What `load_emobox` found: the records to write, the corpus spec (with EmoBox's counts
    as the published ones), the corpus as read and where its audio was found."""

    records: list[dict[str, Any]]
    spec: CorpusSpec
    corpus: EmoboxCorpus
    audio: ResolvedAudio
    notes: list[str]


def load_emobox(
    root: str | Path,
    *,
    audio_root: str | Path,
    allow_subset: bool = False,
    echo: Callable[[str], None] | None = None,
) -> EmoboxLoad:
    """Read an EmoBox corpus folder and find its audio under `audio_root`. Unresolved audio is
    an error listing the files, or with `allow_subset` a warning (those utterances are left
    out, and counted against EmoBox's lists)."""
    say = echo or (lambda _: None)
    corpus = read_emobox(root)
    fold_field, _ = fold_fields(corpus)
    audio = resolve_audio(corpus, audio_root)
    all_records = emobox_records(corpus, audio.paths)
    spec = corpus_for_records(all_records)
    spec = replace(spec, title=f"EmoBox {corpus.name}",
                   expected=expected_counts(all_records, spec),
                   notes=f"EmoBox folds from {corpus.root}")
    notes = [f"EmoBox corpus {corpus.name}: {len(corpus.entries)} keys, "
             f"{len(set(corpus.label_map.values()))} classes from {LABEL_MAP_NAME} "
             f"({', '.join(f'{k}->{v}' for k, v in corpus.label_map.items())})",
             describe_folds(corpus, fold_field)]
    no_speaker = sum(r["speaker"] is None for r in all_records)
    notes.append(f"speakers: {len(set(corpus.speakers.values()))} from {STM_NAME}"
                 + (f"; {no_speaker} key(s) have no STM line" if no_speaker else "")
                 + (f"; {corpus.stm_extra} STM key(s) not in the corpus list ignored"
                    if corpus.stm_extra else ""))
    resolved = ", ".join(f"{n} via {rule}" for rule, n in audio.rules.items()) or "none"
    notes.append(f"audio paths under {Path(audio_root).expanduser().resolve()}: {resolved}")
    for line in notes:
        say(line)
    missing = audio.unresolved
    if missing:
        listed = "\n  ".join(f"{k}: {corpus.entries[k][1]['wav']}" for k in missing[:_SHOWN])
        more = f"\n  ... and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        tried = ", ".join(r.name for r in PATH_RULES)
        message = (f"{len(missing)} of {len(corpus.entries)} audio file(s) not found under "
                   f"{audio_root} (tried {tried}):\n  {listed}{more}")
        if not allow_subset:
            raise ManifestError(message + "\n(--allow-subset prepares the rest; nothing written)")
        say(f"warning: {message}\nleft out of the manifest (--allow-subset)")
    records = [r for r in all_records if r["path"] is not None]
    if not records:
        raise ManifestError(f"{corpus.root}: no utterance has its audio under {audio_root}")
    return EmoboxLoad(records, spec, corpus, audio, notes)


def audio_spec_differences(records: Sequence[Mapping[str, Any]],
                           declared: Mapping[str, int]) -> list[str]:
    """Differences between the audio as read (headers) and as declared: corpus.cfg's spec
    (`declared`) and each record's EmoBox fields; one line each, with counts."""
    out = []
    for name, cfg_key, rec_key in (("sample rate", "sample_rate", "declared_sample_rate"),
                                   ("channels", "channels", "declared_channels")):
        found = Counter(r.get(cfg_key) for r in records if r.get(cfg_key) is not None)
        if cfg_key in declared and set(found) - {declared[cfg_key]}:
            shown = ", ".join(f"{v} x{n}" for v, n in sorted(found.items()))
            out.append(f"{name}: {CFG_NAME} says {declared[cfg_key]}, the files have {shown}")
        differ = [r["id"] for r in records if r.get(rec_key) is not None
                  and r.get(cfg_key) is not None and r[rec_key] != r[cfg_key]]
        if differ:
            out.append(f"{name}: {len(differ)} file(s) differ from the corpus list's "
                       f"`{rec_key.removeprefix('declared_')}`, e.g. {', '.join(differ[:5])}")
    return out
