"""Layers import one way and no package has an import cycle: the contracts in pyproject.toml
([tool.importlinter]; docs/architecture.md draws the layers), checked by import-linter."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_layers_and_no_cycles() -> None:
    # --no-cache: a cache from another checkout of the same files must not answer for this one.
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
