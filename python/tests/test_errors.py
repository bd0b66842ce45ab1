"""Errors map to mapkv.Error subclasses (I/O errors to OSError), with their details."""

import os

import pytest

import mapkv

SUBCLASSES = [
    mapkv.Corrupted, mapkv.Locked, mapkv.ReadOnly, mapkv.KeyTooLarge, mapkv.ValueTooLarge,
    mapkv.TreeNotFound, mapkv.TreeNotEmpty, mapkv.Unsorted, mapkv.InvalidOptions,
]


def test_hierarchy():
    assert issubclass(mapkv.Error, Exception)
    for cls in SUBCLASSES:
        assert issubclass(cls, mapkv.Error), cls
        assert cls.__module__ == "mapkv"
        assert cls.__doc__


def test_locked(path):
    with mapkv.open(path):
        with pytest.raises(mapkv.Locked):
            mapkv.open(path)
        with pytest.raises(mapkv.Locked):
            mapkv.open(path, readonly=True)


def test_read_only(path):
    mapkv.open(path).close()
    with mapkv.open(path, readonly=True) as db, mapkv.open(path, readonly=True) as other:
        with pytest.raises(mapkv.ReadOnly):
            db.begin(write=True)
        with pytest.raises(mapkv.ReadOnly):
            db.bulk_load("t", [(b"a", b"b")])
        with db.begin() as txn, other.begin() as txn2:
            assert txn.get(b"k") is None and txn2.get(b"k") is None


def test_missing_file_read_only_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        mapkv.open(str(tmp_path / "missing.mapkv"), readonly=True)


def test_os_errors_keep_errno_and_name_the_file(tmp_path):
    import errno

    path = tmp_path / "no-such-dir" / "db.mapkv"
    with pytest.raises(FileNotFoundError) as e:
        mapkv.open(str(path))
    assert e.value.errno == errno.ENOENT
    assert str(path) in str(e.value)
    with pytest.raises(OSError):
        mapkv.open(str(tmp_path / "no" / "such" / "dir.mapkv"))


def test_key_too_large(db):
    with db.begin(write=True) as txn:
        with pytest.raises(mapkv.KeyTooLarge) as e:
            txn.put(b"k" * 100_000, b"v")
        assert e.value.size == 100_000 and 1024 <= e.value.max < 100_000
        txn.put(b"k" * e.value.max, b"the longest key")  # the transaction goes on
        with pytest.raises(mapkv.TreeNotFound):
            txn.get(b"k", tree="t" * 100_000)
        with pytest.raises(mapkv.KeyTooLarge):
            txn.put(b"k", b"v", tree="t" * 100_000)
        assert txn.tree_names() == ["main"]
        with pytest.raises(mapkv.TreeNotFound):
            txn.get(b"k", tree="t" * 100_000)
    with db.begin() as txn:
        assert txn.get(b"k" * e.value.max) == b"the longest key"


def test_invalid_options(tmp_path):
    with pytest.raises(mapkv.InvalidOptions):
        mapkv.open(str(tmp_path / "a"), page_size=1000)
    with pytest.raises(mapkv.InvalidOptions):
        mapkv.open(str(tmp_path / "b"), durability="eventually")
    with pytest.raises(OverflowError):
        mapkv.open(str(tmp_path / "c"), mmap_size=-1)


def test_tree_errors_carry_the_name(db):
    db.bulk_load("t", [(b"a", b"1")])
    with pytest.raises(mapkv.TreeNotEmpty) as e:
        db.bulk_load("t", [(b"b", b"2")])
    assert e.value.name == "t"
    with db.begin() as txn:
        with pytest.raises(mapkv.TreeNotFound) as e:
            txn.len(tree="u")
        assert e.value.name == "u"


def test_corrupted(path):
    with mapkv.open(path) as db:
        db.bulk_load("t", ((b"%06d" % i, b"v" * 50) for i in range(20_000)))
        with db.begin(write=True) as txn:
            txn.put(b"000001", b"changed")
    # Flip a byte in every data page (the two meta pages come first).
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for offset in range(8192 + 100, size, 4096):
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(mapkv.Corrupted) as e:
        db = mapkv.open(path)
        try:
            db.check()
            with db.begin() as txn:
                list(txn.cursor(tree="t"))
        finally:
            db.close()
    assert isinstance(e.value.page, int) and e.value.reason
    assert "corrupted" in str(e.value)
