"""The import graph of vip_ray: no cycles, no upward imports (data flows tune → pool → scenario →
strategy → core → sim | serve → tables → analysis; core imports nothing above it; sim and serve
never import each other)."""
import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: package -> the vip_ray packages it must never import (directly or lazily)
FORBIDDEN = {
    "core": {"sim", "serve", "strategies", "experiment", "scenario", "placement", "pool", "tune", "training", "coach",
             "models", "data", "cli", "bench"},
    "sim": {"serve", "strategies", "experiment", "scenario", "placement", "pool", "tune", "training", "cli"},
    "serve": {"sim", "strategies", "experiment", "scenario", "placement", "tune", "training", "cli", "coach"},
    "strategies": {"experiment", "cli", "sim", "serve", "tune", "training", "bench"},
    "scenario": {"strategies", "experiment", "sim", "serve", "placement", "tune", "training", "cli", "coach"},
    "placement": {"strategies", "experiment", "sim", "serve", "tune", "training", "cli", "coach"},
    "coach": {"strategies", "experiment", "sim", "serve", "cli"},
    "pool": {"tune", "training", "experiment", "strategies", "sim", "serve", "scenario", "placement", "cli"},
    "models": {"strategies", "experiment", "sim", "serve", "scenario", "placement", "pool", "tune", "cli"},
    "control": {"strategies", "experiment", "sim", "serve", "scenario", "placement", "pool", "tune", "training",
                "cli"},
}


def _graph():
    mods = {}
    for p in sorted((ROOT / "vip_ray").rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = collections.defaultdict(set)
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for n in names:
                t = resolve(n) if n.startswith("vip_ray") else None
                if t and t != m:
                    graph[m].add(t)
    return mods, graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles():
    mods, graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in mods:
        if v not in index:
            visit(v)
    assert not cycles, cycles


#: modules that drive the whole stack from above (like the benchmarks): the RL environment
ABOVE = {"vip_ray.control.env"}


def test_no_upward_imports():
    _, graph = _graph()
    bad = sorted((m, t) for m, targets in graph.items() for t in targets
                 if m not in ABOVE and _top(t) in FORBIDDEN.get(_top(m), set()))
    assert not bad, bad
