"""Shared fixtures: the real data and model in ../shared, skipped with a reason when absent.

`../shared` sits beside the repository in development and CI; a user's checkout has none, so
every test that needs it asks for one of these fixtures and is skipped, saying what is missing.
"""

from __future__ import annotations

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
