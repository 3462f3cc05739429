"""The benchmark recipes: every one parses as a run config, names only upstreams the planner
knows, and dry-runs without loading a model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emoprobe.cli import main
from emoprobe.pipeline import load_config
from emoprobe.plan import check_known, estimate_cpu_seconds, model_shape, plan_run

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
UPSTREAMS = {"facebook/wav2vec2-base", "facebook/wav2vec2-large-lv60",
             "facebook/hubert-base-ls960", "facebook/hubert-large-ll60k",
             "microsoft/wavlm-base-plus", "microsoft/wavlm-large",
             "facebook/data2vec-audio-base", "facebook/data2vec-audio-large",
             "openai/whisper-base", "openai/whisper-small", "openai/whisper-medium",
             "openai/whisper-large-v3", "fbank", "egemaps"}
# task, utterances, cache of a large model (25 x 1024 float32; docs/scaling.md)
EXPECTED = {"iemocap": ("4class", 5531, "566 MB"), "msp_improv": ("4class", 7798, "799 MB"),
            "emotiontalk": ("7class", 19250, "1.97 GB")}


def test_three_recipes() -> None:
    assert [p.stem for p in RECIPES] == sorted(EXPECTED)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_dry_runs(recipe: Path, capsys) -> None:
    cfg = load_config(recipe)
    assert [c.source for c in cfg.corpora] == [recipe.stem]
    assert {str(u["model"]) for u in cfg.upstreams} == UPSTREAMS
    for u in cfg.upstreams:
        check_known(str(u["model"]))
    assert main(["run", str(recipe), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    task, n, large = EXPECTED[recipe.stem]
    assert f"task {task}" in printed and f"{n} utterances" in printed
    assert printed.count("not measured") == len(UPSTREAMS)  # no GPU figure is invented
    wavlm = next(line for line in printed.splitlines() if "microsoft/wavlm-large" in line)
    assert large in wavlm
    assert not (recipe.parent / "runs").exists()  # nothing written


def test_estimates_follow_the_documented_figures(tmp_path: Path) -> None:
    # wav2vec2-base-sized: 5.60 x real time on the reference machine, so one hour of audio
    # takes 3600 / 5.60 s; a large model (24 blocks x 1024) scales by 24*1024^2 / (12*768^2).
    base, _ = estimate_cpu_seconds(*model_shape("facebook/wav2vec2-base"), 100, 3600.0, 100)
    large, _ = estimate_cpu_seconds(*model_shape("microsoft/wavlm-large"), 100, 3600.0, 100)
    assert base == pytest.approx(3600 / 5.60)
    assert large / base == pytest.approx(24 * 1024**2 / (12 * 768**2))
    # Whisper: per 30 s window, whatever the audio length.
    tiny, _ = estimate_cpu_seconds(*model_shape("openai/whisper-tiny.en"), 400, 999.0, 400)
    assert tiny == pytest.approx(400 * 0.484)
    # A local checkpoint folder is read from its config.json.
    (tmp_path / "config.json").write_text('{"model_type": "whisper", "encoder_layers": 4, '
                                          '"d_model": 384}')
    assert model_shape(str(tmp_path)) == ("whisper", 5, 384)
    assert model_shape("someone/unknown-model") == (None, None, None)
    text = plan_run({"out": str(tmp_path / "o"),
                     "corpus": [{"source": "iemocap", "root": str(tmp_path)}],
                     "upstream": [{"model": "someone/unknown-model"}]})
    assert "unknown model" in text and ": found" in text


@pytest.mark.slow
def test_dry_run_loads_no_model() -> None:
    code = ("import sys; from emoprobe.cli import main; "
            f"assert main(['run', {str(RECIPES[0])!r}, '--dry-run']) == 0; "
            "heavy = {'torch', 'transformers', 'opensmile'} & set(sys.modules); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_report_table_takes_sort_and_published(tmp_path: Path) -> None:
    from emoprobe.errors import EmoprobeError
    from emoprobe.pipeline import parse_config

    base = {"out": str(tmp_path), "corpus": [{"source": "iemocap", "root": str(tmp_path)}],
            "upstream": [{"model": "fbank"}]}
    cfg = parse_config({**base, "report": {"sort": "war", "published": "superb"}})
    assert (cfg.sort, cfg.published) == ("war", "superb")
    assert load_config(RECIPES[1]).published == "all"  # iemocap.toml
    with pytest.raises(EmoprobeError, match="published"):
        parse_config({**base, "report": {"published": "emo"}})
