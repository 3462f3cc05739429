"""`emoprobe run CONFIG`: prepare -> extract -> probe -> report for every corpus x upstream
listed in one TOML file. Everything lands under the config's `out` folder:

    OUT/manifests/<corpus>.jsonl        prepared manifests (with the settings that made them)
    OUT/features/<corpus>/<upstream>.h5 caches
    OUT/results/                        the probe results directory (emoprobe.probe.results)
    OUT/results/report/                 tables and plots

Re-running the same config reuses everything still valid: a manifest whose corpus settings
(and, for a manifest file, its content) are unchanged, a cache of the same model and settings
(extract resumes an interrupted one and adds utterances it lacks; labels, folds and paths do
not matter, and the probe reads them from the current manifest), and every probe fold already
computed for the same data and settings. A cache made with another model or settings, or from
other audio for one of its ids, is replaced, and the run says so. A
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
    # sort = "war"                     # ranking metric (default uar; ccc for regression)
    # published = "all"                # emobox | superb | all: published figures beside ours
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoprobe.data.prepare import GENERIC, SOURCES, PrepareOptions
from emoprobe.data.tasks import Task, label_map_task
from emoprobe.errors import CacheError, ConfigError, ManifestError, utf8_error
from emoprobe.extract.settings import ExtractSettings
from emoprobe.layers import parse_layer_spec
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.tables import FORMATS
from emoprobe.validation import Rule, check_settings, check_value, field_names, rule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = ("out", "corpus", "upstream", "task", "probe", "cross", "fuse", "report")
FUSE_KEYS = ("models", "corpus")
PROBE_EXTRA = ("layers", "jobs")
REPORT_KEYS = {"format": "report_format", "plots": "plots", "sort": "sort",
               "published": "published"}
TASK_KEYS = ("name", "classes", "drop")
FOLDS_EXPECTED = "a string: loso, kfold:K[:SEED], a manifest field or a fold file"


@dataclass(frozen=True)
class CorpusTable:
    """The keys of a [[corpus]] table besides the PrepareOptions fields: `name` names the
    files the run writes, `corpus` tags the records of a manifest source, `task` is a task
    name, a label-map table or a list of those, `manifest` and `probe_folds` are read when
    probing."""

    source: str = field(default="", metadata=rule(choices=SOURCES))
    root: str = ""
    name: str | None = field(default=None, metadata=rule(path_safe=True))
    corpus: str | None = None
    task: Any = None
    manifest: str | None = None
    probe_folds: str | None = field(default=None, metadata=rule(expected=FOLDS_EXPECTED))


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
    layers: str | list[int] | None = field(default=None, metadata=rule(
        convert=parse_layer_spec,
        expected="a layer spec such as \"all\" or \"0,3,5-8\", or a list of layer numbers"))
    jobs: int = field(default=1, metadata=rule(ge=1))
    cross: list[tuple[str, str]] = field(default_factory=list)
    report_format: str = field(default="md", metadata=rule(choices=FORMATS))
    plots: bool = True
    sort: str | None = None  # the leaderboard's ranking metric (default UAR, CCC)
    published: str | None = field(default=None, metadata=rule(
        choices=("emobox", "superb", "all")))
    # fusion probes: ((model, layer or None) per part, corpus names)
    fusions: list[tuple[tuple[tuple[str, int | None], ...], list[str]]] = field(
        default_factory=list)


def _where(source: str | Path | None) -> str:
    return str(source) if source is not None else "config"


def _tables(data: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    """An array of tables ([[key]]), refused with its name when it is something else."""
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise ConfigError(f"{where}: `{key}` must be an array of tables, written [[{key}]]")
    return value


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: `{key}` must be a table, written [{key}]")
    return dict(value)


def parse_config(data: Mapping[str, Any], base: Path | None = None,
                 source: str | Path | None = None) -> RunConfig:
    """Validate a whole config before anything runs, against the settings' own dataclasses
    (CorpusTable and PrepareOptions, ExtractSettings, ProbeOptions, RunConfig); every mistake
    names the table, the key, the value and what was expected."""
    where = _where(source)
    base = base or Path.cwd()
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(TOP_KEYS)}")

    def path(value: Any) -> str:
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else (base / p))

    if "out" not in data:
        raise ConfigError(f"{where}: `out` (the folder for everything the run writes) is missing")
    check_value(str, data["out"], f"{where}: out")

    def fold_spec(value: Any, table: str) -> str | None:
        """A fold spec; a relative path that exists next to the config resolves there."""
        if value is None:
            return None
        check_value(str, value, f"{where}: {table} folds", Rule(expected=FOLDS_EXPECTED))
        local = Path(value).expanduser()
        return path(value) if not local.is_absolute() and (base / local).exists() else value

    probe_table = _table(data, "probe", where)
    default_folds = probe_table.pop("folds", None)
    default_task = (_task_table(data["task"], f"{where}: [task]")
                    if data.get("task") is not None else None)
    corpus_keys = field_names(CorpusTable)
    prepare_keys = [k for k in field_names(PrepareOptions) if k not in corpus_keys]
    corpora = []
    for i, c in enumerate(_tables(data, "corpus", where)):
        at = f"{where}: [[corpus]] #{i + 1}"
        table = check_settings(CorpusTable, c, where=at, ignore=prepare_keys)
        prep = check_settings(PrepareOptions, c, where=at, ignore=corpus_keys)
        for key in ("source", "root"):
            if key not in table:
                raise ConfigError(f"{at} needs `{key}`")
        name = table.get("name") or (
            Path(table["root"]).stem if table["source"] == GENERIC
            else Path(table["root"]).name if table["source"] == "emobox"  # data/<corpus>
            else table["source"])
        if "audio_root" in prep:
            prep["audio_root"] = path(prep["audio_root"])
        if table["source"] == GENERIC and table.get("corpus"):
            prep["name"] = table["corpus"]  # the corpus the records are tagged with
        given = table.get("task", default_task)
        tasks = []
        for task in (given if isinstance(given, list) and given else [given]):
            if isinstance(task, Mapping):
                task = _task_table(task, f"{at} task")
            elif task is not None and not isinstance(task, (str, Task)):
                raise ConfigError(f"{at}: task = {given!r}: expected a task name, a table with "
                                  'name, classes and drop, or a list of those (e.g. ["4class", '
                                  '"valence"])')
            tasks.append(task)
        corpora.append(CorpusEntry(
            table["source"], path(table["root"]), name, tasks[0], prep,
            manifest=path(table["manifest"]) if table.get("manifest") else None,
            folds=fold_spec(table.get("probe_folds", default_folds), f"[[corpus]] #{i + 1}"),
            tasks=tasks,
        ))
    if not corpora:
        raise ConfigError(f"{where}: no [[corpus]] listed")
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: corpus names repeat {names}; give each a distinct `name`")
    upstreams = []
    model_of: dict[str, str] = {}  # as written -> as resolved
    for i, u in enumerate(_tables(data, "upstream", where)):
        at = f"{where}: [[upstream]] #{i + 1}"
        settings = check_settings(ExtractSettings, u, where=at, ignore=("model",))
        if "model" not in u:
            raise ConfigError(f"{at} needs `model`")
        model = check_value(str, u["model"], f"{at}: model")
        local = Path(model).expanduser()
        if not local.is_absolute() and (base / local).is_dir():
            model = str(base / local)
        model_of[str(u["model"])] = model_of[model] = model
        upstreams.append({"model": model, **settings})
    if not upstreams:
        raise ConfigError(f"{where}: no [[upstream]] listed")
    if "task" in probe_table:
        raise ConfigError(f"{where}: [probe] task: set the task per corpus in [[corpus]], "
                          "or for every corpus in [task]")
    extra = check_settings(RunConfig, {k: probe_table.pop(k) for k in PROBE_EXTRA
                                       if k in probe_table}, where=f"{where}: [probe]")
    options = ProbeOptions.from_dict(probe_table, where=f"{where}: [probe]")
    cross = []
    for i, pair in enumerate(_tables(data, "cross", where)):
        if set(pair) != {"train", "test"}:
            raise ConfigError(f"{where}: [[cross]] #{i + 1} needs exactly `train` and `test`")
        for key in ("train", "test"):
            if pair[key] not in names:
                raise ConfigError(f"{where}: [[cross]] #{i + 1} {key} = {pair[key]!r} is not a "
                                  f"listed corpus; listed: {names}")
        train, test = (next(c for c in corpora if c.name == pair[k]) for k in ("train", "test"))
        if train.tasks != test.tasks:
            raise ConfigError(f"{where}: [[cross]] #{i + 1} {train.name} -> {test.name}: give "
                              f"both corpora the same `task` (or none), got {train.tasks!r} and "
                              f"{test.tasks!r}")
        cross.append((train.name, test.name))
    from emoprobe.probe.fusion import parse_part

    fusions = []
    for i, f in enumerate(_tables(data, "fuse", where)):
        at = f"{where}: [[fuse]] #{i + 1}"
        bad = [k for k in f if k not in FUSE_KEYS]
        models = f.get("models")
        if bad or not isinstance(models, list) or len(models) < 2:
            raise ConfigError(f"{at}: expected `models` (two or more upstream models, each "
                              "optionally MODEL:LAYER) and optionally `corpus`"
                              + (f"; unknown key(s) {', '.join(bad)}" if bad else ""))
        parts = []
        for m in models:
            model, layer = parse_part(str(m))
            if model not in model_of:
                raise ConfigError(f"{at}: model {model!r} is not a listed [[upstream]]; "
                                  f"listed: {[str(u['model']) for u in upstreams]}")
            parts.append((model_of[model], layer))
        chosen = f.get("corpus", names)
        chosen = [chosen] if isinstance(chosen, str) else list(chosen)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise ConfigError(f"{at}: corpus {unknown} not listed; listed: {names}")
        fusions.append((tuple(parts), chosen))
    rep = _table(data, "report", where)
    bad = [k for k in rep if k not in REPORT_KEYS]
    if bad:
        raise ConfigError(f"{where}: [report]: unknown key(s) {', '.join(bad)}; valid: "
                          f"{', '.join(REPORT_KEYS)}")
    report = check_settings(RunConfig, {REPORT_KEYS[k]: v for k, v in rep.items()},
                            where=f"{where}: [report]",
                            name={v: k for k, v in REPORT_KEYS.items()}.__getitem__)
    return RunConfig(out=Path(path(data["out"])), corpora=corpora, upstreams=upstreams,
                     options=options, cross=cross, fusions=fusions, **extra, **report)


def _task_table(table: Any, where: str) -> Task:
    """A task from a config table: `name`, `classes = {neu = ["neutral", "N"], ...}` and
    optionally `drop = [...]` (codes left out on purpose)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table with name, classes and drop, got {table!r}")
    bad = [k for k in table if k not in TASK_KEYS]
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}; valid: "
                          f"{', '.join(TASK_KEYS)}")
    if "classes" not in table:
        raise ConfigError(f"{where}: needs `classes` (class -> raw codes), e.g. "
                          'classes = {neu = ["neutral", "N"], ang = ["angry", "A"]}')
    try:
        return label_map_task(table["classes"], name=str(table.get("name", "custom")),
                              drop=table.get("drop", ()), where=where)
    except ManifestError as exc:  # a label map that cannot work is a config mistake
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file" if not path.exists()
                          else f"{path}: not a file (expected a TOML config)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(utf8_error(path, "TOML")) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
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


def _keep_config(config: str | Path | Mapping[str, Any] | RunConfig, results: Path) -> None:
    """Store the config a run was given next to its results: the TOML file verbatim, or a
    mapping as JSON."""
    from emoprobe.system import atomic_write

    if isinstance(config, (str, Path)):
        atomic_write(results / "config.toml", Path(config).read_text(encoding="utf-8"))
    elif isinstance(config, Mapping):
        atomic_write(results / "config.json", json.dumps(config, indent=2, default=str) + "\n")


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
    # probed with the current manifest: a cache may hold more utterances than it lists
    manifest_of = {e.name: e.manifest or manifests[e.name] for e in cfg.corpora}
    items = [Source((str(caches[(e.name, str(u["model"]))]),), task=t, layers=layers,
                    manifests=(manifest_of[e.name],), folds=e.folds)
             for e in cfg.corpora for t in e.tasks for u in cfg.upstreams]
    for train, test in cfg.cross:
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
                                    layers=layers, manifests=(manifest_of[e.name],) * len(parts),
                                    folds=e.folds, fuse=tuple(layer for _, layer in parts)))
    say(f"[probe] {len(items)} dataset(s) x upstream(s) -> {cfg.out / 'results'}")
    run_sweep(items, cfg.options, out=cfg.out / "results", jobs=cfg.jobs, progress=progress)
    _keep_config(config, cfg.out / "results")
    rep = report(cfg.out / "results", fmt=cfg.report_format, plots=cfg.plots, sort=cfg.sort,
                 published=cfg.published)
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
