"""``fourws_pay.__all__`` is the public surface: sorted, complete, and every name real
(after httpx's ``tests/test_exported_members.py``)."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import fourws_pay
import fourws_pay.errors


def test_all_is_sorted() -> None:
    assert fourws_pay.__all__ == sorted(fourws_pay.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(fourws_pay.__all__)) == len(fourws_pay.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in fourws_pay.__all__ if not hasattr(fourws_pay, name)]
    assert missing == []


def test_every_public_attribute_is_in_all() -> None:
    """Everything imported into the package namespace for users is listed (modules and
    dunder metadata aside)."""
    exported = {
        name
        for name, value in vars(fourws_pay).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert exported - set(fourws_pay.__all__) == set()


def test_exported_members_belong_to_the_package() -> None:
    """Re-exports name the package, not a third-party module (like httpx's check)."""
    for name in fourws_pay.__all__:
        member = getattr(fourws_pay, name)
        if not (inspect.isclass(member) or inspect.isfunction(member)):
            continue  # instances such as the pluggy ``hookimpl`` marker
        module = member.__module__
        assert module.startswith("fourws_pay"), (name, module)


def test_every_error_class_is_exported() -> None:
    errors = {
        name
        for name, value in vars(fourws_pay.errors).items()
        if inspect.isclass(value) and issubclass(value, fourws_pay.errors.FourWSError)
    }
    assert errors - set(fourws_pay.__all__) == set()


def test_type_checking_imports_match_the_lazy_export_map() -> None:
    """Type checkers read the ``TYPE_CHECKING`` imports, Python runs ``_EXPORTS``: the two
    must name the same things from the same modules, each as an explicit re-export."""
    tree = ast.parse(Path(fourws_pay.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "_typing.TYPE_CHECKING"
    )
    imported: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        assert node.module is not None
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} is not re-exported as itself"
            imported[alias.name] = node.module
    assert imported == fourws_pay._EXPORTS
    assert fourws_pay.__all__ == list(fourws_pay._EXPORTS)


def test_no_export_shadows_a_builtin() -> None:
    """``from fourws_pay import *`` must not replace ``TimeoutError`` and friends."""
    assert set(fourws_pay.__all__) & set(dir(builtins)) == set()


def test_version() -> None:
    assert isinstance(fourws_pay.__version__, str)
    assert fourws_pay.__version__.count(".") >= 2
