"""Launchers: job options, the SLURM job script submitit would submit, and the local launcher
end to end through submitit's LocalExecutor, including a shard job killed with SIGKILL that
is resubmitted and resumed, and a rerun that checks the merged cache instead of redoing it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from emoprobe.cache.store import open_cache
from emoprobe.cli import main
from emoprobe.cli.sharding import parse_extra, parse_time
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.errors import ConfigError, ExtractionError
from emoprobe.extract.launch import (
    JobOptions,
    launch_extraction,
    make_executor,
    slurm_parameters,
)
from emoprobe.extract.merge import cache_differences
from emoprobe.extract.runner import run_extraction
from emoprobe.testing.models import write_corpus

submitit = pytest.importorskip("submitit", reason="the launchers need emoprobe[slurm]")


def test_time_and_extra_options() -> None:
    assert parse_time("90") == 90
    assert parse_time("1:30:00") == 90
    assert parse_time("2:30") == 3  # MM:SS, rounded up to whole minutes
    assert parse_time("1-02:00") == 26 * 60
    assert parse_time("2-00:00:00") == 2880
    assert parse_time(None) is None
    for bad in ("soon", "1:2:3:4", "0"):
        with pytest.raises(ConfigError, match="--time"):
            parse_time(bad)
    assert parse_extra(["account=abc", "--qos=high", "constraint=a100|h100"]) == {
        "account": "abc", "qos": "high", "constraint": "a100|h100"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_extra(["account"])


def test_slurm_job_script(tmp_path: Path) -> None:
    """The parameters are valid submitit SLURM parameters and make the expected sbatch lines
    (submitit's own script writer; submitting needs a cluster)."""
    from submitit.slurm.slurm import _make_sbatch_string

    job = JobOptions(partition="gpu", time_minutes=parse_time("6:00:00"), gpus_per_task=1,
                     cpus_per_task=8, mem_gb=32, parallel=4, extra={"account": "emo"},
                     setup=("module load cuda",))
    params = slurm_parameters(job, "wavlm-large")
    script = _make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path,
                                 map_count=8, **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=360", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32768M", "#SBATCH --array=0-7%4",
                 "#SBATCH --account=emo", "#SBATCH --job-name=emoprobe-wavlm-large",
                 "module load cuda"):
        assert line in script, line
    assert slurm_parameters(JobOptions(), "fbank") == {"job_name": "emoprobe-fbank",
                                                       "time": 240}


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is installed here")
def test_slurm_launcher_without_slurm_says_so(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="needs SLURM's sbatch and srun.*--launcher local"):
        make_executor("slurm", tmp_path, JobOptions(), "fbank")


def test_shard_jobs_are_requeued_as_resumes() -> None:
    """On pre-emption or time-out submitit requeues a function that has `checkpoint`; the
    requeued call must resume the shard, never overwrite it."""
    from submitit.helpers import DelayedSubmission

    from emoprobe.extract.launch import extract_shard

    assert callable(extract_shard.checkpoint)
    again = extract_shard.checkpoint("m.jsonl", "fbank", "out", 2, 4, {"overwrite": True,
                                                                     "dtype": "float32"})
    assert isinstance(again, DelayedSubmission) and again.function is extract_shard
    assert again.args == ("m.jsonl", "fbank", "out", 2, 4,
                          {"overwrite": False, "dtype": "float32"})


def _task_pid(controller: int, timeout: float = 30.0) -> int:
    """The process a submitit local job runs the function in (the controller's child)."""
    children = Path(f"/proc/{controller}/task/{controller}/children")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.02)
    raise AssertionError(f"local job {controller} started no task")


@pytest.mark.slow
def test_local_launcher_end_to_end_with_a_killed_job(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_corpus(tmp_path / "corpus", [0.7, 1.9, 1.2, 2.4, 0.9, 1.6, 2.1, 1.4])
    kw = {"batch_seconds": 2.5, "frames": "0"}
    single = run_extraction(manifest, "fbank", tmp_path / "single", progress=False, **kw).path
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["kind"] == "submitted" and event["key"] == 1 and event["attempt"] == 1:
            os.kill(_task_pid(int(event["job_id"])), signal.SIGKILL)

    out = tmp_path / "features"
    result = launch_extraction(manifest, "fbank", out, shards=2, launcher="local", retries=1,
                               job=JobOptions(poll_seconds=0.2), on_event=on_event,
                               progress=False, **kw)
    assert result.path == out / "fbank.h5" and result.attempts == {0: 1, 1: 2}
    assert [e["kind"] for e in events if e["key"] == 1] == ["submitted", "retry", "submitted",
                                                             "finished"]
    assert "ended without a result" in events[[e["kind"] for e in events].index("retry")]["error"]
    assert cache_differences(single, result.path) == []
    assert [p.name for p in result.shards] == ["fbank.shard-0-of-2.h5", "fbank.shard-1-of-2.h5"]
    assert result.logs == out / "logs" / "fbank" and any(result.logs.glob("*_log.err"))
    assert "resubmitted: 1 (1x)" in result.format()
    with open_cache(result.path) as cache:
        assert [m["shard"] for m in cache.meta["merged_from"]] == ["0/2", "1/2"]
    # every job computed with the torch thread count of a single process (CPU kernels round
    # differently with other counts)
    with open_cache(single) as cache:
        threads = cache.meta["settings"]["torch_threads"]
    for shard in result.shards:
        with open_cache(shard) as cache:
            assert cache.meta["settings"]["torch_threads"] == threads

    # the same command again: the merged cache is checked here against model and settings,
    # without submitting a job
    args = ["extract", "--manifest", str(manifest), "--model", "fbank", "--out", str(out),
            "--batch-seconds", "2.5", "--frames", "0", "--launcher", "local", "--shards", "2",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "submitted as job" not in printed
    assert "is complete and matches this model, manifest and settings; nothing to do" in printed
    # other settings: refused with the runner's own message, nothing overwritten
    assert main([*args[:-1], "--max-seconds", "1", "--no-progress"]) == 1
    assert "different output settings" in capsys.readouterr().err
    assert cache_differences(single, result.path) == []
    # a manifest with an utterance the merged cache lacks: not extracted here, said how to
    records = read_manifest(manifest)
    extra = write_manifest([*records, dict(records[0], id="extra")], tmp_path / "extra.jsonl")
    assert main([*args[:2], str(extra), *args[3:]]) == 1
    assert "lacks 1 utterance(s) of this manifest (e.g. extra)" in capsys.readouterr().err
    assert cache_differences(single, result.path) == []
