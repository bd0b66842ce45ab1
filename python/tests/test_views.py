"""Zero-copy values: memoryviews that keep their snapshot alive instead of dangling."""

import ctypes
import gc
import random
import sys
import threading

import pytest

import mapkv

VALUE = bytes(range(256)) * 40  # 10 KiB: on overflow pages


def fill(db, n=2000):
    with db.begin(write=True) as txn:
        txn.put(b"big", VALUE)
        for i in range(n):
            txn.put(b"%05d" % i, b"value %05d" % i)


def churn(db, rounds=20):
    """Overwrite and delete everything, many times, so freed pages get reused."""
    for r in range(rounds):
        with db.begin(write=True) as txn:
            txn.put(b"big", bytes([r]) * len(VALUE))
            for i in range(2000):
                txn.put(b"%05d" % i, b"round %d" % r)
    with db.begin(write=True) as txn:
        txn.delete(b"big")


@pytest.fixture(params=[None, 0], ids=["mapped", "pread"])
def any_db(request, tmp_path):
    db = mapkv.open(str(tmp_path / "v.mapkv"), mmap_size=request.param)
    yield db
    db.close()
    gc.collect()


def test_view_is_a_readonly_memoryview_of_the_value(any_db):
    fill(any_db)
    with any_db.begin() as txn:
        v = txn.get(b"big", buffer=True)
        small = txn.get(b"00007", buffer=True)
        assert isinstance(v, memoryview)
        assert v.readonly and v.format == "B" and v.ndim == 1 and v.nbytes == len(VALUE)
        assert v == VALUE and bytes(small) == b"value 00007"
        assert v[10:20] == VALUE[10:20]
        with pytest.raises(TypeError):
            v[0] = 1


def test_views_outlive_their_transaction_and_later_writes(any_db):
    fill(any_db)
    with any_db.begin() as txn:
        views = {k: txn.get(k, buffer=True) for k in (b"big", b"00000", b"01999")}
        c = txn.cursor(buffer=True)
        c.set_key(b"01000")
        views[b"01000"] = c.value()
        iterated = [v for _, v in txn.cursor(buffer=True)]
    churn(any_db)
    any_db.check()
    assert views[b"big"] == VALUE
    assert views[b"00000"] == b"value 00000"
    assert views[b"01999"] == b"value 01999"
    assert views[b"01000"] == b"value 01000"
    assert iterated[5] == b"value 00005"


def test_views_outlive_their_database(tmp_path):
    path = str(tmp_path / "v.mapkv")
    db = mapkv.open(path)
    fill(db)
    txn = db.begin()
    v = txn.get(b"big", buffer=True)
    small = txn.get(b"00001", buffer=True)
    del txn
    db.close()
    del db
    gc.collect()
    assert v == VALUE and small == b"value 00001"
    # The snapshot keeps the file open (and locked) while a view lives...
    with pytest.raises(mapkv.Locked):
        mapkv.open(path)
    # ...and lets go of it with the last view.
    del v, small
    gc.collect()
    with mapkv.open(path) as db:
        with db.begin() as txn:
            assert txn.get(b"big") == VALUE


def test_view_outlives_the_thread_that_made_it(tmp_path):
    path = str(tmp_path / "v.mapkv")
    out = []

    def work():
        db = mapkv.open(path)
        fill(db)
        with db.begin() as txn:
            out.append(txn.get(b"big", buffer=True))
            out.append(next(iter(txn.cursor(buffer=True)))[1])
        db.close()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    gc.collect()
    assert out[0] == VALUE
    assert out[1] == b"value 00000"
    out.clear()
    gc.collect()
    mapkv.open(path).close()


def test_released_view_is_a_clean_value_error(db):
    fill(db)
    with db.begin() as txn:
        v = txn.get(b"big", buffer=True)
    v.release()
    with pytest.raises(ValueError):
        bytes(v)
    with pytest.raises(ValueError):
        v[0]


def test_views_keep_their_snapshot_registered(db):
    fill(db)
    with db.begin() as txn:
        v = txn.get(b"00003", buffer=True)
    for i in range(3):
        with db.begin(write=True) as w:
            w.put(b"00003", b"changed %d" % i)
    # The view pins its snapshot like a live reader: three commits behind.
    assert db.stats()["oldest_reader_txn_age"] == 3
    del v
    gc.collect()
    assert db.stats()["oldest_reader_txn_age"] == 0


def test_views_of_a_view_and_its_owner(db):
    fill(db)
    with db.begin() as txn:
        v = txn.get(b"big", buffer=True)
        w = txn.get(b"00001", buffer=True)
    assert v.obj is w.obj  # one owner per transaction: it holds the snapshot
    sliced = v[100:200]
    arr_like = memoryview(v).cast("B")  # a view of the view
    del v
    gc.collect()
    assert sliced == VALUE[100:200] and arr_like == VALUE
    owner = w.obj
    assert type(owner).__name__ == "SnapshotOwner"
    with pytest.raises(TypeError):
        type(owner)()
    # The owner exports only what get() and cursors ask it to.
    with pytest.raises(BufferError):
        memoryview(owner)
    with pytest.raises((BufferError, TypeError)):
        ctypes.c_char.from_buffer(owner)  # asks for a writable buffer
    assert w == b"value 00001"


def test_buffers_is_the_transaction_default(db):
    fill(db)
    with db.begin(buffers=True) as txn:
        assert isinstance(txn.get(b"big"), memoryview)
        assert type(txn.get(b"big", buffer=False)) is bytes
        assert all(isinstance(v, memoryview) for _, v in txn.cursor())
        assert all(type(v) is bytes for _, v in txn.cursor(buffer=False))
    with db.begin(write=True, buffers=True) as txn:
        assert isinstance(txn.get(b"big"), memoryview)
        assert isinstance(next(iter(txn.cursor()))[1], memoryview)
        assert type(txn.get(b"big", buffer=False)) is bytes


def test_write_transaction_views_are_copies(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"before")
        v = txn.get(b"k", buffer=True)
        txn.put(b"k", b"after!")
        txn.delete(b"k")
        assert isinstance(v, memoryview) and v == b"before"
    assert v == b"before"


def test_empty_value_view(db):
    with db.begin(write=True) as txn:
        txn.put(b"e", b"")
    with db.begin() as txn:
        v = txn.get(b"e", buffer=True)
    assert len(v) == 0 and bytes(v) == b""


def test_numpy_frombuffer_without_a_copy(db):
    np = pytest.importorskip("numpy")
    arr = np.arange(100_000, dtype=np.float32)
    with db.begin(write=True) as txn:
        txn.put(b"tensor", arr.tobytes())
        txn.put(b"small", np.arange(10, dtype=np.int64).tobytes())
    with db.begin() as txn:
        a = np.frombuffer(txn.get(b"tensor", buffer=True), dtype=np.float32)
        b = np.frombuffer(txn.get(b"tensor", buffer=True), dtype=np.float32)
        copied = np.frombuffer(txn.get(b"tensor"), dtype=np.float32)
        s = np.frombuffer(txn.get(b"small", buffer=True), dtype=np.int64)
    # Two views of one value in one snapshot point at the same bytes: the database's
    # own; copies (bytes mode) are elsewhere.
    assert a.ctypes.data == b.ctypes.data
    assert copied.ctypes.data != a.ctypes.data
    assert not a.flags.writeable and not a.flags.owndata
    gc.collect()
    assert np.array_equal(a, arr) and np.array_equal(s, np.arange(10))
    assert a.sum() == arr.sum()


def test_views_right_under_gc_reentrancy_and_thread_switches(db):
    # Views are made while a garbage collection inside the memoryview call runs
    # finalizers that make views of the same transaction, on several threads that the
    # interpreter switches between as often as it can. Each view must hold its own key's
    # value.
    expected = {b"%04d" % i: b"value of %d " % i * (i % 7 + 1) for i in range(500)}
    with db.begin(write=True) as txn:
        for k, v in expected.items():
            txn.put(k, v)
    txn = db.begin(buffers=True)
    keys = sorted(expected)
    wrong = []

    class Reenter:
        def __init__(self, key):
            self.cycle = self  # only the cycle collector frees it, inside an allocation
            self.key = key

        def __del__(self):
            try:
                if bytes(txn.get(self.key)) != expected[self.key]:
                    wrong.append(self.key)
            except BaseException as e:  # a finalizer's exception would go unseen
                wrong.append(e)

    def work(seed):
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                Reenter(rng.choice(keys))
                k = rng.choice(keys)
                if bytes(txn.get(k)) != expected[k]:
                    wrong.append(k)
        except BaseException as e:
            wrong.append(e)

    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(1)  # a collection at nearly every allocation: inside get too
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)
    gc.collect()
    assert wrong == []
    txn.abort()
