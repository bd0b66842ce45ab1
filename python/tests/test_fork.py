"""A database opened before os.fork() is the parent's: in the child every transaction
is refused with Locked and nothing is written, so the parent's file stays sound."""

import os

import pytest

import mapkv

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_a_forked_child_cannot_use_the_parents_database(path):
    db = mapkv.open(path)
    with db.begin(write=True) as txn:
        for i in range(1000):
            txn.put(b"k%05d" % i, b"base")
    carried = db.begin(write=True)
    carried.put(b"k00000", b"parent")
    pid = os.fork()
    if pid == 0:
        status = 0
        # Begun before the fork, `carried` also keeps this thread from beginning another
        # write transaction: those attempts are refused by that check first.
        attempts = [
            (mapkv.Locked, lambda: db.begin()),
            (mapkv.Error, lambda: db.begin(write=True)),
            (mapkv.Locked, lambda: db.check()),
            (mapkv.Error, lambda: db.compact()),
            (mapkv.Locked, lambda: (carried.put(b"child", b"x" * 100), carried.commit())),
        ]
        try:
            for n, (refusal, attempt) in enumerate(attempts, start=1):
                try:
                    attempt()
                    status = status or n
                except refusal:
                    pass
            db.close()  # writes nothing in the child
        except BaseException:
            status = 99
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, "attempt %d in the child was not refused" % os.WEXITSTATUS(status)
    for i in range(1000, 2000):
        carried.put(b"k%05d" % i, b"after")
    carried.commit()
    db.check()
    db.close()
    db = mapkv.open(path)
    db.check()
    with db.begin() as r:
        assert r.get(b"k00000") == b"parent"
        assert r.get(b"child") is None
        assert sum(1 for _ in r.cursor()) == 2000
    db.close()
