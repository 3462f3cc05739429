"""The prepare stage: a corpus as distributed -> a counted, checked JSONL manifest.

`prepare_corpus` loads a corpus, reads every audio header once, prints the per-label and
per-fold counts of each task next to the published ones, checks the records, and writes the
manifest. With `check=True` every problem found is fatal; without it, only those that would
make the manifest unusable (duplicate ids) are, and the rest are counted in a warning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoprobe.data.audit import audit_records
from emoprobe.data.check import DUPLICATE_ID, CheckReport, check_manifest
from emoprobe.data.corpora import CorpusSpec, corpus_for_records
from emoprobe.data.counts import CorpusCounts, count_records, format_counts, verify_counts
from emoprobe.data.emobox import EmoboxLoad, audio_spec_differences, find_corpora, load_emobox
from emoprobe.data.emotiontalk import LABEL_SOURCE, load_emotiontalk
from emoprobe.data.generic import load_manifest_file
from emoprobe.data.headers import apply_headers, fill_audio_info, read_headers
from emoprobe.data.iemocap import load_iemocap
from emoprobe.data.manifest import write_manifest
from emoprobe.data.msp_improv import load_msp_improv
from emoprobe.errors import ConfigError, EmoprobeError, ManifestError
from emoprobe.validation import check_fields, rule

LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "iemocap": load_iemocap,
    "msp_improv": load_msp_improv,
    "emotiontalk": load_emotiontalk,
}
GENERIC = "manifest"
EMOBOX = "emobox"
SOURCES = (*LOADERS, EMOBOX, GENERIC)
LONG_SECONDS = 30.0


@dataclass(frozen=True)
class PrepareOptions:
    """The choices `prepare` takes besides the corpus and its folder, checked once (the
    command line and a config's [[corpus]] table are validated against these fields).
    `name`, `audio_root`, `folds` and `seed` apply to `manifest` only."""

    check: bool = False
    allow_subset: bool = False
    name: str | None = None
    audio_root: str | None = None
    folds: int | None = field(default=None, metadata=rule(ge=2))
    seed: int = field(default=0, metadata=rule(ge=0))
    workers: int | None = field(default=None, metadata=rule(ge=1))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class PrepareResult:
    """What prepare found: the records, their corpus, counts, count warnings, the check."""

    records: list[dict[str, Any]]
    spec: CorpusSpec
    counts: CorpusCounts
    count_warnings: list[str]
    check: CheckReport
    out: Path | None


def load_corpus(
    source: str,
    root: str | Path,
    *,
    name: str | None = None,
    audio_root: str | Path | None = None,
    folds: int | None = None,
    seed: int = 0,
    audio_info: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Records of `source` (a registered corpus, `emobox` for an EmoBox corpus folder, or
    `manifest` for a JSONL/CSV file) at `root`. `name`, `folds` and `seed` apply to `manifest`
    only; `audio_root` to `manifest` and `emobox` (where it is required)."""
    common = {"audio_info": audio_info, "workers": workers, "progress": progress}
    if source == GENERIC:
        return load_manifest_file(root, name=name, audio_root=audio_root, folds=folds,
                                  seed=seed, **common)
    _check_options(source, name=name, folds=folds, audio_root=audio_root)
    if source == EMOBOX:
        records = _load_emobox(root, audio_root).records
        if audio_info:
            fill_audio_info(records, workers=workers, progress=progress)
        return records
    return LOADERS[source](root, **common)


def _check_options(source: str, *, name: str | None, folds: int | None,
                   audio_root: str | Path | None) -> None:
    if source not in SOURCES:
        raise ConfigError(f"unknown corpus {source!r}; known: {', '.join(SOURCES)}")
    given = [opt for opt, v in (("name", name), ("folds", folds),
                                ("audio_root", None if source == EMOBOX else audio_root))
             if v is not None and source != GENERIC]
    if given:
        where = f"`{GENERIC}`" + (f" and `{EMOBOX}`" if given == ["audio_root"] else "")
        raise ConfigError(f"option(s) {', '.join(given)} apply only to {where}, "
                          f"not to {source}")


def _load_emobox(root: str | Path, audio_root: str | Path | None, **kwargs: Any) -> EmoboxLoad:
    if audio_root is None:
        raise ConfigError(f"option audio_root (--audio-root) is required for {EMOBOX}: the "
                          "folder holding EmoBox's downloads/ (or the corpus's own files)")
    return load_emobox(root, audio_root=audio_root, **kwargs)


def describe_audio(records: Sequence[dict[str, Any]]) -> str:
    """One line on the audio: total hours, shortest/mean/longest, sample rates, long items."""
    durations = [r["duration"] for r in records if r.get("duration") is not None]
    if not durations:
        return "audio: no readable headers"
    rates = Counter(r["sample_rate"] for r in records if r.get("sample_rate"))
    long = sum(d > LONG_SECONDS for d in durations)
    return (
        f"audio: {sum(durations) / 3600:.3f} h; {min(durations):.2f} s shortest, "
        f"{sum(durations) / len(durations):.2f} s mean, {max(durations):.2f} s longest "
        f"({long} over {LONG_SECONDS:.0f} s); sample rates "
        + ", ".join(f"{sr} Hz x{n}" for sr, n in sorted(rates.items()))
    )


def prepare_corpus(
    source: str,
    root: str | Path,
    *,
    out: str | Path | None = None,
    check: bool = False,
    allow_subset: bool = False,
    name: str | None = None,
    audio_root: str | Path | None = None,
    folds: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Load, count, check and (when `out` is given) write a manifest; `echo` receives the
    printed summary. Raises CountMismatchError on counts that differ from the published ones
    (unless `allow_subset`), ManifestError on duplicate ids, and with `check` on any problem;
    nothing is written then."""
    say = echo or (lambda _: None)
    PrepareOptions(check=check, allow_subset=allow_subset, name=name,
                   audio_root=None if audio_root is None else str(audio_root), folds=folds,
                   seed=seed, workers=workers)
    emobox = None
    if source == EMOBOX:
        _check_options(source, name=name, folds=folds, audio_root=audio_root)
        emobox = _load_emobox(root, audio_root, allow_subset=allow_subset, echo=say)
        records = emobox.records
    else:
        records = load_corpus(source, root, name=name, audio_root=audio_root, folds=folds,
                              seed=seed, audio_info=False, workers=workers, progress=progress)
    infos = read_headers([r["path"] for r in records], workers=workers, progress=progress)
    unreadable = apply_headers(records, infos)
    spec = emobox.spec if emobox is not None else corpus_for_records(records)
    say(f"{spec.title}: {len(records)} utterances from {Path(root).expanduser().resolve()}")
    if spec.name == "emotiontalk":
        say(f"labels: {LABEL_SOURCE} (audio-only labels; they differ from the multimodal ones)")
    if folds is not None:
        say(f"folds: {folds} speaker-independent folds from `speaker`, seed {seed}")
    say(describe_audio(records))
    truncated = [r for r in records if r.get("audio_warning")]
    if truncated:
        say(f"warning: {len(truncated)} truncated audio file(s), each decoded as far as it "
            "goes (`audio_warning` in the manifest records it):\n  " + "\n  ".join(
                f"{r['id']}: {r['path']}: {r['audio_warning']}" for r in truncated[:10])
            + (f"\n  ... and {len(truncated) - 10} more" if len(truncated) > 10 else ""))
    if emobox is not None:
        for line in audio_spec_differences(records, emobox.corpus.declared):
            say(f"audio spec: {line} (audio is resampled on load)")
    untranscribed = sum(not r.get("sentence") for r in records)
    if source != GENERIC and untranscribed:
        say(f"transcripts: {untranscribed} utterance(s) have none")
    counts = count_records(records, spec)
    say(format_counts(counts, spec))
    report = check_manifest(records, spec, infos=infos, progress=progress)
    if check:
        say(report.summary())
        say(_cheap_audit(records, spec))
    elif not report.ok:
        say(f"warning: {report.tally()}" + (
            f" ({unreadable} record(s) keep null audio fields and an `audio_error`)"
            if unreadable else "") + "; run with --check to list every item")
    count_warnings = verify_counts(counts, spec, allow_subset=allow_subset)
    if count_warnings:
        say(f"warning: {len(count_warnings)} count(s) differ from the published ones "
            "(allowed with --allow-subset):\n  " + "\n  ".join(count_warnings))
    if check and not report.ok:
        raise ManifestError(f"{report.tally()}; manifest not written")
    duplicates = [p.item for p in report.problems if p.kind == DUPLICATE_ID]
    if duplicates:
        raise ManifestError(
            f"{len(duplicates)} duplicate id(s), e.g. {', '.join(duplicates[:5])}; "
            "manifest not written"
        )
    written = None
    if out is not None:
        written = write_manifest(records, out)
        say(f"wrote {len(records)} records to {written}")
    return PrepareResult(records, spec, counts, count_warnings, report, written)


def _cheap_audit(records: Sequence[dict[str, Any]], spec: CorpusSpec) -> str:
    """The audit's cheap checks over the corpus's folds, as printed by `prepare --check`
    (findings do not fail prepare: `emoprobe audit` is the gate)."""
    try:
        return audit_records(records, spec=spec, progress=False).summary()
    except ManifestError as exc:
        return f"audit: not run ({exc})"


def prepare_emobox_all(
    data_root: str | Path,
    *,
    audio_root: str | Path,
    out_dir: str | Path,
    echo: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, PrepareResult]:
    """Prepare every EmoBox corpus found under `data_root` (EmoBox's `data/`) into
    `out_dir/<corpus>.jsonl`. A corpus that fails is reported and the others still written;
    the failures are then raised together, naming each corpus."""
    say = echo or (lambda _: None)
    if audio_root is None:
        _load_emobox(data_root, None)  # raises: the audio folder is required
    corpora = find_corpora(data_root)
    say(f"EmoBox: {len(corpora)} corpora under {Path(data_root).expanduser().resolve()}: "
        + ", ".join(p.name for p in corpora))
    results: dict[str, PrepareResult] = {}
    failed: dict[str, str] = {}
    for folder in corpora:
        say(f"\n== {folder.name}")
        try:
            results[folder.name] = prepare_corpus(
                EMOBOX, folder, audio_root=audio_root, out=Path(out_dir) / f"{folder.name}.jsonl",
                echo=echo, **options)
        except EmoprobeError as exc:
            failed[folder.name] = str(exc)
            say(f"{folder.name}: error: {exc}")
    say(f"\nEmoBox: {len(results)} manifest(s) written to {Path(out_dir)}"
        + (f"; {len(failed)} corpus(es) failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise ManifestError(
            f"{len(failed)} of {len(corpora)} EmoBox corpora failed (the others were written):\n"
            + "\n".join(f"  {name}: {msg.splitlines()[0]}" for name, msg in failed.items()))
    return results
