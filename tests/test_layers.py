"""The layer contract (issue 25): imports only go down, function-level ones included, and no
module imports itself back through others. The contract (which module sits in which layer)
is scripts/check_layers.py's table; this runs it over the package, and over a small planted
package to show it catches what it must."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("check_layers", REPO / "scripts" / "check_layers.py")
check_layers = importlib.util.module_from_spec(spec)
sys.modules["check_layers"] = check_layers
spec.loader.exec_module(check_layers)


def test_no_module_imports_a_higher_layer():
    assert check_layers.upward_imports() == []


def test_no_import_cycle():
    assert check_layers.import_cycles() == []


def test_every_module_has_a_layer():
    for module in check_layers.graph():
        assert 0 <= check_layers.layer(module) <= 5, module


def test_the_check_sees_imports_inside_functions_and_catches_violations(tmp_path):
    """A planted package: errors (layer 0) imports cli (layer 5) inside a function, and items
    and reader import each other."""
    package = tmp_path / "hsl_demo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("from .errors import HslDemoError\n")
    (package / "errors.py").write_text("def late():\n    from .cli import main\n")
    (package / "items.py").write_text("from . import reader\n")
    (package / "reader.py").write_text("def read():\n    from .items import ItemStore\n")
    assert check_layers.upward_imports(package) == ["hsl_demo.errors (layer 0) imports hsl_demo.cli (layer 5)"]
    assert check_layers.import_cycles(package) == ["cli -> errors -> cli", "items -> reader -> items"]
    assert "search" in check_layers.graph()["cli.search"]  # the real CLI imports the retriever inside functions


@pytest.mark.parametrize("module", ["modes.describe.tab", "modes.registry", "widgets"])
def test_modes_and_the_page_parts_sit_below_the_app(module):
    assert check_layers.layer(module) < check_layers.layer("ui")
