"""Extraction throughput: emoprobe's `extract` against the loop a researcher writes first.

For each model, over the same corpus, with the same torch threads:

- naive: one utterance at a time: load_audio -> feature extractor -> model -> mean of every
  hidden state; nothing runs in the background;
- emoprobe: `emoprobe.extract.run_extraction` (length-sorted batches, background decoding,
  masked pooling, crash-safe cache writes).

Both include loading the model. The two methods run alternately (`--rounds`) and the best run
of each is reported, since other load on a shared machine drifts; CPU seconds are reported
too. A second corpus has all-different lengths (`--distinct N` synthetic utterances of
1-12 s, 400 by default, 20 with `--quick`), where a group-norm model such as wav2vec2-base
batches only through the front end run per utterance ("frame-masked" batching); it runs a
wav2vec2-base-sized model and also reports the largest difference between the two methods'
pooled vectors. `--quick` runs only that case, once. Reported: audio seconds per wall second and
per CPU second, the speed-up, and the share of the model loop's time spent waiting for
audio. Also: CPU time per utterance against batch size on one thread (why CPU batches stay
small). A last part times the cache layout choice (contiguous vs chunked `pooled`) for
scattered batch writes and layer reads.

    python benchmarks/bench_extract.py --out benchmarks/results/extract.json
    python benchmarks/bench_extract.py --quick --out benchmarks/results/extract-distinct.json
    python benchmarks/bench_extract.py --quick --distinct 400 --device cuda --dtype bfloat16 \
        --out benchmarks/results/extract-distinct-gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from emoprobe.cache import open_cache  # noqa: E402
from emoprobe.data.audio import load_audio  # noqa: E402
from emoprobe.data.manifest import read_manifest, write_manifest  # noqa: E402
from emoprobe.extract.runner import run_extraction  # noqa: E402
from emoprobe.system import available_cpus, versions  # noqa: E402
from emoprobe.testing.models import build_wav2vec2_base, write_corpus  # noqa: E402


def naive_loop(records: list[dict], model_dir: str, device: str, dtype: str,
               keep: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The straightforward loop, timed end to end (model loading included); `keep` collects
    the pooled vectors (layers, dim) per utterance id."""
    from transformers import AutoFeatureExtractor, AutoModel

    torch_dtype = getattr(torch, dtype)
    start = time.perf_counter()
    cpu_start = time.process_time()
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    if model.config.model_type == "whisper":
        model = model.get_encoder()
    model.to(device=device, dtype=torch_dtype)
    audio_seconds = 0.0
    model_seconds = 0.0
    checksum = 0.0
    for rec in records:
        wave, sr = load_audio(rec["path"], fe.sampling_rate)
        audio_seconds += len(wave) / sr
        inputs = fe([wave], sampling_rate=sr, return_tensors="pt")
        key = "input_features" if "input_features" in inputs else "input_values"
        x = inputs[key].to(device=device, dtype=torch_dtype)
        t0 = time.perf_counter()
        with torch.inference_mode():
            hidden = model(x, output_hidden_states=True).hidden_states
        pooled = torch.stack([h[0].float().mean(0) for h in hidden]).cpu().numpy()
        model_seconds += time.perf_counter() - t0
        checksum += float(pooled[-1, 0])
        if keep is not None:
            keep[rec["id"]] = pooled
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "audio_seconds": round(audio_seconds, 2), "speed": round(audio_seconds / wall, 3),
            "speed_per_cpu_second": round(audio_seconds / cpu, 3),
            "model_share": round(model_seconds / wall, 4), "checksum": checksum}


def emoprobe_run(manifest: Path, model_dir: str, out: Path, args: argparse.Namespace
                 ) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_start = time.process_time()
    result = run_extraction(manifest, model_dir, out, device=args.device, dtype=args.dtype,
                            batch_seconds=args.batch_seconds, workers=args.workers,
                            overwrite=True, progress=False)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    s = result.summary
    with open_cache(result.path) as cache:
        batching = cache.meta.get("batching")
    return {"path": str(result.path), "batching": batching,
            "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "audio_seconds": round(s.audio_seconds, 2),
            "speed": round(s.audio_seconds / wall, 3),
            "speed_per_cpu_second": round(s.audio_seconds / cpu, 3),
            "model_wait_share": round(s.wait_share, 4),
            "wait_seconds": round(s.wait_seconds, 2),
            "model_loop_seconds": round(s.model_seconds, 2), "failed": len(s.failed)}


def batch_scaling(model_dir: str, seconds: float = 3.0, sizes: tuple[int, ...] = (1, 2, 4, 8)
                  ) -> dict[str, Any]:
    """CPU seconds per utterance against batch size, on one thread (process time, so other
    load on the machine hardly matters): does batching pay on a CPU?"""
    from emoprobe.extract.upstream import load_upstream

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        up = load_upstream(model_dir)
        rng = np.random.default_rng(0)
        n = int(seconds * up.sample_rate)
        best: dict[int, float] = {}
        for _ in range(2):
            for b in sizes:
                groups = up.prepare([0.1 * rng.standard_normal(n).astype(np.float32)
                                     for _ in range(b)])
                t0 = time.process_time()
                for g in groups:
                    up.run(g)
                per_utt = (time.process_time() - t0) / b
                best[b] = min(best.get(b, float("inf")), per_utt)
    finally:
        torch.set_num_threads(before)
    return {"utterance_seconds": seconds, "threads": 1,
            "cpu_seconds_per_utterance": {str(b): round(v, 4) for b, v in best.items()}}


def cache_layout(n: int = 5531, layers: int = 13, dim: int = 768, batch: int = 16
                 ) -> dict[str, Any]:
    """Write `pooled` in length-sorted (i.e. scattered) batches, then read one layer, for a
    contiguous dataset (the format's choice) and two chunkings."""
    import h5py

    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    block = rng.standard_normal((layers, batch, dim)).astype(np.float32)
    out: dict[str, Any] = {"n_utterances": n, "layers": layers, "dim": dim, "batch": batch}
    layouts = {"contiguous": None, "chunks_1x256xD": (1, 256, dim),
               "chunks_Lx1xD": (layers, 1, dim)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, chunks in layouts.items():
            path = Path(tmp) / f"{name}.h5"
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("pooled", (layers, n, dim), np.float32, chunks=chunks)
                t0 = time.perf_counter()
                for k in range(0, n, batch):
                    idx = np.sort(order[k:k + batch])
                    ds[:, idx, :] = block[:, : len(idx)]
                    f.flush()
                write = time.perf_counter() - t0
            os.system(f"sync {path} 2>/dev/null")
            with h5py.File(path, "r") as f:
                t0 = time.perf_counter()
                _ = f["pooled"][layers // 2]
                read = time.perf_counter() - t0
            out[name] = {"write_seconds": round(write, 3), "read_layer_seconds": round(read, 4)}
    return out


def compare(records: list[dict], manifest: Path, model_dir: str, work: Path,
            args: argparse.Namespace, *, label: str, check_values: bool = False
            ) -> dict[str, Any]:
    """Naive loop and emoprobe, alternating for `args.rounds` rounds; the best of each."""
    runs: dict[str, list[dict[str, Any]]] = {"naive": [], "emoprobe": []}
    naive_pooled: dict[str, np.ndarray] = {}
    for r in range(args.rounds):  # alternate the order: shared machines drift
        order = ["naive", "emoprobe"] if r % 2 == 0 else ["emoprobe", "naive"]
        for method in order:
            print(f"{label}: {method} (round {r + 1}) ...", flush=True)
            load = os.getloadavg()[0]
            if method == "naive":
                keep = naive_pooled if check_values and not naive_pooled else None
                run = naive_loop(records, model_dir, args.device, args.dtype, keep)
            else:
                run = emoprobe_run(manifest, model_dir, work / "out", args)
            run["load_avg_before"] = round(load, 2)
            runs[method].append(run)
            print(f"  {run}", flush=True)
    best = {m: max(v, key=lambda x: x["speed"]) for m, v in runs.items()}
    out = {
        "naive": best["naive"], "emoprobe": best["emoprobe"],
        "speedup": round(best["emoprobe"]["speed"] / best["naive"]["speed"], 3),
        "speedup_per_cpu_second": round(best["emoprobe"]["speed_per_cpu_second"]
                                        / best["naive"]["speed_per_cpu_second"], 3),
        "model_wait_share_max": max(x["model_wait_share"] for x in runs["emoprobe"]),
        "all_runs": runs,
    }
    if check_values:  # the same numbers, batched or not
        with open_cache(best["emoprobe"]["path"]) as cache:
            pooled = cache.layers()
            ids = list(cache.ids)
        diff = max(float(np.abs(pooled[:, i] - naive_pooled[u]).max()) for i, u in
                   enumerate(ids))
        out["max_abs_difference_naive_vs_emoprobe"] = diff
    return out


def distinct_corpus(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` synthetic utterances of 1-12 s at 16 kHz, every length different."""
    rng = np.random.default_rng(seed)
    seconds = rng.uniform(1.0, 12.0, n)
    assert len({round(x * 16000) for x in seconds}) == n, "lengths must all differ"
    return write_corpus(folder, seconds.tolist(), seed=seed)


def checksum_cost(n: int = 5531, layers: int = 13, dim: int = 768, batch: int = 16
                  ) -> dict[str, Any]:
    """What the per-row checksums cost: CRC-32 time inside `CacheWriter.write_rows` for an
    IEMOCAP-sized cache written in scattered batches, and a full verification pass
    (`CacheReader.damaged_rows`, as `info --repair` runs it) against reading every layer."""
    from emoprobe.cache.store import CacheWriter, open_cache, row_checksums

    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    block = rng.standard_normal((layers, batch, dim)).astype(np.float32)
    records = [{"id": f"u{i}", "path": f"/a/{i}.wav", "label": "neu"} for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.h5"
        w = CacheWriter.create(path, records, n_layers=layers, dim=dim)
        crc = 0.0
        t0 = time.perf_counter()
        for k in range(0, n, batch):
            idx = np.sort(order[k:k + batch])
            rows = block[:, : len(idx)]
            w.write_rows(idx, rows, np.ones(len(idx)), np.ones(len(idx)))
            t1 = time.perf_counter()
            for layer in rows:
                row_checksums(layer)
            crc += time.perf_counter() - t1
        write = time.perf_counter() - t0 - crc  # the CRCs timed again outside write_rows
        w.finalize()
        with open_cache(path) as c:
            t0 = time.perf_counter()
            for layer in range(layers):
                c.layer(layer)
            read = time.perf_counter() - t0
            t0 = time.perf_counter()
            damaged = c.damaged_rows()
            verify = time.perf_counter() - t0
    return {"n_utterances": n, "layers": layers, "dim": dim, "batch": batch,
            "write_rows_seconds": round(write, 3), "checksum_seconds": round(crc, 3),
            "checksum_share_of_writing": round(crc / write, 4),
            "read_all_layers_seconds": round(read, 3), "verify_seconds": round(verify, 3),
            "damaged": len(damaged)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/extract.json")
    p.add_argument("--manifest", type=Path, default=SHARED / "data/urdu/manifest.jsonl")
    p.add_argument("--limit", type=int, help="first N utterances only")
    p.add_argument("--models", nargs="+", default=["whisper-tiny.en", "wav2vec2-base-random"],
                   help="local folders, or the two defaults")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--batch-seconds", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--rounds", type=int, help="alternating runs per method; the best of "
                   "them is reported (default 2, 1 with --quick)")
    p.add_argument("--distinct", type=int, metavar="N",
                   help="utterances of the all-different-lengths case (default 400, 20 with "
                   "--quick; 0 skips it)")
    p.add_argument("--quick", action="store_true",
                   help="only the all-different-lengths case, 20 utterances, one round")
    p.add_argument("--skip-layout", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--only-cache", action="store_true",
                   help="only the cache measurements (layout, row checksums), no model")
    args = p.parse_args()
    if args.only_cache:
        results = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "machine": {"cpus": available_cpus(), "platform": platform.platform()},
                   "versions": versions(), "cache_layout": cache_layout(),
                   "checksums": checksum_cost()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
        return 0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.distinct is None:
        args.distinct = 20 if args.quick else 400

    records = [] if args.quick else read_manifest(args.manifest)[: args.limit]
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": available_cpus(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "device": args.device,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else None},
        "versions": versions(),
        "corpus": {"manifest": str(args.manifest), "utterances": len(records)},
        "settings": {"dtype": args.dtype, "batch_seconds": args.batch_seconds,
                     "workers": args.workers},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.jsonl"
        if records:
            write_manifest(records, manifest)
        for name in [] if args.quick else args.models:
            if name == "whisper-tiny.en":
                model_dir = str(SHARED / "models/whisper-tiny.en")
            elif name == "wav2vec2-base-random":
                model_dir = str(build_wav2vec2_base(Path(tmp) / name))
            else:
                model_dir = name
            results["models"][name] = compare(records, manifest, model_dir, Path(tmp), args,
                                              label=name)
            if not args.skip_scaling:
                results["models"][name]["cpu_batch_scaling"] = batch_scaling(model_dir)
        if args.distinct:
            model_dir = str(build_wav2vec2_base(Path(tmp) / "wav2vec2-base-random"))
            corpus = distinct_corpus(Path(tmp) / "distinct", args.distinct)
            distinct_records = read_manifest(corpus)
            audio = sum(len(load_audio(r["path"])[0]) / 16000 for r in distinct_records)
            results["distinct_lengths"] = {
                "utterances": len(distinct_records), "audio_seconds": round(audio, 1),
                "model": "wav2vec2-base-random",
                **compare(distinct_records, corpus, model_dir, Path(tmp), args,
                          label=f"distinct lengths x{args.distinct}", check_values=True),
            }
    if not (args.skip_layout or args.quick):
        results["cache_layout"] = cache_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
