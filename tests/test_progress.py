"""Progress in logs: plain lines every N seconds when stderr is not a terminal, a tqdm bar on
a terminal, and an extraction whose stderr goes to a file writes a few lines, not hundreds
of carriage-return updates."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emoprobe import progress
from emoprobe.errors import ConfigError
from emoprobe.progress import INTERVAL_ENV, LineProgress, progress_bar, progress_interval

REPO = Path(__file__).resolve().parents[1]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_once_per_interval_and_at_the_end(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    bar = LineProgress(total=120, desc="extract model", unit="h audio", interval=30, file=out)
    for second in range(100):  # one update per second, stopped before the total
        clock.now += 1
        bar.set_postfix_str(f"{second + 1}/120 utterances")
        bar.update(1)
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 4 == bar.lines  # at 30, 60, 90 s and at the close (100 s)
    assert lines[0] == ("extract model: 30/120 h audio (25%), 30/120 utterances, "
                        "elapsed 0:00:30, ETA 0:01:30")
    assert lines[2].endswith("elapsed 0:01:30, ETA 0:00:30")
    assert lines[-1] == "extract model: 100/120 h audio (83%), 100/120 utterances, elapsed 0:01:40"


def test_iteration_counts_items_and_closes(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()

    def items():
        for i in range(10):
            clock.now += 7.0
            yield i

    assert list(LineProgress(items(), total=10, desc="audio headers", unit="file",
                             interval=30, file=out)) == list(range(10))
    lines = out.getvalue().splitlines()
    # 70 s in all: lines at 35 s (5 done) and 70 s (10 done); the end adds nothing new
    assert [line.split(",")[0] for line in lines] == ["audio headers: 5/10 file (50%)",
                                                      "audio headers: 10/10 file (100%)"]


def test_float_amounts_and_unknown_eta(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    bar = LineProgress(total=0.5, unit="h", interval=0, file=out)
    clock.now += 2
    bar.update(0.0)
    assert out.getvalue() == "0.000/0.500 h (0%), elapsed 0:00:02, ETA unknown\n"


def test_interval_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "5")
    assert progress_interval() == 5.0 and LineProgress(total=1).interval == 5.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=f"{INTERVAL_ENV}='{bad}'"):
            progress_interval()


def test_terminal_gets_tqdm_and_a_file_gets_lines(monkeypatch) -> None:
    from tqdm.auto import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(total=3, desc="x"), LineProgress)
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress_bar(total=3, desc="x")
    assert isinstance(bar, tqdm)
    bar.close()
    off = progress_bar(total=3, disable=True)
    assert isinstance(off, tqdm) and off.disable


@pytest.mark.slow
def test_extract_to_a_log_file_writes_a_few_lines(tmp_path: Path) -> None:
    from emoprobe.testing.models import build_model, write_corpus

    corpus = write_corpus(tmp_path / "corpus", [0.3 + 0.07 * i for i in range(12)])
    model = build_model("hubert", tmp_path / "models" / "tiny-hubert")
    log = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(INTERVAL_ENV, None)  # the default: one line every 30 s
    start = time.monotonic()
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-m", "emoprobe", "extract", "--manifest", str(corpus),
                        "--model", str(model), "--out", str(tmp_path / "out"),
                        "--batch-seconds", "0.5"],
                       stderr=err, stdout=subprocess.DEVNULL, env=env, check=True, cwd=tmp_path)
    minutes = (time.monotonic() - start) / 60
    text = log.read_text()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    progress_lines = [line for line in lines if ", elapsed " in line]
    # one closing line per progress display (audio headers, extract) + one per 30 s each
    assert len(progress_lines) <= 2 + 2 * (2 * minutes + 1), text
    extract = [line for line in progress_lines if line.startswith("extract ")]
    assert len(extract) >= 1, text
    last = extract[-1]
    assert last.startswith("extract tiny-hubert: ") and str(tmp_path) not in last
    assert "12/12 utterances" in last and " h audio (100%)" in last
    assert "x real time (real-time factor " in last
