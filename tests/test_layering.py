"""The package's import layering, read from the source: what may import what.

- mining and losses depend on torch alone, never on the ignite handlers that adapt them;
- nothing in the library imports the benchmark (it sits on top of everything);
- ``monai_danil.data`` (the converters' command line) starts without MONAI: the loading transform,
  which imports MONAI, is imported inside the functions that need it (DICOM and NIfTI checks).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "monai_danil"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            target = ".".join(part for part in (base, node.module) if part)
            yield node.lineno, target
            yield from ((node.lineno, f"{target}.{alias.name}") for alias in node.names)


def _offenders(folder: Path, forbidden: str, skip: Path | None = None) -> list[str]:
    return [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        if skip is None or not path.is_relative_to(skip)
        for line, name in _imports(path)
        if name == forbidden or name.startswith(forbidden + ".")
    ]


def test_the_scan_sees_relative_and_absolute_imports():
    names = {name for _, name in _imports(PACKAGE / "handlers" / "distractor_mining.py")}
    assert {"monai_danil.losses", "monai_danil.mining", "monai_danil.networks.NeuronTap"} <= names
    names = {name for _, name in _imports(PACKAGE / "handlers" / "__init__.py")}
    assert "monai_danil.handlers.distractor_mining.DistractorMiningHandler" in names


def test_mining_and_losses_never_import_the_handlers():
    for folder in ("mining", "losses"):
        assert _offenders(PACKAGE / folder, "monai_danil.handlers") == []


def test_nothing_in_the_library_imports_the_benchmark():
    assert _offenders(PACKAGE, "monai_danil.benchmark", skip=PACKAGE / "benchmark") == []


def test_the_data_package_starts_without_monai():
    script = (
        "import sys, monai_danil.data, monai_danil.data.__main__\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'ignite')"
        " or m.startswith('monai_danil.transforms'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
