"""The API in py-lmdb's habits: opening, get/put/delete, trees, bulk load, stats."""

import os

import pytest

import mapkv


def test_put_get_delete(db):
    with db.begin(write=True) as txn:
        txn.put(b"apple", b"red")
        txn.put(b"banana", b"yellow")
        txn.put(b"empty", b"")
        assert txn.get(b"apple") == b"red"
        assert txn.delete(b"banana") is True
        assert txn.delete(b"banana") is False
    with db.begin() as txn:
        assert txn.get(b"apple") == b"red"
        assert txn.get(b"banana") is None
        assert txn.get(b"banana", b"gone") == b"gone"
        assert txn.get(b"empty") == b""
        assert type(txn.get(b"apple")) is bytes
        assert txn.len() == 2


def test_empty_key(db):
    with db.begin(write=True) as txn:
        txn.put(b"", b"the empty key")
    with db.begin() as txn:
        assert txn.get(b"") == b"the empty key"


def test_bytes_like_inputs_are_accepted(db):
    with db.begin(write=True) as txn:
        txn.put(bytearray(b"k1"), memoryview(b"v1"))
        txn.put(memoryview(b"xk2x")[1:3], bytearray(b"v2"))
    with db.begin() as txn:
        assert txn.get(bytearray(b"k1")) == b"v1"
        assert txn.get(memoryview(b"k2")) == b"v2"


@pytest.mark.parametrize("bad", ["text", 5, None, 1.5])
def test_non_bytes_keys_are_type_errors(db, bad):
    with db.begin(write=True) as txn:
        with pytest.raises(TypeError):
            txn.put(bad, b"v")
        with pytest.raises(TypeError):
            txn.put(b"k", bad)
        with pytest.raises(TypeError):
            txn.get(bad)


def test_named_trees(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"in main")
        txn.put(b"k", b"in users", tree="users")
        assert txn.get(b"k", tree="users") == b"in users"
        assert sorted(txn.tree_names()) == ["main", "users"]
    assert db.tree_names() == ["main", "users"]
    with db.begin() as txn:
        assert txn.get(b"k") == b"in main"
        assert txn.get(b"k", tree=mapkv.DEFAULT_TREE) == b"in main"
        assert txn.get(b"k", tree="users") == b"in users"
        assert txn.len(tree="users") == 1
    with db.begin(write=True) as txn:
        assert txn.delete_tree("users") is True
        assert txn.delete_tree("users") is False
    assert db.tree_names() == ["main"]


def test_default_tree_reads_as_empty_before_it_exists(db):
    with db.begin() as txn:
        assert txn.get(b"k") is None
        assert txn.len() == 0
        assert list(txn.cursor()) == []
    with db.begin(write=True) as txn:
        assert txn.get(b"k") is None
        assert txn.delete(b"k") is False
        assert list(txn.cursor()) == []
    # Reading the default tree does not create it.
    assert db.tree_names() == []


def test_missing_named_tree_is_tree_not_found(db):
    with db.begin() as txn:
        with pytest.raises(mapkv.TreeNotFound) as e:
            txn.get(b"k", tree="nope")
        assert e.value.name == "nope"
        with pytest.raises(mapkv.TreeNotFound):
            txn.cursor(tree="nope").first()
    with db.begin(write=True) as txn:
        with pytest.raises(mapkv.TreeNotFound):
            txn.get(b"k", tree="nope")
        with pytest.raises(mapkv.TreeNotFound):
            txn.delete(b"k", tree="nope")
        txn.put(b"k", b"v", tree="nope")
        assert txn.get(b"k", tree="nope") == b"v"
    assert db.tree_names() == ["nope"]


def test_large_values_round_trip(db):
    big = os.urandom(3 * 1024 * 1024 + 17)
    with db.begin(write=True) as txn:
        txn.put(b"big", big)
    with db.begin() as txn:
        assert txn.get(b"big") == big
        assert bytes(txn.get(b"big", buffer=True)) == big


def test_bulk_load(db):
    entries = [(b"%08d" % i, b"value %d" % i) for i in range(20_000)]
    stats = db.bulk_load("loaded", iter(entries))
    assert stats["entries"] == 20_000
    assert stats["pages"] > 0
    assert isinstance(stats["direct_io"], bool)
    with db.begin() as txn:
        assert list(txn.cursor(tree="loaded")) == entries
    assert db.check()["entries"] == 20_000


def test_bulk_load_accepts_any_iterable_of_pairs(db):
    db.bulk_load("gen", ((b"%04d" % i, bytearray(b"v")) for i in range(10)))
    db.bulk_load("empty", [])
    with db.begin() as txn:
        assert txn.len(tree="gen") == 10
        assert txn.len(tree="empty") == 0


def test_bulk_load_errors_leave_the_database_unchanged(db):
    with pytest.raises(mapkv.Unsorted) as e:
        db.bulk_load("t", [(b"a", b"1"), (b"c", b"2"), (b"b", b"3")])
    assert e.value.index == 2
    db.bulk_load("t", [(b"a", b"1")])
    with pytest.raises(mapkv.TreeNotEmpty) as e:
        db.bulk_load("t", [(b"b", b"1")])
    assert e.value.name == "t"
    with db.begin() as txn:
        assert list(txn.cursor(tree="t")) == [(b"a", b"1")]
    with pytest.raises(TypeError):
        db.bulk_load("u", [b"not a pair"])
    assert db.tree_names() == ["t"]


def test_bulk_load_raises_what_the_iterable_raised(db):
    def entries():
        for i in range(10_000):  # several batches before the failure
            yield b"%06d" % i, b"v"
        raise KeyError("from the generator")

    with pytest.raises(KeyError, match="from the generator"):
        db.bulk_load("t", entries())
    assert db.tree_names() == []

    def fails_at_once():
        raise RuntimeError("first")
        yield

    with pytest.raises(RuntimeError, match="first"):
        db.bulk_load("t", fails_at_once())
    # A bad entry in a later batch is a TypeError, and nothing is loaded.
    bad = [(b"%06d" % i, b"v") for i in range(5000)] + [(b"zzz", "text")]
    with pytest.raises(TypeError):
        db.bulk_load("t", bad)
    assert db.tree_names() == []
    db.check()


def test_stats_and_check(db):
    with db.begin(write=True) as txn:
        for i in range(1000):
            txn.put(b"%05d" % i, b"x" * 100)
    stats = db.stats()
    assert stats["page_size"] == 4096
    assert stats["trees"] == [{"name": "main", "entries": 1000, "depth": stats["trees"][0]["depth"]}]
    assert stats["pages_in_use"] > 0
    report = db.check()
    assert report["trees"] == 1 and report["entries"] == 1000


def test_compact_in_place(db):
    with db.begin(write=True) as txn:
        for i in range(20000):
            txn.put(b"%06d" % i, b"x" * 200)
    with db.begin(write=True) as txn:
        for i in range(20000):
            if i % 10:
                txn.delete(b"%06d" % i)
    before = db.stats()
    result = db.compact()
    assert result["file_size_after"] < result["file_size_before"]
    assert result["leaves_merged"] > 0
    after = db.stats()
    assert after["commits"] > before["commits"]
    assert after["syncs"] >= after["commits"] - before["commits"]
    db.check()
    with db.begin() as txn:
        assert txn.len() == 2000
        assert txn.get(b"%06d" % 10) == b"x" * 200
    with db.begin(write=True):
        with pytest.raises(mapkv.Error):
            db.compact()


def test_compact_to(db, tmp_path):
    with db.begin(write=True) as txn:
        for i in range(2000):
            txn.put(b"%05d" % i, b"x" * 200)
    with db.begin(write=True) as txn:
        for i in range(0, 2000, 2):
            txn.delete(b"%05d" % i)
    target = str(tmp_path / "compact.mapkv")
    db.compact_to(target)
    with pytest.raises(FileExistsError):
        db.compact_to(target)
    with mapkv.open(target) as copy:
        copy.check()
        with copy.begin() as txn:
            assert txn.len() == 1000
            assert txn.get(b"00001") == b"x" * 200
            assert txn.get(b"00002") is None


def test_options(path):
    with mapkv.open(path, page_size=16384, mmap_size=0, cache_size=0, durability="none") as db:
        with db.begin(write=True) as txn:
            txn.put(b"k", b"v")
        with db.begin(write=True, durability="immediate") as txn:
            txn.put(b"k2", b"v2")
        assert db.stats()["page_size"] == 16384
    # Reopening with another page size keeps the file's.
    with mapkv.open(path, page_size=4096) as db:
        assert db.stats()["page_size"] == 16384
        with db.begin() as txn:
            assert txn.get(b"k") == b"v" and txn.get(b"k2") == b"v2"


def test_database_close_and_context_manager(path):
    with mapkv.open(path) as db:
        assert not db.closed
        assert os.fspath(db.path) == path
    assert db.closed
    with pytest.raises(ValueError):
        db.begin()
    db.close()  # closing twice is fine
    # The lock is gone: the file opens again.
    mapkv.open(path).close()


def test_pathlike(tmp_path):
    with mapkv.open(tmp_path / "p.mapkv") as db:
        assert db.tree_names() == []
