"""The shape of the package: the import graph runs one way (the CLI on top) and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mosr"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_only_the_cli_imports_the_commands():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "cli.py":
            continue
        if any(name == "mosr.commands" or name.startswith("mosr.commands.") for name in _imports(path)):
            offenders.append(str(path.relative_to(SRC)))
    assert not offenders, f"these modules import mosr.commands (the CLI layer): {offenders}"


def test_the_import_walker_sees_function_level_and_relative_imports(tmp_path):
    sample = SRC / "commands" / "analyze.py"
    assert "mosr.analysis_run" in _imports(sample)


def test_only_the_plotting_module_touches_the_matplotlib_backend():
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if any(n == "matplotlib" or n.startswith("matplotlib.") for n in _imports(p)))
    assert users == ["plots.py"], users


def test_no_module_is_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"split these modules by concept: {long}"
