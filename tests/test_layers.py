"""The one layer grammar: `--layers` (probe) and `--frames` (extract) accept the same specs."""

from __future__ import annotations

import numpy as np
import pytest

from emoprobe.errors import ConfigError
from emoprobe.extract.settings import ExtractSettings
from emoprobe.layers import parse_layer_spec, resolve_layers
from emoprobe.probe.dataset import data_from_arrays


@pytest.mark.parametrize(("spec", "expected"), [
    ("all", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
    ("0,6,-1", [0, 6, 12]),
    ("5-8", [5, 6, 7, 8]),
    ("0, 3, 5-8, -1", [0, 3, 5, 6, 7, 8, 12]),
    ("-3--1", [10, 11, 12]),
    ([2, 2, -13], [2, 0]),
])
def test_specs_resolve_the_same_for_both_options(spec, expected) -> None:
    assert resolve_layers(spec, 13) == expected
    frames = ExtractSettings(frames=spec).frame_layers(13)
    assert frames == tuple(sorted(set(expected)))


@pytest.mark.parametrize("bad", ["first", "8-5", "1;2", "1.5", True, 3])
def test_bad_specs_name_the_option(bad) -> None:
    with pytest.raises(ConfigError, match="--layers"):
        parse_layer_spec(bad)
    with pytest.raises(ConfigError, match="--frames"):
        ExtractSettings(frames=bad)


def test_probe_layers_use_the_grammar() -> None:
    feats = np.zeros((6, 4, 3), np.float32)
    records = [{"id": f"u{i}", "label": "ab"[i % 2], "speaker": f"s{i}", "fold": i % 2}
               for i in range(4)]
    data = data_from_arrays(feats, records, layers="1-3,-1")
    assert data.layers == [1, 2, 3, 5]
    with pytest.raises(ConfigError, match="layer 6 does not exist; there are layers 0..5"):
        data_from_arrays(feats, records, layers="6")

