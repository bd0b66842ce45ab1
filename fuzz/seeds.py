#!/usr/bin/env python3
"""Writes hand-made seed inputs for the new actions of the `ops` and `open_corrupt` targets.

    fuzz/seeds.py              # writes fuzz/corpus/<target>/seed-*

The inputs are `arbitrary` 1.x encodings of the targets' `Input` structs, written by hand
here because `arbitrary` has no encoder: integers little-endian; `bool` the low bit of a
byte; an enum variant `i` of `n` a u32 `x` with `(x * n) >> 32 == i`; `Option` a bool
then the value; a `Vec` each element after a byte with the low bit set, ended by a byte
without it (or by the end of the input, for the last field). The variant lists below must
follow the enums' order in fuzz_targets/*.rs: when an enum changes, update them and run
this again (the old seeds then decode to something else).

All seeds go to corpus/<target>. The ones named *_REGRESSION below found engine bugs
when they were written (issue 12: forgotten write trees, a writer outliving its
database, references naming a later writer, DAG-shaped files); they pass since the fix.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v):
    return bytes([v & 0xFF])


def u16(v):
    return (v & 0xFFFF).to_bytes(2, "little")


def u32(v):
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def u64(v):
    return (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def boolean(b):
    return u8(1 if b else 0)


def variant(i, n):
    x = ((i << 32) + n - 1) // n
    assert (x * n) >> 32 == i and x < 1 << 32
    return u32(x)


def vec(items, last=False):
    out = b"".join(b"\x01" + item for item in items)
    return out if last else out + b"\x00"


def option(item):
    return b"\x00" if item is None else b"\x01" + item


def enum(names):
    """A function encoding variant `name` followed by its fields' bytes."""

    def encode(name, *fields):
        return variant(names.index(name), len(names)) + b"".join(fields)

    return encode


# ---- ops -----------------------------------------------------------------------------

OP = enum(
    [
        "Insert",
        "InsertRun",
        "Remove",
        "RemoveRun",
        "Get",
        "Range",
        "Len",
        "OpenTree",
        "DeleteTree",
        "TreeNames",
        "Commit",
        "Abort",
        "Durability",
        "Reopen",
        "Snapshot",
        "CheckSnapshot",
        "Check",
        "ForgetTree",
        "UserPanic",
        "Lifecycle",
        "Compact",
        "RemoveRange",
        "Retain",
        "Append",
        "AppendRun",
        "Rmw",
        "Ends",
        "TwoTrees",
        "InsertFrom",
    ]
)
MMAP = enum(["Whole", "Zero", "Pages"])
KEY = enum(["Index", "Bytes", "Long"])
VALUE = enum(["Small", "Sized"])
KEY_BOUND = enum(["Unbounded", "Included", "Excluded"])
PANIC_POINT = enum(["Opened", "AfterInsert", "AfterRemove", "InRange", "AfterRun", "MidChange"])
FATE = enum(["Commit", "Abort", "Drop"])


def ops_input(ops, page_size=0, mmap=None, file=1):
    """file: 0 mod 16 runs on a real file, anything else in memory."""
    return u8(page_size) + (mmap or MMAP("Whole")) + u8(file) + vec(ops, last=True)


def insert_run(tree, start, count, value_len=40, long=False):
    return OP("InsertRun", u8(tree), u16(start), u8(count), u16(value_len), boolean(long))


def remove_run(tree, start, count, step=1):
    return OP("RemoveRun", u8(tree), u16(start), u8(count), u8(step))


def get(tree, index, committed=False):
    return OP("Get", u8(tree), KEY("Index", u16(index)), boolean(committed))


def full_range(tree, committed=False, take=255, pattern=0x5A5A5A5A):
    return OP(
        "Range",
        u8(tree),
        KEY_BOUND("Unbounded"),
        KEY_BOUND("Unbounded"),
        u32(pattern),
        u8(take),
        boolean(committed),
    )


def append(tree, index, value_len=30):
    return OP("Append", u8(tree), KEY("Index", u16(index)), VALUE("Sized", u32(value_len), u8(5)))


def append_run(tree, count, value_len=20):
    return OP("AppendRun", u8(tree), u8(count), u16(value_len))


def forget(tree, start, count, value_len=60, remove_every=0):
    return OP("ForgetTree", u8(tree), u16(start), u8(count), u16(value_len), u8(remove_every))


def user_panic(tree, point, index=7, value_len=30, nth=None):
    """nth: for "MidChange", the engine's read or write (n % 8 + 1) that panics."""
    fields = () if nth is None else (u8(nth),)
    return OP(
        "UserPanic",
        u8(tree),
        KEY("Index", u16(index)),
        VALUE("Sized", u32(value_len), u8(9)),
        PANIC_POINT(point, *fields),
    )


def lifecycle(readers, writer, order, mmap=None):
    """writer: None or (tree, start, count, immediate, fate)."""
    end = None
    if writer is not None:
        tree, start, count, immediate, fate = writer
        end = u8(tree) + u16(start) + u8(count) + boolean(immediate) + FATE(fate)
    return OP(
        "Lifecycle",
        u8(readers),
        option(end),
        vec([u8(o) for o in order]),
        mmap or MMAP("Whole"),
    )


def index_bound(kind, index):
    return KEY_BOUND(kind, KEY("Index", u16(index)))


def remove_range(tree, lo, hi):
    """lo, hi: KEY_BOUND encodings."""
    return OP("RemoveRange", u8(tree), lo, hi)


def retain(tree, modulus, seed, panic_at=None):
    return OP("Retain", u8(tree), u8(modulus), u8(seed), option(None if panic_at is None else u8(panic_at)))


def rmw(tree, index, kind, value_len=30):
    """kind: 0 replace, 1 take, 2 update (by the value's length: 0 store, 1 remove, 2 keep)."""
    return OP("Rmw", u8(tree), KEY("Index", u16(index)), VALUE("Sized", u32(value_len), u8(9)), u8(kind))


def ends(tree, index, committed=False):
    return OP("Ends", u8(tree), KEY("Index", u16(index)), boolean(committed))


def two_trees(a, b, start, count, value_len=40):
    return OP("TwoTrees", u8(a), u8(b), u16(start), u8(count), u16(value_len))


def insert_from(tree, index, value_len=30, short=False):
    """insert_from of a value of value_len bytes; short: the reader ends a byte early."""
    return OP("InsertFrom", u8(tree), KEY("Index", u16(index)), VALUE("Sized", u32(value_len), u8(3)), boolean(short))


COMMIT = OP("Commit")
COMPACT = OP("Compact")
ABORT = OP("Abort")
CHECK = OP("Check")
SNAPSHOT = OP("Snapshot")
CHECK_SNAPSHOT = OP("CheckSnapshot")


def durability(immediate):
    return OP("Durability", boolean(immediate))


OPS_PASSING = {
    # Compaction in place after removals freed most of the file, with large values
    # (moved too) and a snapshot held across it.
    "seed-compact-in-place": ops_input(
        [
            insert_run(0, 0, 250, value_len=300),
            insert_run(1, 0, 6, value_len=9000),
            COMMIT,
            remove_run(0, 0, 200),
            COMMIT,
            OP("Snapshot"),
            COMPACT,
            OP("CheckSnapshot"),
            COMPACT,
            CHECK,
        ]
    ),
    # Range removes (a middle range over several leaves, the whole tree with large
    # values, an empty range) and retain, then a panic from retain's predicate half-way
    # through its change: the transaction must refuse its commit.
    "seed-remove-range-and-retain": ops_input(
        [
            insert_run(0, 0, 250, value_len=300),
            insert_run(1, 0, 40, value_len=9000),
            COMMIT,
            remove_range(0, index_bound("Included", 20), index_bound("Excluded", 230)),
            remove_range(0, index_bound("Excluded", 5), index_bound("Included", 5)),
            full_range(0),
            remove_range(1, KEY_BOUND("Unbounded"), KEY_BOUND("Unbounded")),
            COMMIT,
            CHECK,
            insert_run(0, 0, 250, value_len=40),
            retain(0, 1, 7),
            COMMIT,
            CHECK,
            insert_run(0, 0, 250, value_len=40),
            COMMIT,
            retain(0, 2, 3, panic_at=100),
            full_range(0, committed=True),
            COMMIT,
            CHECK,
        ]
    ),
    # Two trees open at once, one opened again while its older handle lives (stale, its
    # slices intact); read-modify-write of present and absent keys; first, last and
    # prefixes, before and after the commit.
    "seed-everyday-api": ops_input(
        [
            insert_run(0, 0, 120, value_len=200),
            two_trees(0, 1, 100, 200, value_len=3000),
            rmw(0, 5, 0),
            rmw(0, 6, 1),
            rmw(0, 7, 2, value_len=30),
            rmw(0, 8, 2, value_len=31),
            rmw(0, 9, 2, value_len=32),
            rmw(1, 500, 0, value_len=5000),
            ends(0, 10),
            ends(1, 399),
            COMMIT,
            ends(0, 10, committed=True),
            two_trees(1, 2, 0, 50),
            ABORT,
            insert_from(0, 11, value_len=20),
            insert_from(0, 12, value_len=9000),
            insert_from(0, 11, value_len=9000, short=True),
            insert_from(1, 13, value_len=5, short=True),
            COMMIT,
            CHECK,
        ]
    ),
    # Appends past the last key, with leaves and branches cut at their end, blobs,
    # refusals of keys not past the last, inserts between, across commits.
    "seed-append-runs": ops_input(
        [
            append_run(0, 250),
            append_run(0, 250, value_len=3000),
            COMMIT,
            append(0, 5),
            insert_run(0, 0, 100),
            append_run(0, 200),
            get(0, 50),
            full_range(0),
            COMMIT,
            append_run(1, 255, value_len=700),
            append(1, 399),
            remove_run(1, 0, 400),
            COMMIT,
            CHECK,
        ]
    ),
    # Panics from user code between changes, caught: nothing is poisoned, the
    # transaction commits with every change made before the panic.
    "seed-user-panic-after-insert": ops_input(
        [insert_run(0, 0, 60), user_panic(0, "AfterInsert"), get(0, 7), COMMIT, CHECK]
    ),
    "seed-user-panic-points": ops_input(
        [
            insert_run(1, 100, 120, value_len=300),
            user_panic(1, "AfterRemove", index=150),
            user_panic(1, "InRange"),
            user_panic(1, "AfterRun", value_len=77),
            user_panic(2, "Opened"),
            full_range(1),
            COMMIT,
            get(1, 150, committed=True),
            CHECK,
        ],
        page_size=1,
    ),
    **{
        f"seed-panic-mid-change-{n}": ops_input(
            [insert_run(0, 0, 200, value_len=150), COMMIT,
             user_panic(0, "MidChange", value_len=2500, nth=n),
             full_range(0, committed=True), COMMIT, CHECK],
            mmap=MMAP("Zero"),
        )
        for n in range(0, 8, 2)
    },
    "seed-user-panic-then-abort": ops_input(
        [insert_run(0, 0, 30), COMMIT, user_panic(0, "AfterRun", value_len=3), ABORT,
         full_range(0, committed=True), CHECK]
    ),
    # A forgotten tree that made no change: nothing to lose, on today's engine too.
    "seed-forget-no-change": ops_input(
        [insert_run(0, 0, 40), forget(0, 0, 0), COMMIT, CHECK]
    ),
    # Handles dropped in orders that do not leave the writer last.
    "seed-lifecycle-db-last": ops_input(
        [
            insert_run(0, 0, 80),
            COMMIT,
            SNAPSHOT,
            insert_run(0, 50, 40, value_len=900),
            lifecycle(2, None, [0, 0, 0, 0]),
            full_range(0, committed=True),
        ]
    ),
    "seed-lifecycle-commit-readers-after-db": ops_input(
        [
            insert_run(1, 0, 50),
            COMMIT,
            durability(False),
            lifecycle(2, (1, 300, 60, False, "Commit"), [3, 2, 0, 0]),
            CHECK,
        ]
    ),
    "seed-lifecycle-abort-none-durability": ops_input(
        [
            durability(False),
            insert_run(0, 0, 70, value_len=2500),
            COMMIT,
            insert_run(0, 30, 30),
            COMMIT,
            lifecycle(1, (0, 10, 20, True, "Abort"), [1, 0, 0]),
        ],
        file=0,
    ),
}

OPS_REGRESSION = {
    # Changes through a forgotten WriteTree are lost today (its record is written back
    # only by Drop): a later get disagrees with the model; the commit leaks pages and
    # frees pages that stay reachable.
    "seed-forget-then-get": ops_input(
        [insert_run(0, 0, 40), COMMIT, forget(0, 10, 20), get(0, 12), COMMIT, CHECK]
    ),
    "seed-forget-then-commit": ops_input(
        [insert_run(0, 0, 200, value_len=100), COMMIT, forget(0, 0, 60, remove_every=3),
         COMMIT, CHECK]
    ),
    "seed-forget-new-tree-blobs": ops_input(
        [forget(1, 0, 30, value_len=2600), forget(0, 5, 5), COMMIT, CHECK], page_size=0
    ),
    # The writer outlives the database and ends last: its end drops the last Arc of the
    # shared state, whose Drop locks the writer mutex the transaction still holds (hang).
    "seed-lifecycle-commit-after-db": ops_input(
        [insert_run(0, 0, 30), COMMIT, lifecycle(0, (0, 100, 10, True, "Commit"), [1, 0])]
    ),
    "seed-lifecycle-abort-after-db": ops_input(
        [insert_run(0, 0, 30), lifecycle(1, (0, 100, 10, False, "Abort"), [2, 0, 0])]
    ),
    "seed-lifecycle-drop-after-db": ops_input(
        [insert_run(2, 0, 30), COMMIT, insert_run(2, 40, 5),
         lifecycle(0, None, [1, 0])]
    ),
}


# ---- open_corrupt -----------------------------------------------------------------------

EDIT = enum(
    [
        "Byte",
        "Xor",
        "U16",
        "U32",
        "U64",
        "Small",
        "Fill",
        "CopyPage",
        "ZeroPage",
        "Truncate",
        "Extend",
        "Dag",
        "RefTxn",
    ]
)
# Each field's encoder, in declaration order.
EDIT_FIELDS = {
    "Byte": [("page", u16), ("offset", u16), ("value", u8)],
    "Xor": [("page", u16), ("offset", u16), ("mask", u8)],
    "U16": [("page", u16), ("offset", u16), ("value", u16)],
    "U32": [("page", u16), ("offset", u16), ("value", u32)],
    "U64": [("page", u16), ("offset", u16), ("value", u64)],
    "Small": [("page", u16), ("offset", u16), ("value", u8), ("width", u8)],
    "Fill": [("page", u16), ("offset", u16), ("len", u16), ("value", u8)],
    "CopyPage": [("from", u16), ("to", u16)],
    "ZeroPage": [("page", u16)],
    "Truncate": [("pages", u16), ("bytes", u16)],
    "Extend": [("pages", u8), ("fill", u8)],
}
REF_KIND = enum(["Catalog", "FreeList", "TreeRoot", "Branch", "Overflow"])
TXN_TO = enum(["Snapshot", "Next", "Above", "Below", "Zero"])
# The variants of common/corrupt.rs, by index.
VARIANTS = {"small": 0, "small-killed": 1, "catalog": 2, "tiny-killed": 3, "deep-killed": 4}


def edit(name, **fields):
    return EDIT(name, *(enc(fields[f]) for f, enc in EDIT_FIELDS[name]))


def dag(tree, levels, child=0, wide=False, empty_leaf=False, verify=False):
    """levels: 0..7 for 1..8 levels."""
    return EDIT(
        "Dag",
        u8(tree),
        u8(levels),
        u8(child),
        boolean(wide),
        boolean(empty_leaf),
        boolean(verify),
    )


def ref_txn(kind, pick, to, n=0, header_too=False):
    to = TXN_TO(to, u8(n)) if to in ("Above", "Below") else TXN_TO(to)
    return EDIT("RefTxn", REF_KIND(kind), u16(pick), to, boolean(header_too))


def corrupt_input(variant, edits, reseal=False, file=2, writes=()):
    """file: 0 mod 32 a real file, 1 mod 8 also compacts."""
    return (
        u8(VARIANTS.get(variant, variant) if isinstance(variant, str) else variant)
        + vec(edits)
        + boolean(reseal)
        + u8(file)
        + vec([u16(k) + u16(v) for k, v in writes], last=True)
    )


# Writes: (k, v) pairs; k picks the tree (k % (trees + 1), the last a new one) and the key
# (k % 7 == 0 deletes the tree), v the change (v % 6: 0 and 1 remove a key the tree has,
# 2 an overflow value, else a small one).
SOME_WRITES = [(1, 3), (2, 4), (1, 0), (2, 2), (3, 9), (8, 1), (1, 5), (2, 0), (7, 1), (10, 3)]

CORRUPT_PASSING = {
    # Collapsed DAGs: check and the write path meet a page twice; both say Corrupted.
    "seed-dag-collapse": corrupt_input("deep-killed", [dag(1, 3, child=1)], writes=SOME_WRITES),
    "seed-dag-collapse-small": corrupt_input(
        "small", [dag(2, 0, child=3)], reseal=True, writes=SOME_WRITES
    ),
    # References with an older writer, consistent with their pages and resealed: the
    # database passes check, and a commit must keep it so.
    "seed-txn-below-branch": corrupt_input(
        "small",
        [ref_txn("Branch", 3, "Below", n=0, header_too=True)],
        reseal=True,
        writes=SOME_WRITES,
    ),
    "seed-txn-below-overflow-compact": corrupt_input(
        "small",
        [ref_txn("Overflow", 1, "Below", n=1, header_too=True)],
        reseal=True,
        file=1,
        writes=SOME_WRITES,
    ),
    "seed-txn-free-list-zero": corrupt_input(
        "small-killed", [ref_txn("FreeList", 0, "Zero", header_too=True)], reseal=True,
        writes=SOME_WRITES,
    ),
    "seed-txn-tree-root-above": corrupt_input(
        "small", [ref_txn("TreeRoot", 1, "Above", n=3)], reseal=False, writes=SOME_WRITES
    ),
}

CORRUPT_REGRESSION = {
    # Wide DAGs: 135 children a branch, all one page. Today every walk but check's
    # follows each reference: reads, tree_names, delete_tree, compact_to and (`verify`)
    # the open's verification take 135^levels steps.
    "seed-dag-wide-read": corrupt_input(
        "small", [dag(1, 4, wide=True, empty_leaf=True)], writes=[]
    ),
    "seed-dag-wide-open": corrupt_input(
        "deep-killed", [dag(1, 5, wide=True, verify=True)], writes=[]
    ),
    "seed-dag-wide-catalog": corrupt_input("catalog", [dag(0, 3, wide=True)], writes=[]),
    # (28: tree 28 % 4 = 0 of three and a new one; 28 % 7 == 0: delete it.)
    "seed-dag-wide-delete-tree": corrupt_input(
        "small", [dag(1, 3, wide=True)], writes=[(28, 1)]
    ),
    "seed-dag-wide-compact": corrupt_input(
        "small", [dag(2, 4, wide=True, empty_leaf=True)], file=1, writes=[]
    ),
    # A reference claiming the next transaction wrote its page (the first leaf of the first
    # tree; the clean variant's open verifies nothing): the writer frees the page at once
    # and reuses it while the snapshot still reaches it. (8, 1): remove that tree's first
    # key; the other writes allocate pages.
    "seed-txn-next-leaf": corrupt_input(
        "small",
        [ref_txn("Branch", 0, "Next", header_too=True)],
        reseal=True,
        writes=[(8, 1)] + SOME_WRITES * 3,
    ),
    "seed-txn-next-leaf-unsealed": corrupt_input(
        "small", [ref_txn("Branch", 0, "Next")], writes=[(8, 1)] + SOME_WRITES * 3
    ),
}


def write(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write(os.path.join(HERE, "corpus", "ops"), OPS_PASSING)
    write(os.path.join(HERE, "corpus", "ops"), OPS_REGRESSION)
    write(os.path.join(HERE, "corpus", "open_corrupt"), CORRUPT_PASSING)
    write(os.path.join(HERE, "corpus", "open_corrupt"), CORRUPT_REGRESSION)
