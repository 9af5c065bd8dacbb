"""The architecture the folders show, checked on the source: no import cycles (imports made only
for type checking or inside functions count too), and imports that run one way only:
textgym's core never imports the agents; in ``agents/``, the shared machinery (``common``)
imports no algorithm, the algorithm families import no application module, and one training
run (``runs``) does not import the leaderboard."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each module's source lives: textgym/ and agents/ (installed as textgym.agents).
SOURCES = {"textgym": ROOT / "textgym", "textgym.agents": ROOT / "agents"}
CORE = ("textgym.envs", "textgym.datasets", "textgym.rewards", "textgym.wrappers", "textgym.models",
        "textgym.atomic", "textgym.compat")  # fmt: skip
FAMILIES = ("textgym.agents.textppo", "textgym.agents.softq", "textgym.agents.dqn")
APPLICATION = ("textgym.agents.runs", "textgym.agents.leaderboard")
# What each layer may import from textgym.agents (besides itself).
ALLOWED = {
    "textgym.agents.common": (),
    **{family: ("textgym.agents.common", "textgym.agents.textppo") for family in FAMILIES},
    "textgym.agents.runs": ("textgym.agents.common", *FAMILIES),
    "textgym.agents.leaderboard": ("textgym.agents.common", *FAMILIES, "textgym.agents.runs"),
}


def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "textgym" and parts[0] == "agents":
                continue
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = module_files()


def imports(name: str, path: Path) -> set[str]:
    """Every textgym module ``path`` imports, at any level of the file (functions and
    ``if TYPE_CHECKING:`` included); ``from package import module`` names the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + [base]).strip(".")
            targets = [base + "." + alias.name for alias in node.names]
            targets = [t if t in MODULES else base for t in targets]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def test_the_graph_sees_the_layers():
    assert "textgym.agents.runs.training" in GRAPH and "textgym.agents.common.network" in GRAPH
    assert "textgym.agents.runs.config" in GRAPH["textgym.agents.runs.training"]
    assert "textgym.agents.common.distributed" in GRAPH["textgym.agents.runs.training"]  # from pkg import mod


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def layer(name: str) -> str | None:
    return next((prefix for prefix in ALLOWED if name == prefix or name.startswith(prefix + ".")), None)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(CORE)))
def test_core_never_imports_the_agents(name):
    assert not {m for m in GRAPH[name] if m.startswith("textgym.agents")}, (name, GRAPH[name])


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n)))
def test_agents_import_one_way(name):
    own = layer(name)
    others = {m for m in GRAPH[name] if m.startswith("textgym.agents.") and layer(m) != own}
    bad = {m for m in others if not (layer(m) or "").startswith(ALLOWED[own])}
    assert not bad, f"{name} ({own}) imports {sorted(bad)}; it may import {ALLOWED[own]}"


def test_every_agents_module_is_in_a_layer():
    loose = [n for n in MODULES if n.startswith("textgym.agents.") and layer(n) is None]
    assert not loose, f"modules outside common/, the families, runs/ and leaderboard/: {loose}"


def test_setup_cfg_installs_every_package():
    """A wheel holds only the packages setup.cfg lists: a new subpackage left out would import
    in the editable install and fail in a real one."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert packages == listed, (sorted(packages - listed), sorted(listed - packages))
