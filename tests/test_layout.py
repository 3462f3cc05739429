"""The package layout as a contract: the probe stage reads caches without importing the
extraction stage, no module imports form a cycle, and the shared primitives behave."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from emoprobe.system import atomic_write, available_cpus, versions

PACKAGE = Path(__file__).resolve().parents[1] / "emoprobe"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> emoprobe modules it imports (at any depth of the file, lazy ones included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def test_probe_stage_imports_nothing_from_extract() -> None:
    graph = _imports()
    bad = {m: sorted(t for t in deps if t.startswith("emoprobe.extract"))
           for m, deps in graph.items() if m.startswith("emoprobe.probe")}
    assert not {m: d for m, d in bad.items() if d}
    assert any(t.startswith("emoprobe.cache") for m in graph if m.startswith("emoprobe.probe")
               for t in graph[m])  # it does read caches, through emoprobe.cache


def test_no_import_cycle_between_modules() -> None:
    graph = _imports()
    # a package's __init__ re-exporting its own modules is not a cycle of logic
    edges = {m: {t for t in deps if not (m == t.rsplit(".", 1)[0] or t == m.rsplit(".", 1)[0])}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(t):], t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    atomic_write(target, "old\n")

    def broken(fh) -> None:
        fh.write("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no temporary left
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


def test_versions_and_cpus_without_importing_heavy_packages() -> None:
    v = versions()
    assert v["emoprobe"] and v["numpy"] and v["torch"]
    assert available_cpus() >= 1


def test_data_package_exports_its_public_functions() -> None:
    import emoprobe.data as data

    for name in data.__all__:
        assert callable(getattr(data, name)), name
    with pytest.raises(AttributeError):
        data.no_such_function  # noqa: B018
