"""`emoprobe merge`: missing, duplicated, incomplete and foreign shards are refused with an
error naming the file; a shard killed with SIGKILL resumes and still merges bit for bit."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from emoprobe.cli import main
from emoprobe.errors import CacheError
from emoprobe.extract.merge import cache_differences, merge_shards
from emoprobe.extract.runner import run_extraction
from emoprobe.extract.shard import ShardSpec
from emoprobe.testing.models import write_corpus

DURATIONS = [0.6, 2.1, 1.3, 2.8, 0.9, 1.7, 2.4, 1.1, 1.5, 2.2, 0.8, 1.9]
KW = {"batch_seconds": 2.5, "progress": False}


@dataclass
class Setup:
    manifest: Path
    single: Path
    shards: list[Path]
    root: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("merge")
    manifest = write_corpus(root / "corpus", DURATIONS, seed=5)
    single = run_extraction(manifest, "fbank", root / "single", **KW).path
    shards = [run_extraction(manifest, "fbank", root / "shards", shard=ShardSpec(k, 3),
                             **KW).path for k in range(3)]
    return Setup(manifest, single, shards, root)


def test_missing_shard_is_refused(setup: Setup, tmp_path: Path) -> None:
    s0, _, s2 = setup.shards
    with pytest.raises(CacheError, match=r"missing shard\(s\) 1 of 3 \(expected "
                                         r"fbank\.shard-1-of-3\.h5\)"):
        merge_shards([s0, s2], tmp_path / "m.h5", progress=False)
    assert not (tmp_path / "m.h5").exists()


def test_duplicated_shard_is_refused(setup: Setup, tmp_path: Path) -> None:
    s0, s1, s2 = setup.shards
    with pytest.raises(CacheError, match=r"shard 1/3 is given twice: .* \(the same file\)"):
        merge_shards([s0, s1, s1, s2], tmp_path / "m.h5", progress=False)
    copy = tmp_path / "copy-of-shard-1.h5"
    shutil.copy(s1, copy)
    with pytest.raises(CacheError, match=f"shard 1/3 is given twice: {s1} and {copy}$"):
        merge_shards([s0, s1, copy, s2], tmp_path / "m.h5", progress=False)


def test_foreign_shards_are_refused(setup: Setup, tmp_path: Path) -> None:
    s0, _, s2 = setup.shards
    other = run_extraction(setup.manifest, "fbank", tmp_path, shard=ShardSpec(1, 3),
                           max_seconds=1.0, **KW).path  # other output settings
    with pytest.raises(CacheError, match=rf"{other} belongs to another extraction than {s0}: "
                                         "its output settings differ"):
        merge_shards([s0, other, s2], tmp_path / "m.h5", progress=False)
    two = run_extraction(setup.manifest, "fbank", tmp_path / "two", shard=ShardSpec(1, 2),
                         **KW).path
    with pytest.raises(CacheError, match=r"is shard 1/2 but .* is shard 0/3"):
        merge_shards([s0, two, s2], tmp_path / "m.h5", progress=False)
    with pytest.raises(CacheError, match=rf"{setup.single}: not a shard file"):
        merge_shards([s0, setup.single, s2], tmp_path / "m.h5", progress=False)


def test_shard_of_another_manifest_is_refused(setup: Setup, tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path / "corpus", [*DURATIONS[:-1], 1.0], seed=5)
    other = run_extraction(manifest, "fbank", tmp_path, shard=ShardSpec(2, 3), **KW).path
    with pytest.raises(CacheError, match=f"{other} belongs to another extraction.*manifest"):
        merge_shards([*setup.shards[:2], other], tmp_path / "m.h5", progress=False)


def test_incomplete_shard_is_refused(setup: Setup, tmp_path: Path) -> None:
    def stop(info: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_extraction(setup.manifest, "fbank", tmp_path, shard=ShardSpec(1, 3), on_batch=stop,
                       **KW)
    partial = tmp_path / "fbank.shard-1-of-3.h5"
    with pytest.raises(CacheError, match=rf"{partial}: shard 1/3 is incomplete \(1 of \d+ "
                                         r"utterances done\); run its extract command "
                                         r"\(--shard 1/3\) again"):
        merge_shards([setup.shards[0], partial, setup.shards[2]], tmp_path / "m.h5",
                     progress=False)


def test_merge_cli_and_existing_output(setup: Setup, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fbank.h5"
    args = ["merge", *map(str, setup.shards), "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"merged 3 shards into {out}" in printed and "12 (12 usable, 0 failed)" in printed
    assert cache_differences(setup.single, out) == []
    assert main(args) == 0  # the same merge again: kept
    assert "already holds this extraction, complete; nothing to do" in capsys.readouterr().out
    shutil.copy(setup.shards[1], out)  # something else at --out: refused unless --overwrite
    assert main(args) == 1
    assert f"{out} exists and holds another extraction" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["merge", str(setup.shards[0]), "--no-progress"]) == 1
    assert "missing shard(s) 1, 2 of 3" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkilled_shard_resumes_and_merges_equal(setup: Setup, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shards"
    out.mkdir()
    for k in (0, 2):
        shutil.copy(setup.shards[k], out)
    script = textwrap.dedent(f"""
        import os, signal
        from emoprobe.extract.runner import run_extraction
        from emoprobe.extract.shard import ShardSpec

        def kill(info):
            if info["batch"] == 2:  # two batches are on disk: die without any cleanup
                os.kill(os.getpid(), signal.SIGKILL)

        run_extraction({str(setup.manifest)!r}, "fbank", {str(out)!r}, shard=ShardSpec(1, 3),
                       on_batch=kill, batch_seconds=2.5, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    killed = out / "fbank.shard-1-of-3.h5"
    with pytest.raises(CacheError, match="incomplete"):
        merge_shards(sorted(out.glob("*.h5")), tmp_path / "m.h5", progress=False)
    assert main(["extract", "--manifest", str(setup.manifest), "--model", "fbank", "--out",
                 str(out), "--batch-seconds", "2.5", "--shard", "1/3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"cache: {killed} (complete)" in printed
    reused = int(printed.split(" extracted now, ")[1].split(" reused")[0])
    assert reused >= 2  # the batches written before the kill were kept
    summary = merge_shards(sorted(out.glob("*.shard-*.h5")), tmp_path / "m.h5",
                           remove_shards=True, progress=False)
    assert cache_differences(setup.single, summary.path) == []
    assert not list(out.glob("*.shard-*.h5"))
