"""What each supported corpus declares: raw label codes, tasks, fold protocol, published counts.

Counts are from ../shared/docs/corpora.md (IEMOCAP from the corpus, MSP-IMPROV and EmotionTalk
derived from their papers and baseline code). A loaded corpus is compared with them by
`emoprobe.data.counts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emoprobe.data.tasks import Task, identity_task
from emoprobe.errors import ManifestError


@dataclass(frozen=True)
class Expected:
    """Published counts of one task: total, per class, per held-out fold, per fold and class."""

    total: int
    labels: Mapping[str, int] | None = None
    folds: Mapping[str, int] | None = None
    fold_labels: Mapping[str, Mapping[str, int]] | None = None
    raw_labels: Mapping[str, int] | None = None


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus's declarations. `fold_key` names the record field that defines folds:
    `session`/`fold` give leave-one-value-out folds, `split` gives the official split."""

    name: str
    title: str
    tasks: Mapping[str, Task]
    default_task: str
    fold_key: str
    label_codes: tuple[str, ...] | None = None
    expected: Mapping[str, Expected] = field(default_factory=dict)
    notes: str = ""
    targets: Mapping[str, str] = field(default_factory=dict)  # regression task -> record field

    @property
    def protocol(self) -> str:
        if self.fold_key == "folds":
            return "listed-folds"
        return "official-split" if self.fold_key == "split" else f"leave-one-{self.fold_key}-out"

    def task(self, name: str | None) -> Task:
        """Look a task up by name (None = the default), listing the defined ones if absent."""
        key = name or self.default_task
        if key not in self.tasks:
            also = f"; regression: {', '.join(self.targets)}" if self.targets else ""
            raise ManifestError(
                f"corpus {self.name!r} defines no task {key!r}; defined: {', '.join(self.tasks)}"
                f"{also} (or any numeric field of the manifest)"
            )
        return self.tasks[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "tasks": {k: t.to_dict() for k, t in self.tasks.items()},
            "targets": dict(self.targets),
            "default_task": self.default_task,
            "fold_key": self.fold_key,
            "protocol": self.protocol,
        }


_FOUR = ("neu", "hap", "ang", "sad")
_VAD = {"valence": "valence", "arousal": "arousal", "dominance": "dominance"}

IEMOCAP = CorpusSpec(
    name="iemocap",
    title="IEMOCAP (IEMOCAP_full_release)",
    tasks={
        "4class": Task(
            "4class", _FOUR, {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
        )
    },
    default_task="4class",
    fold_key="session",
    label_codes=("neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"),
    expected={
        "4class": Expected(
            total=5531,
            labels={"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084},
            folds={"1": 1085, "2": 1023, "3": 1151, "4": 1031, "5": 1241},
            raw_labels={"hap": 595, "exc": 1041},
        )
    },
    notes="5 x leave-one-session-out; exc merged into hap.",
    targets=_VAD,
)

MSP_IMPROV = CorpusSpec(
    name="msp_improv",
    title="MSP-IMPROV",
    tasks={"4class": Task("4class", _FOUR, {"N": "neu", "H": "hap", "A": "ang", "S": "sad"})},
    default_task="4class",
    fold_key="session",
    label_codes=("A", "H", "S", "N", "O", "X"),
    expected={
        "4class": Expected(
            total=7798, labels={"neu": 3477, "hap": 2644, "ang": 792, "sad": 885}
        )
    },
    notes="6 x leave-one-session-out; O (other) and X (no agreement) dropped.",
    targets=_VAD,
)

EMOTIONTALK_LABELS = ("neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful")
_ET7 = ("neu", "ang", "hap", "sur", "sad", "dis", "fea")
_ET_MAP = {
    "neutral": "neu",
    "angry": "ang",
    "happy": "hap",
    "surprised": "sur",
    "sad": "sad",
    "disgusted": "dis",
    "fearful": "fea",
}
_ET_SPLITS = {
    "train": {"neu": 7568, "ang": 3057, "hap": 1720, "sur": 1087, "sad": 898, "dis": 612,
              "fea": 471},
    "validation": {"neu": 866, "ang": 418, "hap": 208, "sur": 133, "sad": 118, "dis": 69,
                   "fea": 96},
    "test": {"neu": 944, "ang": 345, "hap": 177, "sur": 143, "sad": 94, "dis": 137, "fea": 89},
}


def _sum_labels(splits: Mapping[str, Mapping[str, int]], keep: Sequence[str]) -> dict[str, int]:
    return {c: sum(s[c] for s in splits.values()) for c in keep}


EMOTIONTALK = CorpusSpec(
    name="emotiontalk",
    title="EmotionTalk (audio-modality labels)",
    tasks={
        "7class": Task("7class", _ET7, _ET_MAP),
        "4class": Task(
            "4class", _FOUR, {k: v for k, v in _ET_MAP.items() if v in _FOUR}
        ),
    },
    default_task="7class",
    fold_key="split",
    label_codes=EMOTIONTALK_LABELS,
    expected={
        "7class": Expected(
            total=19250,
            labels=_sum_labels(_ET_SPLITS, _ET7),
            folds={k: sum(v.values()) for k, v in _ET_SPLITS.items()},
            fold_labels=_ET_SPLITS,
        ),
        "4class": Expected(
            total=13243 + 1610 + 1560,
            labels=_sum_labels(_ET_SPLITS, _FOUR),
            folds={"train": 13243, "validation": 1610, "test": 1560},
            fold_labels={k: {c: v[c] for c in _FOUR} for k, v in _ET_SPLITS.items()},
        ),
    },
    notes="Official split by group; labels are the audio-modality emotion_result.",
    targets={"continuous": "continuous"},
)

CORPORA: dict[str, CorpusSpec] = {c.name: c for c in (IEMOCAP, MSP_IMPROV, EMOTIONTALK)}


def get_corpus(name: str) -> CorpusSpec:
    """A registered corpus by name, listing the known ones when absent."""
    if name not in CORPORA:
        raise ManifestError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPORA[name]


def corpus_for_records(records: Sequence[Mapping[str, Any]]) -> CorpusSpec:
    """The spec of a manifest's corpus: a registered one, or one inferred for a generic corpus
    (task `classes` when records carry a `class`, else `all`, which keeps every label; folds
    from listed `folds`, else `fold`, else `session`, else `split`)."""
    names = {r.get("corpus") for r in records}
    if len(names) > 1:
        raise ManifestError(f"manifest mixes corpora {sorted(map(str, names))}")
    name = names.pop() if names else None
    if name in CORPORA:
        return CORPORA[name]
    for key in ("folds", "fold", "session", "split"):
        if all(r.get(key) not in (None, "") for r in records):
            break
    else:
        raise ManifestError(
            f"corpus {name!r}: records carry no complete fold, session or split field; "
            "prepare it with `emoprobe prepare manifest --folds K` to make speaker folds"
        )
    labels = [r["label"] for r in records]
    task = class_task(records) or identity_task(labels)
    return CorpusSpec(
        name=name or "manifest",
        title=name or "manifest",
        tasks={task.name: task},
        default_task=task.name,
        fold_key=key,
    )


def corpus_for_folds(records: Sequence[Mapping[str, Any]], folds_given: bool) -> CorpusSpec:
    """`corpus_for_records`; but when the folds are given separately (`--folds` of probe and
    audit) records that define no folds of their own, or mix corpora, still get a generic
    spec (named by their one `corpus`, else `manifest`)."""
    try:
        return corpus_for_records(records)
    except ManifestError:
        if not folds_given:
            raise
    names = {r.get("corpus") for r in records}
    name = names.pop() if len(names) == 1 else None
    name = str(name or "manifest")
    task = class_task(records) or identity_task([str(r["label"]) for r in records])
    return CorpusSpec(name, name, {task.name: task}, task.name, fold_key="fold")


def class_task(records: Sequence[Mapping[str, Any]]) -> Task | None:
    """The task `classes` of records that carry their class (`class`, e.g. from EmoBox's
    label_map.json): raw label -> class; None when no record has one. A raw label given two
    classes is an error naming both utterances."""
    mapping: dict[str, str] = {}
    first: dict[str, str] = {}
    for r in records:
        cls = r.get("class")
        if cls in (None, ""):
            continue
        label = r["label"]
        if mapping.setdefault(label, cls) != cls:
            raise ManifestError(
                f"utterances {first[label]!r} and {r['id']!r} give label {label!r} the classes "
                f"{mapping[label]!r} and {cls!r}; expected one class per label"
            )
        first.setdefault(label, r["id"])
    if not mapping:
        return None
    return Task("classes", tuple(sorted(set(mapping.values()))), mapping)
