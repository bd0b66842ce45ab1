//! The fuzz input: the operations and their arguments as `Arbitrary` decodes them from
//! libFuzzer's bytes, and the keys, values, bounds and sizes they stand for. The derive
//! order of the fields and variants is the input format that the checked-in corpus
//! (fuzz/corpus/ops) was written in: reordering them turns each input into another.

use std::ops::Bound;

use arbitrary::Arbitrary;

#[derive(Arbitrary, Debug)]
pub enum Key {
    /// One of a few hundred short keys, so that operations meet.
    Index(u16),
    Bytes(Vec<u8>),
    /// A long key (up to and past the limit), `len` bytes after a short prefix.
    Long(u8, u16),
}

#[derive(Arbitrary, Debug)]
pub enum Value {
    Small(Vec<u8>),
    /// `len` bytes (up to about 80 KB: overflow blobs of several pages).
    Sized(u32, u8),
}

#[derive(Arbitrary, Debug)]
pub enum KeyBound {
    Unbounded,
    Included(Key),
    Excluded(Key),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum MmapSize {
    Whole,
    Zero,
    /// This many pages of 4 KiB.
    Pages(u8),
}

/// Where a panic strikes while a `WriteTree` is borrowed. All but `MidChange` come from
/// user code between two changes of the engine: the transaction must stay usable and
/// keep every change made before the panic.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PanicPoint {
    /// Right after `open_tree`, before any change.
    Opened,
    /// After `insert` returned.
    AfterInsert,
    /// After `remove` returned.
    AfterRemove,
    /// While a `Range` over the tree is alive (after its first entry).
    InRange,
    /// After a run of inserts and removes.
    AfterRun,
    /// Inside the engine, at its `n % 8 + 1`th read or write of the in-memory file during
    /// a run of inserts and removes (if it gets that far): the change is cut half-way, so
    /// the transaction must refuse further changes and its commit, and nothing of it
    /// may become visible. Only where the database lives in a `MemFile`.
    MidChange(u8),
}

/// What becomes of the write transaction when its turn comes in a `Lifecycle`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Fate {
    Commit,
    Abort,
    Drop,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct WriterEnd {
    /// Inserted into this tree just before the fate, when the database may be gone.
    pub tree: u8,
    pub start: u16,
    pub count: u8,
    pub immediate: bool,
    pub fate: Fate,
}

/// Every handle ends, in a fuzzer-chosen order: the database, the long-lived snapshot
/// and a few new readers (each checked against its model first), the write transaction
/// (the one in progress, or a new one). Then the file is reopened.
#[derive(Arbitrary, Debug)]
pub struct Lifecycle {
    /// New readers (0 to 3).
    pub readers: u8,
    /// Begins a write transaction if none is in progress; its end (otherwise the one in
    /// progress is dropped when its turn comes).
    pub writer: Option<WriterEnd>,
    /// Which handle ends next, as an index into those still alive (default: the first).
    pub order: Vec<u8>,
    /// For the reopen.
    pub mmap: MmapSize,
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Insert {
        tree: u8,
        key: Key,
        value: Value,
    },
    InsertRun {
        tree: u8,
        start: u16,
        count: u8,
        value_len: u16,
        long: bool,
    },
    Remove {
        tree: u8,
        key: Key,
    },
    RemoveRun {
        tree: u8,
        start: u16,
        count: u8,
        step: u8,
    },
    Get {
        tree: u8,
        key: Key,
        committed: bool,
    },
    Range {
        tree: u8,
        lo: KeyBound,
        hi: KeyBound,
        pattern: u32,
        take: u8,
        committed: bool,
    },
    Len {
        tree: u8,
        committed: bool,
    },
    OpenTree {
        tree: u8,
    },
    DeleteTree {
        tree: u8,
    },
    TreeNames {
        committed: bool,
    },
    Commit,
    Abort,
    Durability(bool),
    Reopen {
        mmap: MmapSize,
        immediate: bool,
        read_only: bool,
        page_size: u8,
    },
    Snapshot,
    CheckSnapshot,
    Check,
    /// Opens a tree, makes `count` changes (a remove every `remove_every`-th), and
    /// `mem::forget`s the `WriteTree`.
    ForgetTree {
        tree: u8,
        start: u16,
        count: u8,
        value_len: u16,
        remove_every: u8,
    },
    /// Opens a tree and panics (caught) at `point`.
    UserPanic {
        tree: u8,
        key: Key,
        value: Value,
        point: PanicPoint,
    },
    Lifecycle(Lifecycle),
    /// `Database::compact` (in place), when no write transaction of the harness is open.
    Compact,
    /// `remove_range` between two bounds of any kinds (inverted and empty ranges too).
    RemoveRange {
        tree: u8,
        lo: KeyBound,
        hi: KeyBound,
    },
    /// `retain`, keeping the entries whose bytes hash with `seed` to a number that is not
    /// a multiple of `modulus % 4 + 1` (1: none kept). With `panic_at`, the predicate
    /// panics (caught) at that call if it gets there: a change cut half-way by user code,
    /// after which the transaction refuses further changes and its commit.
    Retain {
        tree: u8,
        modulus: u8,
        seed: u8,
        panic_at: Option<u8>,
    },
    /// `WriteTree::append` of `key`: taken exactly when it is past the tree's last key
    /// (and not too long), else refused (`Unsorted` with the tree's length) with no change.
    Append {
        tree: u8,
        key: Key,
        value: Value,
    },
    /// `count` appends, each key the successor of the tree's last, of values of
    /// `value_len` bytes (blobs past about 2 KiB at 4 KiB pages), then one of the last key
    /// again (refused).
    AppendRun {
        tree: u8,
        count: u8,
        value_len: u16,
    },
    /// `replace`, `take` or `update` of one key, against the model.
    Rmw {
        tree: u8,
        key: Key,
        value: Value,
        kind: u8,
    },
    /// `first`, `last`, and the prefixes of `key` read both ways.
    Ends {
        tree: u8,
        key: Key,
        committed: bool,
    },
    /// Two trees open at once and changed in turn; then the first opened again while
    /// the older handle lives: that one is stale, and what it returned stays intact.
    TwoTrees {
        a: u8,
        b: u8,
        start: u16,
        count: u8,
        value_len: u16,
    },
    /// `insert_from` of `value` streamed from a reader; with `short`, the reader gives
    /// one byte less than the length asked for: `Error::Io`, nothing changed, and the
    /// transaction still usable.
    InsertFrom {
        tree: u8,
        key: Key,
        value: Value,
        short: bool,
    },
    /// `insert_reserve` of `value`'s length, filled in place up to `filled` 256ths (the
    /// rest must read as zeros); with `freeze`, another tree is opened twice between the
    /// two halves of the filling, which freezes every dirty page but the reserved one.
    InsertReserve {
        tree: u8,
        key: Key,
        value: Value,
        filled: u8,
        freeze: bool,
    },
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    pub page_size: u8,
    pub mmap: MmapSize,
    /// A real file when this is 0 mod 16.
    pub file: u8,
    pub ops: Vec<Op>,
}

pub fn page_size_of(b: u8) -> usize {
    4096 << (b % 5)
}

pub fn mmap_bytes(m: MmapSize) -> u64 {
    match m {
        MmapSize::Whole => u64::MAX,
        MmapSize::Zero => 0,
        MmapSize::Pages(n) => u64::from(n) * 4096,
    }
}

pub fn key_bytes(k: &Key) -> Vec<u8> {
    match k {
        Key::Index(i) => format!("k{:04}", i % 400).into_bytes(),
        Key::Bytes(b) => b.clone(),
        Key::Long(p, len) => {
            let mut k = vec![b'L', *p % 8];
            k.resize(2 + (*len as usize % 33_000), b'x');
            k
        }
    }
}

pub fn value_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Small(b) => b.clone(),
        Value::Sized(len, fill) => {
            let len = *len as usize % 80_000;
            (0..len)
                .map(|i| fill.wrapping_add((i / 251) as u8))
                .collect()
        }
    }
}

pub fn bound(b: &KeyBound) -> Bound<Vec<u8>> {
    match b {
        KeyBound::Unbounded => Bound::Unbounded,
        KeyBound::Included(k) => Bound::Included(key_bytes(k)),
        KeyBound::Excluded(k) => Bound::Excluded(key_bytes(k)),
    }
}
