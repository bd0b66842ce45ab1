"""Cursors: positioning, stepping both ways, iteration, and their transaction's end."""

import pytest

ENTRIES = [(b"%03d" % i, b"v%d" % i) for i in range(0, 200, 2)]


@pytest.fixture
def filled(db):
    with db.begin(write=True) as txn:
        for k, v in ENTRIES:
            txn.put(k, v)
    return db


def both_kinds(db):
    """A read and a write transaction over the same entries."""
    return [db.begin(), db.begin(write=True)]


@pytest.mark.parametrize("kind", [0, 1])
def test_positioning(filled, kind):
    txn = both_kinds(filled)[kind]
    c = txn.cursor()
    assert c.key() == b"" and c.value() == b""
    assert c.first() and c.item() == ENTRIES[0]
    assert c.last() and c.item() == ENTRIES[-1]
    assert c.set_range(b"051") and c.key() == b"052"
    assert c.set_range(b"052") and c.key() == b"052"
    assert not c.set_range(b"999") and c.key() == b""
    assert c.set_key(b"010") and c.value() == b"v10"
    assert not c.set_key(b"011") and c.key() == b""
    # next/prev from an unpositioned cursor go to the ends.
    assert c.next() and c.key() == ENTRIES[0][0]
    assert not c.prev() and c.key() == b""
    assert c.prev() and c.key() == ENTRIES[-1][0]
    assert not c.next()
    txn.abort()


@pytest.mark.parametrize("kind", [0, 1])
def test_stepping_and_turning(filled, kind):
    txn = both_kinds(filled)[kind]
    c = txn.cursor()
    c.set_key(b"100")
    i = ENTRIES.index((b"100", b"v100"))
    for j in (i + 1, i + 2, i + 1, i, i - 1, i, i + 1):
        moved = c.next() if j > ENTRIES.index((c.key(), c.value())) else c.prev()
        assert moved and c.item() == ENTRIES[j]
    txn.abort()


@pytest.mark.parametrize("kind", [0, 1])
def test_iteration(filled, kind):
    txn = both_kinds(filled)[kind]
    assert list(txn.cursor()) == ENTRIES
    c = txn.cursor()
    assert list(c.iterprev()) == ENTRIES[::-1]
    assert list(c.iternext(values=False)) == [k for k, _ in ENTRIES]
    c.set_range(b"150")
    assert list(c.iternext(keys=False)) == [v for k, v in ENTRIES if k >= b"150"]
    c.set_range(b"050")
    assert list(c.iterprev()) == [e for e in ENTRIES if e[0] <= b"050"][::-1]
    it = iter(txn.cursor())
    assert len(list(it)) == len(ENTRIES)
    assert next(it, None) is None  # an exhausted iterator stays exhausted
    txn.abort()


def test_write_cursor_sees_own_writes(filled):
    with filled.begin(write=True) as txn:
        txn.put(b"001", b"new")
        txn.delete(b"002")
        c = txn.cursor()
        c.first()
        assert c.item() == (b"000", b"v0")
        c.next()
        assert c.item() == (b"001", b"new")
        c.next()
        assert c.key() == b"004"
        # A write between steps is seen by the next step.
        txn.put(b"005", b"five")
        c.next()
        assert c.item() == (b"005", b"five")


def test_buffer_values(filled):
    with filled.begin() as txn:
        for k, v in txn.cursor(buffer=True):
            assert type(k) is bytes
            assert isinstance(v, memoryview) and bytes(v) == dict(ENTRIES)[k]
    with filled.begin(write=True) as txn:
        c = txn.cursor(buffer=True)
        c.first()
        assert isinstance(c.value(), memoryview) and bytes(c.value()) == ENTRIES[0][1]


def test_cursor_after_its_transaction_ended(filled):
    txn = filled.begin()
    c = txn.cursor()
    c.first()
    it = c.iternext()
    txn.abort()
    with pytest.raises(ValueError):
        c.next()
    with pytest.raises(ValueError):
        next(it)
    with pytest.raises(ValueError):
        c.key()
    with filled.begin(write=True) as w:
        wc = w.cursor()
        wc.first()
    with pytest.raises(ValueError):
        wc.first()


@pytest.mark.parametrize("kind", [0, 1])
def test_a_positioned_cursor_shows_nothing_once_its_transaction_ended(filled, kind):
    txn = both_kinds(filled)[kind]
    c = txn.cursor()
    assert c.first() and c.key() == ENTRIES[0][0]
    txn.abort()
    for read in (c.key, c.value, c.item):
        with pytest.raises(ValueError):
            read()


@pytest.mark.parametrize("kind", [0, 1])
@pytest.mark.parametrize("walk", ["iternext", "iterprev", "__iter__"])
def test_an_iterator_from_a_positioned_cursor_yields_nothing_once_its_transaction_ended(
    filled, kind, walk
):
    # The iterator's first item is the cursor's current entry, read without a step:
    # it must say the transaction ended, as key(), value() and the steps do.
    txn = both_kinds(filled)[kind]
    c = txn.cursor()
    assert c.set_key(ENTRIES[10][0])
    it = getattr(c, walk)()
    txn.abort()
    with pytest.raises(ValueError):
        next(it)


def test_cursor_close(filled):
    with filled.begin() as txn:
        with txn.cursor() as c:
            c.first()
        with pytest.raises(ValueError):
            c.next()


def test_full_scan_of_many_entries_in_order(db):
    entries = [(b"%07d" % i, b"%d" % (i * 7)) for i in range(50_000)]
    db.bulk_load("t", entries)
    with db.begin() as txn:
        assert list(txn.cursor(tree="t")) == entries
        assert list(txn.cursor(tree="t").iterprev()) == entries[::-1]


def test_a_read_transactions_end_closes_its_cursors(filled):
    """Its end closes the cursors still alive: none keeps the snapshot (which would keep
    writers from reusing the pages it reaches) until it is next used or collected.

    Catches: a cursor holding the snapshot after abort() until `del`; the oldest
    reader's age then grew with every commit."""
    txn = filled.begin()
    c = txn.cursor()
    assert c.first()
    iterator = c.iternext()
    txn.abort()
    for i in range(3):
        with filled.begin(write=True) as w:
            w.put(b"late%d" % i, b"x")
    assert filled.stats()["oldest_reader_txn_age"] == 0
    with pytest.raises(ValueError):
        c.key()
    with pytest.raises(ValueError):
        next(iterator)
    # The same through the context manager, with many cursors (some dropped).
    with filled.begin() as txn:
        kept = [txn.cursor() for _ in range(40)]
        for _ in range(40):
            txn.cursor().first()
        assert all(k.first() for k in kept)
    filled.begin(write=True).commit()
    assert filled.stats()["oldest_reader_txn_age"] == 0
    # The cursors kept alive were closed, not only left unusable.
    for k in kept:
        with pytest.raises(ValueError):
            k.first()
