"""Shared fixtures: the real data and model in ../shared, skipped with a reason when absent.

`../shared` sits beside the repository in development and CI; a user's checkout has none, so
every test that needs it asks for one of these fixtures and is skipped, saying what is missing.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
URDU = SHARED / "data" / "urdu"
EMOBOX = SHARED / "data" / "emobox"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} absent: {path} not found (../shared is beside the repository "
                    "in development and CI only)")
    return path


@pytest.fixture(scope="session")
def urdu_dir() -> Path:
    """The real URDU corpus (400 utterances, 4 classes) with its manifest.jsonl."""
    return _need(URDU / "manifest.jsonl", "real speech corpus").parent


@pytest.fixture(scope="session")
def whisper_tiny() -> Path:
    """A real pretrained whisper-tiny.en in Hugging Face format."""
    return _need(WHISPER_TINY, "real pretrained model")


@pytest.fixture(scope="session")
def emobox_dir() -> Path:
    """EmoBox's metadata and fold files for URDU and IEMOCAP (data/<corpus>/ layout)."""
    return _need(EMOBOX, "EmoBox metadata")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def urdu_whisper(urdu_dir: Path, whisper_tiny: Path, tmp_path_factory: pytest.TempPathFactory):
    """One whisper-tiny.en extraction of a speaker-balanced URDU subset (the first utterance of
    every speaker and label; Whisper runs a full 30 s window per utterance), shared by the
    real-model probing tests: (records of the subset, its manifest, the cache path)."""
    from emoprobe.data.manifest import write_manifest
    from emoprobe.data.prepare import load_corpus
    from emoprobe.extract import extract

    tmp = tmp_path_factory.mktemp("urdu-whisper")
    records = load_corpus("manifest", urdu_dir, folds=5, seed=0, progress=False)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    subset = []
    for r in records:
        if not seen[(r["speaker"], r["label"])]:
            seen[(r["speaker"], r["label"])] += 1
            subset.append(r)
    manifest = write_manifest(subset, tmp / "urdu-small.jsonl")
    cache = extract(manifest, str(whisper_tiny), tmp / "features", progress=False).path
    return subset, manifest, cache
