"""Progress of long work that suits both a terminal and a log file.

On a terminal, a tqdm bar. When stderr is not a terminal (a SLURM log, CI, a redirect), a
carriage-return bar would write an update per second into the file, so `LineProgress` writes
one plain line every `EMOPROBE_PROGRESS_SECONDS` seconds (30 by default) and one at the end:
done/total, share, elapsed time, estimated time left and what the caller adds (extraction
adds utterances, audio hours and the real-time factor).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from emoprobe.errors import ConfigError

INTERVAL_ENV = "EMOPROBE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def progress_interval() -> float:
    """Seconds between progress lines in a log: $EMOPROBE_PROGRESS_SECONDS, else 30."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{INTERVAL_ENV}={text!r}: expected a number of seconds >= 0")
    return value


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _amount(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class LineProgress:
    """tqdm's interface (iteration, update, set_postfix_str, close, `with`) writing plain
    lines: one whenever `interval` seconds have passed since the last, and one at the end."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        interval: float | None = None,
        file: IO[str] | None = None,
        **_display_options: Any,  # tqdm's bar layout options mean nothing in a line
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.initial = initial
        self.interval = progress_interval() if interval is None else float(interval)
        self.file = file
        self.postfix = ""
        self.start = time.monotonic()
        self.last_line = self.start
        self.lines = 0
        self._closed = False
        self._shown_n: float | None = None

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LineProgress was given no iterable"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self._write(now)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        """Nothing to redraw in a log; lines come on their own schedule."""

    def write(self, text: str) -> None:
        print(text, file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shown_n != self.n:
            self._write(time.monotonic())

    def format_line(self, now: float) -> str:
        """`desc: n/total unit (pct%), postfix, elapsed H:MM:SS, ETA H:MM:SS`."""
        elapsed = now - self.start
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{_amount(self.n)}/{_amount(self.total)} {self.unit} "
                         f"({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{_amount(self.n)} {self.unit}")
        if self.postfix:
            parts.append(f", {self.postfix}")
        parts.append(f", elapsed {_duration(elapsed)}")
        done = self.n - self.initial
        if self.total and not self._closed:
            left = self.total - self.n
            eta = _duration(elapsed * left / done) if done > 0 else "unknown"
            parts.append(f", ETA {eta}")
        return "".join(parts)

    def _write(self, now: float) -> None:
        self.write(self.format_line(now))
        self.last_line = now
        self.lines += 1
        self._shown_n = self.n


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool = False,
                 **options: Any) -> Any:
    """A tqdm bar when stderr is a terminal, else a `LineProgress`; same options as tqdm."""
    if disable or sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=disable, **options)
    return LineProgress(iterable, **options)
