"""Upstream plugins: the example package in tests/plugin_example is installed the way pip
installs it for the entry-point machinery (a dist-info folder with entry_points.txt on
sys.path), discovered through the `emoprobe.upstreams` group, and extracts like any
upstream; contract violations and unknown names are clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from emoprobe.cli import main
from emoprobe.data.audio import load_audio
from emoprobe.data.manifest import read_manifest
from emoprobe.errors import ExtractionError
from emoprobe.extract import open_cache, run_extraction
from emoprobe.extract.upstream import load_upstream
from emoprobe.extract.upstream.plugin import PluginUpstream, UpstreamPlugin, installed_plugins
from emoprobe.testing.models import write_corpus

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "plugin_example"
DURATIONS = [1.0, 1.5, 1.0, 0.7, 0.02, 1.5]  # 0.02 s: shorter than the toy's 25 ms window


def install_dist_info(site: Path) -> Path:
    """Write the example package's dist-info (METADATA and entry_points.txt from its
    pyproject.toml) into `site`, as an installer does; `site` and the package folder then go
    on sys.path."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in points.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


@pytest.fixture
def toy_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = install_dist_info(tmp_path / "site")
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("emoprobe_toy", None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("plugin-corpus"), DURATIONS)


def _extract(corpus: Path, model: str, out: Path, **kw) -> tuple[Path, list[int]]:
    sizes: list[int] = []
    result = run_extraction(corpus, model, out, progress=False, torch_threads=1,
                            on_error="skip", on_batch=lambda info: sizes.append(info["done"]),
                            **kw)
    return result.path, sizes


def test_example_plugin_is_discovered_through_its_entry_point_and_extracts(
        toy_plugin: Path, corpus: Path, tmp_path: Path) -> None:
    point = installed_plugins()["toy"]
    assert point.value == "emoprobe_toy:ToyUpstream"
    assert point.dist.name == "emoprobe-toy-upstream"
    upstream = load_upstream("toy:3")
    assert isinstance(upstream, PluginUpstream) and upstream.n_layers == 4

    batched, sizes = _extract(corpus, "toy:3", tmp_path / "big", batch_seconds=20)
    single, single_sizes = _extract(corpus, "toy:3", tmp_path / "one", batch_seconds=0.01)
    assert batched.name == "toy_3.h5"
    assert len(sizes) == 1 and len(single_sizes) == len(DURATIONS)
    from emoprobe_toy import ToyUpstream

    plugin = ToyUpstream("3")
    with open_cache(batched) as a, open_cache(single) as b:
        assert a.meta["upstream_kind"] == "plugin" and a.meta["model_type"] == "toy"
        assert a.meta["plugin_distribution"] == "emoprobe-toy-upstream"
        assert a.meta["upstream"]["plugin_identity"]["seed"] == 3
        assert a.n_layers == 4 and a.dim == 16
        assert list(a.failed) == ["utt0004"] and "too short" in a.failed["utt0004"]
        np.testing.assert_allclose(a.layers(), b.layers(), atol=1e-5, equal_nan=True)
        for i, rec in enumerate(read_manifest(corpus)):
            if i == 4:
                continue
            wave, _ = load_audio(rec["path"], 16000)
            layers, valid = plugin.forward(torch.from_numpy(wave)[None],
                                           torch.tensor([len(wave)]))
            ref = np.stack([h[0, : int(valid[0])].double().mean(0).numpy() for h in layers])
            np.testing.assert_allclose(a.layers()[:, i], ref, atol=1e-5)
            assert a.n_frames[i] == 1 + (len(wave) - 400) // 320


def test_plugin_selection_errors_name_the_problem(toy_plugin: Path) -> None:
    with pytest.raises(ExtractionError, match=r"no upstream plugin named 'nosuch'.*toy"):
        load_upstream("nosuch:1")
    with pytest.raises(ExtractionError, match=r"'toy'.*could not start.*integer seed"):
        load_upstream("toy:abc")
    with pytest.raises(ExtractionError, match="--revision applies to transformers"):
        load_upstream("toy:1", revision="v2")
    with pytest.raises(ExtractionError, match="upstream plugins take audio"):
        load_upstream("toy:1", modality="text")


class _Broken(UpstreamPlugin):
    """Declares three layers of 8 dims and returns two."""

    n_layers, dim = 3, 8

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor):
        h = torch.zeros(waves.shape[0], 4, self.dim)
        return [h, h], torch.full((waves.shape[0],), 4)

    def identity(self) -> dict:
        return {}


class _Undeclared(_Broken):
    n_layers = 0


def test_plugin_contract_violations_are_errors() -> None:
    upstream = PluginUpstream(_Broken, "broken", "")
    with pytest.raises(ExtractionError, match="returned 2 layers, declared 3"):
        upstream.pool([np.zeros(1600, np.float32)])
    with pytest.raises(ExtractionError, match="n_layers is 0, expected a positive integer"):
        PluginUpstream(_Undeclared, "undeclared", "")


def test_cli_extract_with_a_plugin(toy_plugin: Path, corpus: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["extract", "--manifest", str(corpus), "--model", "toy:7", "--out",
                 str(tmp_path), "--on-error", "skip", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "toy_7.h5 (complete)" in out and "5 extracted now" in out and "1 failed" in out


@pytest.mark.slow
def test_plugin_is_found_by_a_fresh_interpreter(toy_plugin: Path, corpus: Path,
                                                tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(toy_plugin),
                                                        str(PLUGIN)])}
    proc = subprocess.run(
        [sys.executable, "-m", "emoprobe", "extract", "--manifest", str(corpus), "--model",
         "toy:3", "--out", str(tmp_path), "--on-error", "skip", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open_cache(tmp_path / "toy_3.h5") as cache:
        assert cache.n_layers == 4 and int(cache.usable.sum()) == len(DURATIONS) - 1
