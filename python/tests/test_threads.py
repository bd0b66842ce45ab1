"""Threads: readers while a writer commits, and the GIL released by long operations."""

import gc
import os
import signal
import sys
import threading
import time

import pytest

import mapkv


def test_readers_see_consistent_snapshots_while_a_writer_commits(db):
    keys = [b"k%02d" % i for i in range(20)]
    with db.begin(write=True) as txn:
        for k in keys:
            txn.put(k, b"0")
    commits = 100
    errors = []
    reads = [0]
    done = threading.Event()

    def writer():
        try:
            for n in range(1, commits + 1):
                with db.begin(write=True) as txn:
                    for k in keys:
                        txn.put(k, b"%d" % n)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    def reader():
        try:
            while not done.is_set():
                with db.begin() as txn:
                    values = {txn.get(k) for k in keys}
                    views = [txn.get(k, buffer=True) for k in keys]
                    scanned = {v for _, v in txn.cursor()}
                assert len(values) == 1, values  # one commit's values, never a mix
                assert scanned == values
                assert {bytes(v) for v in views} == values
                reads[0] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert reads[0] > 0
    with db.begin() as txn:
        assert txn.get(keys[0]) == b"%d" % commits


def test_a_read_transaction_can_move_between_threads(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
    txn = db.begin()
    out = []
    t = threading.Thread(target=lambda: out.append((txn.get(b"k"), list(txn.cursor()))))
    t.start()
    t.join()
    assert out == [(b"v", [(b"k", b"v")])]
    txn.abort()


def test_a_write_transaction_may_move_between_threads(db):
    txn = db.begin(write=True)
    out = []

    def put():
        txn.put(b"k", b"from another thread")
        out.append(txn.get(b"k"))

    t = threading.Thread(target=put)
    t.start()
    t.join()
    assert out == [b"from another thread"]
    # The thread that began it cannot begin a second one (it might be waiting for
    # itself), whichever thread ends this one.
    with pytest.raises(mapkv.Error):
        db.begin(write=True)
    t = threading.Thread(target=txn.commit)
    t.start()
    t.join()
    with db.begin(write=True) as again:
        assert again.get(b"k") == b"from another thread"


def test_a_write_cursor_may_be_used_on_another_thread(db):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
        txn.put(b"b", b"2")
        c = txn.cursor()
        out = []
        t = threading.Thread(target=lambda: out.append(list(c)))
        t.start()
        t.join()
        assert out == [[(b"a", b"1"), (b"b", b"2")]]


def test_a_write_transaction_collected_on_another_thread_frees_the_writer(db):
    # Its last references (the transaction's and its cursor's) die on another thread:
    # the transaction aborts there and the writer lock is free for everyone.
    holder = [db.begin(write=True)]
    holder[0].put(b"gone", b"1")
    holder.append(holder[0].cursor())

    def drop_them():
        holder.clear()
        gc.collect()

    t = threading.Thread(target=drop_them)
    t.start()
    t.join()
    done = []

    def write():
        with db.begin(write=True) as w:
            assert w.get(b"gone") is None
            w.put(b"other", b"1")
        done.append(True)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(10)
    assert done == [True], "the writer lock was not released"


def test_writers_on_several_threads_take_turns(db):
    def add(n):
        for i in range(20):
            with db.begin(write=True, durability="none") as txn:
                old = int(txn.get(b"counter", b"0"))
                txn.put(b"counter", b"%d" % (old + 1))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.begin() as txn:
        assert txn.get(b"counter") == b"80"


def runs_beside(operation, attempts=20, prepare=None):
    """Whether another Python thread ran while `operation()` ran, trying a few times
    (each time on what `prepare()` returns, if given, which is not timed).

    The switch interval is set far beyond the test's length, so the interpreter never
    takes the GIL from a thread that holds it: the spinning thread runs during the
    operation only if the operation itself lets go of the GIL.
    """
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin():
        started.set()
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)  # lets go of the GIL, so the main thread gets it back

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000)
    spinner = threading.Thread(target=spin)
    try:
        spinner.start()
        started.wait()
        for _ in range(attempts):
            arg = (prepare(),) if prepare else ()
            before = counter[0]
            operation(*arg)
            if counter[0] != before:
                return True
        return False
    finally:
        stop.set()
        sys.setswitchinterval(old)
        spinner.join()


def test_long_operations_release_the_gil(db, tmp_path):
    value = b"x" * 4000
    n = [0]
    # Enough pages that checking and copying them takes tens of milliseconds.
    db.bulk_load("many", ((b"%08d" % i, b"v" * 40) for i in range(300_000)))

    def written():
        # Beginning waits for the writer lock without the GIL too: do it untimed.
        txn = db.begin(write=True)
        for i in range(500):
            txn.put(b"%d-%05d" % (n[0], i), value)
        n[0] += 1
        return txn

    assert runs_beside(lambda txn: txn.commit(), prepare=written)
    assert runs_beside(db.check)
    targets = iter(range(100))
    assert runs_beside(lambda: db.compact_to(str(tmp_path / ("c%d" % next(targets)))))
    names = iter(range(100))
    assert runs_beside(
        lambda: db.bulk_load("b%d" % next(names), ((b"%06d" % i, value) for i in range(2000)))
    )


def _unsynced(tmp_path, name):
    """A database whose clean close has syncing to do: 16 MiB committed with durability
    "none" (its close syncs and writes a meta)."""
    db = mapkv.open(tmp_path / name, durability="none")
    value = b"v" * (1 << 20)
    with db.begin(write=True) as txn:
        for i in range(16):
            txn.put(b"%02d" % i, value)
    return db


def _only_a_view(db):
    txn = db.begin(buffers=True)
    view = txn.get(b"00")
    txn.abort()
    db.close()
    return [view]


def _only_a_read_transaction(db):
    txn = db.begin()
    db.close()
    return [txn]


def _only_a_write_transaction(db):
    txn = db.begin(write=True)
    txn.put(b"k", b"v")
    db.close()
    return [txn]


@pytest.mark.parametrize(
    "holder, let_go",
    [
        (_only_a_view, list.clear),
        (_only_a_read_transaction, list.clear),
        (_only_a_write_transaction, list.clear),
        (_only_a_write_transaction, lambda held: held[0].abort()),
        (lambda db: [db], list.clear),
    ],
    ids=["view", "read-transaction", "write-transaction", "abort", "database"],
)
def test_the_last_reference_closes_the_file_without_the_gil(tmp_path, holder, let_go):
    # Whatever drops the last reference to a database (a view's or a transaction's
    # deallocation, an abort, the database object's) runs the clean close, which syncs:
    # other threads must run meanwhile.
    names = iter(range(100))

    def prepare():
        return holder(_unsynced(tmp_path, "db%d" % next(names)))

    assert runs_beside(let_go, attempts=3, prepare=prepare)


def test_control_a_pure_python_loop_does_not_let_others_run():
    # Guards runs_beside itself: without a blocking call nothing else runs.
    assert not runs_beside(lambda: sum(range(200_000)), attempts=3)


def test_begin_write_waits_without_the_gil(db):
    # A thread waiting for the writer lock must not hold the GIL, or the holder could
    # never commit.
    holder = db.begin(write=True)
    holder.put(b"k", b"first")
    result = []
    t = threading.Thread(target=lambda: result.append(_write(db, b"second")))
    t.start()
    time.sleep(0.2)
    holder.commit()
    t.join(timeout=30)
    assert not t.is_alive()
    with db.begin() as txn:
        assert txn.get(b"k") == b"second"


def _write(db, value):
    with db.begin(write=True) as txn:
        txn.put(b"k", value)
    return True


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT by os.kill is POSIX")
def test_ctrl_c_interrupts_a_wait_for_the_writer(db):
    # Python runs signal handlers in the main thread only, between bytecodes: a wait for
    # the writer lock in one long native call would see Ctrl-C only once it ended.
    assert threading.current_thread() is threading.main_thread()
    holding = threading.Event()
    release = threading.Event()

    def hold():
        with db.begin(write=True) as txn:
            txn.put(b"k", b"held")
            holding.set()
            # Bounded, so that a wait that ignores the signal ends (and fails below).
            release.wait(timeout=5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(timeout=30)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    try:
        started = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            db.begin(write=True)
        waited = time.monotonic() - started
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
        release.set()
        holder.join()
    assert waited < 1.0, "Ctrl-C ended the wait after %.1f s" % waited
    # The interrupted wait left nothing behind: the writer lock is free.
    with db.begin(write=True) as txn:
        txn.put(b"k", b"after")
    with db.begin() as txn:
        assert txn.get(b"k") == b"after"
