"""The audit: what makes a protocol's numbers untrustworthy, found before a number is printed.

Over the folds the probe would use, it reports speakers in both the training and the test part
of a fold, identical audio under different ids (a hash of the decoded samples) and, from a
feature cache, near-identical embeddings; the same sentence in training and test; classes
missing from a fold; folds with very few utterances; strong class imbalance; utterances without
a speaker; audio that differs from its declared spec. Each finding has a kind, a severity
(`error`, `warning`, `info`), the fold it concerns, a count and examples.

The cheap checks (`CHEAP`: everything but hashing and near-duplicates) need only the manifest;
`prepare --check` and `probe` run them and `protocol.json` stores their findings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from emoprobe.data.corpora import CorpusSpec, corpus_for_folds
from emoprobe.data.emobox import audio_spec_differences
from emoprobe.data.folds import Fold, resolve_folds
from emoprobe.data.headers import default_workers
from emoprobe.data.manifest import read_manifest, split_tar_path
from emoprobe.errors import AudioError, CacheError, ManifestError
from emoprobe.system import atomic_write

log = logging.getLogger(__name__)

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
SPEAKER_OVERLAP = "speaker_overlap"
DUPLICATE_AUDIO = "duplicate_audio"
NEAR_DUPLICATE = "near_duplicate"
SENTENCE_OVERLAP = "sentence_overlap"
MISSING_CLASS = "missing_class"
SMALL_FOLD = "small_fold"
IMBALANCE = "imbalance"
MISSING_SPEAKER = "missing_speaker"
AUDIO_SPEC = "audio_spec"
KINDS = (SPEAKER_OVERLAP, DUPLICATE_AUDIO, NEAR_DUPLICATE, SENTENCE_OVERLAP, MISSING_CLASS,
         SMALL_FOLD, IMBALANCE, MISSING_SPEAKER, AUDIO_SPEC)
# What the leaderboard marks: a result whose protocol has one of these is not comparable.
MARKS = {SPEAKER_OVERLAP: "S", MISSING_CLASS: "C"}
MARK_MEANINGS = {
    "S": "speaker overlap: a fold's test speakers also appear in its training part",
    "C": "missing test class: a fold's test part lacks a class, so per-fold UAR averages "
         "fewer classes",
}
_EXAMPLES = 10


@dataclass(frozen=True)
class AuditSettings:
    """Thresholds of the audit. `min_fold`: a fold part with fewer utterances is small;
    `imbalance`: a test part whose largest class is this many times its smallest is
    imbalanced; `near`: cosine similarity from which two embeddings are near-duplicates."""

    min_fold: int = 20
    imbalance: float = 10.0
    near: float = 0.999


@dataclass
class Finding:
    """One finding: `count` items (speakers, groups, utterances or classes, as `message`
    says) of `kind`, in `fold` (None: the corpus as a whole)."""

    kind: str
    severity: str
    fold: str | None
    count: int
    message: str
    examples: list[Any] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "fold": self.fold,
                "count": self.count, "message": self.message, "examples": self.examples,
                **({"detail": self.detail} if self.detail else {})}

    def __str__(self) -> str:
        where = f"{self.fold}: " if self.fold is not None else ""
        shown = ", ".join(map(_show, self.examples[:_EXAMPLES]))
        more = " ..." if len(self.examples) > _EXAMPLES else ""
        return (f"{self.severity} {self.kind}: {where}{self.message}"
                + (f" (e.g. {shown}{more})" if shown else ""))


def _show(example: Any) -> str:
    if isinstance(example, (list, tuple)):
        return "/".join(map(str, example))
    return str(example)


@dataclass
class AuditReport:
    """Every finding of one audit, with what was audited."""

    corpus: str
    task: str
    protocol: str
    n_utterances: int
    folds: list[str]
    findings: list[Finding]
    checks: list[str]
    notes: list[str] = field(default_factory=list)

    def severity_counts(self) -> dict[str, int]:
        counts = Counter(f.severity for f in self.findings)
        return {s: counts[s] for s in SEVERITIES}

    def failed(self, fail_on: str = ERROR) -> bool:
        """Whether a finding is at least as severe as `fail_on` (`error` or `warning`)."""
        if fail_on not in (ERROR, WARNING):
            raise ManifestError(f"fail_on {fail_on!r}: expected error or warning")
        worst = SEVERITIES[: SEVERITIES.index(fail_on) + 1]
        return any(f.severity in worst for f in self.findings)

    @property
    def marks(self) -> list[str]:
        """Leaderboard marks of this protocol (MARKS): speaker overlap, missing test class."""
        kinds = {f.kind for f in self.findings
                 if f.kind != MISSING_CLASS or f.detail.get("part") == "test"}
        return [m for k, m in MARKS.items() if k in kinds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "summary": {
                "corpus": self.corpus, "task": self.task, "protocol": self.protocol,
                "utterances": self.n_utterances, "folds": self.folds,
                "checks": self.checks, **self.severity_counts(), "marks": self.marks,
                **({"notes": self.notes} if self.notes else {}),
            },
        }

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON (atomically), creating the folder if needed."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(out, json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        """Readable report: a headline, then the findings, most severe first."""
        counts = ", ".join(f"{n} {s}(s)" for s, n in self.severity_counts().items())
        lines = [f"audit of {self.corpus} (task {self.task}, {self.protocol}, "
                 f"{len(self.folds)} fold(s), {self.n_utterances} utterances): {counts}"]
        lines += [f"  {f}" for f in sorted(self.findings,
                                           key=lambda f: SEVERITIES.index(f.severity))]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  checks run: {', '.join(self.checks)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The cheap checks: folds, classes and speakers.

def _training(fold: Fold) -> np.ndarray:
    if fold.validation is None:
        return fold.train
    return np.concatenate([fold.train, fold.validation])


def speaker_overlap(folds: Sequence[Fold], speakers: np.ndarray) -> list[Finding]:
    """Speakers in both the training (train + validation) and the test part of a fold."""
    out = []
    for fold in folds:
        train_spk = set(speakers[_training(fold)].tolist()) - {""}
        test_spk = speakers[fold.test]
        tested = set(test_spk.tolist()) - {""}
        shared = sorted(tested & train_spk)
        if not shared:
            continue
        hit_test = int(np.isin(test_spk, shared).sum())
        hit_train = int(np.isin(speakers[_training(fold)], shared).sum())
        out.append(Finding(
            SPEAKER_OVERLAP, ERROR, fold.name, len(shared),
            f"{len(shared)} of {len(tested)} test speakers also in training; "
            f"{hit_test} of {len(fold.test)} test utterances are theirs",
            shared, {"test_speakers": len(tested), "test_utterances": hit_test,
                     "n_test": len(fold.test), "train_utterances": hit_train}))
    return out


def missing_speakers(ids: Sequence[str], speakers: np.ndarray | None) -> list[Finding]:
    """Utterances without a speaker (`speakers` None: no speaker field, or an incomplete one
    that the caller did not pass)."""
    if speakers is None:
        return [Finding(MISSING_SPEAKER, WARNING, None, len(ids),
                        "no complete speaker field: speaker overlap cannot be checked and a "
                        "speaker-disjoint protocol cannot be guaranteed")]
    missing = [ids[i] for i in np.flatnonzero(speakers == "")]
    if not missing:
        return []
    return [Finding(MISSING_SPEAKER, WARNING, None, len(missing),
                    f"{len(missing)} of {len(ids)} utterances have no speaker; a "
                    "speaker-disjoint protocol cannot be guaranteed", missing[:_EXAMPLES])]


def class_findings(folds: Sequence[Fold], y: np.ndarray, classes: Sequence[str],
                   settings: AuditSettings) -> list[Finding]:
    """Classes missing from a fold part, small fold parts, imbalanced test parts. Without
    `classes` (a regression target in `y`), only the fold sizes are checked."""
    out = []
    k = len(classes)
    for fold in folds:
        parts = {"train": fold.train, "test": fold.test}
        if fold.validation is not None:
            parts["validation"] = fold.validation
        for part, idx in parts.items():
            counts = np.bincount(y[idx], minlength=k) if k else np.zeros(0, dtype=np.int64)
            absent = [classes[j] for j in np.flatnonzero(counts == 0)]
            if absent and len(idx):
                out.append(Finding(
                    MISSING_CLASS, WARNING, fold.name, len(absent),
                    f"the {part} part has no utterance of {len(absent)} class(es)"
                    + ("; per-fold UAR then averages fewer classes" if part == "test" else ""),
                    absent, {"part": part}))
            if len(idx) < settings.min_fold:
                out.append(Finding(
                    SMALL_FOLD, WARNING, fold.name, len(idx),
                    f"the {part} part holds only {len(idx)} utterance(s) "
                    f"(fewer than {settings.min_fold})", [], {"part": part}))
        if not k:
            continue
        counts = np.bincount(y[fold.test], minlength=k)
        present = counts[counts > 0]
        if len(present) > 1 and present.max() >= settings.imbalance * present.min():
            big, small = classes[int(np.argmax(counts))], classes[
                int(np.flatnonzero(counts == present.min())[0])]
            out.append(Finding(
                IMBALANCE, WARNING, fold.name, int(present.max()),
                f"test part: {big} has {int(present.max())} utterances, {small} "
                f"{int(present.min())} (ratio {present.max() / present.min():.1f}, threshold "
                f"{settings.imbalance:g})", [big, small],
                {"part": "test", "counts": dict(zip(classes, counts.tolist()))}))
    return out


_WORDS = re.compile(r"[^\w]+")


def _normalise(sentence: str) -> str:
    return " ".join(_WORDS.sub(" ", sentence.lower()).split())


def sentence_overlap(folds: Sequence[Fold], sentences: Sequence[str | None]) -> list[Finding]:
    """Test utterances whose sentence (case and punctuation ignored) is also in training."""
    norm = np.asarray([_normalise(s) if s else "" for s in sentences], dtype=object)
    if not any(norm):
        return []
    out = []
    for fold in folds:
        train = set(norm[_training(fold)].tolist()) - {""}
        hits = [s for s in norm[fold.test].tolist() if s and s in train]
        if hits:
            common = [s for s, _ in Counter(hits).most_common(_EXAMPLES)]
            out.append(Finding(
                SENTENCE_OVERLAP, INFO, fold.name, len(hits),
                f"{len(hits)} of {len(fold.test)} test utterances say a sentence also in "
                f"training ({len(set(hits))} distinct sentence(s))", common,
                {"sentences": len(set(hits))}))
    return out


def audio_spec(records: Sequence[Mapping[str, Any]],
               declared: Mapping[str, int] | None = None) -> list[Finding]:
    """The audio as read differs from its declared spec (corpus-wide or per record)."""
    lines = audio_spec_differences(records, declared or {})
    return [Finding(AUDIO_SPEC, INFO, None, 1, line + " (audio is resampled on load)")
            for line in lines]


# ---------------------------------------------------------------------------------------------
# The costly checks: audio hashes and embedding similarity.

class DigestStore:
    """Digests of decoded audio kept between runs in a JSONL file (path, size, mtime_ns,
    digest), appended as each file is hashed, so an interrupted hashing pass resumes where it
    stopped. An entry is used only while its file's size and modification time are unchanged;
    a torn last line (a killed run) is ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.known: dict[str, tuple[int, int, str]] = {}
        self.reused = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    e = json.loads(line)
                    self.known[e["path"]] = (int(e["size"]), int(e["mtime_ns"]), e["digest"])
                except (ValueError, KeyError, TypeError):
                    continue

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(split_tar_path(path)[0])
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def get(self, path: str) -> str | None:
        """The stored digest of `path` if its file is unchanged since, else None."""
        entry, stamp = self.known.get(path), self._stamp(path)
        if entry is None or stamp is None or entry[:2] != stamp:
            return None
        self.reused += 1
        return entry[2]

    def add(self, path: str, digest: str, fh: IO[str]) -> None:
        stamp = self._stamp(path)
        if stamp is not None:
            fh.write(json.dumps({"path": path, "size": stamp[0], "mtime_ns": stamp[1],
                                 "digest": digest}) + "\n")
            fh.flush()


def hash_audio(paths: Sequence[str], *, workers: int | None = None, progress: bool = True,
               store: DigestStore | None = None) -> tuple[list[str | None], dict[int, str]]:
    """Digest of every file's decoded samples (None where it cannot be read), each file read
    once, in a thread pool; and the reason of every failure by position. With `store`,
    digests of unchanged files are reused and new ones are appended as they are computed."""
    from emoprobe.data.audio import decoded_digest
    from emoprobe.progress import progress_bar

    failures: dict[int, str] = {}
    digests: list[str | None] = [store.get(p) if store else None for p in paths]
    todo = [i for i, d in enumerate(digests) if d is None]

    def one(i: int) -> str | None:
        try:
            return decoded_digest(paths[i])
        except AudioError as exc:
            failures[i] = str(exc)
            return None

    with contextlib.ExitStack() as stack:
        fh = None
        if store is not None and todo:
            try:
                store.path.parent.mkdir(parents=True, exist_ok=True)
                torn = False
                if store.path.is_file() and store.path.stat().st_size:
                    with open(store.path, "rb") as tail:
                        tail.seek(-1, os.SEEK_END)
                        torn = tail.read(1) != b"\n"
                fh = stack.enter_context(open(store.path, "a", encoding="utf-8"))
                if torn:  # end a killed run's last line before appending
                    fh.write("\n")
            except OSError as exc:
                log.warning("%s: cannot keep audio digests (%s); an interrupted run will "
                            "hash everything again", store.path, exc)
        pool = ThreadPoolExecutor(max_workers=workers or default_workers())
        # On Ctrl-C, files not started are dropped rather than hashed before stopping.
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        results = progress_bar(pool.map(one, todo), total=len(todo), desc="audio hashes",
                               unit="file", disable=not progress, leave=False)
        for i, digest in zip(todo, results):
            digests[i] = digest
            if digest is not None and fh is not None and store is not None:
                store.add(paths[i], digest, fh)
    return digests, failures


def _groups(keys: Sequence[Any]) -> list[np.ndarray]:
    by: dict[Any, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key is not None:
            by[key].append(i)
    return [np.asarray(v) for v in by.values() if len(v) > 1]


def duplicate_findings(groups: Sequence[np.ndarray], folds: Sequence[Fold], ids: Sequence[str],
                       speakers: np.ndarray | None, kind: str = DUPLICATE_AUDIO,
                       what: str = "identical audio") -> list[Finding]:
    """Groups of utterances with the same content: an error in each fold where a group spans
    training and test, a warning for the groups that never do."""
    out = []
    crossing: set[int] = set()
    n = len(ids)
    for fold in folds:
        part = np.zeros(n, dtype=np.int8)
        part[_training(fold)] = 1
        part[fold.test] = 2
        hits = [g for g in range(len(groups))
                if {1, 2} <= set(part[groups[g]].tolist())]
        if hits:
            crossing.update(hits)
            utts = int(sum(len(groups[g]) for g in hits))
            out.append(Finding(
                kind, ERROR if kind == DUPLICATE_AUDIO else WARNING, fold.name, len(hits),
                f"{len(hits)} group(s) of {what} span training and test ({utts} utterances)",
                [[ids[i] for i in groups[g]] for g in hits[:_EXAMPLES]]))
    rest = [g for g in range(len(groups)) if g not in crossing]
    if rest:
        cross_speaker = 0 if speakers is None else sum(
            len(set(speakers[groups[g]].tolist())) > 1 for g in rest)
        out.append(Finding(
            kind, WARNING, None, len(rest),
            f"{len(rest)} group(s) of {what} under different ids ({cross_speaker} under "
            "different speakers), not across a train/test boundary",
            [[ids[i] for i in groups[g]] for g in rest[:_EXAMPLES]],
            {"cross_speaker": cross_speaker}))
    return out


def near_duplicate_pairs(vectors: np.ndarray, threshold: float, block: int = 2048
                         ) -> list[tuple[int, int, float]]:
    """Pairs (i < j) of rows whose cosine similarity is at least `threshold`, blockwise."""
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    pairs = []
    for a in range(0, len(x), block):
        sims = x[a:a + block] @ x[a:].T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i, j = a + r, a + c
            if j > i:
                pairs.append((i, j, float(sims[r, c])))
    return pairs


def cache_vectors(cache: str | Path, ids: Sequence[str], layer: int) -> np.ndarray:
    """Pooled vectors of `layer` for `ids` from a feature cache (rows joined by id); an id the
    cache lacks or did not extract is an error naming it."""
    from emoprobe.cache.store import open_cache

    with open_cache(cache, allow_incomplete=True) as reader:
        row = {u: i for i, u in enumerate(reader.ids)}
        missing = [u for u in ids if u not in row or not reader.usable[row[u]]]
        if missing:
            raise CacheError(
                f"{cache}: {len(missing)} utterance(s) of the manifest have no vector in the "
                f"cache, e.g. {missing[:5]}; expected a cache extracted from this manifest")
        data = reader.layer(layer)
        return np.asarray(data[np.asarray([row[u] for u in ids], dtype=np.int64)])


# ---------------------------------------------------------------------------------------------
# The audit.

CHEAP = ("speakers", "classes", "folds", "sentences", "audio spec")


def audit_folds(
    ids: Sequence[str],
    y: np.ndarray,
    classes: Sequence[str],
    folds: Sequence[Fold],
    *,
    speakers: Sequence[str | None] | None = None,
    sentences: Sequence[str | None] | None = None,
    settings: AuditSettings | None = None,
) -> list[Finding]:
    """The cheap checks over given folds (indices into `ids`): what `probe` runs on exactly
    the folds it fits."""
    settings = settings or AuditSettings()
    spk = None if speakers is None else np.asarray(
        [str(s) if s not in (None, "") else "" for s in speakers], dtype=object)
    out = []
    if spk is not None:
        out += speaker_overlap(folds, spk)
    out += missing_speakers(ids, None if spk is None or not (spk != "").any() else spk)
    out += class_findings(folds, np.asarray(y, dtype=np.int64) if classes else np.asarray(y),
                          classes, settings)
    if sentences is not None:
        out += sentence_overlap(folds, sentences)
    return out


def audit_records(
    records: Sequence[Mapping[str, Any]],
    *,
    spec: CorpusSpec | None = None,
    task: str | None = None,
    folds: str | None = None,
    hash_audio_files: bool = False,
    digest_store: str | Path | None = None,
    cache: str | Path | None = None,
    layer: int = -1,
    declared: Mapping[str, int] | None = None,
    settings: AuditSettings | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> AuditReport:
    """Audit manifest records over the folds the probe would use: the utterances of `task`
    (default: the corpus's) and the folds `folds` names, resolved as `emoprobe probe --folds`
    resolves them (`emoprobe.data.folds.resolve_folds`; None: the corpus's protocol).
    `hash_audio_files` hashes every file's samples (`digest_store`: a JSONL file that keeps
    the digests, so an interrupted run resumes); `cache` adds near-duplicate embeddings of
    `layer`; `declared` is a corpus-wide audio spec (e.g. EmoBox's corpus.cfg)."""
    settings = settings or AuditSettings()
    spec = spec or corpus_for_folds(records, folds is not None)
    the_task = spec.task(task)
    keep, y = the_task.apply([str(r["label"]) for r in records])
    kept = [records[i] for i in keep]
    if not kept:
        raise ManifestError(f"{spec.name}: no utterance carries a label of task "
                            f"{the_task.name!r}")
    protocol = resolve_folds(kept, folds, corpus=spec,
                             labels=[the_task.classes[j] for j in y])
    fold_list = protocol.folds
    ids = [str(r["id"]) for r in kept]
    speakers = [r.get("speaker") for r in kept]
    sentences = [r.get("sentence") for r in kept]
    has_sentences = any(sentences)
    findings = audit_folds(ids, y, the_task.classes, fold_list, speakers=speakers,
                           sentences=sentences if has_sentences else None, settings=settings)
    findings += audio_spec(kept, declared)
    checks = list(CHEAP)
    notes = []
    if not has_sentences:
        notes.append("no transcripts: the sentence check did not run")
    spk = np.asarray([str(s) if s else "" for s in speakers], dtype=object)
    digests: list[str | None] | None = None
    if hash_audio_files:
        store = DigestStore(digest_store) if digest_store is not None else None
        digests, failures = hash_audio([str(r["path"]) for r in kept], workers=workers,
                                       progress=progress, store=store)
        if store is not None and store.reused:
            notes.append(f"{store.reused} audio digest(s) reused from {store.path}")
        checks.append("audio hashes")
        findings += duplicate_findings(_groups(digests), fold_list, ids, spk)
        if failures:
            shown = "; ".join(list(failures.values())[:5])
            notes.append(f"{len(failures)} file(s) could not be hashed and were not compared: "
                         f"{shown}")
            log.warning("%d file(s) could not be hashed", len(failures))
    if cache is not None:
        vectors = cache_vectors(cache, ids, layer)
        pairs = near_duplicate_pairs(vectors, settings.near)
        if digests is not None:
            pairs = [p for p in pairs if digests[p[0]] is None or digests[p[0]] != digests[p[1]]]
        checks.append(f"near-duplicates (layer {layer}, cosine >= {settings.near:g})")
        findings += _near_findings(pairs, fold_list, ids, spk)
    return AuditReport(spec.name, the_task.name, protocol.name, len(kept),
                       [f.name for f in fold_list], findings, checks, notes)


def _near_findings(pairs: Sequence[tuple[int, int, float]], folds: Sequence[Fold],
                   ids: Sequence[str], speakers: np.ndarray) -> list[Finding]:
    if not pairs:
        return []
    groups = [np.asarray([i, j]) for i, j, _ in pairs]
    return duplicate_findings(groups, folds, ids, speakers, kind=NEAR_DUPLICATE,
                              what="near-identical embeddings")


def audit_manifest(
    path: str | Path,
    *,
    audio_root: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
    **options: Any,
) -> AuditReport:
    """Read a manifest and audit it (`audit_records` options); `echo` receives the summary."""
    if not Path(path).is_file():
        raise ManifestError(f"{path}: no such manifest file")
    records = read_manifest(path, audio_root=audio_root)
    report = audit_records(records, **options)
    if echo is not None:
        echo(report.summary())
    return report
