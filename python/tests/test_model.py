"""The API against a dict model, with random operations (hypothesis)."""

import gc

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mapkv

TREES = st.sampled_from([None, "main", "t1", "t2"])
KEYS = st.one_of(
    st.binary(max_size=3),  # few distinct keys: overwrites, deletes of present keys
    st.binary(min_size=1, max_size=40),
)
VALUES = st.one_of(st.binary(max_size=30), st.binary(min_size=2000, max_size=9000))


def name(tree):
    return tree or mapkv.DEFAULT_TREE


class Model(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = self.dir.name + "/model.mapkv"
        self.db = mapkv.open(self.path, durability="none")
        self.committed = {}  # tree name -> {key: value}
        self.txn = None
        self.pending = None
        self.snapshots = []  # (read transaction, model it must show)
        self.views = []  # (memoryview, bytes it must hold)

    def teardown(self):
        if self.txn is not None:
            self.txn.abort()
        for r, _ in self.snapshots:
            r.abort()
        self.check_views()
        self.views.clear()
        self.db.close()
        gc.collect()
        self.dir.cleanup()

    def check_views(self):
        """Every view made so far still holds the value it was made with."""
        for view, expected in self.views:
            assert view == expected

    def model(self):
        return self.pending if self.txn is not None else self.committed

    @precondition(lambda self: self.txn is None)
    @rule(durability=st.sampled_from([None, "none", "immediate"]))
    def begin_write(self, durability):
        self.txn = self.db.begin(write=True, durability=durability)
        self.pending = {t: dict(kv) for t, kv in self.committed.items()}

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES, key=KEYS, value=VALUES)
    def put(self, tree, key, value):
        self.txn.put(key, value, tree=tree)
        self.pending.setdefault(name(tree), {})[key] = value

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES, key=KEYS)
    def delete(self, tree, key):
        kv = self.pending.get(name(tree))
        if kv is None and name(tree) != mapkv.DEFAULT_TREE:
            with pytest.raises(mapkv.TreeNotFound):
                self.txn.delete(key, tree=tree)
            return
        assert self.txn.delete(key, tree=tree) == (kv is not None and key in kv)
        if kv is not None:
            kv.pop(key, None)

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES, key=KEYS, value=VALUES)
    def replace(self, tree, key, value):
        kv = self.pending.setdefault(name(tree), {})
        assert self.txn.replace(key, value, tree=tree) == kv.get(key)
        kv[key] = value

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES, key=KEYS, value=VALUES)
    def put_append(self, tree, key, value):
        kv = self.pending.setdefault(name(tree), {})
        if kv and key <= max(kv):
            with pytest.raises(mapkv.Unsorted):
                self.txn.put(key, value, tree=tree, append=True)
        else:
            self.txn.put(key, value, tree=tree, append=True)
            kv[key] = value

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES, key=KEYS)
    def pop(self, tree, key):
        kv = self.pending.get(name(tree))
        if kv is None and name(tree) != mapkv.DEFAULT_TREE:
            with pytest.raises(mapkv.TreeNotFound):
                self.txn.pop(key, tree=tree)
            return
        assert self.txn.pop(key, b"absent", tree=tree) == (kv or {}).pop(key, b"absent")

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES, start=st.one_of(st.none(), KEYS), end=st.one_of(st.none(), KEYS))
    def delete_range(self, tree, start, end):
        kv = self.pending.get(name(tree))
        if kv is None and name(tree) != mapkv.DEFAULT_TREE:
            with pytest.raises(mapkv.TreeNotFound):
                self.txn.delete_range(start, end, tree=tree)
            return
        doomed = [
            k
            for k in (kv or {})
            if (start is None or k >= start) and (end is None or k < end)
        ]
        assert self.txn.delete_range(start, end, tree=tree) == len(doomed)
        for k in doomed:
            del kv[k]

    @precondition(lambda self: self.txn is not None)
    @rule(tree=TREES)
    def delete_tree(self, tree):
        existed = self.pending.pop(name(tree), None) is not None
        assert self.txn.delete_tree(name(tree)) == existed

    @precondition(lambda self: self.txn is not None)
    @rule()
    def commit(self):
        self.txn.commit()
        self.txn, self.committed, self.pending = None, self.pending, None

    @precondition(lambda self: self.txn is not None)
    @rule()
    def abort(self):
        self.txn.abort()
        self.txn, self.pending = None, None

    @rule(tree=TREES, key=KEYS, buffer=st.booleans())
    def get(self, tree, key, buffer):
        self.check_get(self.txn or self.db.begin(), self.model(), tree, key, buffer)

    @rule(tree=TREES, data=st.data())
    def get_present(self, tree, data):
        kv = self.model().get(name(tree))
        if kv:
            key = data.draw(st.sampled_from(sorted(kv)))
            self.check_get(self.txn or self.db.begin(), self.model(), tree, key, True)

    def check_get(self, txn, model, tree, key, buffer):
        kv = model.get(name(tree))
        if kv is None and name(tree) != mapkv.DEFAULT_TREE:
            with pytest.raises(mapkv.TreeNotFound):
                txn.get(key, tree=tree)
            return
        got = txn.get(key, tree=tree, buffer=buffer)
        expected = (kv or {}).get(key)
        if expected is None:
            assert got is None
        else:
            assert isinstance(got, memoryview if buffer else bytes)
            assert got == expected
            if buffer:
                self.views.append((got, expected))

    @rule(tree=TREES, start=KEYS, reverse=st.booleans(), buffer=st.booleans())
    def scan(self, tree, start, reverse, buffer):
        txn = self.txn or self.db.begin()
        kv = self.model().get(name(tree))
        if kv is None and name(tree) != mapkv.DEFAULT_TREE:
            with pytest.raises(mapkv.TreeNotFound):
                txn.cursor(tree=tree).first()
            return
        expected = sorted((kv or {}).items())
        c = txn.cursor(tree=tree, buffer=buffer)
        if reverse:
            got = [(k, bytes(v)) for k, v in c.iterprev()]
            assert got == expected[::-1]
        else:
            found = c.set_range(start)
            tail = [e for e in expected if e[0] >= start]
            assert found == bool(tail)
            got = [(k, bytes(v)) for k, v in c.iternext()] if found else []
            assert got == tail
        assert txn.len(tree=tree) == len(expected)

    @rule()
    def take_snapshot(self):
        self.snapshots.append(
            (self.db.begin(), {t: dict(kv) for t, kv in self.committed.items()})
        )

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def check_snapshot(self, data):
        i = data.draw(st.integers(0, len(self.snapshots) - 1))
        r, model = self.snapshots[i]
        assert sorted(r.tree_names()) == sorted(model)
        for t, kv in model.items():
            assert list(r.cursor(tree=t)) == sorted(kv.items())
        if data.draw(st.booleans()):
            r.abort()
            del self.snapshots[i]

    @precondition(lambda self: self.txn is None and not self.snapshots)
    @rule()
    def reopen(self):
        # Views keep their snapshot, and so the file, open: let go of them first.
        self.check_views()
        self.views.clear()
        self.db.close()
        gc.collect()
        self.db = mapkv.open(self.path)
        assert self.db.check()["entries"] == sum(len(kv) for kv in self.committed.values())

    @invariant()
    def tree_names(self):
        assert self.db.tree_names() == sorted(self.committed)
        if self.txn is not None:
            assert self.txn.tree_names() == sorted(self.pending)


Model.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestModel = Model.TestCase
