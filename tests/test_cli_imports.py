"""The command line starts fast: building the parser (what `--help` does) imports none of the
heavy libraries; the commands import them when they run. Start-up time itself is measured by
benchmarks/bench_startup.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "transformers", "scipy", "pandas", "matplotlib")


def _loaded_after(code: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_building_the_parser_imports_no_heavy_library():
    loaded = _loaded_after("from emoprobe.cli import build_parser\nbuild_parser()")
    assert loaded == []


@pytest.mark.slow
def test_every_command_help_imports_no_heavy_library():
    from emoprobe.cli import COMMANDS

    code = ("import contextlib, io\nfrom emoprobe.cli import main\n"
            f"for cmd in {COMMANDS!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()), "
            "contextlib.suppress(SystemExit):\n"
            "        main([cmd, '--help'])")
    assert _loaded_after(code) == []


@pytest.mark.slow
def test_the_check_sees_a_heavy_import():
    # The same probe reports a heavy library when one is imported: the checks above can fail.
    assert "torch" in _loaded_after("import emoprobe.extract.runner")
