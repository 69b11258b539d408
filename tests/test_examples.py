"""The scripts in examples/ import (their names resolve against the package) and define main(); running them is
left to the slow tier and the docs (examples/hippo_figures.py imported a module that no longer existed)."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_imports(path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)                 # the __main__ guard keeps main() from running
    assert callable(getattr(module, "main", None)), f"{path.name} defines no main()"
