"""The shape of the package, checked from its source (ast only, nothing imported).

* no import cycle among ebnn_codegen modules (imports inside functions count too;
  ``if TYPE_CHECKING:`` imports do not);
* the core (everything but ``ebnn_codegen.ddnn`` and ``ebnn_codegen.cli``) imports nothing
  from ``ebnn_codegen.ddnn``: add-ons register themselves (checkpoint kinds, targets);
* the CLI imports only the public API (:data:`PUBLIC_API`) and its own modules;
* size limits: no module over :data:`MAX_MODULE_LINES` lines unless its docstring says why
  (a line starting ``Longer than``), no function over :data:`MAX_FUNCTION_LINES` lines, in the
  packages of :data:`SIZE_CHECKED`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ebnn_codegen"

PUBLIC_API = {
    "ebnn_codegen",  # the package: build, save, load, compile, export, run, verify, report, __version__
    "ebnn_codegen.api",  # the documented API the package re-exports (and check_fits, size, bench, targets)
    "ebnn_codegen.errors",  # the error types and their exit codes
    "ebnn_codegen.progress",  # progress bars on stderr (the CLI switches them on, -q off)
    "ebnn_codegen.data.mnist",  # the datasets behind `--input mnist[:SPLIT]`
    "ebnn_codegen.ddnn",  # the DDNN add-on: its package and the modules its docstring documents
    "ebnn_codegen.ddnn.config",
    "ebnn_codegen.ddnn.model",
    "ebnn_codegen.ddnn.train",
    "ebnn_codegen.ddnn.pipeline",
    "ebnn_codegen.ddnn.calibration",
    "ebnn_codegen.ddnn.messages",
    "ebnn_codegen.ddnn.exits",
    "ebnn_codegen.ddnn.runtime",
    "ebnn_codegen.ddnn.metrics",
    "ebnn_codegen.ddnn.plots",
    "ebnn_codegen.ddnn.export",
    "ebnn_codegen.ddnn.datasets",
    "ebnn_codegen.ddnn.net",  # the networked DDNN: tiers, wire format, transports, serve and system
    "ebnn_codegen.ddnn.net.tiers",
    "ebnn_codegen.ddnn.net.wire",
    "ebnn_codegen.ddnn.net.transport",
    "ebnn_codegen.ddnn.net.broker",
    "ebnn_codegen.ddnn.net.memory",
    "ebnn_codegen.ddnn.net.serve",
    "ebnn_codegen.ddnn.net.system",
    "ebnn_codegen.importers",  # the ONNX/QONNX importer add-on: import_model, and verify.verify_against
    "ebnn_codegen.importers.verify",
}
"""What the CLI may import from ebnn_codegen (besides ebnn_codegen.cli itself)."""

ADDONS = ("ebnn_codegen.ddnn", "ebnn_codegen.importers", "ebnn_codegen.cli")
"""Packages above the core: the core never imports them."""

PENDING_EDGES: dict[tuple[str, str], str] = {}
"""Known edges that close a cycle, left to the branch that owns the importing file; the lead
removes an entry once it is fixed (test_pending_edges_still_exist says when)."""

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SIZE_CHECKED = (
    "ebnn_codegen.targets",
    "ebnn_codegen.api",
    "ebnn_codegen.costs",
    "ebnn_codegen.verification",
    "ebnn_codegen.compiler",
    "ebnn_codegen.codegen",
    "ebnn_codegen.passes",
)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The ebnn_codegen modules ``name`` imports (``from pkg import sub`` counts as pkg.sub)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "ebnn_codegen")
            continue
        if node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        if mod.split(".")[0] != "ebnn_codegen":
            continue
        subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
        out.update(subs)
        if len(subs) < len(node.names):
            out.add(mod)
    return {m for m in out if m in known}


def import_graph(pending: bool = False) -> dict[str, set[str]]:
    """Module -> the ebnn_codegen modules it imports (without PENDING_EDGES unless ``pending``)."""
    mods = modules()
    known = set(mods)
    graph = {name: imported_modules(name, path, known) - {name} for name, path in mods.items()}
    if not pending:
        for a, b in PENDING_EDGES:
            graph[a].discard(b)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := dfs(n)):
            return cycle
    return None


def test_the_import_graph_is_read_correctly():
    g = import_graph()
    assert "ebnn_codegen.targets.base" in g["ebnn_codegen.targets.host"]
    assert "ebnn_codegen.api" in g["ebnn_codegen"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_pending_edges_still_exist():
    graph = import_graph(pending=True)
    fixed = [f"{a} -> {b}" for a, b in PENDING_EDGES if b not in graph[a]]
    assert not fixed, f"fixed, remove from PENDING_EDGES: {fixed}"


def test_the_core_never_imports_the_addons():
    bad = [
        f"{name} imports {dep}"
        for name, deps in import_graph().items()
        if not name.startswith(ADDONS)
        for dep in deps
        if dep.startswith("ebnn_codegen.ddnn")
    ]
    assert not bad, bad


def test_the_cli_uses_only_the_public_api():
    bad = [
        f"{name} imports {dep}"
        for name, deps in import_graph().items()
        if name.startswith("ebnn_codegen.cli")
        for dep in deps
        if not dep.startswith("ebnn_codegen.cli") and dep not in PUBLIC_API
    ]
    assert not bad, bad


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def size_violations(packages: tuple[str, ...]) -> list[str]:
    bad = []
    for name, path in modules().items():
        if not _in(name, packages):
            continue
        text = path.read_text()
        tree = ast.parse(text)
        lines = len(text.splitlines())
        doc = ast.get_docstring(tree) or ""
        if lines > MAX_MODULE_LINES and "\nLonger than" not in "\n" + doc:
            bad.append(f"{name}: {lines} lines (> {MAX_MODULE_LINES}, no reason in its docstring)")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    bad.append(f"{name}.{node.name}: {n} lines (> {MAX_FUNCTION_LINES})")
    return bad


def test_module_and_function_sizes():
    bad = size_violations(SIZE_CHECKED)
    assert not bad, "\n".join(bad)


def test_every_size_checked_package_exists():
    names = set(modules())
    for p in SIZE_CHECKED:
        assert any(_in(n, (p,)) for n in names), p


def test_importing_the_core_loads_no_addon_and_names_the_module_of_a_ddnn_checkpoint():
    """At run time too: `import ebnn_codegen` (and every target) leaves ebnn_codegen.ddnn unloaded;
    a DDNN checkpoint then names the module that registers its kind."""
    import subprocess
    import sys

    code = (
        "import sys, ebnn_codegen, ebnn_codegen.targets, ebnn_codegen.api\n"
        "assert not any(m.startswith('ebnn_codegen.ddnn') for m in sys.modules), 'ddnn imported'\n"
        "from ebnn_codegen.errors import CheckpointError\n"
        "try:\n"
        "    ebnn_codegen.load('examples/models/ddnn_mnist_tiles.pt')\n"
        "except CheckpointError as exc:\n"
        "    print(exc)\n"
        "import ebnn_codegen.ddnn\n"
        "print(type(ebnn_codegen.load('examples/models/ddnn_mnist_tiles.pt')).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "unknown model kind 'ddnn' (the kind is registered by ebnn_codegen.ddnn: import it first)" in lines[0]
    assert lines[1] == "DDNN"
