"""The package's layout: no import cycle between its modules, and reference MD without torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "openmm_jamun"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set) -> set:
    """The package modules ``path`` imports, at any level of the file (a function-level import is a
    dependency too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not target.endswith(("openmm_jamun", "__init__")):
                if (PACKAGE.parent / target.replace(".", "/")).with_suffix(".py").is_file():
                    found.add(target)
    return found


def test_the_import_graph_has_no_cycle():
    files = [p for p in PACKAGE.rglob("*.py")]
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) for p in files if p.name != "__init__.py"}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_reference_md_and_trajectory_files_import_no_torch():
    code = ("import sys, openmm_jamun.data.md, openmm_jamun.trajectory, openmm_jamun.records, openmm_jamun.cli; "
            "loaded = [m for m in ('torch', 'openmmtorch', 'e3nn') if m in sys.modules]; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
