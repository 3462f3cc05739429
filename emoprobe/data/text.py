"""Reading corpus text files (label and transcript files) whatever their encoding."""

from __future__ import annotations

from pathlib import Path


def read_lines(path: str | Path) -> list[str]:
    """The file's lines without line ends: UTF-8, or Latin-1 for files that are not UTF-8
    (every byte is valid Latin-1, so no line is lost to a decoding error)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.splitlines()
