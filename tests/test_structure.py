"""The shape of the code: no import cycles between modules, and the parts that must stay light
(the napari reader and writer, the core) do not pull in what they must not."""

import ast
import subprocess
import sys
from pathlib import Path

import napari_voxseg

PACKAGE = Path(napari_voxseg.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (functions included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 20 and graph["napari_voxseg.core.train"]  # the graph was really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.strip().split(","))


def test_the_napari_reader_and_writer_do_not_load_torch():
    loaded = _loaded_after("import napari_voxseg._napari.reader, napari_voxseg._napari.writer")
    assert "torch" not in loaded
    assert not {m for m in loaded if m.startswith(("napari_voxseg.core.models",
                                                   "napari_voxseg.core.infer"))}


def test_the_core_loads_neither_napari_nor_qt():
    loaded = _loaded_after("import napari_voxseg.core as c; c.train; c.predict; c.load_model; "
                           "import napari_voxseg.core.blocks, napari_voxseg.cli")
    assert "torch" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("napari", "qtpy", "PyQt5", "PyQt6",
                                                         "magicgui")}
