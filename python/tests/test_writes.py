"""The write calls beyond put/delete: append, replace, pop, delete_range, and read_ahead."""

import pytest

import mapkv


@pytest.fixture
def db(tmp_path):
    with mapkv.open(tmp_path / "w.mapkv") as db:
        yield db


def test_append_fills_in_order_and_refuses_a_key_out_of_order(db):
    with db.begin(write=True) as txn:
        for i in range(1000):
            txn.put(i.to_bytes(4, "big"), b"v%d" % i, tree="log", append=True)
        with pytest.raises(mapkv.Unsorted):
            txn.put((5).to_bytes(4, "big"), b"late", tree="log", append=True)
        txn.put((5).to_bytes(4, "big"), b"late", tree="log")  # an ordinary put still works
    with db.begin() as txn:
        assert txn.len(tree="log") == 1000
        assert txn.get((5).to_bytes(4, "big"), tree="log") == b"late"
        assert txn.get((999).to_bytes(4, "big"), tree="log") == b"v999"


def test_replace_and_pop_return_the_old_value(db):
    with db.begin(write=True) as txn:
        assert txn.replace(b"k", b"one") is None
        assert txn.replace(b"k", b"two") == b"one"
        assert txn.pop(b"k") == b"two"
        assert txn.pop(b"k") is None
        assert txn.pop(b"k", b"gone") == b"gone"
        big = bytes(range(256)) * 100  # an overflow value
        txn.put(b"big", big)
        assert txn.replace(b"big", b"small") == big
    with db.begin() as txn:
        assert txn.get(b"big") == b"small"
        assert txn.get(b"k") is None


def test_delete_range_removes_the_half_open_range(db):
    keys = [b"%03d" % i for i in range(100)]
    with db.begin(write=True) as txn:
        for k in keys:
            txn.put(k, k)
        assert txn.delete_range(b"010", b"020") == 10
        assert txn.delete_range(b"090") == 10
        assert txn.delete_range(None, b"005") == 5
        assert txn.delete_range(b"050", b"050") == 0
        with pytest.raises(mapkv.TreeNotFound):
            txn.delete_range(tree="absent")
    with db.begin() as txn:
        left = [k for k, _ in txn.cursor()]
    assert left == [k for k in keys if b"005" <= k < b"010" or b"020" <= k < b"090"]
    with db.begin(write=True) as txn:
        assert txn.delete_range() == len(left)


def test_read_ahead_false_opens_and_reads_the_same(tmp_path):
    path = tmp_path / "ra.mapkv"
    with mapkv.open(path) as db, db.begin(write=True) as txn:
        for i in range(500):
            txn.put(b"%04d" % i, b"x" * 300)
    for mmap_size in (None, 0):
        with mapkv.open(path, read_ahead=False, mmap_size=mmap_size) as db:
            with db.begin() as txn:
                assert txn.len() == 500
                assert txn.get(b"0123") == b"x" * 300
