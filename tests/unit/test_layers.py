"""One-way layers: every import in the packages points down (or sideways within its own layer), never up.

    schemas   the contracts (events, alerts, rows, storage): imports nothing of Spyglass's
    detectors the engine: imports the contracts
    streams   the runtime (worker, scoring, transport, sinks, ingest, replay): contracts and engine
    grafana   dashboards as code, beside the runtime: the contracts at most

The rest of streams/ is tooling around them: the simulator produces events (the contracts only), the local
stack runs Kafka and ClickHouse for the runtime, and the application shell (cli/, bench/) wires everything.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "detectors", "streams", "grafana")
ANYTHING = frozenset({"schemas", "detectors", "streams", "streams.simulator", "streams.stack", "streams.cli",
                      "streams.bench", "grafana"})

# layer -> the layers its modules may import. A module (and an import) is in the layer of the longest
# name here it starts with: streams.cli.db is in streams.cli, streams.worker in streams (the runtime).
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset({"schemas"}),
    "detectors": frozenset({"schemas", "detectors"}),
    "streams": frozenset({"schemas", "detectors", "streams"}),
    "grafana": frozenset({"schemas", "grafana"}),
    "streams.simulator": frozenset({"schemas", "streams.simulator"}),
    "streams.stack": frozenset({"schemas", "streams", "streams.stack"}),
    "streams.cli": ANYTHING,
    "streams.bench": ANYTHING,
}


def layer_of(name: str) -> str | None:
    """The layer a dotted module name belongs to; None outside Spyglass's packages."""
    found = [layer for layer in ALLOWED if name == layer or name.startswith(layer + ".")]
    return max(found, key=len) if found else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(module: str, tree: ast.AST, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``tree``, relative ones resolved; ``from a import b`` gives
    ``a.b`` (b may be a module)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)] + ([base] if base else []))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def upward_imports(path: Path, source: str | None = None) -> list[str]:
    """Every import of the module at ``path`` its layer does not allow, as 'file:line: ...' messages."""
    module = module_name(path)
    layer = layer_of(module)
    assert layer is not None, f"{module} is in no layer: add its package to ALLOWED"
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    bad = []
    for line, name in imported_names(module, tree, path.name == "__init__.py"):
        target = layer_of(name)
        if target is not None and target not in ALLOWED[layer]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {module} ({layer}) imports {name} ({target}); "
                       f"{layer} may import only {', '.join(sorted(ALLOWED[layer]))}")
    return bad


def test_every_import_points_down_the_layers():
    modules = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(modules) > 50  # the walk found the packages
    bad = [msg for path in modules for msg in upward_imports(path)]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_an_upward_import_inside_a_function_is_reported_with_its_line():
    source = "import numpy\n\n\ndef run():\n    from streams.replay import replay\n    return replay\n"
    bad = upward_imports(ROOT / "detectors" / "evaluation" / "scenarios.py", source)
    assert bad == ["detectors/evaluation/scenarios.py:5: detectors.evaluation.scenarios (detectors) imports "
                   "streams.replay.replay (streams); detectors may import only detectors, schemas"]


def test_relative_and_package_imports_resolve_to_their_layer():
    assert upward_imports(ROOT / "grafana" / "dashboards_src" / "__init__.py", "from .kit import ALL\n") == []
    assert len(upward_imports(ROOT / "grafana" / "dashboards_src" / "fill.py", "from streams import metrics\n")) == 1
    assert len(upward_imports(ROOT / "streams" / "worker.py", "from streams import cli\n")) == 1
    assert upward_imports(ROOT / "streams" / "worker.py", "from streams import metrics\n") == []
    assert len(upward_imports(ROOT / "streams" / "simulator" / "run.py", "import detectors.engine\n")) == 1
    assert layer_of("streams.cli.db") == "streams.cli" and layer_of("streamsx") is None
