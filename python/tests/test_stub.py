"""mapkv.pyi describes what the module has: every name it declares exists."""

import ast
import pathlib

import mapkv

STUB = pathlib.Path(__file__).resolve().parent.parent / "mapkv.pyi"


def test_stub_names_exist():
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert hasattr(mapkv, node.name), node.name
        elif isinstance(node, ast.ClassDef):
            cls = getattr(mapkv, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    assert hasattr(cls, item.name), f"{node.name}.{item.name}"


def test_every_public_name_is_in_the_stub():
    body = ast.parse(STUB.read_text()).body
    declared = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {n.target.id for n in body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(mapkv) if not n.startswith("_") and n != "mapkv"}
    assert public <= declared, public - declared


def test_every_public_alias_in_the_stub_exists():
    # A public alias declared only in the stub type-checks `mapkv.X` or
    # `from mapkv import X` and then fails at run time: stub-only names are private.
    body = ast.parse(STUB.read_text()).body
    names = {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets}
    names |= {n.target.id for n in body if isinstance(n, ast.AnnAssign)}
    missing = {n for n in names if not n.startswith("_") and not hasattr(mapkv, n)}
    assert not missing, missing


def test_classes_that_cannot_be_subclassed_are_final_in_the_stub():
    body = ast.parse(STUB.read_text()).body
    for node in body:
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(mapkv, node.name)
        try:
            type("Sub", (cls,), {})
            subclassable = True
        except TypeError:
            subclassable = False
        final = any(
            (isinstance(d, ast.Name) and d.id == "final")
            or (isinstance(d, ast.Attribute) and d.attr == "final")
            for d in node.decorator_list
        )
        assert final == (not subclassable), node.name
