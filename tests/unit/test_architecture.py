"""The package's shape: layers import only downward, the core stays free of outside tools, no function
grows past a screen. Read from the source with `ast`, so nothing is imported."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "perennial"
# Lowest first: a layer may import itself and the layers before it.
LAYERS = ["core", "adapters", "pipeline", "app"]
# The outside tools the core must not know (the adapters wrap them).
OUTSIDE_TOOLS = {"prefect", "mlflow", "great_expectations", "evidently", "matplotlib"}
MAX_FUNCTION_LINES = 50
# Modules outside the layers on purpose: names stored in registries written before the layers.
LEGACY = {"inputs.py"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "perennial" and parts[1] in LAYERS else None


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from perennial.core import families` imports the module perennial.core.families.
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_every_module_of_the_package_sits_in_a_layer() -> None:
    loose = [p.relative_to(ROOT) for p in modules()
             if p.parent == PACKAGE and p.name not in {"__init__.py", *LEGACY}]
    assert not loose, f"modules outside perennial/{{{','.join(LAYERS)}}}: {loose}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_layer_imports_only_itself_and_the_layers_below(path: Path) -> None:
    own = layer_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    if own is None:
        return
    allowed = LAYERS[: LAYERS.index(own) + 1]
    upward = sorted(m for m in imported(path) if (layer := layer_of(m)) and layer not in allowed)
    assert not upward, f"{path.relative_to(ROOT)} ({own}) imports a higher layer: {upward}"
    assert not any(m == "bench" or m.startswith("bench.") for m in imported(path)), \
        f"{path.relative_to(ROOT)} imports the benchmark, which is not part of the package"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_knows_no_outside_tool(path: Path) -> None:
    tools = sorted(m for m in imported(path) if m.split(".")[0] in OUTSIDE_TOOLS)
    assert not tools, f"{path.relative_to(ROOT)} imports {tools}; wrap them in perennial/adapters"


def test_no_function_outside_the_benchmark_is_longer_than_a_screen() -> None:
    long = []
    for path in [*modules(), *sorted((ROOT / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_wheel_ships_the_perennial_package_alone() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["perennial"]
    runtime = " ".join(project["project"]["dependencies"])
    assert "river" not in runtime, "river is the benchmark's dependency, not the product's"
