"""`emoprobe run CONFIG`: prepare -> extract -> probe -> report for every corpus x upstream
listed in one TOML file. Everything lands under the config's `out` folder:

    OUT/manifests/<corpus>.jsonl        prepared manifests (with the settings that made them)
    OUT/features/<corpus>/<upstream>.h5 caches
    OUT/results/                        the probe results directory (emoprobe.probe.results)
    OUT/results/report/                 tables and plots

Re-running the same config reuses everything still valid: a manifest whose corpus settings
(and, for a manifest file, its content) are unchanged, a cache whose fingerprint matches
(extract resumes an interrupted one), and every probe fold already computed for the same
caches and settings. A cache made from other inputs is replaced, and the run says so. A
corpus folder is not re-read when only its files change: delete OUT/manifests/<name>.* then.

Example config::

    out = "runs/demo"

    [[corpus]]
    source = "iemocap"                 # iemocap | msp_improv | emotiontalk | emobox | manifest
    root = "/data/IEMOCAP_full_release"
    # name (for file names), task (a name, a label-map table, or a list of them, e.g.
    # ["4class", "valence"]), allow_subset, check, workers;
    # manifest only: corpus (tag the records), folds, seed; manifest and emobox: audio_root;
    # probe time: manifest (labels/speakers/folds read when probing), probe_folds

    [[upstream]]
    model = "fbank"                    # hub id, local checkpoint folder, fbank, egemaps, NAME:ARG
    # any extract setting: modality ("text": a text encoder over the transcripts), revision,
    # dtype, device, batch_seconds, batch_tokens, max_seconds, on_error, name

    [task]                             # optional: a label map for every corpus
    name = "4class"
    classes = {neu = ["neu", "neutral"], ang = ["ang", "angry"]}
    drop = ["xxx"]

    [probe]                            # any ProbeOptions field, plus layers, jobs, folds
    seeds = 3
    preset = "superb"
    folds = "loso"                     # loso | kfold:K[:SEED] | a field | a fold file

    [[cross]]                          # optional cross-corpus pairs (corpus names)
    train = "iemocap"
    test = "msp_improv"

    [report]
    format = "md"
    plots = true
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoprobe.data.tasks import Task, label_map_task
from emoprobe.errors import CacheError, ManifestError, ProbeError
from emoprobe.probe.config import ProbeOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {"out", "corpus", "upstream", "probe", "cross", "report", "task", "fuse"}
FUSE_KEYS = {"models", "corpus"}
CORPUS_KEYS = {"source", "root", "name", "corpus", "task", "allow_subset", "folds", "seed",
               "audio_root", "check", "workers", "manifest", "probe_folds"}
PROBE_EXTRA = {"layers", "jobs", "task", "folds"}
REPORT_KEYS = {"format", "plots"}
TASK_KEYS = {"name", "classes", "drop"}


@dataclass
class CorpusEntry:
    source: str
    root: str
    name: str
    task: str | Task | None
    prepare: dict[str, Any]
    manifest: str | None = None  # read at probe time instead of the prepared one's copy
    folds: str | None = None  # probe-time fold spec (emoprobe.data.folds.resolve_folds)
    tasks: list[str | Task | None] = field(default_factory=list)  # all probed; `task` first


@dataclass
class RunConfig:
    """A validated run configuration (paths resolved against the config file's folder)."""

    out: Path
    corpora: list[CorpusEntry]
    upstreams: list[dict[str, Any]]
    options: ProbeOptions
    layers: str | list[int] | None = None
    jobs: int = 1
    cross: list[tuple[str, str]] = field(default_factory=list)
    report_format: str = "md"
    plots: bool = True
    # fusion probes: ((model, layer or None) per part, corpus names)
    fusions: list[tuple[tuple[tuple[str, int | None], ...], list[str]]] = field(
        default_factory=list)


def _where(source: str | Path | None) -> str:
    return str(source) if source is not None else "config"


def parse_config(data: Mapping[str, Any], base: Path | None = None,
                 source: str | Path | None = None) -> RunConfig:
    """Validate a config mapping; every mistake names the table and key."""
    where = _where(source)
    base = base or Path.cwd()
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ProbeError(f"{where}: unknown top-level key(s) {unknown}; known: {sorted(TOP_KEYS)}")

    def path(value: Any) -> str:
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else (base / p))

    if "out" not in data:
        raise ProbeError(f"{where}: `out` (the folder for everything the run writes) is missing")
    def fold_spec(value: Any, table: str) -> str | None:
        """A fold spec; a relative path that exists next to the config resolves there."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise ProbeError(f"{where}: {table} folds = {value!r}; expected a string: loso, "
                             "kfold:K[:SEED], a manifest field or a fold file")
        local = Path(value).expanduser()
        return path(value) if not local.is_absolute() and (base / local).exists() else value

    probe_table = dict(data.get("probe") or {})
    default_folds = probe_table.pop("folds", None)
    default_task = (_task_table(data["task"], f"{where}: [task]")
                    if data.get("task") is not None else None)
    corpora = []
    for i, c in enumerate(data.get("corpus") or []):
        bad = sorted(set(c) - CORPUS_KEYS)
        if bad:
            raise ProbeError(f"{where}: [[corpus]] #{i + 1}: unknown key(s) {bad}; known: "
                             f"{sorted(CORPUS_KEYS)}")
        for key in ("source", "root"):
            if key not in c:
                raise ProbeError(f"{where}: [[corpus]] #{i + 1} needs `{key}`")
        name = str(c.get("name") or (
            Path(str(c["root"])).stem if c["source"] == "manifest"
            else Path(str(c["root"])).name if c["source"] == "emobox"  # data/<corpus>
            else c["source"]))
        prep = {k: c[k] for k in ("allow_subset", "folds", "seed", "check", "workers")
                if k in c}
        if "audio_root" in c:
            prep["audio_root"] = path(c["audio_root"])
        if c["source"] == "manifest" and c.get("corpus"):
            prep["name"] = c["corpus"]  # the corpus the records are tagged with
        given = c.get("task", default_task)
        tasks = []
        for task in (given if isinstance(given, list) and given else [given]):
            if isinstance(task, Mapping):
                task = _task_table(task, f"{where}: [[corpus]] #{i + 1} task")
            elif task is not None and not isinstance(task, (str, Task)):
                raise ProbeError(f"{where}: [[corpus]] #{i + 1} task = {given!r}; expected a "
                                 "task name, a table with name, classes and drop, or a list "
                                 'of those (e.g. ["4class", "valence"])')
            tasks.append(task)
        corpora.append(CorpusEntry(
            str(c["source"]), path(c["root"]), name, tasks[0], prep,
            manifest=path(c["manifest"]) if c.get("manifest") else None,
            folds=fold_spec(c.get("probe_folds", default_folds), f"[[corpus]] #{i + 1}"),
            tasks=tasks,
        ))
    if not corpora:
        raise ProbeError(f"{where}: no [[corpus]] listed")
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise ProbeError(f"{where}: corpus names repeat {names}; give each a distinct `name`")
    upstreams = []
    model_of: dict[str, str] = {}  # as written -> as resolved
    for i, u in enumerate(data.get("upstream") or []):
        if "model" not in u:
            raise ProbeError(f"{where}: [[upstream]] #{i + 1} needs `model`")
        u = dict(u)
        model = str(u["model"])
        local = Path(model).expanduser()
        if not local.is_absolute() and (base / local).is_dir():
            u["model"] = str(base / local)
        model_of[model] = model_of[str(u["model"])] = str(u["model"])
        upstreams.append(u)
    if not upstreams:
        raise ProbeError(f"{where}: no [[upstream]] listed")
    extra = {k: probe_table.pop(k) for k in list(probe_table) if k in PROBE_EXTRA}
    if "task" in extra:
        raise ProbeError(f"{where}: [probe] task: set the task per corpus in [[corpus]], "
                         "or for every corpus in [task]")
    try:
        options = ProbeOptions.from_dict(probe_table)
    except TypeError as exc:
        raise ProbeError(f"{where}: [probe]: {exc}") from None
    cross = []
    for i, pair in enumerate(data.get("cross") or []):
        if set(pair) != {"train", "test"}:
            raise ProbeError(f"{where}: [[cross]] #{i + 1} needs exactly `train` and `test`")
        for key in ("train", "test"):
            if pair[key] not in names:
                raise ProbeError(f"{where}: [[cross]] #{i + 1} {key} = {pair[key]!r} is not a "
                                 f"listed corpus; listed: {names}")
        cross.append((str(pair["train"]), str(pair["test"])))
    from emoprobe.probe.fusion import parse_part

    fusions = []
    for i, f in enumerate(data.get("fuse") or []):
        at = f"{where}: [[fuse]] #{i + 1}"
        bad = sorted(set(f) - FUSE_KEYS)
        models = f.get("models")
        if bad or not isinstance(models, list) or len(models) < 2:
            raise ProbeError(f"{at}: expected `models` (two or more upstream models, each "
                             "optionally MODEL:LAYER) and optionally `corpus`"
                             + (f"; unknown key(s) {bad}" if bad else ""))
        parts = []
        for m in models:
            model, layer = parse_part(str(m))
            if model not in model_of:
                raise ProbeError(f"{at}: model {model!r} is not a listed [[upstream]]; listed: "
                                 f"{[str(u['model']) for u in upstreams]}")
            parts.append((model_of[model], layer))
        chosen = f.get("corpus", names)
        chosen = [chosen] if isinstance(chosen, str) else list(chosen)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise ProbeError(f"{at}: corpus {unknown} not listed; listed: {names}")
        fusions.append((tuple(parts), chosen))
    rep = dict(data.get("report") or {})
    bad = sorted(set(rep) - REPORT_KEYS)
    if bad:
        raise ProbeError(f"{where}: [report]: unknown key(s) {bad}; known: {sorted(REPORT_KEYS)}")
    return RunConfig(
        out=Path(path(data["out"])), corpora=corpora, upstreams=upstreams, options=options,
        layers=extra.get("layers"), jobs=int(extra.get("jobs", 1)), cross=cross, fusions=fusions,
        report_format=str(rep.get("format", "md")), plots=bool(rep.get("plots", True)),
    )


def _task_table(table: Any, where: str) -> Task:
    """A task from a config table: `name`, `classes = {neu = ["neutral", "N"], ...}` and
    optionally `drop = [...]` (codes left out on purpose)."""
    if not isinstance(table, Mapping):
        raise ProbeError(f"{where}: expected a table with name, classes and drop, got {table!r}")
    bad = sorted(set(table) - TASK_KEYS)
    if bad:
        raise ProbeError(f"{where}: unknown key(s) {bad}; known: {sorted(TASK_KEYS)}")
    if "classes" not in table:
        raise ProbeError(f"{where}: needs `classes` (class -> raw codes), e.g. "
                         'classes = {neu = ["neutral", "N"], ang = ["angry", "A"]}')
    try:
        return label_map_task(table["classes"], name=str(table.get("name", "custom")),
                              drop=table.get("drop", ()), where=where)
    except ManifestError as exc:
        raise ProbeError(str(exc)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, base=path.resolve().parent, source=path)


@dataclass
class PipelineResult:
    """Paths and tables a run produced."""

    manifests: dict[str, Path]
    caches: dict[tuple[str, str], Path]
    results: Path
    report_text: str
    reused: dict[str, int]


def _prepare(entry: CorpusEntry, out: Path, say: Callable[[str], None],
             progress: bool) -> tuple[Path, bool]:
    """Prepare a corpus's manifest unless one made with the same settings exists."""
    from emoprobe.data.prepare import prepare_corpus

    folder = out / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{entry.name}.jsonl"
    stamp = folder / f"{entry.name}.settings.json"
    wanted: dict[str, Any] = {"source": entry.source, "root": entry.root, **entry.prepare}
    root = Path(entry.root)
    if root.is_file():  # a manifest file: its content is part of what made the result
        wanted["root_sha256"] = hashlib.sha256(root.read_bytes()).hexdigest()
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        say(f"[prepare] {entry.name}: reusing {manifest}")
        return manifest, True
    say(f"[prepare] {entry.name}: {entry.source} from {entry.root}")
    prepare_corpus(entry.source, entry.root, out=manifest, progress=progress, echo=say,
                   **entry.prepare)
    stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    return manifest, False


def _extract(manifest: Path, upstream: Mapping[str, Any], folder: Path,
             say: Callable[[str], None], progress: bool) -> tuple[Path, bool]:
    """Extract (or reuse, or resume) one cache; a stale cache made from other inputs is
    replaced because the run owns its output folder."""
    from emoprobe.cache.store import read_meta
    from emoprobe.extract.runner import run_extraction

    settings = {k: v for k, v in upstream.items() if k != "model"}
    settings.setdefault("progress", progress)
    model = str(upstream["model"])
    try:
        result = run_extraction(manifest, model, folder, **settings)
    except CacheError as exc:
        stale = False
        for candidate in folder.glob("*.h5"):
            try:
                meta = read_meta(candidate)
            except CacheError:
                continue
            if meta.get("model") == model and meta.get("complete"):
                stale = True
        if not stale:
            raise
        say(f"[extract] {model}: replacing a stale cache ({exc})")
        result = run_extraction(manifest, model, folder, **{**settings, "overwrite": True})
    reused = result.summary.reused == result.summary.total and result.summary.total > 0
    verb = "reusing" if reused else "extracted"
    say(f"[extract] {model} on {manifest.stem}: {verb} {result.path}")
    return result.path, reused


def run_pipeline(
    config: str | Path | Mapping[str, Any] | RunConfig,
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> PipelineResult:
    """Run prepare -> extract -> probe -> report for a config (a TOML path, a mapping or a
    RunConfig) and return what it produced; re-running reuses whatever is still valid."""
    from emoprobe.probe.report import report
    from emoprobe.probe.sweep import Source, run_sweep

    say = echo or (lambda _: None)
    if isinstance(config, RunConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = parse_config(config)
    else:
        cfg = load_config(config)
    cfg.out.mkdir(parents=True, exist_ok=True)
    reused = {"manifests": 0, "caches": 0}
    manifests: dict[str, Path] = {}
    for entry in cfg.corpora:
        manifests[entry.name], again = _prepare(entry, cfg.out, say, progress)
        reused["manifests"] += again
    caches: dict[tuple[str, str], Path] = {}
    for entry in cfg.corpora:
        for up in cfg.upstreams:
            path, again = _extract(manifests[entry.name], up, cfg.out / "features" / entry.name,
                                   say, progress)
            caches[(entry.name, str(up["model"]))] = path
            reused["caches"] += again
    layers = cfg.layers if not isinstance(cfg.layers, list) else tuple(cfg.layers)
    task_of = {e.name: e.tasks for e in cfg.corpora}
    manifest_of = {e.name: e.manifest for e in cfg.corpora}
    items = [Source((str(caches[(e.name, str(u["model"]))]),), task=t, layers=layers,
                    manifests=(e.manifest,), folds=e.folds)
             for e in cfg.corpora for t in e.tasks for u in cfg.upstreams]
    for train, test in cfg.cross:
        if task_of[train] != task_of[test]:
            raise ProbeError(f"cross-corpus {train} -> {test}: give both corpora the same "
                             f"`task` (or none), got {task_of[train]!r} and {task_of[test]!r}")
        for t in task_of[train]:
            for u in cfg.upstreams:
                items.append(Source((str(caches[(train, str(u["model"]))]),
                                     str(caches[(test, str(u["model"]))])),
                                    task=t, layers=layers,
                                    manifests=(manifest_of[train], manifest_of[test])))
    for parts, chosen in cfg.fusions:
        for e in cfg.corpora:
            if e.name not in chosen:
                continue
            for t in e.tasks:
                items.append(Source(tuple(str(caches[(e.name, m)]) for m, _ in parts), task=t,
                                    layers=layers, manifests=(e.manifest,) * len(parts),
                                    folds=e.folds, fuse=tuple(layer for _, layer in parts)))
    say(f"[probe] {len(items)} dataset(s) x upstream(s) -> {cfg.out / 'results'}")
    run_sweep(items, cfg.options, out=cfg.out / "results", jobs=cfg.jobs, progress=progress)
    rep = report(cfg.out / "results", fmt=cfg.report_format, plots=cfg.plots)
    say(f"[report] {len(rep.files)} files in {cfg.out / 'results' / 'report'}")
    return PipelineResult(manifests, caches, cfg.out / "results", rep.text, reused)


def run_demo(out: str | Path, *, seed: int = 0, manifest: str | Path | None = None,
             progress: bool = False,
             echo: Callable[[str], None] | None = print) -> PipelineResult:
    """The whole chain on the built-in demo corpus: its manifest (prepared here unless
    `manifest` is given), the fbank baseline and a small randomly initialised wav2vec2 (saved
    under OUT/models; no download), probed on leave-one-session-out folds."""
    from emoprobe.testing.models import build_model

    out = Path(out)
    if manifest is None:
        from emoprobe.data.demo import prepare_demo

        manifest = prepare_demo(out, seed=seed, echo=echo).manifest
    model_dir = out / "models" / "random-wav2vec2"
    if not (model_dir / "config.json").exists():
        build_model("wav2vec2-group", model_dir, seed=seed)
    config = {
        "out": str(out / "run"),
        "corpus": [{"source": "manifest", "root": str(manifest), "name": "demo",
                    "allow_subset": True}],
        # One torch thread: the model is tiny, and thread start-up and barriers would cost
        # more than they save (much more on a busy machine).
        "upstream": [{"model": "fbank"}, {"model": str(model_dir), "torch_threads": 1}],
        "probe": {"seeds": 2, "n_boot": 200},
        "report": {"format": "md", "plots": True},
    }
    return run_pipeline(config, progress=progress, echo=echo)
