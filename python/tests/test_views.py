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


@pytest.mark.parametrize("mmap_size", [None, 0, 256 << 10], ids=["mapped", "pread", "part"])
def test_views_hold_while_compaction_cuts_the_file(tmp_path, mmap_size):
    # Views of entries at the end of the file, whose pages a delete frees and compact()
    # would move and cut off: the views' snapshot keeps them, and the file is cut only
    # once the views are gone.
    db = mapkv.open(str(tmp_path / "v.mapkv"), mmap_size=mmap_size, cache_size=1 << 20)
    with db.begin(write=True) as txn:
        for i in range(6000):
            txn.put(b"%05d" % i, bytes([i % 251]) * 300)
    with db.begin(buffers=True) as txn:
        views = {i: txn.get(b"%05d" % i) for i in range(3000, 6000, 7)}
        with txn.cursor() as c:  # closed: a cursor holds its snapshot until then
            assert c.last()
            views[5999] = c.value()
    with db.begin(write=True) as txn:
        txn.delete_range(b"03000")
    for _ in range(3):  # writers reuse whatever they may
        with db.begin(write=True) as txn:
            for i in range(3000):
                txn.put(b"%05d" % i, b"\xee" * 300)
    held = db.compact()
    for i, v in views.items():
        assert v == bytes([i % 251]) * 300, i
    del v
    views.clear()
    gc.collect()
    assert db.stats()["oldest_reader_txn_age"] == 0
    freed = db.compact()
    assert freed["file_size_after"] < held["file_size_after"]
    db.check()
    db.close()


@pytest.mark.parametrize("mmap_size", [None, 0, 256 << 10], ids=["mapped", "pread", "part"])
def test_views_hold_under_concurrent_writers_and_compaction(tmp_path, mmap_size):
    # Readers on several threads keep views of what they read while a writer rewrites,
    # deletes and compacts; every view must keep the bytes it had.
    db = mapkv.open(str(tmp_path / "v.mapkv"), mmap_size=mmap_size, cache_size=1 << 20)

    def value(key, gen):
        return b"%s:%d;" % (key, gen) * (1 + int(key) % 40)

    with db.begin(write=True) as txn:
        for i in range(3000):
            txn.put(b"%05d" % i, value(b"%05d" % i, 0))
    stop = threading.Event()
    errors = []

    def writer():
        rng = random.Random(1)
        gen = 0
        try:
            while not stop.is_set():
                gen += 1
                with db.begin(write=True) as txn:
                    for i in rng.sample(range(3000), 300):
                        txn.put(b"%05d" % i, value(b"%05d" % i, gen))
                    if gen % 2:
                        txn.delete_range(b"02000")
                    else:
                        for i in range(2000, 3000):
                            txn.put(b"%05d" % i, value(b"%05d" % i, gen))
                if gen % 4 == 0:
                    db.compact()
        except BaseException as e:
            errors.append(e)

    def reader(seed):
        rng = random.Random(seed)
        held = []
        try:
            while not stop.is_set():
                with db.begin(buffers=True) as txn:
                    for _ in range(10):
                        v = txn.get(b"%05d" % rng.randrange(3000))
                        if v is not None:
                            held.append((v, bytes(v)))
                    c = txn.cursor()
                    if c.set_range(b"%05d" % rng.randrange(3000)):
                        for _, v in zip(range(20), c.iternext(keys=False)):
                            held.append((v, bytes(v)))
                if len(held) > 2000:
                    errors.extend(b for v, b in held if v != b)
                    del held[:-50]
            errors.extend(b for v, b in held if v != b)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    stop.wait(2.0)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    db.check()
    db.close()


MOVED_MAP = r"""
import gc, os, resource, sys
# Too little address space for the map's usual reserve: it is made just as large as the
# file, so growing the file makes a new map.
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import mapkv
path = sys.argv[1]
def maps():
    name = os.path.basename(path)
    return [l for l in open("/proc/self/maps") if l.rstrip().endswith(name)]
db = mapkv.open(path)
with db.begin(write=True) as txn:
    for i in range(500):
        txn.put(b"%08d" % i, bytes([i % 251]) * 300)
with db.begin(buffers=True) as txn:
    views = [txn.get(b"%08d" % i) for i in range(500)]
assert len(maps()) == 1, maps()
with db.begin(write=True) as txn:
    for i in range(500, 60000):
        txn.put(b"%08d" % i, b"\xee" * 300)
# The old map stays, for the views; new readers use the new one.
assert len(maps()) == 2, maps()
with db.begin(buffers=True) as txn:
    late = txn.get(b"00059999")
db.close()
del db
gc.collect()
assert all(v == bytes([i % 251]) * 300 for i, v in enumerate(views))
assert late == b"\xee" * 300
del views, late
gc.collect()
assert maps() == [], maps()
print("ok")
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs /proc/self/maps and RLIMIT_AS"
)
def test_views_hold_when_the_file_outgrows_its_map(tmp_path):
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", MOVED_MAP, str(tmp_path / "v.mapkv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
