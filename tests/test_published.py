"""Published results registry: every row has a source; the name-matching rule maps the
documented cases and refuses ambiguous names; the leaderboard sets matching figures beside
ours with the difference."""

from __future__ import annotations

import pytest

from emoprobe.errors import ProbeError
from emoprobe.probe.tables import leaderboard, render
from emoprobe.published import (
    SOURCES,
    aliases,
    load_registry,
    match_upstream,
    normalise,
    published_for,
)


def test_every_row_has_a_source_and_a_sane_value() -> None:
    rows = load_registry("all")
    assert {r.registry for r in rows} == set(SOURCES)
    for r in rows:
        assert r.source.strip() and r.protocol.strip()
        assert r.metric in ("war", "uar", "macro_f1") and 0.0 < r.value < 1.0
    keys = [(r.registry, r.dataset, r.n_classes, r.upstream, r.metric) for r in rows]
    assert len(keys) == len(set(keys))  # one figure per registry, dataset, upstream, metric
    emobox = {(r.upstream, r.metric): r.value for r in load_registry("emobox")}
    assert emobox[("wavlm-large", "uar")] == pytest.approx(0.6947)  # protocols.md
    assert {r.metric for r in load_registry("superb")} == {"war"}
    with pytest.raises(ProbeError, match="unknown published source 'emo'"):
        load_registry("emo")


@pytest.mark.parametrize("ours, theirs", [
    ("microsoft--wavlm-large", "wavlm-large"),          # cache name of a hub model
    ("microsoft/wavlm-large", "wavlm-large"),           # hub id
    ("WavLM_Large.h5", "wavlm-large"),                  # case, _ and suffix
    ("facebook--hubert-large-ll60k", "hubert-large"),   # alias
    ("facebook/hubert-base-ls960", "hubert-base"),
    ("data2vec_base", "data2vec-audio-base"),
    ("openai--whisper-large-v3", "whisper-large-v3"),
    ("microsoft--wavlm-base-plus", None),               # never borrows wavlm-base's figure
    ("wavlm", None),                                    # no prefix matching
    ("fbank", None),
])
def test_name_matching_rule(ours: str, theirs: str | None) -> None:
    known = sorted({r.upstream for r in load_registry("all")})
    assert match_upstream(ours, known) == theirs


def test_ambiguous_names_are_refused() -> None:
    known = sorted({r.upstream for r in load_registry("all")})
    assert len(aliases()["whisper-large"]) > 1
    with pytest.raises(ProbeError, match="ambiguous.*whisper-large-v2, whisper-large-v3"):
        match_upstream("openai/whisper-large", known)
    assert normalise("Org--Sub/Model_Name") == "model-name"


def test_leaderboard_sets_published_beside_ours() -> None:
    row = {"dataset": "iemocap", "task": "4class", "upstream": "microsoft--wavlm-large",
           "layer": 12, "head": "linear", "val_uar_mean": 0.7, "uar_mean": 0.70,
           "uar_std": 0.02, "war_mean": 0.69, "war_std": 0.02, "pooled_uar": 0.70,
           "classes": ["neu", "hap", "ang", "sad"]}
    other = {**row, "dataset": "msp_improv"}  # no published figures
    registry = load_registry("all")
    assert [p.upstream for p in published_for("iemocap", 4, row["upstream"], registry)] == [
        "wavlm-large"] * 3
    assert published_for("iemocap", 6, row["upstream"], registry) == []  # other task size
    table = leaderboard([row, other], published=registry)
    rec = table.rows[0]
    assert rec["pub|emobox|uar"] == pytest.approx(0.6947)
    assert rec["pub_delta|emobox|uar"] == pytest.approx(0.70 - 0.6947)
    assert rec["pub|superb|war"] == pytest.approx(0.7003)
    md = render(table, "md")
    assert "EmoBox UAR" in md and "Δ vs SUPERB WAR" in md and "| 69.5 | 0.5 |" in md
    assert "pub|emobox|uar" not in table.rows[1]
