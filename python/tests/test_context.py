"""Transactions as context managers: commit on success, abort on exception."""

import gc
import threading

import pytest

import mapkv


class Boom(Exception):
    pass


def test_write_block_commits_on_success(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
    with db.begin() as r:
        assert r.get(b"k") == b"v"


def test_write_block_aborts_on_exception_and_reraises(db):
    with pytest.raises(Boom):
        with db.begin(write=True) as txn:
            txn.put(b"k", b"v")
            raise Boom()
    with db.begin() as r:
        assert r.get(b"k") is None
    # The writer lock was released: a new write transaction begins at once.
    with db.begin(write=True) as txn:
        txn.put(b"k", b"w")


def test_explicit_commit_or_abort_inside_the_block(db):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
        txn.commit()
    with db.begin(write=True) as txn:
        txn.put(b"b", b"2")
        txn.abort()
    with db.begin() as r:
        assert r.get(b"a") == b"1"
        assert r.get(b"b") is None


def test_ended_transactions_raise_value_error(db):
    with db.begin(write=True) as w:
        w.put(b"k", b"v")
    for call in (lambda: w.put(b"k", b"v"), lambda: w.get(b"k"), lambda: w.commit(),
                 lambda: w.delete(b"k"), lambda: w.cursor(), lambda: w.tree_names()):
        with pytest.raises(ValueError):
            call()
    w.abort()  # aborting an ended transaction does nothing
    with db.begin() as r:
        pass
    for call in (lambda: r.get(b"k"), lambda: r.cursor(), lambda: r.len()):
        with pytest.raises(ValueError):
            call()
    r.abort()


def test_uncommitted_write_transaction_aborts_when_collected(db):
    txn = db.begin(write=True)
    txn.put(b"k", b"v")
    del txn
    with db.begin(write=True) as txn:  # would wait forever if the lock were kept
        assert txn.get(b"k") is None


def test_second_write_transaction_on_the_same_thread_is_refused(db):
    with db.begin(write=True):
        with pytest.raises(mapkv.Error, match="holds the write transaction"):
            db.begin(write=True)
        with pytest.raises(mapkv.Error, match="holds the write transaction"):
            db.bulk_load("t", [])
    with db.begin(write=True):
        pass


def test_bulk_load_input_cannot_wait_for_the_writer_it_holds(db):
    def entries():
        for i in range(10_000):  # several batches: the later ones are pulled by the load
            if i == 5000:
                db.begin(write=True)  # would wait for the bulk load on this thread
            yield b"%05d" % i, b"v"

    outcome = []

    def load():
        try:
            db.bulk_load("t", entries())
        except mapkv.Error as e:
            outcome.append(e)

    # In a thread, so that a regression hangs only that thread, not the test run.
    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "the iterable waited for the writer lock its own load holds"
    assert len(outcome) == 1 and "holds the write transaction" in str(outcome[0])
    assert db.tree_names() == []
    db.bulk_load("t", [(b"k", b"v")])
    with db.begin(write=True) as txn:  # nothing claims the writer any more
        txn.put(b"k2", b"v")


def test_snapshot_isolation(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"old")
    reader = db.begin()
    with db.begin(write=True) as txn:
        txn.put(b"k", b"new")
        txn.put(b"other", b"x")
    assert reader.get(b"k") == b"old"
    assert reader.get(b"other") is None
    reader.abort()
    with db.begin() as r:
        assert r.get(b"k") == b"new"


def test_durability_is_checked(db):
    with pytest.raises(mapkv.InvalidOptions):
        db.begin(write=True, durability="sometimes")
    with db.begin(write=True, durability="none") as txn:
        txn.put(b"k", b"v")


def test_durability_is_checked_for_read_transactions_too(db):
    # A misspelt name is an error whatever the transaction; a valid one has nothing to
    # do in a read transaction and is ignored there.
    with pytest.raises(mapkv.InvalidOptions):
        db.begin(durability="sometimes")
    with pytest.raises(mapkv.InvalidOptions):
        db.begin(write=False, durability="Immediate")
    with db.begin(durability="none") as txn:
        assert txn.get(b"k") is None


def test_a_write_transaction_left_in_a_reference_cycle_does_not_block_this_thread(db):
    # Dropped, but only the cycle collector can free it: beginning another on the same
    # thread must collect it rather than report that this thread still holds one.
    class Holder:
        pass

    for begin_next in (
        lambda: db.begin(write=True),
        lambda: db.bulk_load("t", [(b"a", b"1")]),
        lambda: db.compact(),
    ):
        gc.disable()  # keep an automatic collection from doing the test's work
        try:
            holder = Holder()
            holder.cycle = holder
            holder.txn = db.begin(write=True)
            holder.txn.put(b"lost", b"1")
            del holder
            result = begin_next()
        finally:
            gc.enable()
        if isinstance(result, mapkv.WriteTransaction):
            result.abort()
    with db.begin() as txn:
        assert txn.get(b"lost") is None
