"""The package's shape: imports point down the layers, no import cycle, small files.

Layers (README, "What is here"): types / registry -> models -> losses -> kernels ->
selection -> flops -> data -> eval -> train / convert -> cli -> launch. Every ``import`` of
an ``aced`` module (at module level or inside a function) must point to the
same layer or a lower one, and the graph of imports between modules has no cycle.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parents[1] / "aced"
LAYERS = {
    "types": 0,
    "registry": 0,
    "models": 1,
    "losses": 2,
    "kernels": 3,
    "selection": 4,
    "flops": 5,
    "data": 6,
    "eval": 7,
    "train": 8,
    "convert": 8,
    "cli": 9,
    "cli_tokenizer": 9,
    "cli_score": 9,
    "cli_embed": 9,
    "cli_lit_decoder": 9,
    "cli_distributed": 9,
    "cli_common": 9,
    "launch": 10,
    "__main__": 10,
    "__init__": 10,
}
MAX_LINES = 300
# Files allowed above MAX_LINES, each with the reason it stays whole.
LONG_FILES: dict[str, str] = {}


def module_name(path: pathlib.Path) -> str:
    parts = ("aced", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(base: str, name: str | None) -> str:
    """``from base import name``: the submodule when `name` is one, else the package."""
    if name:
        candidate = ROOT.joinpath(*f"{base}.{name}".split(".")[1:])
        if candidate.with_suffix(".py").is_file() or candidate.is_dir():
            return f"{base}.{name}"
    return base


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "aced"}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aced"
        ):
            found |= {resolve(node.module, a.name) for a in node.names}
    return found - {"aced"}


FILES = sorted(ROOT.rglob("*.py"))
GRAPH = {module_name(p): imports(p) for p in FILES}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]] if "." in module else LAYERS["__init__"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports upwards: {upward}"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in GRAPH and state.get(target) is None:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if state.get(module) is None:
            visit(module, [module])


def test_files_stay_small_or_say_why():
    long = {str(p.relative_to(ROOT.parent)): len(p.read_text().splitlines()) for p in FILES}
    too_long = {p: n for p, n in long.items() if n > MAX_LINES and p not in LONG_FILES}
    assert not too_long, f"split these files (or state why in LONG_FILES): {too_long}"
