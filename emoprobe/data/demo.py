"""A small synthetic emotional speech corpus in the exact IEMOCAP on-disk layout.

Each utterance is a voiced, speech-like signal: a glottal pulse train with jitter and shimmer,
shaped by a spectral-tilt filter and three formant resonators that change vowel per syllable,
under a syllable-rate amplitude envelope. The four classes differ the way acted emotions do
in prosody: pitch level and range, energy, tempo and spectral tilt. Files, label lines
(with annotator lines), transcripts and folders follow IEMOCAP_full_release, so the real
IEMOCAP loader reads it and every later stage runs on it unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from emoprobe.data.prepare import PrepareResult, prepare_corpus


@dataclass(frozen=True)
class Style:
    """Prosody of one label: pitch level (x speaker base) and range (fraction), loudness,
    syllables per second, glottal tilt pole (higher = darker), jitter; and the label's
    [valence, arousal, dominance] and annotator category."""

    pitch: float
    pitch_range: float
    loudness: float
    rate: float
    tilt: float
    jitter: float
    vad: tuple[float, float, float]
    category: str


STYLES = {
    "neu": Style(1.00, 0.08, 0.30, 4.0, 0.95, 0.010, (2.5, 2.5, 2.5), "Neutral state"),
    "hap": Style(1.30, 0.25, 0.45, 4.8, 0.88, 0.015, (4.0, 3.5, 3.0), "Happiness"),
    "exc": Style(1.35, 0.28, 0.50, 5.0, 0.86, 0.015, (4.0, 4.0, 3.5), "Excited"),
    "ang": Style(1.20, 0.15, 0.70, 5.5, 0.75, 0.025, (1.5, 4.0, 4.0), "Anger"),
    "sad": Style(0.82, 0.04, 0.15, 2.8, 0.985, 0.008, (1.5, 1.5, 2.0), "Sadness"),
    "fru": Style(1.10, 0.12, 0.50, 4.5, 0.85, 0.020, (2.0, 3.0, 3.0), "Frustration"),
    "xxx": Style(1.05, 0.12, 0.35, 4.2, 0.92, 0.012, (2.5, 3.0, 2.5), "Other"),
}
# Labels of one speaker's utterances: 14 in the 4-class task, 2 outside it.
SPEAKER_LABELS = ("neu",) * 4 + ("hap", "hap", "exc", "exc") + ("ang",) * 3 + ("sad",) * 3 + (
    "fru", "xxx")
# (F1, F2, F3) in Hz of a few vowels.
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410),
          (300, 870, 2240), (660, 1720, 2410))
WORDS = ("well", "I", "know", "that", "you", "said", "it", "was", "fine", "but", "not", "now",
         "we", "can", "go", "there", "again", "really", "what", "okay")
DIALOGS = ("impro01", "script01_1")


@dataclass(frozen=True)
class DemoCorpus:
    """Where the corpus was written and what it holds."""

    root: Path
    n_utterances: int
    labels: dict[str, int]


@dataclass(frozen=True)
class DemoData:
    """The generated corpus and its prepared manifest."""

    corpus: DemoCorpus
    manifest: Path
    prepared: PrepareResult


def _resonate(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / sr)
    a = [1.0, -2.0 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return lfilter([1.0 - r], a, x)


def synthesize(style: Style, base_f0: float, seconds: float, rng: np.random.Generator,
               sr: int = 16000) -> np.ndarray:
    """One speech-like utterance in `style` for a speaker with pitch `base_f0` (float32)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0_level = base_f0 * style.pitch * rng.uniform(0.95, 1.05)
    contour = (style.pitch_range * np.sin(2 * np.pi * rng.uniform(0.4, 0.9) * t
                                          + rng.uniform(0, 2 * np.pi))
               - 0.08 * t / seconds)
    wobble = lfilter([0.01], [1, -0.99], rng.standard_normal(n)) * style.jitter * 10
    f0 = f0_level * (1 + contour) * (1 + wobble)
    phase = np.cumsum(f0 / sr)
    pulses = np.flatnonzero(np.diff(np.floor(phase)) > 0)
    source = np.zeros(n)
    source[pulses] = 1 + 0.1 * rng.standard_normal(pulses.size)  # shimmer
    source = lfilter([1 - style.tilt], [1, -style.tilt], source)
    source = lfilter([1 - style.tilt], [1, -style.tilt], source)  # 12 dB/octave glottal tilt
    source += 0.002 * rng.standard_normal(n)  # aspiration
    out = np.zeros(n)
    n_syl = max(2, round(seconds * style.rate * rng.uniform(0.9, 1.1)))
    edges = np.linspace(0, n, n_syl + 1).astype(int)
    for a, b in pairwise(edges):
        voiced = int((b - a) * rng.uniform(0.6, 0.85))
        seg = source[a:a + voiced]
        for freq, bw in zip(VOWELS[rng.integers(len(VOWELS))], (80, 100, 150)):
            seg = _resonate(seg, freq * rng.uniform(0.95, 1.05), bw, sr)
        out[a:a + voiced] = seg * np.hanning(voiced)
    out *= style.loudness * rng.uniform(0.9, 1.1) / (np.abs(out).max() + 1e-9)
    out += 3e-4 * rng.standard_normal(n)  # recording noise floor
    return out.astype(np.float32)


def _annotator_lines(code: str, rng: np.random.Generator) -> list[str]:
    cats = [STYLES[code].category] * 3
    if code == "xxx":  # no majority: three different opinions
        cats = ["Neutral state", "Frustration", "Anger"]
    v, a, d = (round(x) for x in STYLES[code].vad)
    lines = [f"C-E{i}:\t{c};\t()" for i, c in zip((1, 2, 4), cats)]
    lines += [f"A-E{i}:\tval {v}; act {a}; dom  {d};\t()" for i in (1, 2, 4)]
    return lines


def make_demo_corpus(
    root: str | Path,
    *,
    seed: int = 0,
    sessions: int = 5,
    labels: tuple[str, ...] = SPEAKER_LABELS,
    sample_rate: int = 16000,
) -> DemoCorpus:
    """Write the demo corpus under `root` (IEMOCAP_full_release layout): `sessions` sessions
    of one female and one male speaker, each speaking `labels` once, 1-3 s per utterance.
    Deterministic for a given `seed`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts: Counter[str] = Counter()
    for s in range(1, sessions + 1):
        session = root / f"Session{s}"
        base_f0 = {"F": rng.uniform(190, 230), "M": rng.uniform(105, 135)}
        # Each speaker's utterances are spread over the session's dialogs in random order.
        plan: dict[str, list[tuple[str, str]]] = {d: [] for d in DIALOGS}
        for g in ("F", "M"):
            for i, code in enumerate(rng.permutation(labels)):
                plan[DIALOGS[i % len(DIALOGS)]].append((g, str(code)))
        for d_name, turns in plan.items():
            dialog = f"Ses{s:02d}{'F' if d_name.startswith('impro') else 'M'}_{d_name}"
            wav_dir = session / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            order = rng.permutation(len(turns))
            label_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            text_lines = []
            clock = rng.uniform(2, 5)
            numbers = Counter[str]()
            for k in order:
                g, code = turns[k]
                utt = f"{dialog}_{g}{numbers[g]:03d}"
                numbers[g] += 1
                seconds = float(rng.uniform(1.0, 3.0))
                wave = synthesize(STYLES[code], base_f0[g], seconds, rng, sample_rate)
                sf.write(wav_dir / f"{utt}.wav", wave, sample_rate, subtype="PCM_16")
                start, end = clock, clock + len(wave) / sample_rate
                clock = end + rng.uniform(0.3, 1.5)
                v, a, dom = STYLES[code].vad
                label_lines.append(
                    f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {dom:.4f}]"
                )
                label_lines += [*_annotator_lines(code, rng), ""]
                words = rng.choice(WORDS, size=max(1, int(seconds * 2.5)))
                text_lines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: "
                                  f"{' '.join(words).capitalize()}.")
                counts[code] += 1
            text_lines.insert(len(text_lines) // 2, "M: [BREATHING]")
            for sub, lines in (("EmoEvaluation", label_lines), ("transcriptions", text_lines)):
                folder = session / "dialog" / sub
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return DemoCorpus(root, sum(counts.values()), dict(sorted(counts.items())))


def prepare_demo(
    out: str | Path,
    *,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
    progress: bool = False,
    **options: Any,
) -> DemoData:
    """Generate the demo corpus in `out/corpus` and prepare `out/manifest.jsonl` from it with
    the IEMOCAP loader, checked; its counts differ from the published IEMOCAP ones by design,
    so they are warnings (`allow_subset`). `options` go to `make_demo_corpus`."""
    say = echo or (lambda _: None)
    out = Path(out)
    corpus = make_demo_corpus(out / "corpus", seed=seed, **options)
    say(f"demo corpus: {corpus.n_utterances} synthetic utterances in IEMOCAP layout at "
        f"{corpus.root} (seed {seed}); its counts are not IEMOCAP's, so the count check "
        "below warns instead of failing")
    prepared = prepare_corpus("iemocap", corpus.root, out=out / "manifest.jsonl", check=True,
                              allow_subset=True, progress=progress, echo=echo)
    return DemoData(corpus, out / "manifest.jsonl", prepared)
