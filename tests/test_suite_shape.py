"""Every test asserts something: an `assert`, a `pytest.raises` / `pytest.warns`, or a call to a
helper that does (a function of the same file or conftest.py with an assert in it, or one
named assert_* / check_*). A test that only runs code can never fail on a wrong result."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

TESTS = sorted((REPO / "tests").glob("test_*.py"))


def _asserting_helpers(tree: ast.Module) -> set[str]:
    """Functions of a module that assert (directly), by name."""
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and any(isinstance(n, ast.Assert) for n in ast.walk(node))}


CONFTEST_HELPERS = _asserting_helpers(ast.parse((REPO / "tests" / "conftest.py").read_text()))


def _asserts(node: ast.AST, helpers: set[str]) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Assert):
            return True
        if isinstance(n, ast.Call):
            name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            if name in ("raises", "warns", "fail") or name.startswith(("assert_", "check_")) or name in helpers:
                return True
    return False


def assertion_free_tests(path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    helpers = _asserting_helpers(tree) | CONFTEST_HELPERS
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and node.name.startswith("test_") and not _asserts(node, helpers)]


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_every_test_asserts_something(path):
    assert assertion_free_tests(path) == []


def test_the_check_finds_a_test_that_only_runs_code(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text("def helper():\n    assert 1\n\ndef test_runs():\n    print(2)\n\n"
                       "def test_helps():\n    helper()\n\ndef test_raises():\n    import pytest\n"
                       "    with pytest.raises(ValueError):\n        int('x')\n")
    assert assertion_free_tests(planted) == ["test_runs"]
