"""Command-line start-up: wall time of `emoprobe --help` and of every `emoprobe CMD --help`,
each in a fresh process (best of `--repeat` runs, since other load on a shared machine only
ever adds time), and the heavy libraries the parser pulls in (none is the target).

    python benchmarks/bench_startup.py --out benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emoprobe.cli import COMMANDS  # noqa: E402

TARGET_SECONDS = 1.0
HEAVY = ("torch", "sklearn", "transformers", "scipy", "pandas", "matplotlib")


def time_command(argv: list[str], repeat: int) -> float:
    """Best wall time of `python -m emoprobe ARGV` over `repeat` fresh processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "emoprobe", *argv], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def heavy_modules() -> list[str]:
    """Heavy libraries loaded after building the parser, in a fresh interpreter."""
    code = ("import sys\nfrom emoprobe.cli import build_parser\nbuild_parser()\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH":
                         str(REPO)}, check=True, capture_output=True, text=True).stdout
    return [m for m in out.strip().split(",") if m]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/startup.json")
    p.add_argument("--repeat", type=int, default=5, help="runs per command; the best is kept")
    args = p.parse_args()
    baseline = time_command(["--version"], args.repeat)
    seconds = {"--help": time_command(["--help"], args.repeat)}
    for cmd in COMMANDS:
        seconds[f"{cmd} --help"] = time_command([cmd, "--help"], args.repeat)
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_avg_before": round(os.getloadavg()[0], 2),
        "target_seconds": TARGET_SECONDS,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "slowest": round(max(seconds.values()), 3),
        "all_under_target": max(seconds.values()) < TARGET_SECONDS,
        "version_seconds": round(baseline, 3),
        "heavy_modules_after_parser": heavy_modules(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if results["all_under_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
