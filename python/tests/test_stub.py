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
