#!/usr/bin/env python3
"""Writes hand-made seed inputs for the new actions of the `ops` and `open_corrupt` targets.

    fuzz/seeds.py              # writes fuzz/corpus/<target>/seed-* and fuzz/pending-seeds/<target>/seed-*

The inputs are `arbitrary` 1.x encodings of the targets' `Input` structs, written by hand
here because `arbitrary` has no encoder: integers little-endian; `bool` the low bit of a
byte; an enum variant `i` of `n` a u32 `x` with `(x * n) >> 32 == i`; `Option` a bool
then the value; a `Vec` each element after a byte with the low bit set, ended by a byte
without it (or by the end of the input, for the last field). The variant lists below must
follow the enums' order in fuzz_targets/*.rs: when an enum changes, update them and run
this again (the old seeds then decode to something else).

Seeds that pass on today's engine go to corpus/<target>; those that find a known engine
bug (they crash or hang until the fix lands) go to pending-seeds/<target>, to be moved
into corpus/ after the fix.
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
    ]
)
MMAP = enum(["Whole", "Zero", "Pages"])
KEY = enum(["Index", "Bytes", "Long"])
VALUE = enum(["Small", "Sized"])
KEY_BOUND = enum(["Unbounded", "Included", "Excluded"])
PANIC_POINT = enum(["Opened", "AfterInsert", "AfterRemove", "InRange", "AfterRun"])
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


def forget(tree, start, count, value_len=60, remove_every=0):
    return OP("ForgetTree", u8(tree), u16(start), u8(count), u16(value_len), u8(remove_every))


def user_panic(tree, point, index=7, value_len=30):
    return OP(
        "UserPanic",
        u8(tree),
        KEY("Index", u16(index)),
        VALUE("Sized", u32(value_len), u8(9)),
        PANIC_POINT(point),
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


COMMIT = OP("Commit")
ABORT = OP("Abort")
CHECK = OP("Check")
SNAPSHOT = OP("Snapshot")
CHECK_SNAPSHOT = OP("CheckSnapshot")


def durability(immediate):
    return OP("Durability", boolean(immediate))


OPS_PASSING = {
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

OPS_PENDING = {
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


def write(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write(os.path.join(HERE, "corpus", "ops"), OPS_PASSING)
    write(os.path.join(HERE, "pending-seeds", "ops"), OPS_PENDING)
