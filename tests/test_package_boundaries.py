"""Packages keep to one concern: the metrics stand alone, the applications import no training code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lumiere"
TRAINING_SIDE = ("lumiere.training", "lumiere.data", "lumiere.evaluation", "lumiere.tasks", "lightning",
                 "pytorch_lightning")


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _loaded_after_import(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _on_training_side(name: str) -> bool:
    return any(name == side or name.startswith(side + ".") for side in TRAINING_SIDE)


@pytest.mark.parametrize("path", sorted((SRC / "metrics").glob("*.py")), ids=lambda p: p.name)
def test_no_metrics_module_imports_the_training_data_or_evaluation_code(path):
    assert not sorted(name for name in _imported_modules(path) if _on_training_side(name))


def test_importing_the_metrics_loads_none_of_the_training_side():
    loaded = _loaded_after_import("lumiere.metrics, lumiere.metrics.tracking, lumiere.metrics.i3d_weights")
    assert not [name for name in loaded if _on_training_side(name)]


def test_importing_the_applications_loads_no_lightning():
    loaded = _loaded_after_import("lumiere.apps")
    assert not [name for name in loaded if name.split(".")[0] in ("lightning", "pytorch_lightning")]
