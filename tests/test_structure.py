"""Structure rules of issue 10 that no other test states: no import cycle in the package, and the
benchmark code within its line budget."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Issue 10: fastlangevin/benchmarking/ plus bench/*.py (their tests and conftest aside) at most this many lines.
BENCH_LINE_BUDGET = 1800


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """Dotted name -> (file, is a package) for the package and its kernels (installed as fastlangevin.kernels)."""
    out = {}
    for base, prefix in ((ROOT / "fastlangevin", "fastlangevin"), (ROOT / "kernels", "fastlangevin.kernels")):
        for f in base.rglob("*.py"):
            parts = [prefix, *f.relative_to(base).with_suffix("").parts]
            if parts[1:2] == ["kernels"] and prefix == "fastlangevin":  # a worktree's link to kernels/
                continue
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _import_graph(mods) -> dict[str, set[str]]:
    """Module -> the package modules it imports at import time (module level, inside if/try too; not the
    imports inside functions, which run later). ``from a import b`` is an edge to ``a.b`` where that is a
    module, else to ``a``."""

    def targets(mod, is_pkg, node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = mod if is_pkg else mod.rsplit(".", 1)[0]
        for _ in range(max(node.level - 1, 0)):
            base = base.rsplit(".", 1)[0]
        base = (base + "." + node.module if node.module else base) if node.level else node.module
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]

    graph = {}
    for mod, (path, is_pkg) in mods.items():
        deps, todo = set(), list(ast.parse(path.read_text()).body)
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(t for t in targets(mod, is_pkg, node) if t in mods and t != mod)
            elif isinstance(node, (ast.If, ast.Try)):
                todo += node.body + node.orelse + getattr(node, "finalbody", [])
                todo += [n for h in getattr(node, "handlers", []) for n in h.body]
        graph[mod] = deps
    return graph


def test_no_import_cycle_in_the_package():
    graph = _import_graph(_modules())
    assert len(graph) > 50 and graph["fastlangevin.benchmarking.cli"]  # the walk found the package
    done, path = set(), []

    def visit(m):  # depth-first; a module met again on the current path closes a cycle
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m) :] + [m]))
        if m in done:
            return
        path.append(m)
        for d in sorted(graph[m]):
            visit(d)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_benchmark_code_within_its_line_budget():
    files = list((ROOT / "fastlangevin" / "benchmarking").rglob("*.py"))
    files += [f for f in (ROOT / "bench").glob("*.py") if not f.name.startswith("test_") and f.name != "conftest.py"]
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert lines <= BENCH_LINE_BUDGET, f"benchmark code is {lines} lines, over the budget of {BENCH_LINE_BUDGET}"
